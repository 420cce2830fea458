"""Valuing a pool with an influence function, exactly or through NN-CIFT.

NN-CIFT (paper Fig. 1): label the first-u block (after a seeded shuffle) with the expensive
influence function, train the InfluenceNetwork on it, and predict everything else with the
Rust scorer. `--exact` computes the function on every pair instead (the baseline).

What each method produces, and the selection rule that goes with it (method.md):

| method | labels | network(s) | selection |
|---|---|---|---|
| delift, delift-se | K[pool, pool] (+ K[pool, target]) | data (+ pairwise) | fl, flmi, flcg |
| less | K[pool, target] | pairwise; value = mean over targets | top-k |
| selectit | value per pool item | pointwise | top-k |

Stage outputs live in a run folder (`cache_dir/runs/<key>`): labels (resumable tiles, via
`nncift.influence.store`) and trained networks (`*.safetensors`), keyed by everything that
determines them, so a rerun that changes only the budget or objective reruns selection only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nncift.data import Items
from nncift.errors import InputError
from nncift.manifest import Manifest

log = logging.getLogger(__name__)

LM_METHODS = ("delift", "less", "selectit")
INFLUENCE_METHODS = ("delift", "delift-se", "less", "selectit")
#: Fewest labelled items per side the estimator needs (2 to train + 1 held out, rounded up
#: to give the validation slice a chance): the minimum pool is ceil(MIN_LABELLED / u).
MIN_LABELLED = 4
#: Version of what a run folder holds; bump when labels or networks would differ.
RUN_LAYOUT = 2


@dataclass(frozen=True)
class ValuationOptions:
    """How to value a pool. Defaults follow the paper (u = 0.05, the paper's network)."""

    method: str = "delift-se"
    u: float = 0.05
    exact: bool = False
    lm: str = "default"
    device: str | None = None
    dtype: str | None = None
    max_length: int = 1024
    embedder: str = "default"
    seed: int = 0
    #: "auto" fits the paper's network and its similarity-aware and closed-form rivals and keeps
    #: the simplest one within one standard error of the lowest error on held-out items (docs/network.md: on real data the
    #: paper's network alone predicted unseen pairs 2.3x worse than a cosine fit).
    variant: str = "auto"
    epochs: int = 20
    hidden_sizes: tuple[int, ...] = (100,)
    #: Extra settings for the influence function (e.g. DELIFT's max_example_tokens).
    influence_settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Valuation:
    """Values ready for selection, in label units scaled to [0, 1] for kernels.

    data_kernel: (M, M) float32 K[candidate, represented] (delift family) or None.
    query_kernel: (M, N) float32 K[pool, target] (flmi / flcg) or None.
    scores: (M,) float32 (less, selectit) or None.
    """

    data_kernel: np.ndarray | None = None
    query_kernel: np.ndarray | None = None
    scores: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def minimum_pool(u: float) -> int:
    """Smallest pool (and target) for which the first-u block has MIN_LABELLED items."""
    return math.ceil(MIN_LABELLED / u - 1e-9)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def run_key(pool: Items, target: Items | None, options: ValuationOptions) -> str:
    """A key for everything that determines the labels and networks of a run."""
    return _digest(
        {
            "layout": RUN_LAYOUT,
            "pool": _digest(pool.ids),
            "target": _digest(target.ids) if target is not None else None,
            **{k: v for k, v in asdict(options).items() if k not in ("device",)},
        }
    )


def _scale01(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Min-max scale with the training range; clip at 0 so kernels stay non-negative."""
    span = hi - lo if hi > lo else 1.0
    return np.clip((values - lo) / span, 0.0, None).astype(np.float32)


class Valuer:
    """Runs the labelling, training and prediction stages for one pool (and target set)."""

    def __init__(
        self,
        pool: Items,
        target: Items | None,
        pool_emb: np.ndarray,
        target_emb: np.ndarray | None,
        options: ValuationOptions,
        *,
        run_dir: Path,
        manifest: Manifest,
        progress: bool = True,
        embedding_model: str = "unknown",
        ray: Any = None,
    ) -> None:
        if options.method not in INFLUENCE_METHODS:
            raise InputError(
                f"unknown influence method {options.method!r}; "
                f"choose from {', '.join(INFLUENCE_METHODS)}"
            )
        if not 0 < options.u <= 1:
            raise InputError(f"u must be in (0, 1], got {options.u}")
        self.pool, self.target = pool, target
        self.pool_emb, self.target_emb = pool_emb, target_emb
        self.opt = options
        self.run_dir = run_dir
        self.manifest = manifest
        self.progress = progress
        self.embedding_model = embedding_model
        #: `RaySettings` to label on Ray workers and predict in Ray shards (None: locally).
        self.ray = ray
        self._lm: Any = None

    # ---------------------------------------------------------------- helpers

    def check_sizes(self) -> None:
        if self.opt.exact:
            return
        need = minimum_pool(self.opt.u)
        for name, items in (("pool", self.pool), ("target set", self.target)):
            if items is not None and len(items) < need:
                raise InputError(
                    f"the {name} has {len(items)} items, too few for u = {self.opt.u}: the "
                    f"labelled block needs at least {MIN_LABELLED} items, so at least {need} "
                    "are required "
                    f"(or raise --u, or use --exact)"
                )

    def _lm_model(self) -> Any:
        if self._lm is None:
            from nncift.lm import load_lm

            with self.manifest.stage("load_lm") as rec:
                self._lm = load_lm(
                    self.opt.lm,
                    device=self.opt.device or "auto",
                    dtype=self.opt.dtype or "auto",
                    max_length=self.opt.max_length,
                )
                rec.update(self._lm.describe())
        return self._lm

    def _function(self, targets: Items | None, target_emb: np.ndarray | None) -> Any:
        from nncift.influence import make

        kw = dict(self.opt.influence_settings)
        if self.opt.method == "delift-se":
            return make(
                "delift-se",
                self.pool,
                targets,
                embed_model=self.opt.embedder,
                pool_embeddings=self.pool_emb,
                target_embeddings=target_emb,
            )
        if self.opt.method == "less":
            kw.setdefault("seed", self.opt.seed)
        return make(self.opt.method, self.pool, targets, lm=self._lm_model(), **kw)

    def _labels(
        self,
        name: str,
        targets: tuple[Items | None, np.ndarray | None],
        rows: np.ndarray,
        cols: np.ndarray | None,
    ) -> np.ndarray:
        """Compute (or resume / reuse) labels K[rows][:, cols] into the run folder.

        targets: (the column items, their embeddings); (None, None) for a pool x pool kernel
        or pointwise labels.
        """
        from nncift.influence.store import compute_labels_with_progress

        out = self.run_dir / f"labels-{name}"
        with self.manifest.stage(f"label_{name}", rows=int(len(rows))) as rec:
            with self._label_function(*targets) as labeller:
                run = compute_labels_with_progress(
                    labeller,
                    out,
                    show=self.progress,
                    description=f"labelling {name} with {self.opt.method}",
                    rows=rows,
                    cols=cols,
                )
                if hasattr(labeller, "stats"):
                    rec["ray"] = labeller.stats.to_dict()
            if not run.complete or run.values is None:
                raise InputError(f"labelling {name} stopped before the end; rerun to resume")
            rec.update(
                cols=None if cols is None else int(len(cols)),
                reused_tiles=run.reused,
                computed_tiles=run.computed,
                cost=run.cost.to_dict(),
                cost_total=run.cost_total.to_dict(),
            )
        return np.asarray(run.values, dtype=np.float32)

    @contextlib.contextmanager
    def _label_function(
        self, targets: Items | None, target_emb: np.ndarray | None
    ) -> Iterator[Any]:
        """The influence function (LM loaded here), or with Ray one whose tiles run on Ray
        workers that hold the LM (no LM loaded here).

        DELIFT (SE) stays local: its labels are cosines of embeddings already computed here.
        """
        if self.ray is None or self.opt.method == "delift-se":
            yield self._function(targets, target_emb)
            return
        from nncift.distributed.labels import FunctionSpec, RayInfluence

        settings = dict(self.opt.influence_settings)
        if self.opt.method == "less":
            settings.setdefault("seed", self.opt.seed)
        spec = FunctionSpec(
            self.opt.method, settings, lm=self.opt.lm, dtype=self.opt.dtype or "auto",
            max_length=self.opt.max_length, embedder=self.opt.embedder,
        )  # fmt: skip
        ray_fn = RayInfluence(
            spec, self.pool, targets, self.ray.connect(),
            workers=self.ray.workers, cpus_per_worker=self.ray.cpus_per_worker,
            device=self.opt.device or "auto",
        )  # fmt: skip
        with ray_fn:
            yield ray_fn

    def _predict(self, path: Path, how: str, rows: np.ndarray, cols: np.ndarray | None) -> Any:
        """Scores from the network at `path`: locally, or in Ray row shards."""
        from nncift.scorer import PairwiseScorer

        if self.ray is not None:
            from nncift.distributed.shards import score_sharded

            return score_sharded(self.ray, path, rows, cols, how=how)
        scorer = PairwiseScorer.load(path)
        if how == "dense":
            return scorer.score(rows, cols)
        if how == "pointwise":
            return scorer.pointwise(rows)
        return scorer.aggregate(rows, cols, how=how)

    def _network(
        self,
        name: str,
        labels: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray | None,
        square: bool,
    ) -> Any:
        """Train (or reuse) the network for one label block; return its weight file."""
        from nncift.estimator import EstimatorSettings, InfluenceEstimator

        path = self.run_dir / f"net-{name}.safetensors"
        with self.manifest.stage(f"train_{name}") as rec:
            if path.is_file():
                rec["reused"] = True
            else:
                pointwise = cols is None
                est = InfluenceEstimator(
                    EstimatorSettings(hidden_sizes=self.opt.hidden_sizes, epochs=self.opt.epochs),
                    variant=self.opt.variant,
                    kind="pointwise" if pointwise else "pairwise",
                    random_state=self.opt.seed,
                    progress=self.progress,
                    embedding_model=self.embedding_model,
                    label_name=self.opt.method,
                )
                col_emb = None if (pointwise or square) else self.target_emb
                est.fit(self.pool_emb, col_emb, labels, rows=rows, cols=cols)
                est.export(path)
                rec.update(
                    reused=False,
                    variant=est.variant_,
                    best_epoch=est.best_epoch_,
                    val_mse_scaled=est.val_mse_,
                    n_train_pairs=est.n_train_pairs_,
                )
        return path

    # ---------------------------------------------------------------- stages

    def value(self, objective: str) -> Valuation:
        """Run every stage needed for `objective` and return values ready for selection."""
        self.check_sizes()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        method = self.opt.method
        if method in ("less", "selectit") and objective not in ("topk",):
            raise InputError(f"{method} selects by top-k (its paper's rule); use --objective topk")
        if method == "less" and self.target is None:
            raise InputError("less scores pool items against a target set: give --target")
        if (
            method in ("delift", "delift-se")
            and objective in ("flmi", "flcg")
            and self.target is None
        ):
            raise InputError(f"objective {objective} needs a target set: give --target")
        if method == "selectit":
            return self._pointwise()
        if method == "less":
            return self._less()
        return self._delift_family(objective)

    def _rows_cols(
        self, n_rows: int, n_cols: int | None, *, square: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labelled rows and columns: everything with `exact`, else the first-u block.

        square: a pool x pool kernel, whose labelled block is the same first-u pool items on
        both sides (one shuffle), as in the paper.
        """
        from nncift.split import u_split

        if self.opt.exact:
            rows = np.arange(n_rows, dtype=np.int64)
            cols = None if n_cols is None else np.arange(n_cols, dtype=np.int64)
            return rows, cols
        split = u_split(n_rows, None if square else n_cols, u=self.opt.u, seed=self.opt.seed)
        if n_cols is None:
            return split.rows_in, None
        return split.rows_in, split.cols_in

    def _delift_family(self, objective: str) -> Valuation:
        m = len(self.pool)
        # The "data" kernel K[pool, pool]: candidates represent pool items.
        rows, cols = self._rows_cols(m, m, square=True)
        assert cols is not None
        labels = self._labels("data", (None, None), rows, cols)
        lo, hi = float(labels.min()), float(labels.max())
        if self.opt.exact:
            data = labels
        else:
            net = self._network("data", labels, rows, cols, square=True)
            with self.manifest.stage("predict_data", pairs=m * m):
                data = self._predict(net, "dense", self.pool_emb, self.pool_emb)
        val = Valuation(data_kernel=_scale01(data, lo, hi), info={"label_range_data": [lo, hi]})
        if objective in ("flmi", "flcg"):
            assert self.target is not None and self.target_emb is not None
            n = len(self.target)
            rows, cols = self._rows_cols(m, n)
            assert cols is not None
            labels = self._labels("pairwise", (self.target, self.target_emb), rows, cols)
            lo, hi = float(labels.min()), float(labels.max())
            if self.opt.exact:
                query = labels
            else:
                net = self._network("pairwise", labels, rows, cols, square=False)
                with self.manifest.stage("predict_pairwise", pairs=m * n):
                    query = self._predict(net, "dense", self.pool_emb, self.target_emb)
            val.query_kernel = _scale01(query, lo, hi)
            val.info["label_range_pairwise"] = [lo, hi]
        return val

    def _less(self) -> Valuation:
        assert self.target is not None and self.target_emb is not None
        m, n = len(self.pool), len(self.target)
        rows, cols = self._rows_cols(m, n)
        assert cols is not None
        labels = self._labels("pairwise", (self.target, self.target_emb), rows, cols)
        if self.opt.exact:
            scores = labels.mean(axis=1)
        else:
            net = self._network("pairwise", labels, rows, cols, square=False)
            with self.manifest.stage("predict_pairwise", pairs=m * n):
                # LESS's pointwise value: mean over the task's targets (one task here).
                scores = self._predict(net, "mean", self.pool_emb, self.target_emb)
        return Valuation(scores=np.asarray(scores, dtype=np.float32))

    def _pointwise(self) -> Valuation:
        m = len(self.pool)
        rows, _ = self._rows_cols(m, None)
        labels = self._labels("points", (None, None), rows, None)
        if self.opt.exact:
            scores = labels
        else:
            net = self._network("points", labels, rows, None, square=False)
            with self.manifest.stage("predict_points", points=m):
                scores = self._predict(net, "pointwise", self.pool_emb, None)
        return Valuation(scores=np.asarray(scores, dtype=np.float32))


# ---------------------------------------------------------------- planning (--dry-run)

#: Rough CPU seconds per LM sequence (2 cores, SmolLM2-135M, ~200-token texts), measured by
#: benches/bench_influence.py; a plan is an order of magnitude, not a promise.
CPU_SECONDS_PER_PASS = {"delift": 0.05, "less": 0.15, "selectit": 0.05}
#: Network training throughput (pairs x epochs per second) on 2 CPU cores.
TRAIN_PAIRS_PER_SECOND = 2.0e5
#: Rust scorer throughput (pairs per second) on 2 CPU cores, benches/bench_scorer.py.
SCORE_PAIRS_PER_SECOND = 4.0e7


@dataclass
class StagePlan:
    stage: str
    what: str
    lm_passes: int = 0
    memory_bytes: int = 0
    seconds: float = 0.0


def plan_valuation(
    n_pool: int, n_target: int | None, options: ValuationOptions, objective: str
) -> list[StagePlan]:
    """The label / train / predict stages a run would execute, with rough costs."""
    from nncift.split import n_in

    method, u, exact = options.method, options.u, options.exact
    blocks: list[tuple[str, int, int | None]] = []  # (name, n_rows, n_cols)
    if method == "selectit":
        blocks.append(("points", n_pool, None))
    elif method == "less":
        blocks.append(("pairwise", n_pool, n_target or 0))
    else:
        blocks.append(("data", n_pool, n_pool))
        if objective in ("flmi", "flcg"):
            blocks.append(("pairwise", n_pool, n_target or 0))
    plans = []
    per_pass = CPU_SECONDS_PER_PASS.get(method, 0.0)
    for name, m, n in blocks:
        rows = m if exact else n_in(m, u)
        cols = None if n is None else (n if exact else n_in(n, u))
        if method == "selectit":
            passes = 5 * rows  # K = 5 rating prompts per item
        elif method == "less":
            # Gradients per item and checkpoint (forward + backward), plus the warm-up.
            passes = 2 * (rows + (cols or 0)) + max(1, n_pool // 20)
        elif method == "delift":
            passes = rows * (cols or 0) + (cols or 0)  # + the no-example pass per target
        else:
            passes = 0
        what = f"{rows} x {cols}" if cols is not None else f"{rows} items"
        label = StagePlan(f"label_{name}", f"{method} on {what}", lm_passes=passes)
        label.seconds = passes * per_pass
        plans.append(label)
        if exact:
            continue
        n_pairs = rows * (cols or 1)
        plans.append(
            StagePlan(
                f"train_{name}",
                f"InfluenceNetwork on {n_pairs:,} labels, {options.epochs} epochs",
                seconds=n_pairs * options.epochs / TRAIN_PAIRS_PER_SECOND,
            )
        )
        out_pairs = m * (n if n is not None else 1)
        plans.append(
            StagePlan(
                f"predict_{name}",
                f"Rust scorer on {out_pairs:,} {'pairs' if n is not None else 'items'}",
                memory_bytes=4 * out_pairs,
                seconds=out_pairs / SCORE_PAIRS_PER_SECOND,
            )
        )
    return plans
