"""Plans for `nncift select --dry-run`: the stages a run would execute, with their costs.

The LM cost of DELIFT, LESS and SelectIT comes from the user's data and machine:

* the passes are laid out as the run lays them out: the same labelled block (the run's own
  u-split), the same label tiles, the texts tokenised by the LM's tokenizer and cut by the
  influence function's own code, grouped into the same batches (`_batches`), DELIFT's example
  prefixes shared across their targets, LESS's warm-up, checkpoints and projection;
* each batch is priced with the `nncift.lm_probe` model of this machine (a short timed probe
  of the LM, cached per LM, dtype, device and thread count).

The plan also refuses what the run refuses: it runs the run's own checks (`Valuer.value` up to
the point where work would start, the influence function's constructor, the budget).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nncift.data import Items
from nncift.valuation import (
    LM_METHODS,
    TARGET_FL,
    TARGET_OBJECTIVES,
    Valuation,
    ValuationOptions,
    Valuer,
)

#: Network training throughput (pairs x epochs per second) on 2 CPU cores.
TRAIN_PAIRS_PER_SECOND = 2.0e5
#: Rust scorer throughput (pairs per second) on 2 CPU cores, benches/bench_scorer.py.
SCORE_PAIRS_PER_SECOND = 4.0e7
#: `nncift.influence.store.compute_labels`' default tiles: rows per tile (pairwise,
#: pointwise) and the most columns per tile.
TILE_ROWS_PAIRWISE, TILE_ROWS_POINTWISE, TILE_COLS_MAX = 16, 64, 512


@dataclass
class Batch:
    """One batched LM call: `n` sequences padded to `width` tokens, after a cached prefix of
    `prefix` tokens, `tokens` real (unpadded) tokens, `head` positions through the output
    layer; `train`: forward + backward (LESS)."""

    n: int
    width: int
    tokens: int
    head: int
    prefix: int = 0
    train: bool = False

    @property
    def padded(self) -> int:
        return self.n * self.width

    @property
    def attention(self) -> int:
        return self.n * self.width * (self.prefix + self.width)


@dataclass
class LMWork:
    """Everything the label stage of one block does with the LM."""

    batches: list[Batch] = field(default_factory=list)
    #: LESS: projection calls as (rows projected, whether the matrix is generated in the call).
    projections: list[tuple[int, bool]] = field(default_factory=list)
    less_setup: bool = False

    @property
    def passes(self) -> int:
        return sum(b.n for b in self.batches)

    @property
    def backward_passes(self) -> int:
        return sum(b.n for b in self.batches if b.train)

    @property
    def tokens(self) -> int:
        return sum(b.tokens for b in self.batches)

    def add(self, lengths: Sequence[int], heads: Sequence[int], *, batch_tokens: int,
            max_batch: int, prefix: int = 0, train: bool = False) -> None:  # fmt: skip
        """Sequences of `lengths` grouped as `nncift.influence._lm._batches` groups them.

        With a prefix, grouping budgets `batch_tokens + prefix` over `length + prefix`
        (as `prefix_response_logprobs` does) and the width is of the suffixes alone.
        """
        from nncift.influence._lm import _batches

        if prefix:
            groups = _batches([n + prefix for n in lengths], batch_tokens + prefix, max_batch)
        else:
            groups = _batches(list(lengths), batch_tokens, max_batch)
        for g in groups:
            self.batches.append(
                Batch(
                    n=len(g),
                    width=max(lengths[i] for i in g),
                    tokens=sum(lengths[i] for i in g),
                    head=sum(heads[i] for i in g),
                    prefix=prefix,
                    train=train,
                )
            )

    def seconds(self, tp: Any, less: Any = None) -> float:
        """Predicted seconds with the probe's `Throughput` (`less`: its `LessProbe`)."""
        total = 0.0
        for b in self.batches:
            model = less.gradients if (b.train and less is not None) else tp.forward
            total += model.seconds(b.padded, b.attention, 0 if b.train else b.head)
        if less is not None:
            if self.less_setup:
                total += less.setup_seconds
            blocks = math.ceil(less.grad_dim / _proj_chunk())
            for rows, generate in self.projections:
                total += blocks * (less.proj_overhead + less.proj_per_row * rows)
                if generate:
                    total += blocks * less.proj_gen_seconds
        return total


def _proj_chunk() -> int:
    from nncift.influence.less import _PROJ_CHUNK

    return int(_PROJ_CHUNK)


def _tiles(n_rows: int, n_cols: int | None, pairwise: bool) -> list[tuple[slice, slice | None]]:
    tr = TILE_ROWS_PAIRWISE if pairwise else TILE_ROWS_POINTWISE
    out: list[tuple[slice, slice | None]] = []
    tc = min(TILE_COLS_MAX, n_cols) if n_cols else 1
    for a in range(math.ceil(n_rows / tr)):
        rs = slice(a * tr, min(n_rows, (a + 1) * tr))
        if n_cols is None:
            out.append((rs, None))
            continue
        for b in range(math.ceil(n_cols / tc)):
            out.append((rs, slice(b * tc, min(n_cols, (b + 1) * tc))))
    return out


# ------------------------------------------------------------------ the passes of each method


def delift_work(
    fn: Any, rows: np.ndarray, cols: np.ndarray, *, work: LMWork | None = None,
    done: set[int] | None = None,
) -> LMWork:  # fmt: skip
    """The passes `Delift.block` runs over the label tiles of rows x cols (`fn`: a `Delift`).

    work / done: add to this work, and skip the no-example passes of these targets (already
    run by earlier blocks of the same function: `delift_pairs_work`)."""
    work = LMWork() if work is None else work
    cfg = fn.cfg
    kw = {"batch_tokens": cfg.batch_tokens, "max_batch": cfg.max_batch}
    done = set() if done is None else done
    for rs, cs in _tiles(rows.size, cols.size, True):
        assert cs is not None
        tile_cols = cols[cs]
        # The no-example pass, once per target (cached across tiles).
        lengths, heads = [], []
        for t in dict.fromkeys(int(c) for c in tile_cols):
            if t in done:
                continue
            done.add(t)
            q = fn._query(t)
            if q["resp"]:
                lengths.append(len(fn._h0) + len(q["q0"]) + len(q["resp"]))
                heads.append(len(q["resp"]))
        work.add(lengths, heads, **kw)
        queries = [fn._query(int(t)) for t in tile_cols]
        live = [q for q in queries if q["resp"]]
        for i in rows[rs].tolist():
            ex, _ = fn._example(int(i))
            plen = len(fn._h1) + len(ex) + len(fn._tail)
            shared, solo = [], []
            for q in live:
                n = len(q["q1"]) + len(q["resp"])
                if plen + n <= fn.max_length:
                    shared.append(q)
                else:  # this pair only: the example cut further from the left
                    kept = max(0, len(ex) - (plen + n - fn.max_length))
                    solo.append((len(fn._h1) + kept + len(fn._tail) + n, len(q["resp"])))
            suffix = [len(q["q1"]) + len(q["resp"]) for q in shared]
            heads = [len(q["resp"]) for q in shared]
            if fn._kv and len(shared) > 1:
                work.add([plen], [0], **kw)  # the prefix, once
                work.add(suffix, heads, prefix=plen, **kw)
            else:
                work.add([plen + n for n in suffix], heads, **kw)
            work.add([n for n, _ in solo], [h for _, h in solo], **kw)
    return work


def delift_pairs_work(fn: Any, rows: np.ndarray, cols: np.ndarray) -> LMWork:
    """The passes of a sparse design's pairs (rows[k], cols[k]): one block per distinct pool
    row with its targets, as `PairwiseInfluence.pairs` runs them."""
    work, done = LMWork(), set[int]()
    _, first = np.unique(rows, return_index=True)
    for i in rows[np.sort(first)]:
        delift_work(fn, np.array([i]), cols[rows == i], work=work, done=done)
    return work


def selectit_work(fn: Any, rows: np.ndarray) -> LMWork:
    """The passes `SelectIT.points` runs over the label tiles of `rows` (`fn`: a `SelectIT`)."""
    from nncift.influence._lm import encode
    from nncift.influence.selectit import sample_text

    work = LMWork()
    kw = {"batch_tokens": fn.batch_tokens, "max_batch": fn.max_batch}
    for rs, _ in _tiles(rows.size, None, False):
        for lm, temps in zip(fn.lms, fn._templates, strict=True):
            longest = max(len(t.pre) + len(t.post) for t in temps)
            keep = min(fn.max_sample_tokens, lm.max_length - longest)
            sizes = []
            for i in rows[rs].tolist():
                ids = encode(lm.tokenizer, sample_text(fn.pool.prompts[i], fn.pool.responses[i]))
                sizes.append(min(len(ids), keep))
            for t in temps:
                lengths = [len(t.pre) + n + len(t.post) for n in sizes]
                work.add(lengths, [1] * len(lengths), **kw)
    return work


def less_work(fn: Any, rows: np.ndarray, cols: np.ndarray) -> LMWork:
    """What `Less.block` does over the label tiles of rows x cols (`fn`: a `Less`): the
    warm-up (forward + backward per batch and epoch), per-example gradients of pool and target
    items at each checkpoint, and their random projections."""
    cfg = fn.cfg
    work = LMWork(less_setup=True)
    # The warm-up, drawn with the same generator calls as `Less.warm_up`.
    m = len(fn.pool)
    k = min(m, max(cfg.warmup_min_items, math.ceil(cfg.warmup_fraction * m)))
    rng = np.random.default_rng(cfg.seed)
    warm_rows = np.sort(rng.choice(m, size=k, replace=False))
    seqs = [fn._seq(fn.pool, int(i)) for i in warm_rows]
    live = [len(s) for s, start in seqs if len(s) > start]
    for _ in range(cfg.epochs):
        order = rng.permutation(len(live))
        for s in range(0, len(order), cfg.batch_size):
            batch = [live[j] for j in order[s : s + cfg.batch_size]]
            work.batches.append(
                Batch(len(batch), max(batch), sum(batch), 0, train=True)
            )  # fmt: skip
    cache_matrix = fn.proj_dim * _grad_dim(fn) <= cfg.proj_cache_bytes
    generated = False
    kw = {"batch_tokens": cfg.grad_batch_tokens, "max_batch": 64, "train": True}
    seen: dict[str, set[int]] = {"pool": set(), "target": set()}
    for rs, cs in _tiles(rows.size, cols.size, True):
        assert cs is not None
        for side, items, idx in (("pool", fn.pool, rows[rs]), ("target", fn.targets, cols[cs])):
            todo = [int(i) for i in dict.fromkeys(idx.tolist()) if int(i) not in seen[side]]
            seen[side].update(todo)
            if not todo:
                continue
            lengths = []
            for i in todo:
                s, start = fn._seq(items, i)
                if len(s) > start:
                    lengths.append(len(s))
            for _ in range(cfg.epochs):  # one checkpoint per epoch
                work.add(lengths, [0] * len(lengths), **kw)
                work.projections.append((len(todo), not (cache_matrix and generated)))
                generated = True
    return work


#: Pool rows priced exactly when a time budget is turned into a share (the rest scale).
SECONDS_SAMPLE_ROWS = 256


def seconds_to_share(
    budget: Any, fn: Any, method: str, n_rows: int, n_cols: int | None, throughput: Any
) -> tuple[Any, dict[str, Any]]:
    """A `--label-budget` in LM seconds -> the `LabelBudget` share of labelling every pair it
    buys on this machine, and the record of the conversion.

    The full matrix is priced as `--dry-run` prices it: the passes of `fn` (the run's own
    function: tokenizer, cuts, batching) over all pairs, timed with `throughput` (the cached
    LM probe, `nncift.lm_probe`). DELIFT and SelectIT price a seeded sample of at most
    `SECONDS_SAMPLE_ROWS` pool rows and scale it; LESS's fixed warm-up and setup come off the
    budget first, because its share counts only the passes beyond the warm-up."""
    from nncift import designs
    from nncift.errors import InputError

    designs.check_time_budget(budget, method)
    rng = np.random.default_rng(0)
    k = min(n_rows, SECONDS_SAMPLE_ROWS)
    sample = np.sort(rng.choice(n_rows, size=k, replace=False))
    scale = n_rows / max(k, 1)
    fixed = 0.0
    if method == "delift":
        assert n_cols is not None
        full = delift_work(fn, sample, np.arange(n_cols)).seconds(throughput) * scale
    elif method == "selectit":
        full = selectit_work(fn, sample).seconds(throughput) * scale
    else:
        assert n_cols is not None
        probe = throughput.less.get(lm_probe_digest(fn))
        if probe is None:
            raise InputError("the LM probe has no LESS timings for these settings")
        everything = less_work(fn, np.arange(n_rows), np.arange(n_cols)).seconds(throughput, probe)
        fixed = less_work(fn, np.arange(0), np.arange(0)).seconds(throughput, probe)
        full = everything - fixed
    if budget.amount <= fixed:
        raise InputError(
            f"--label-budget {budget.text!r} does not cover LESS's warm-up and setup on this "
            f"machine (~{fixed:,.0f} s); give at least {fixed * 1.05 + 1:,.0f}s"
        )
    share = min(1.0, (budget.amount - fixed) / max(full, 1e-9))
    record = {
        "seconds": budget.amount,
        "fixed_seconds": round(fixed, 3),
        "full_matrix_seconds": round(full + fixed, 3),
        "share": share,
        "forward_tokens_per_second": round(throughput.forward.tokens_per_second(), 1),
        "probe_measured_at": throughput.measured_at,
    }
    return designs.LabelBudget(share, "share", budget.text), record


def _grad_dim(fn: Any) -> int:
    """LoRA parameters LESS would attach: r * (in + out) per matched Linear layer."""
    import torch

    targets = tuple(fn.cfg.target_modules)
    dim = 0
    for name, mod in fn.lm.model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            dim += fn.cfg.lora_r * (mod.in_features + mod.out_features)
    return dim


# ------------------------------------------------------------------ the run's own checks


class _PlanValuer(Valuer):
    """A `Valuer` that runs `value`'s checks and records the labelled blocks instead of
    computing them. `lm` stands in for the LM the run would load."""

    def __init__(
        self, *args: Any, lm: Any = None, throughput: Any = None, cache: Path | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self._lm = lm
        #: The LM probe (given, or probed on demand to price a time budget) and its cache.
        self.throughput = throughput
        self.probe_cached = throughput is not None
        self.cache = cache
        self.blocks: list[tuple[str, np.ndarray, np.ndarray | None, Items | None]] = []
        #: (name, rows, cols, targets, DesignChoice, sparse) of a run with a design.
        self.designs: list[tuple[str, np.ndarray, np.ndarray | None, Items | None, Any, bool]] = []

    def _block(self, name: str, n_cols: int | None, square: bool, targets: Items | None) -> None:
        rows, cols = self._rows_cols(len(self.pool), n_cols, square=square)
        self.blocks.append((name, rows, cols, targets))

    def _delift_family(self, objective: str) -> Valuation:
        if objective != TARGET_FL:
            self._block("data", len(self.pool), True, None)
        if objective in TARGET_OBJECTIVES:
            assert self.target is not None
            self._block("pairwise", len(self.target), False, self.target)
        return Valuation()

    def _less(self) -> Valuation:
        assert self.target is not None
        self._block("pairwise", len(self.target), False, self.target)
        return Valuation()

    def _pointwise(self) -> Valuation:
        self._block("points", None, False, None)
        return Valuation()

    def function(self, targets: Items | None) -> Any:
        """The influence function exactly as the run builds it (on the stand-in LM)."""
        return self._function(targets, None)

    def _function_for(self, targets: tuple[Any, Any], stack: Any) -> Any:
        return self.function(targets[0])

    def _throughput_for(self, fn: Any) -> Any:
        """The probe the plan prices with: probed (loading the LM) when not given or cached."""
        from nncift import lm_probe
        from nncift.embed import default_cache_dir

        if self.throughput is None:
            less = None
            if self.opt.method == "less":
                less = (lm_probe.less_settings_key(fn), _less_builder(self))
            self.throughput, _, self.probe_cached = lm_probe.get_throughput(
                self.cache or default_cache_dir(), lm=self.opt.lm, device=self.opt.device,
                dtype=self.opt.dtype, max_length=self.opt.max_length, less=less,
            )  # fmt: skip
        return self.throughput

    def _with_design(self, objective: str, choice: Any) -> Valuation:
        """Record the designs the run would label (active: its start design)."""
        from nncift.designs import initial_active, make_design

        needed: list[tuple[str, int | None, bool, Items | None]] = []
        if self.opt.method == "selectit":
            needed.append(("points", None, False, None))
        elif self.opt.method == "less":
            assert self.target is not None
            needed.append(("pairwise", len(self.target), False, self.target))
        else:
            if objective != TARGET_FL:
                needed.append(("data", len(self.pool), True, None))
            if objective in TARGET_OBJECTIVES:
                assert self.target is not None
                needed.append(("pairwise", len(self.target), False, self.target))
        m = len(self.pool)
        for name, n_cols, square, targets in needed:
            choice, _ = self._time_budget_as_share(choice, (targets, None), n_cols)
            if choice.u_block:
                rows, cols = self._rows_cols(m, n_cols, square=square)
                self.designs.append((name, rows, cols, targets, choice, False))
                continue
            kw = {"method": self.opt.method, "n_rows": m, "n_cols": n_cols,
                  "budget": choice.budget, "seed": self.opt.seed, "features": None}  # fmt: skip
            if choice.design == "active":
                d = initial_active(**kw)
            else:
                d = make_design(choice.design, square=square, **kw)
            self.designs.append((name, d.rows, d.cols, targets, choice, True))
        return Valuation()


def check_valuation(
    pool: Items, target: Items | None, options: ValuationOptions, objective: str, lm: Any = None,
    throughput: Any = None, cache: Path | None = None,
) -> _PlanValuer:  # fmt: skip
    """Run the run's checks (sizes, method and objective, target set); return the valuer
    with the labelled blocks it would compute in `.blocks`."""
    from nncift.manifest import Manifest

    with tempfile.TemporaryDirectory(prefix="nncift-plan-") as tmp:
        valuer = _PlanValuer(
            pool, target, None, None, options,  # type: ignore[arg-type]
            run_dir=Path(tmp) / "run", manifest=Manifest(command="plan"), progress=False, lm=lm,
            throughput=throughput, cache=cache,
        )  # fmt: skip
        valuer.value(objective)
    return valuer


# ------------------------------------------------------------------ the plan


@dataclass
class StagePlan:
    stage: str
    what: str
    lm_passes: int = 0
    memory_bytes: int = 0
    seconds: float = 0.0
    tokens: int = 0
    #: How the seconds were reached (shown in the plan).
    basis: str = ""


@dataclass
class ValuationPlan:
    stages: list[StagePlan]
    #: The probe result the LM stages were priced with (None for methods without an LM).
    throughput: Any = None
    probe_cached: bool = False
    probe_file: Path | None = None


def plan_valuation(
    pool: Items,
    target: Items | None,
    options: ValuationOptions,
    objective: str,
    *,
    cache_dir: str | Path | None = None,
    throughput: Any = None,
    lm: Any = None,
) -> ValuationPlan:
    """The label / train / predict stages a run would execute, with their costs.

    Raises the run's own errors for a run it would refuse. For LM methods the label stages
    are priced from the token counts of the actual passes and a probe of the LM on this
    machine (cached under `cache_dir`, default `default_cache_dir()`).

    throughput: a `nncift.lm_probe.Throughput` to price with instead of probing (tests).
    lm: an `nncift.lm.LM` to build the influence functions with instead of loading one.
    """
    from nncift import lm_probe
    from nncift.embed import default_cache_dir

    method = options.method
    uses_lm = method in LM_METHODS
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def shell() -> Any:
        # The passes are laid out with the LM's tokenizer and configuration alone.
        return lm or lm_probe.lm_shell(
            options.lm, device=options.device, dtype=options.dtype, max_length=options.max_length
        )

    # The run checks sizes, method, objective and target set before it loads an LM; a time
    # budget needs the LM's function during the checks (to price the design).
    valuer = check_valuation(pool, target, options, objective, throughput=throughput, cache=cache,
                             lm=shell() if uses_lm and _time_budget(options) else lm)  # fmt: skip
    if uses_lm and valuer._lm is None:
        valuer._lm = shell()
    # A time budget was priced with the probe during the checks (probing it if need be).
    throughput = valuer.throughput
    probe_cached = valuer.probe_cached
    if uses_lm and throughput is None:
        less = None
        if method == "less":
            less = (lm_probe.less_settings_key(valuer.function(target)), _less_builder(valuer))
        throughput, _, probe_cached = lm_probe.get_throughput(
            cache, lm=options.lm, device=options.device, dtype=options.dtype,
            max_length=options.max_length, less=less,
        )  # fmt: skip

    plans: list[StagePlan] = []
    for name, rows, cols, targets in valuer.blocks:
        n_rows = len(pool)
        n_cols = None if cols is None else (len(pool) if targets is None else len(targets))
        what = f"{len(rows)} x {len(cols)}" if cols is not None else f"{len(rows)} items"
        label = StagePlan(f"label_{name}", f"{method} on {what}")
        if uses_lm:
            fn = valuer.function(targets)
            less_probe = None
            if method == "delift":
                assert cols is not None
                work = delift_work(fn, rows, cols)
            elif method == "less":
                assert cols is not None
                work = less_work(fn, rows, cols)
                less_probe = throughput.less.get(
                    lm_probe._digest(lm_probe.less_settings_key(fn))
                ) if throughput is not None else None  # fmt: skip
            else:
                work = selectit_work(fn, rows)
            label.lm_passes, label.tokens = work.passes, work.tokens
            if throughput is not None:
                passes_s = work.seconds(throughput, less_probe)
                load = throughput.load_seconds if name == valuer.blocks[0][0] else 0.0
                label.seconds = load + passes_s
                label.basis = f"LM load {load:.0f} s + passes {passes_s:,.0f} s"
        plans.append(label)
        if options.exact:
            continue
        n_pairs = len(rows) * (len(cols) if cols is not None else 1)
        # The estimator's step budget (max_steps, capped by --epochs); early stopping ends sooner.
        from nncift.estimator import EstimatorSettings, step_budget

        _, steps, _ = step_budget(EstimatorSettings(epochs=options.epochs), n_pairs)
        plans.append(
            StagePlan(
                f"train_{name}",
                f"InfluenceNetwork on {n_pairs:,} labels, up to {steps:,} Adam steps",
                seconds=steps * 64 / TRAIN_PAIRS_PER_SECOND,
            )
        )
        out_pairs = n_rows * (n_cols if n_cols is not None else 1)
        plans.append(
            StagePlan(
                f"predict_{name}",
                f"Rust scorer on {out_pairs:,} {'pairs' if n_cols is not None else 'items'}",
                memory_bytes=4 * out_pairs,
                seconds=out_pairs / SCORE_PAIRS_PER_SECOND,
            )
        )
    for name, rows, cols, targets, choice, sparse in valuer.designs:
        plans.extend(
            _design_plan(valuer, options, name, rows, cols, targets, choice, sparse, throughput)
        )
    probe_file = None
    if uses_lm and throughput is not None and throughput.key:
        probe_file = lm_probe.probe_path(cache, throughput.key)
    return ValuationPlan(plans, throughput, probe_cached, probe_file)


def _time_budget(options: ValuationOptions) -> bool:
    from nncift.designs import parse_label_budget
    from nncift.errors import InputError

    try:
        text = options.label_budget
        return text is not None and parse_label_budget(text).unit == "seconds"
    except InputError:  # refused by the checks, with the grammar
        return False


def _design_plan(
    valuer: _PlanValuer, options: ValuationOptions, name: str, rows: np.ndarray,
    cols: np.ndarray | None, targets: Items | None, choice: Any, sparse: bool, throughput: Any,
) -> list[StagePlan]:  # fmt: skip
    """The label and estimate stages of one design (active: its start design, and the rest
    of the budget priced at the start's rate)."""
    from nncift.designs import Design, budget_cost

    method = options.method
    m = len(valuer.pool)
    n_cols = None if cols is None else (m if targets is None else len(targets))
    if sparse:
        n_pairs = rows.size
        what = (
            f"{choice.design} design: {n_pairs:,} pairs over {np.unique(rows).size:,} pool items"
            f" and {np.unique(cols).size:,} targets" if cols is not None
            else f"{choice.design} design: {rows.size:,} items"
        )  # fmt: skip
    else:
        n_pairs = rows.size * (cols.size if cols is not None else 1)
        what = f"block {rows.size} x {cols.size}" if cols is not None else f"{rows.size} items"
    label = StagePlan(f"label_{name}", f"{method} on {what}")
    if method in LM_METHODS:
        fn = valuer.function(targets)
        less_probe = None
        if method == "delift":
            assert cols is not None
            work = delift_pairs_work(fn, rows, cols) if sparse else delift_work(fn, rows, cols)
        elif method == "less":
            assert cols is not None
            work = less_work(fn, np.unique(rows), np.unique(cols))
            if throughput is not None:
                less_probe = throughput.less.get(lm_probe_digest(fn))
        else:
            work = selectit_work(fn, rows)
        label.lm_passes, label.tokens = work.passes, work.tokens
        scale = 1.0
        if choice.design == "active" and choice.budget is not None:
            d = Design("start", rows, cols, m, n_cols)
            start = budget_cost(choice.budget, method, m, n_cols)(d)
            scale = choice.budget.amount / start if start > 0 else 1.0
            label.what += (
                f", then up to 3 rounds to the budget ({choice.budget.text}; ~{scale:.1f}x the "
                "start's passes in all, priced at its rate)"
            )
            label.lm_passes = int(round(label.lm_passes * scale))
            label.tokens = int(round(label.tokens * scale))
        if throughput is not None:
            passes_s = work.seconds(throughput, less_probe) * scale
            load = throughput.load_seconds if name == valuer.designs[0][0] else 0.0
            label.seconds = load + passes_s
            label.basis = f"LM load {load:.0f} s + passes {passes_s:,.0f} s"
    out_pairs = m * (n_cols if n_cols is not None else 1)
    estimator = choice.estimator
    est = StagePlan(
        f"estimate_{name}",
        f"{estimator} estimator on the labels"
        + (" (chosen among nncift.effects on held-out labelled items)" if estimator == "auto"
           else "")
        + f", predicting {out_pairs:,} {'pairs' if n_cols is not None else 'items'}",
        memory_bytes=4 * out_pairs,
        seconds=out_pairs / SCORE_PAIRS_PER_SECOND,
    )  # fmt: skip
    return [label, est]


def lm_probe_digest(fn: Any) -> str:
    from nncift import lm_probe

    return str(lm_probe._digest(lm_probe.less_settings_key(fn)))


def _less_builder(valuer: _PlanValuer) -> Callable[[Any], Any]:
    def build(lm: Any) -> Any:
        saved = valuer._lm
        valuer._lm = lm
        try:
            return valuer.function(valuer.target)
        finally:
            valuer._lm = saved

    return build


__all__ = [
    "Batch",
    "LMWork",
    "StagePlan",
    "ValuationPlan",
    "check_valuation",
    "delift_work",
    "less_work",
    "plan_valuation",
    "selectit_work",
]
