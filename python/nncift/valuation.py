"""Valuing a pool with an influence function, exactly or through NN-CIFT.

NN-CIFT (paper Fig. 1): label the first-u block (after a seeded shuffle) with the expensive
influence function, train the InfluenceNetwork on it, and predict everything else with the
Rust scorer. `--exact` computes the function on every pair instead (the baseline).

What each method produces, and the selection rule that goes with it (method.md):

| method | labels | network(s) | selection |
|---|---|---|---|
| delift, delift-se | K[pool, pool] (+ K[pool, target]) | data (+ pairwise) | fl, flmi, flcg |
| delift, delift-se with fl-target | K[pool, target] only | pairwise | fl over the targets |
| less | K[pool, target] | pairwise; value = mean over targets | top-k |
| selectit | value per pool item | pointwise | top-k |

Wherever a true label exists (the labelled block of a kernel, a labelled item's score, a
labelled (item, target) pair inside LESS's mean over targets) it is used as computed; the
network only predicts the rest (`use_true_labels`; counts in `Valuation.info["entries"]`).

Stage outputs live in a run folder `cache_dir/runs/<label_key>/`: `labels-<name>/` (resumable
tiles, via `nncift.influence.store`) and `net-<network_key>-<name>.safetensors` (trained
networks). `label_key` holds only what determines the labels (data, method, LM and its
settings, the embedder for DELIFT (SE), u, seed, influence settings); `network_key` adds the
network's settings. So a rerun with another budget or objective reruns selection only, and one
with another `--network`, `--epochs` or hidden sizes trains a network on the labels already
there.
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
from nncift.design_valuation import DesignChoice, DesignStages, resolve_design
from nncift.errors import InputError
from nncift.io import file_lock
from nncift.manifest import Manifest

log = logging.getLogger(__name__)

LM_METHODS = ("delift", "less", "selectit")
#: The pipeline's objective "facility location over the target set": f(A) = sum_t max_{j in A}
#: K[j, t] on the pool x target kernel alone (`nncift.selection`'s fl with a separate
#: represented set). Influence methods then label no pool x pool kernel: for a targeted run
#: that is most of the LM cost (a 2,000-item pool and 40 targets: 4,000,000 pairs vs 80,000).
TARGET_FL = "fl-target"
#: Facility-location query mutual information (PRISM's FLQMI, submodlib's "FLQMI" /
#: FacilityLocationVariantMutualInformation): f(A) = sum_t max_{j in A} K[j, t] + eta *
#: sum_{j in A} max_t K[j, t], also on the pool x target kernel alone. Unlike fl-target it
#: does not saturate once every target is served: the second term keeps ranking the rest by
#: their best target value (with 40 targets and 200 picks, fl-target left 196 picks to ties).
TARGET_QMI = "flqmi"
#: Objectives that read only the pool x target kernel (no pool x pool kernel is labelled).
QUERY_ONLY_OBJECTIVES = (TARGET_FL, TARGET_QMI)
#: Objectives that need --target.
TARGET_OBJECTIVES = ("flmi", "flcg", TARGET_FL, TARGET_QMI)
INFLUENCE_METHODS = ("delift", "delift-se", "less", "selectit")
#: Fewest labelled items per side the estimator needs (2 to train + 1 held out, rounded up
#: to give the validation slice a chance): the minimum pool is ceil(MIN_LABELLED / u).
MIN_LABELLED = 4
#: Version of what a run folder holds; bump when labels or networks would differ.
#: 3: folders keyed by `label_key` (labels only), networks by `network_key` inside them.
RUN_LAYOUT = 3


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
    #: What the estimator reads for an item: "minilm" the sentence embeddings (`embedder`, or
    #: provided ones), "lm" the LM's RDS+ features (`nncift.lm_features`), "both" the two
    #: L2-normalised vectors concatenated and scaled by 1/sqrt(2) (unit rows). Set by the
    #: caller (`nncift.pipeline`); labels never depend on it (DELIFT (SE) stays the
    #: embeddings' cosine), networks do (`network_key`).
    features: str = "minilm"
    seed: int = 0
    #: "auto" fits the paper's network and its similarity-aware and closed-form rivals and keeps
    #: the simplest one whose rank score on held-out items is within one standard error of the
    #: best (docs/network.md: on real data the paper's network alone predicted unseen pairs
    #: 2.3x worse than a cosine fit).
    variant: str = "auto"
    #: Optional cap on the network's passes over its labels; None = the estimator's step budget
    #: (50,000 Adam steps, the paper's ~58k) with early stopping on held-out items.
    epochs: int | None = None
    hidden_sizes: tuple[int, ...] = (100,)
    #: Extra settings for the influence function (e.g. DELIFT's max_example_tokens).
    influence_settings: dict[str, Any] = field(default_factory=dict)
    #: Labelling design (`nncift.designs`, `nncift.design_valuation`): "block", "spread",
    #: "landmark", "active" (pairs) or "random", "diverse", "active", "block" (items).
    #: None with no `label_budget`: the paper's first-u block.
    design: str | None = None
    #: The design's label budget (`nncift.designs.parse_label_budget`: "5000" pairs,
    #: "300items", "2%" of the full matrix's LM passes); None: the u-block (`u`), or
    #: `nncift.design_valuation.DEFAULT_LABEL_BUDGET` for another design.
    label_budget: str | None = None
    #: What predicts the unlabelled pairs: "network" (the InfluenceNetwork, `variant`),
    #: "auto" (an estimator of `nncift.effects` chosen on held-out labelled items) or one of
    #: `nncift.effects.EFFECT_NAMES`. None: network on the paper's u-block, else auto.
    estimator: str | None = None

    def __post_init__(self) -> None:
        if self.exact and (self.design is not None or self.label_budget is not None):
            raise InputError("--exact labels every pair: it takes no --design or --label-budget")


@dataclass
class Valuation:
    """Values ready for selection, in label units scaled to [0, 1] for kernels.

    data_kernel: (M, M) float32 K[candidate, represented] (delift family) or None.
    query_kernel: (M, N) float32 K[pool, target] (flmi / flcg / fl-target) or None.
    scores: (M,) float32 (less, selectit) or None.
    info: label ranges, and under ``entries`` per block (data, pairwise, points) how many
    entries are true labels (the labelled block, used as computed) and how many predicted.
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


def label_key(pool: Items, target: Items | None, options: ValuationOptions) -> str:
    """A key for exactly what determines a run's labels: it names the run folder.

    The data (a sha256 over every prompt and response, in order: the labels are computed from
    the texts, not the ids, so changed texts under the same ids relabel and renamed ids do not),
    the method and its settings, the LM and its settings (LM methods only), the embedder
    (DELIFT (SE) only: its labels are embedding cosines; the u-split itself does not depend on
    it), u (unless exact), the seed and the layout version. The network's settings (variant,
    epochs, hidden sizes) are not in it: changing the network never relabels.
    """
    from nncift.influence.store import items_digest

    opt = options
    facts: dict[str, Any] = {
        "layout": RUN_LAYOUT,
        "pool": items_digest(pool),
        "target": items_digest(target) if target is not None else None,
        "method": opt.method,
        "exact": opt.exact,
        "u": None if opt.exact else opt.u,
        "seed": opt.seed,
        "influence_settings": opt.influence_settings,
    }
    if opt.method in LM_METHODS:
        facts.update(lm=opt.lm, dtype=opt.dtype, max_length=opt.max_length)
    if opt.method == "delift-se":
        facts["embedder"] = opt.embedder
    if not opt.exact and (opt.design is not None or opt.label_budget is not None):
        from nncift.design_valuation import resolve_design

        choice = resolve_design(opt)
        if not choice.u_block:  # the u-block's labels stay in the paper's folder
            budget = None if choice.budget is None else [choice.budget.amount, choice.budget.unit]
            facts.update(design=choice.design, label_budget=budget)
            facts["u"] = None
    return _digest(facts)


def network_key(options: ValuationOptions) -> str:
    """A key for a network trained in a run folder: every valuation setting but the device.

    The folder already fixes the labels (`label_key`); this adds the network's own settings
    (variant, epochs, hidden sizes, embedder of its inputs, seed), and any setting added to
    `ValuationOptions` later, so a network is never reused for other settings.
    """
    # The design settings are left out on the paper's path (first-u block, network), so its
    # networks keep their keys whether or not --design block / --estimator network is given.
    paper = options.exact or resolve_design(options).paper
    facts = {
        k: v
        for k, v in asdict(options).items()
        if k != "device" and not (k in ("design", "label_budget", "estimator") and paper)
    }
    return _digest({"layout": RUN_LAYOUT, **facts})


def use_true_labels(
    predicted: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray | None,
    *,
    how: str,
    n_cols: int | None = None,
    predicted_block: np.ndarray | None = None,
) -> dict[str, int]:
    """Put the labels already computed in place of the network's predictions (in place).

    The labelled block was paid for at the influence function's full cost; the estimator
    is only for the rest.

    how: ``dense`` -> predicted (M, N) float32, ``predicted[rows][:, cols] = labels``
    (labels (len(rows), len(cols))); ``pointwise`` -> predicted (M,), ``predicted[rows] =
    labels`` (labels (len(rows),)); ``mean`` -> predicted (M,) row means over `n_cols`
    columns (LESS): the labelled rows' means are corrected to use the true value on the
    labelled columns and the prediction elsewhere, given `predicted_block` (len(rows),
    len(cols)), the predictions the labels replace.

    Returns the number of entries of the underlying matrix (or vector) that are true labels
    and predictions: ``{"true_labels": ..., "predicted": ...}``.
    """
    r = np.asarray(rows, dtype=np.int64)
    lab = np.asarray(labels, dtype=np.float32)
    if how == "pointwise":
        predicted[r] = lab
        total = predicted.shape[0]
    elif how == "dense":
        assert cols is not None
        predicted[np.ix_(r, np.asarray(cols, dtype=np.int64))] = lab
        total = predicted.shape[0] * predicted.shape[1]
    elif how == "mean":
        if predicted_block is None or n_cols is None:
            raise ValueError("how='mean' needs predicted_block and n_cols")
        diff = lab.astype(np.float64).sum(axis=1) - np.asarray(
            predicted_block, dtype=np.float64
        ).sum(axis=1)
        predicted[r] = (predicted[r].astype(np.float64) + diff / n_cols).astype(np.float32)
        total = predicted.shape[0] * n_cols
    else:
        raise ValueError(f"how must be dense, pointwise or mean, got {how!r}")
    return {"true_labels": int(lab.size), "predicted": int(total - lab.size)}


def _all_true(labels: np.ndarray) -> dict[str, int]:
    return {"true_labels": int(labels.size), "predicted": 0}


def _scale01(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Min-max scale with the training range; clip at 0 so kernels stay non-negative."""
    span = hi - lo if hi > lo else 1.0
    return np.clip((values - lo) / span, 0.0, None).astype(np.float32)


class Valuer(DesignStages):
    """Runs the labelling, training and prediction stages for one pool (and target set).

    The paper's path (first-u block, InfluenceNetwork) is here; a labelling design or an
    estimator of `nncift.effects` runs through `nncift.design_valuation.DesignStages`."""

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
        features: tuple[np.ndarray, np.ndarray | None, str] | None = None,
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
        # What the networks read (pool, targets, model id): `options.features`' vectors, given
        # by the caller; the embeddings when None. Labels use the embeddings either way.
        if features is None:
            features = (pool_emb, target_emb, embedding_model)
        self.pool_x, self.target_x, self.features_model = features
        #: `RaySettings` to label on Ray workers and predict in Ray shards (None: locally).
        self.ray = ray
        self._lm: Any = None
        self._design_functions: dict[int, Any] = {}
        self._lengths_cache: dict[int, Any] = {}
        self._priced_budgets: dict[int, Any] = {}

    # ---------------------------------------------------------------- helpers

    @property
    def choice(self) -> DesignChoice | None:
        """The run's design, budget and estimator (None with --exact)."""
        return None if self.opt.exact else resolve_design(self.opt)

    def check_sizes(self) -> None:
        if self.opt.exact:
            return
        choice = self.choice
        if choice is not None and not choice.u_block:
            return  # a design refuses a budget below its minimum itself
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
        """The LM, loaded once for every block this valuer labels (stage ``load_lm``)."""
        if self._lm is None:
            with self.manifest.stage("load_lm") as rec:
                self._lm = self._spec().load_lm(self.opt.device or "auto")
                rec.update(self._lm.describe())
        return self._lm

    def _spec(self) -> Any:
        from nncift.labelling import function_spec

        return function_spec(
            self.opt.method, self.opt.influence_settings, seed=self.opt.seed, lm=self.opt.lm,
            dtype=self.opt.dtype or "auto", max_length=self.opt.max_length,
            embedder=self.opt.embedder,
        )  # fmt: skip

    def _function(self, targets: Items | None, target_emb: np.ndarray | None) -> Any:
        """The influence function here (DELIFT (SE) on the embeddings already computed)."""
        spec = self._spec()
        return spec.build(
            self.pool, targets, self.opt.device or "auto",
            lm=self._lm_model() if spec.needs_lm else None,
            pool_embeddings=self.pool_emb, target_embeddings=target_emb,
        )  # fmt: skip

    @contextlib.contextmanager
    def _label_function(
        self, targets: Items | None, target_emb: np.ndarray | None
    ) -> Iterator[Any]:
        """The influence function here (LM loaded here), or None with Ray: `label` then runs
        the tiles on Ray workers that hold the LM (no LM loaded here).

        DELIFT (SE) stays local: its labels are cosines of embeddings already computed here.
        """
        if self.ray is None or self.opt.method == "delift-se":
            yield self._function(targets, target_emb)
        else:
            yield None

    def _labels(
        self,
        name: str,
        targets: tuple[Items | None, np.ndarray | None],
        rows: np.ndarray,
        cols: np.ndarray | None,
    ) -> np.ndarray:
        """Compute (or resume / reuse) labels K[rows][:, cols] into the run folder with
        `nncift.labelling.label`.

        targets: (the column items, their embeddings); (None, None) for a pool x pool kernel
        or pointwise labels.
        """
        from nncift.labelling import label

        with self.manifest.stage(f"label_{name}", rows=int(len(rows))) as rec:
            with self._label_function(*targets) as fn:
                result = label(
                    self._spec(), self.pool, targets[0], out=self.run_dir / f"labels-{name}",
                    rows=rows, cols=cols, device=self.opt.device or "auto", ray=self.ray,
                    progress=self.progress, manifest=self.manifest, function=fn,
                    description=f"labelling {name} with {self.opt.method}",
                )  # fmt: skip
            run = result.run
            if result.ray is not None:
                rec["ray"] = result.ray
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

    def _predict(
        self,
        path: Path,
        how: str,
        col_emb: np.ndarray | None,
        labelled: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    ) -> tuple[np.ndarray, dict[str, int]]:
        """Values of every pool row from the network at `path` (locally, or in Ray row
        shards), with the true labels used wherever they exist (`use_true_labels`).

        how: dense (M, N), mean (M,) over the columns, or pointwise (M,).
        labelled: (labels, rows, cols) of the block computed with the influence function.
        Returns (values float32, counts of true-label and predicted entries).
        """
        labels, rows, cols = labelled

        def predict(how: str, row_emb: np.ndarray, col_emb: np.ndarray | None) -> np.ndarray:
            if self.ray is not None:
                from nncift.distributed.shards import score_sharded

                return np.asarray(score_sharded(self.ray, path, row_emb, col_emb, how=how))
            from nncift.scorer import PairwiseScorer

            scorer = PairwiseScorer.load(path)
            if how == "dense":
                return scorer.score(row_emb, col_emb)
            if how == "pointwise":
                return scorer.pointwise(row_emb)
            return scorer.aggregate(row_emb, col_emb, how=how)

        values = np.asarray(predict(how, self.pool_x, col_emb), dtype=np.float32)
        if not values.flags.writeable:
            values = values.copy()
        block = None
        if how == "mean":
            # The predictions the labels replace: the small labelled block, same network.
            assert col_emb is not None and cols is not None
            block = predict("dense", self.pool_x[rows], col_emb[cols])
        n_cols = None if col_emb is None else col_emb.shape[0]
        counts = use_true_labels(
            values, labels, rows, cols, how=how, n_cols=n_cols, predicted_block=block
        )
        return values, counts

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

        # One folder per labels, one file per network settings: a new network reuses the labels.
        path = self.run_dir / f"net-{network_key(self.opt)}-{name}.safetensors"
        # Under the network's lock, so two runs sharing the run folder train it once: the
        # second waits and reuses the file. Without it both trained and wrote the file, and a
        # run could select with the other's network while its manifest described its own.
        lock = file_lock(
            path.with_name(f".{path.name}.lock"),
            waiting=f"waiting for another process training {path.name}",
        )
        with self.manifest.stage(f"train_{name}") as rec, lock:
            rec["path"] = str(path)
            if path.is_file():
                from nncift.weights import read_network

                meta = read_network(path).extra_metadata
                rec.update(reused=True, variant=meta.get("variant"), steps=meta.get("steps"))
                rec["no_signal"] = meta.get("no_signal") == "true"
            else:
                from nncift.labels import PairLabels

                # Labels as a block (rows, cols; cols None: items), or as pairs of a design.
                pointwise = labels.pointwise if isinstance(labels, PairLabels) else cols is None
                est = InfluenceEstimator(
                    EstimatorSettings(hidden_sizes=self.opt.hidden_sizes, epochs=self.opt.epochs),
                    variant=self.opt.variant,
                    kind="pointwise" if pointwise else "pairwise",
                    random_state=self.opt.seed,
                    progress=self.progress,
                    embedding_model=self.features_model,
                    label_name=self.opt.method,
                )
                col_emb = None if (pointwise or square) else self.target_x
                est.fit(self.pool_x, col_emb, labels, rows=rows, cols=cols)
                est.export(path)
                rec.update(
                    reused=False,
                    variant=est.variant_,
                    steps=est.steps_,
                    best_step=est.best_step_,
                    best_epoch=est.best_epoch_,
                    val_mse_scaled=est.val_mse_,
                    val_rank=est.val_rank_,
                    criterion=est.criterion_,
                    candidates_rank=est.candidates_rank_,
                    no_signal=est.no_signal_,
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
            and objective in TARGET_OBJECTIVES
            and self.target is None
        ):
            raise InputError(f"objective {objective} needs a target set: give --target")
        choice = self.choice
        if choice is not None and not choice.paper:
            return self._with_design(objective, choice)
        if method == "selectit":
            return self._pointwise()
        if method == "less":
            return self._less()
        return self._delift_family(objective)

    def _with_design(self, objective: str, choice: DesignChoice) -> Valuation:
        """`value` with a labelling design or an estimator of `nncift.effects`."""
        m = len(self.pool)
        info: dict[str, Any] = {"entries": {}, "designs": {}, "estimators": {}}
        val = Valuation(info=info)

        def one(name: str, targets: tuple[Any, Any], n_cols: int | None, square: bool) -> Any:
            values, counts, drec, erec, lo, hi = self._design_values(
                name, targets, n_cols, square, choice
            )
            info["entries"][name] = counts
            info["designs"][name] = drec
            info["estimators"][name] = erec
            info[f"label_range_{name}"] = [lo, hi]
            return values, lo, hi

        if self.opt.method == "selectit":
            scores, _, _ = one("points", (None, None), None, False)
            val.scores = np.asarray(scores, dtype=np.float32)
            return val
        if self.opt.method == "less":
            assert self.target is not None
            dense, _, _ = one("pairwise", (self.target, self.target_emb), len(self.target), False)
            # LESS's pointwise value: the mean over the task's targets, true labels included.
            val.scores = np.asarray(dense.mean(axis=1), dtype=np.float32)
            return val
        if objective not in QUERY_ONLY_OBJECTIVES:  # these need no pool x pool kernel
            data, lo, hi = one("data", (None, None), m, True)
            val.data_kernel = _scale01(data, lo, hi)
        if objective in TARGET_OBJECTIVES:
            assert self.target is not None
            query, lo, hi = one("pairwise", (self.target, self.target_emb), len(self.target), False)
            val.query_kernel = _scale01(query, lo, hi)
        return val

    def _rows_cols(
        self, n_rows: int, n_cols: int | None, *, square: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labelled rows and columns: everything with `exact`, else the first-u block
        (`nncift.labelling.labelled_block`; square: a pool x pool kernel, one shuffle)."""
        from nncift.labelling import labelled_block

        return labelled_block(
            n_rows, n_cols, u=self.opt.u, seed=self.opt.seed, exact=self.opt.exact, square=square
        )

    def _delift_family(self, objective: str) -> Valuation:
        val = Valuation(info={"entries": {}})
        if objective not in QUERY_ONLY_OBJECTIVES:  # these need no pool x pool kernel
            # The "data" kernel K[pool, pool]: candidates represent pool items.
            val.data_kernel = self._kernel("data", (None, None), square=True, info=val.info)
        if objective in TARGET_OBJECTIVES:
            assert self.target is not None and self.target_emb is not None
            targets = (self.target, self.target_emb)
            val.query_kernel = self._kernel("pairwise", targets, square=False, info=val.info)
        return val

    def _kernel(
        self, name: str, targets: tuple[Any, Any], *, square: bool, info: dict[str, Any]
    ) -> np.ndarray:
        """One DELIFT-family kernel (pool x pool when `square`, else pool x targets): its
        labelled block, the network's prediction of the rest (or every pair with `exact`),
        scaled to [0, 1]; label range and entry counts recorded in `info`."""
        m = len(self.pool)
        n = m if square else len(targets[0])
        rows, cols = self._rows_cols(m, n, square=square)
        assert cols is not None
        labels = self._labels(name, targets, rows, cols)
        lo, hi = float(labels.min()), float(labels.max())
        if self.opt.exact:
            values, counts = labels, _all_true(labels)
        else:
            net = self._network(name, labels, rows, cols, square=square)
            x = self.pool_x if square else self.target_x
            with self.manifest.stage(f"predict_{name}", pairs=m * n) as rec:
                values, counts = self._predict(net, "dense", x, (labels, rows, cols))
                rec.update(counts)
        info[f"label_range_{name}"] = [lo, hi]
        info["entries"][name] = counts
        return _scale01(values, lo, hi)

    def _less(self) -> Valuation:
        assert self.target is not None and self.target_emb is not None
        m, n = len(self.pool), len(self.target)
        rows, cols = self._rows_cols(m, n)
        assert cols is not None
        labels = self._labels("pairwise", (self.target, self.target_emb), rows, cols)
        if self.opt.exact:
            scores, counts = labels.mean(axis=1), _all_true(labels)
        else:
            net = self._network("pairwise", labels, rows, cols, square=False)
            with self.manifest.stage("predict_pairwise", pairs=m * n) as rec:
                # LESS's pointwise value: mean over the task's targets (one task here).
                scores, counts = self._predict(net, "mean", self.target_x, (labels, rows, cols))
                rec.update(counts)
        return Valuation(
            scores=np.asarray(scores, dtype=np.float32), info={"entries": {"pairwise": counts}}
        )

    def _pointwise(self) -> Valuation:
        m = len(self.pool)
        rows, _ = self._rows_cols(m, None)
        labels = self._labels("points", (None, None), rows, None)
        if self.opt.exact:
            scores, counts = labels, _all_true(labels)
        else:
            net = self._network("points", labels, rows, None, square=False)
            with self.manifest.stage("predict_points", points=m) as rec:
                scores, counts = self._predict(net, "pointwise", None, (labels, rows, None))
                rec.update(counts)
        return Valuation(
            scores=np.asarray(scores, dtype=np.float32), info={"entries": {"points": counts}}
        )


# Planning (`nncift select --dry-run`) lives in `nncift.plan`: it runs `Valuer.value`'s checks
# and lays out the labelled blocks' LM passes from the texts, priced by `nncift.lm_probe`.
