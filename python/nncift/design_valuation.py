"""Valuing with a labelling design: label the design's pairs (or items), fit an estimator on
them, predict the rest.

`nncift.valuation.Valuer` runs the paper's path (first-u block, InfluenceNetwork) itself and
this one when a run asks for a design (`ValuationOptions.design` / `label_budget`) or an
estimator of `nncift.effects` (`ValuationOptions.estimator`):

1. the design (`nncift.designs`) within the label budget: `block` (the largest first-u
   block), `spread`, `landmark` (pairs), `random`, `diverse` (items), or `active`;
2. its labels, through the resumable store (`nncift.influence.store`, ``pairs=True``) into
   ``labels-<name>/`` of the run folder. `active` labels its start design and then up to
   `ACTIVE_ROUNDS` rounds, each in ``labels-<name>/round-<k>/`` and recorded in
   ``labels-<name>/rounds.json`` (its pairs saved before they are labelled): an interrupted
   run resumes the round it was in, and recomputes no finished tile or round;
3. the estimator: `auto` chooses among `nncift.effects.EFFECT_NAMES` on held-out labelled
   pool items (`choose_effects`), or one by name, or `network` (the InfluenceNetwork with
   `ValuationOptions.variant` on the labelled pairs);
4. every pair predicted, the labelled ones replaced by their labels.

What it did goes into the manifest: ``results.valuation.designs[<name>]`` (design, label
budget, pairs, items, LM cost: passes, tokens, seconds; rounds for active) and
``results.valuation.estimators[<name>]`` (chosen, criterion, held-out rank score, every
candidate's score).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nncift.designs import Design, LabelBudget
from nncift.errors import InputError
from nncift.io import file_lock, load_npy, save_npy_atomic, write_json_atomic

log = logging.getLogger(__name__)

#: Rounds of the active design after its start (as benchmarked in docs/valuation.md).
ACTIVE_ROUNDS = 3
#: The label budget of a design given without one (LM methods): the costs where the
#: benchmark compared designs (docs/valuation.md, "what nncift select uses").
DEFAULT_LABEL_BUDGET = "2%"
ROUNDS_FILE = "rounds.json"


@dataclass(frozen=True)
class DesignChoice:
    """A run's resolved labelling: design name, budget (None: the paper's u-block) and
    estimator ("network", "auto" or a name of `nncift.effects.EFFECT_NAMES`)."""

    design: str
    budget: LabelBudget | None
    estimator: str

    @property
    def paper(self) -> bool:
        """The paper's path: the first-u block and the InfluenceNetwork."""
        return self.design == "block" and self.budget is None and self.estimator == "network"

    @property
    def u_block(self) -> bool:
        return self.design == "block" and self.budget is None


def resolve_design(options: Any) -> DesignChoice:
    """`ValuationOptions` -> the design, budget and estimator the run uses.

    No --design and no --label-budget: the paper (first-u block, network). A budget without
    a design: the method's default design (`nncift.designs.DESIGNS_FOR`, first). A design
    other than block without a budget: `DEFAULT_LABEL_BUDGET` (delift-se, which costs no LM:
    as many pairs as the u-block). The estimator: `network` on the paper's u-block, else
    `auto`, unless given.
    """
    from nncift.designs import DESIGNS_FOR, check_design, check_time_budget, parse_label_budget

    method = options.method
    budget = None if options.label_budget is None else parse_label_budget(options.label_budget)
    if budget is not None:
        check_time_budget(budget, method)
    design = options.design
    if design is None:
        design = "block" if budget is None else DESIGNS_FOR[method][0]
    check_design(design, method)
    if budget is None and design != "block":
        if method == "delift-se":
            budget = parse_label_budget(str(_u_block_pairs(options)))
        else:
            budget = parse_label_budget(DEFAULT_LABEL_BUDGET)
    estimator = options.estimator
    if estimator is None:
        estimator = "network" if (design == "block" and budget is None) else "auto"
    _check_estimator(estimator, method)
    return DesignChoice(design, budget, estimator)


#: What `nncift select --method M` uses when none of --u, --network, --design,
#: --label-budget, --estimator is given: (design, label budget, estimator), from the
#: benchmark (docs/valuation.md, "what nncift select uses"). None: the paper (first-u block
#: with u = 0.05, InfluenceNetwork). delift: the largest first-u block within 2% of the full
#: matrix's LM cost, with the auto estimator (and RDS+ features, DEFAULT_FEATURES_FOR): as
#: `nncift select` runs it (auto), within-target Spearman at 2% was 0.169 / 0.139 on the
#: chatterbot / mixed matrices, against 0.183 / 0.092 for active + MiniLM, 0.216 / 0.073 for
#: active + RDS+, 0.111 / 0.095 for block + MiniLM (benches/valuation_auto.py): the best mean
#: and the best worst case;
#: less and selectit: the u-block (about 5% of their per-item LM cost, the cost where
#: anything was learnable) with the auto estimator (the network ranked no better);
#: delift-se: not benchmarked (its labels cost no LM), the paper.
DEFAULT_FOR: dict[str, tuple[str, str | None, str] | None] = {
    "delift": ("block", DEFAULT_LABEL_BUDGET, "auto"),
    "delift-se": None,
    "less": ("block", None, "auto"),
    "selectit": ("block", None, "auto"),
}


#: What the estimators read (`--features`) when `nncift select --method M` runs its benchmarked
#: default (DEFAULT_FOR) and --features is not given; the paper's path reads MiniLM (its
#: embeddings), whatever this says. From docs/valuation.md ("What nncift select uses").
#: delift: with the block at 2% and auto, RDS+ features raised within-target Spearman on both
#: real matrices (chatterbot 0.111 -> 0.169, mixed 0.095 -> 0.139) for one LM forward per item;
#: less / selectit: no difference beyond the seeds' spread, so the cheaper MiniLM.
DEFAULT_FEATURES_FOR: dict[str, str] = {
    "delift": "lm",
    "delift-se": "minilm",
    "less": "minilm",
    "selectit": "minilm",
}


def _u_block_pairs(options: Any) -> int:
    # The pairs of a 20 x 20 block: a modest default for delift-se, whose labels cost no LM.
    return 400


def _check_estimator(name: str, method: str) -> None:
    from nncift.effects import EFFECT_NAMES, POINTWISE_EFFECT_NAMES

    names = POINTWISE_EFFECT_NAMES if method == "selectit" else EFFECT_NAMES
    if name not in ("auto", "network", *names):
        raise InputError(
            f"estimator {name!r} does not fit --method {method}; choose from auto, network, "
            f"{', '.join(names)}"
        )


class DesignStages:
    """The design path of `nncift.valuation.Valuer` (mixed into it; uses its run folder,
    manifest, features and `_labels`-style labelling)."""

    # Provided by Valuer.
    pool: Any
    opt: Any
    run_dir: Path
    manifest: Any
    pool_x: np.ndarray
    target_x: np.ndarray | None
    ray: Any
    progress: bool
    #: Influence functions built for design labelling, by id of their targets, and DELIFT's
    #: token lengths, by the same key (set by Valuer).
    _design_functions: dict[int, Any]
    _lengths_cache: dict[int, Any]
    #: Time budgets priced into shares (`_time_budget_as_share`), by the same key.
    _priced_budgets: dict[int, Any]

    # The paper path's stages, defined by Valuer.
    def _label_function(self, targets: Any, target_emb: Any) -> Any:
        raise NotImplementedError

    def _spec(self) -> Any:
        raise NotImplementedError

    def _rows_cols(
        self, n_rows: int, n_cols: int | None, *, square: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def _labels(
        self, name: str, targets: Any, rows: np.ndarray, cols: np.ndarray | None
    ) -> np.ndarray:
        raise NotImplementedError

    def _network(self, name: str, labels: Any, rows: Any, cols: Any, square: bool) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ labelling

    def _label_pairs(
        self, out: Path, targets: tuple[Any, Any], design: Design, rec: dict[str, Any]
    ) -> np.ndarray:
        """Labels of the design's pairs (or items) into `out` (resumed / reused); counts and
        cost added to `rec`."""
        from nncift.labelling import label

        # One function per kernel for every design round: what it caches per target (DELIFT's
        # no-example pass) is paid once, as `design_cost` counts it.
        with contextlib.ExitStack() as stack:
            fn = self._function_for(targets, stack)
            result = label(
                self._spec(), self.pool, targets[0], out=out, rows=design.rows,
                cols=design.cols, pairs=design.cols is not None,
                device=self.opt.device or "auto", ray=self.ray, progress=self.progress,
                manifest=self.manifest, function=fn,
                description=f"labelling {out.name} with {self.opt.method}",
            )  # fmt: skip
        run = result.run
        if not run.complete or run.values is None:
            raise InputError(f"labelling {out} stopped before the end; rerun to resume")
        rec["reused_tiles"] = rec.get("reused_tiles", 0) + run.reused
        rec["computed_tiles"] = rec.get("computed_tiles", 0) + run.computed
        cost = rec.get("_cost")
        rec["_cost"] = run.cost if cost is None else cost + run.cost
        total = rec.get("_cost_total")
        rec["_cost_total"] = run.cost_total if total is None else total + run.cost_total
        if result.ray is not None:
            rec.setdefault("ray", []).append(result.ray)
        return np.asarray(run.values, dtype=np.float64).reshape(-1)

    def _design_labels(
        self,
        name: str,
        targets: tuple[Any, Any],
        n_cols: int | None,
        square: bool,
        choice: DesignChoice,
    ) -> tuple[Design, np.ndarray, dict[str, Any]]:
        """(design, its labels in design order, the design's manifest record)."""
        from nncift.designs import make_design

        m = len(self.pool)
        folder = self.run_dir / f"labels-{name}"
        choice, priced = self._time_budget_as_share(choice, targets, n_cols)
        if choice.u_block:
            # The paper's block, labelled exactly as the paper's path labels it (same folder).
            rows, cols = self._rows_cols(m, n_cols, square=square)
            block = self._labels(name, targets, rows, cols)
            design = _block_design(rows, cols, m, n_cols)
            rec = self.manifest.stages[f"label_{name}"]
            rec.update(_cost=rec["cost"], _cost_total=rec["cost_total"], design="block")
            record = self._design_record(design, choice, rec, targets)
            rec.update(record)
            return design, block.reshape(-1).astype(np.float64), record
        with self.manifest.stage(f"label_{name}") as rec:
            rec["design"] = choice.design
            if choice.design == "active":
                assert choice.budget is not None
                design, values = self._active(folder, targets, m, n_cols, choice.budget, rec)
            else:
                assert choice.budget is not None
                design = make_design(
                    choice.design, method=self.opt.method, n_rows=m, n_cols=n_cols,
                    budget=choice.budget, seed=self.opt.seed, features=self.pool_x,
                    square=square, lengths=self._cost_lengths(targets, choice.budget),
                )  # fmt: skip
                values = self._label_pairs(folder, targets, design, rec)
            record = self._design_record(design, choice, rec, targets)
            if priced is not None:
                record["label_budget"]["priced"] = priced
            rec.update(record)
        return design, values, record

    def _design_record(
        self, design: Design, choice: DesignChoice, rec: dict[str, Any], targets: tuple[Any, Any]
    ) -> dict[str, Any]:
        from nncift.designs import budget_cost

        cost, total = rec.pop("_cost", None), rec.pop("_cost_total", None)
        out: dict[str, Any] = {
            "design": choice.design,
            "label_budget": _budget_record(choice.budget, pointwise=design.cols is None),
            "u": self.opt.u if choice.u_block else design.info.get("u"),
            "pairs": len(design) if design.cols is not None else None,
            "items": int(design.labelled_rows().size),
            "targets": None if design.cols is None else int(design.labelled_cols().size),
            "info": {k: v for k, v in design.info.items() if isinstance(v, int | float | str)},
            "lm_cost": None if total is None else _lm_cost(total),
            "lm_cost_this_run": None if cost is None else _lm_cost(cost),
        }
        if choice.budget is not None:
            lengths = self._lengths_cache.get(id(targets[0]))
            try:
                used = budget_cost(
                    choice.budget, self.opt.method, design.n_rows, design.n_cols, lengths
                )(design)
                out["budget_used"] = used
                out["budget_counted_in"] = choice.budget.unit + (
                    " of LM tokens" if lengths is not None
                    else (" of LM passes" if choice.budget.unit == "share" else "")
                )  # fmt: skip
            except InputError:
                pass
        if "rounds" in rec:
            out["rounds"] = rec["rounds"]
        return out

    def _active(
        self,
        folder: Path,
        targets: tuple[Any, Any],
        m: int,
        n_cols: int | None,
        budget: LabelBudget,
        rec: dict[str, Any],
    ) -> tuple[Design, np.ndarray]:
        """The active design, resumably: round k's pairs are saved and recorded in
        `rounds.json` before they are labelled in `round-<k>/`."""
        from nncift.designs import active_round, budget_cost, initial_active

        folder.mkdir(parents=True, exist_ok=True)
        lengths = self._cost_lengths(targets, budget)
        cost = budget_cost(budget, self.opt.method, m, n_cols, lengths)
        amount = budget.amount
        record_path = folder / ROUNDS_FILE
        with file_lock(folder / ".rounds.lock"):
            rounds = _read_rounds(record_path)
        design: Design | None = None
        values = np.zeros(0)
        rounds_rec: list[dict[str, Any]] = []
        for k in range(ACTIVE_ROUNDS + 1):
            sub = folder / f"round-{k}"
            if k < len(rounds["rounds"]):
                new = _load_round(sub, m, n_cols)
                resumed = True
            elif rounds["finished"]:
                break
            else:
                if design is None:
                    new = initial_active(
                        method=self.opt.method, n_rows=m, n_cols=n_cols, budget=budget,
                        seed=self.opt.seed, features=self.pool_x, lengths=lengths,
                    )  # fmt: skip
                else:
                    rng = np.random.default_rng([self.opt.seed, k])
                    fit = self._bootstrap_fit(m, n_cols, targets)
                    found = active_round(
                        design, values, budget=amount, cost=cost, fit=fit, round_index=k - 1,
                        rounds=ACTIVE_ROUNDS, rng=rng,
                    )  # fmt: skip
                    if found is None:
                        with file_lock(folder / ".rounds.lock"):
                            rounds = _read_rounds(record_path)
                            rounds["finished"] = True
                            write_json_atomic(record_path, rounds)
                        break
                    new = found
                _save_round(sub, new)
                with file_lock(folder / ".rounds.lock"):
                    rounds = _read_rounds(record_path)
                    if len(rounds["rounds"]) == k:
                        rounds["rounds"].append({"round": k, "labels": len(new)})
                        write_json_atomic(record_path, rounds)
                resumed = False
            before = (rec.get("computed_tiles", 0), rec.get("reused_tiles", 0))
            new_vals = self._label_pairs(sub, targets, new, rec)
            rounds_rec.append({
                "round": k, "labels": len(new), "resumed": resumed,
                "computed_tiles": rec.get("computed_tiles", 0) - before[0],
                "reused_tiles": rec.get("reused_tiles", 0) - before[1],
            })  # fmt: skip
            design = new if design is None else design.union(new, name="active")
            values = np.concatenate([values, new_vals])
        assert design is not None
        rec["rounds"] = rounds_rec
        info = {**design.info, "rounds": len(rounds_rec) - 1}
        return Design("active", design.rows, design.cols, m, n_cols, info), values

    def _time_budget_as_share(
        self, choice: DesignChoice, targets: tuple[Any, Any], n_cols: int | None
    ) -> tuple[DesignChoice, dict[str, Any] | None]:
        """A budget in LM seconds -> the share of the full matrix's LM cost it buys on this
        machine (`nncift.lm_work.seconds_to_share`, priced with the run's own function and the
        cached LM probe, probing the loaded LM once when nothing is cached), with the record
        of the conversion; other budgets unchanged."""
        from nncift.lm_work import seconds_to_share

        budget = choice.budget
        if budget is None or budget.unit != "seconds":
            return choice, None
        key = id(targets[0])
        done = self._priced_budgets.get(key)
        if done is None:
            if self.ray is not None:
                raise InputError(
                    f"--label-budget {budget.text!r}: LM time is priced with this machine's LM "
                    "probe, not the Ray workers'; with --ray give a share (e.g. 2%) instead"
                )
            with contextlib.ExitStack() as stack:
                fn = self._function_for(targets, stack)
                throughput = self._throughput_for(fn)
                m = len(self.pool)
                done = seconds_to_share(budget, fn, self.opt.method, m, n_cols, throughput)
            self._priced_budgets[key] = done
        share, record = done
        return replace(choice, budget=share), record

    def _throughput_for(self, fn: Any) -> Any:
        """The LM probe of this machine (`nncift.lm_probe`, cached), probing the run's loaded
        LM when nothing is cached."""
        from nncift import lm_probe

        lm = fn.lm if hasattr(fn, "lm") else fn.lms[0]
        less = None
        if self.opt.method == "less":
            less = (lm_probe.less_settings_key(fn), lambda _lm: fn)
        throughput, _, _ = lm_probe.get_throughput(
            self.run_dir.parents[1], lm=self.opt.lm, device=self.opt.device,
            dtype=self.opt.dtype, max_length=self.opt.max_length, less=less, model=lm,
        )  # fmt: skip
        return throughput

    def _function_for(self, targets: tuple[Any, Any], stack: contextlib.ExitStack) -> Any:
        """The influence function of this kernel, built once for every design round (None
        with Ray: the workers hold it)."""
        key = id(targets[0])
        fn = self._design_functions.get(key)
        if fn is None:
            fn = stack.enter_context(self._label_function(*targets))
            if fn is not None:
                self._design_functions[key] = fn
        return fn

    def _cost_lengths(self, targets: tuple[Any, Any], budget: LabelBudget) -> Any:
        """DELIFT's token lengths (`nncift.designs.Lengths`) for a share of the LM cost
        counted in tokens, from the run's own function (its tokenizer and cuts); None for
        other methods and units, and with Ray (passes are counted then)."""
        key = id(targets[0])
        if key in self._lengths_cache:
            return self._lengths_cache[key]
        lengths = None
        if self.opt.method == "delift" and budget.unit == "share":
            with contextlib.ExitStack() as stack:
                fn = self._function_for(targets, stack)
                if fn is not None and hasattr(fn, "_example"):
                    lengths = _delift_lengths(fn)
        self._lengths_cache[key] = lengths
        return lengths

    def _bootstrap_fit(self, m: int, n_cols: int | None, targets: tuple[Any, Any]) -> Any:
        """The active rounds' fit: additive effects on a bootstrap resample (as benchmarked)."""
        from nncift.effects import AdditiveEffects

        row_x, col_x = self._features_for(n_cols, targets)

        def fit(d: Design, vals: np.ndarray, rng: np.random.Generator | None) -> Any:
            idx = np.arange(len(d)) if rng is None else rng.integers(0, len(d), len(d))
            est = AdditiveEffects(alpha=2.0 if d.cols is not None else 0.1)
            return est.fit(d.rows[idx], None if d.cols is None else d.cols[idx], vals[idx],
                           n_rows=m, n_cols=n_cols, row_features=row_x,
                           col_features=col_x)  # fmt: skip

        return fit

    def _features_for(
        self, n_cols: int | None, targets: tuple[Any, Any]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(row features, column features) the estimators read: the pool's, and the
        targets' (pool x pool kernel: the pool's again; items: None)."""
        if n_cols is None:
            return self.pool_x, None
        if targets[0] is None:
            return self.pool_x, self.pool_x
        return self.pool_x, self.target_x

    # ------------------------------------------------------------------ estimating

    def _design_values(
        self,
        name: str,
        targets: tuple[Any, Any],
        n_cols: int | None,
        square: bool,
        choice: DesignChoice,
    ) -> tuple[np.ndarray, dict[str, int], dict[str, Any], dict[str, Any], float, float]:
        """Label the design, fit the estimator, predict every pair (or item).

        Returns (values (M, N) or (M,) float32 with the labels in place, counts of true and
        predicted entries, the design record, the estimator record, label min, label max).
        """
        from nncift.effects import (
            EFFECT_NAMES,
            POINTWISE_EFFECT_NAMES,
            choose_effects,
            fit_effects,
            kernel_too_big,
            predict_all,
        )

        m = len(self.pool)
        design, labels, drec = self._design_labels(name, targets, n_cols, square, choice)
        if np.ptp(labels) == 0 and choice.estimator != "constant":
            log.warning("every label of %s has one value; the estimate ranks nothing", name)
        row_x, col_x = self._features_for(n_cols, targets)
        with self.manifest.stage(f"estimate_{name}") as rec:
            est_name = choice.estimator
            erec: dict[str, Any] = {"estimator": est_name}
            if est_name == "network":
                values = self._network_values(name, design, labels, n_cols, square, erec)
            else:
                if est_name == "auto":
                    names = POINTWISE_EFFECT_NAMES if n_cols is None else EFFECT_NAMES
                    found = choose_effects(
                        names, design.rows, design.cols, labels, n_rows=m, n_cols=n_cols,
                        row_features=row_x, col_features=col_x, seed=self.opt.seed,
                    )  # fmt: skip
                    erec.update(found.to_dict())
                    est_name = found.chosen
                erec["chosen"] = est_name
                too_big = kernel_too_big(est_name, len(design), m, n_cols)
                if too_big:
                    raise InputError(f"--estimator kernel: {too_big}; choose another estimator")
                est = fit_effects(
                    est_name, design.rows, design.cols, labels, n_rows=m, n_cols=n_cols,
                    row_features=row_x, col_features=col_x,
                )  # fmt: skip
                values = predict_all(est, m, n_cols)
            if est_name == "constant" or (erec.get("rank_score") is not None
                                          and erec["rank_score"] <= 0):  # fmt: skip
                erec["no_signal"] = True
            if design.cols is None:
                values[design.rows] = labels.astype(np.float32)
                total = m
            else:
                values[design.rows, design.cols] = labels.astype(np.float32)
                total = m * int(n_cols or 0)
            counts = {"true_labels": len(design), "predicted": int(total - len(design))}
            rec.update(erec, **counts)
        return values, counts, drec, erec, float(labels.min()), float(labels.max())

    def _network_values(
        self, name: str, design: Design, labels: np.ndarray, n_cols: int | None,
        square: bool, erec: dict[str, Any],
    ) -> np.ndarray:  # fmt: skip
        """The InfluenceNetwork (`ValuationOptions.variant`) on the design's labels,
        predicting every pair (or item) with the Rust scorer."""
        from nncift.labels import PairLabels
        from nncift.scorer import PairwiseScorer

        cols = design.cols if design.cols is not None else np.full(len(design), -1, np.int64)
        lab = PairLabels(design.rows.astype(np.int64), cols.astype(np.int64), labels)
        path = self._network(name, lab, None, None, square)
        train = self.manifest.stages.get(f"train_{name}", {})
        erec.update(chosen=f"network:{train.get('variant')}", rank_score=train.get("val_rank"),
                    candidates=train.get("candidates_rank"), criterion=train.get("criterion"))  # fmt: skip
        scorer = PairwiseScorer.load(path)
        if n_cols is None:
            return np.array(scorer.pointwise(self.pool_x), dtype=np.float32)
        col_x = self.pool_x if square else self.target_x
        return np.array(scorer.score(self.pool_x, col_x), dtype=np.float32)


def _budget_record(budget: LabelBudget | None, pointwise: bool) -> dict[str, Any] | None:
    """The budget as recorded; a count of pairs is a count of items for pointwise labels."""
    if budget is None:
        return None
    rec = budget.to_dict()
    if pointwise and rec["unit"] == "pairs":
        rec["unit"] = "items"
    return rec


def _delift_lengths(fn: Any) -> Any:
    """Token lengths of every pool example prefix and target as `Delift` runs them: the
    example prefix (header + example + tail), the target's suffix after it (prompt +
    response) and its no-example sequence (0 for an empty response: no pass)."""
    from nncift.designs import Lengths

    example = []
    for i in range(len(fn.pool)):
        ex, _ = fn._example(i)
        example.append(len(fn._h1) + len(ex) + len(fn._tail))
    query, no_example = [], []
    for t in range(len(fn.targets)):
        q = fn._query(t)
        live = bool(q["resp"])
        query.append(len(q["q1"]) + len(q["resp"]) if live else 0)
        no_example.append(len(fn._h0) + len(q["q0"]) + len(q["resp"]) if live else 0)
    return Lengths(example=np.asarray(example, np.int64), query=np.asarray(query, np.int64),
                   no_example=np.asarray(no_example, np.int64))  # fmt: skip


def _block_design(rows: np.ndarray, cols: np.ndarray | None, m: int, n: int | None) -> Design:
    if cols is None:
        return Design("block", rows.astype(np.int64), None, m, None)
    return Design("block", np.repeat(rows, cols.size).astype(np.int64),
                  np.tile(cols, rows.size).astype(np.int64), m, n)  # fmt: skip


def _lm_cost(cost: Any) -> dict[str, Any]:
    d = cost if isinstance(cost, dict) else cost.to_dict()
    return {"passes": d["lm_passes"], "backward_passes": d["backward_passes"],
            "tokens": d["tokens"], "seconds": d["seconds"]}  # fmt: skip


def _read_rounds(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"rounds": [], "finished": False}
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path}: unreadable rounds record ({exc}); delete the folder") from exc
    return data


def _save_round(sub: Path, d: Design) -> None:
    """The round's pairs, `round-<k>/round-<k>-rows.npy` (and `-cols.npy`)."""
    sub.mkdir(parents=True, exist_ok=True)
    save_npy_atomic(sub / f"{sub.name}-rows.npy", d.rows.astype(np.int64))
    if d.cols is not None:
        save_npy_atomic(sub / f"{sub.name}-cols.npy", d.cols.astype(np.int64))


def _load_round(sub: Path, m: int, n_cols: int | None) -> Design:
    rows = load_npy(sub / f"{sub.name}-rows.npy")
    cols = load_npy(sub / f"{sub.name}-cols.npy") if n_cols is not None else None
    return Design("add", np.asarray(rows, np.int64),
                  None if cols is None else np.asarray(cols, np.int64), m, n_cols)  # fmt: skip


__all__ = [
    "ACTIVE_ROUNDS",
    "DEFAULT_FEATURES_FOR",
    "DEFAULT_FOR",
    "DEFAULT_LABEL_BUDGET",
    "DesignChoice",
    "DesignStages",
    "resolve_design",
]
