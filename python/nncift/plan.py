"""Plans for `nncift select --dry-run`: the stages a run would execute, with their costs.

The LM cost of DELIFT, LESS and SelectIT comes from the user's data and machine:

* the passes are laid out as the run lays them out (`nncift.lm_work`): the same labelled
  block (the run's own u-split), the same label tiles, the texts tokenised by the LM's
  tokenizer and cut by the influence function's own code, grouped into the same batches,
  DELIFT's example prefixes shared across their targets, LESS's warm-up, checkpoints and
  projection;
* each batch is priced with the `nncift.lm_probe` model of this machine (a short timed probe
  of the LM, cached per LM, dtype, device and thread count).

The plan also refuses what the run refuses: it runs the run's own checks (`Valuer.value` up to
the point where work would start, the influence function's constructor, the budget).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nncift.data import Items
from nncift.lm_work import (
    delift_pairs_work,
    delift_work,
    less_work,
    lm_probe_digest,
    selectit_work,
)
from nncift.valuation import (
    LM_METHODS,
    QUERY_ONLY_OBJECTIVES,
    TARGET_OBJECTIVES,
    Valuation,
    ValuationOptions,
    Valuer,
)

#: Network training throughput (pairs x epochs per second) on 2 CPU cores.
TRAIN_PAIRS_PER_SECOND = 2.0e5
#: Rust scorer throughput (pairs per second) on 2 CPU cores, benches/bench_scorer.py.
SCORE_PAIRS_PER_SECOND = 4.0e7


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
        if objective not in QUERY_ONLY_OBJECTIVES:
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

    def _throughput_for(self, fn: Any = None) -> Any:
        """The probe the plan prices with: probed (loading the LM) when not given or cached.
        fn: the run's influence function (LESS's probe is per its settings; built when None)."""
        from nncift import lm_probe
        from nncift.embed import default_cache_dir

        if self.throughput is None:
            less = None
            if self.opt.method == "less":
                fn = fn if fn is not None else self.function(self.target)
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
            if objective not in QUERY_ONLY_OBJECTIVES:
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
    if uses_lm:  # probed already if a time budget was priced during the checks
        valuer._throughput_for()
    throughput, probe_cached = valuer.throughput, valuer.probe_cached

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
                less_probe = (
                    throughput.less.get(lm_probe_digest(fn)) if throughput is not None else None
                )
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
    "StagePlan",
    "ValuationPlan",
    "check_valuation",
    "plan_valuation",
]
