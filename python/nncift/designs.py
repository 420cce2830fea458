"""Labelling designs: which (pool item, target) pairs, or which items, to label for a given
LM cost.

The paper labels the first-u block (`block`): no item outside it has a single label, so
per-item effects, most of what is learnable cheaply (docs/valuation.md), can only come from
embeddings. `spread` gives every pool item a few labels; `landmark` is a spread over a chosen
subset of pool items (Influence Distillation's landmarks) when the budget cannot cover all of
them; `active` labels in rounds where a fitted estimator is least certain about the items the
selection would pick. Pointwise methods choose items: `random_items`, `diverse_items`
(k-centre on embeddings), `active_items`.

Designs are compared at equal LM cost, not equal pair counts: `design_cost` counts the LM
passes and tokens a design takes, the way `nncift.influence` runs them (DELIFT: one
no-example pass per target used, one example-prefix pass per pool item shared by its targets,
one suffix pass per pair; LESS: gradients per item, not per pair; SelectIT: prompts x LMs per
item). Everything here is a pure function of its arguments and a seed.

    cost = lambda d: design_cost(d, "delift", lengths=lengths).tokens
    d = spread_for_budget(140, 70, budget=5000, cost=cost, seed=0)
    d.rows, d.cols  # (n,) int64 pairs to label
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nncift.errors import InputError

#: Methods whose labels are pairs (pool item, target) and those that label items.
PAIRWISE_METHODS = ("delift", "delift-se", "less")
POINTWISE_METHODS = ("selectit", "less-mean")
PAIRWISE_DESIGNS = ("block", "spread", "landmark", "active")
POINTWISE_DESIGNS = ("random", "diverse", "active")


@dataclass(frozen=True)
class Design:
    """Pairs (rows[k], cols[k]) to label, or items rows[k] (cols None).

    name: the design's name. rows / cols: (n,) int64 pool / target indices. n_rows /
    n_cols: sizes of the full pool and target set (n_cols None: pointwise). info: the
    design's parameters (u, per_row, ...).
    """

    name: str
    rows: np.ndarray
    cols: np.ndarray | None
    n_rows: int
    n_cols: int | None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rows.size)

    @property
    def pointwise(self) -> bool:
        return self.cols is None

    def labelled_rows(self) -> np.ndarray:
        """Distinct pool items with at least one label, sorted."""
        return np.unique(self.rows)

    def labelled_cols(self) -> np.ndarray:
        """Distinct targets with at least one label, sorted (empty when pointwise)."""
        return np.unique(self.cols) if self.cols is not None else np.zeros(0, np.int64)

    def union(self, other: Design, name: str | None = None) -> Design:
        """This design plus `other`'s pairs not already in it (order kept)."""
        if (self.cols is None) != (other.cols is None):
            raise InputError("cannot join a pairwise and a pointwise design")
        if self.cols is None:
            rows = _unique_keep_order(np.concatenate([self.rows, other.rows]))
            return Design(name or self.name, rows, None, self.n_rows, None, dict(self.info))
        assert other.cols is not None and self.n_cols is not None
        key = np.concatenate([self.rows, other.rows]) * self.n_cols + np.concatenate(
            [self.cols, other.cols]
        )
        key = _unique_keep_order(key)
        return Design(
            name or self.name, key // self.n_cols, key % self.n_cols, self.n_rows,
            self.n_cols, dict(self.info),
        )  # fmt: skip


def _unique_keep_order(a: np.ndarray) -> np.ndarray:
    _, first = np.unique(a, return_index=True)
    return np.asarray(a[np.sort(first)], dtype=np.int64)


# ------------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class Lengths:
    """Token lengths that price a design (all int64; any may be None to count passes only).

    DELIFT: example (M,) tokens of a pool item's example prefix (header + example + tail);
    query (N,) tokens of a target's suffix after the prefix (prompt + response);
    no_example (N,) tokens of a target's no-example sequence. LESS / SelectIT: item (M,)
    and target (N,) tokens of an item's sequence (SelectIT: one prompt's sequence).
    """

    example: np.ndarray | None = None
    query: np.ndarray | None = None
    no_example: np.ndarray | None = None
    item: np.ndarray | None = None
    target: np.ndarray | None = None


@dataclass(frozen=True)
class LMCost:
    """LM passes and tokens of a design. fixed_passes / fixed_tokens: what any design of the
    method pays once whatever it labels (LESS's warm-up training); included in passes /
    tokens. tokens is None when no lengths were given."""

    passes: int
    tokens: int | None
    fixed_passes: int = 0
    fixed_tokens: int | None = 0

    @property
    def variable_passes(self) -> int:
        return self.passes - self.fixed_passes

    @property
    def variable_tokens(self) -> int | None:
        if self.tokens is None:
            return None
        return self.tokens - int(self.fixed_tokens or 0)


def design_cost(
    design: Design,
    method: str,
    *,
    lengths: Lengths | None = None,
    kv_reuse: bool = True,
    checkpoints: int = 2,
    warmup_passes: int = 0,
    warmup_tokens: int = 0,
    passes_per_item: int = 5,
) -> LMCost:
    """The LM passes (and tokens, given `lengths`) that labelling `design` takes.

    delift: one no-example pass per distinct target; per distinct pool item, one prefix pass
    shared by its targets when it has more than one and `kv_reuse` (its tokens are then
    paid once), else the prefix is part of each pair's sequence; one pass per pair.
    delift-se: no LM (0). less (pairs): gradients of every distinct pool item and target at
    each of `checkpoints`, plus the warm-up (`warmup_passes` / `warmup_tokens`, fixed).
    less-mean / selectit (items): `checkpoints` (LESS) or `passes_per_item` (SelectIT:
    prompts x LMs) passes per item.
    """
    lengths = lengths or Lengths()
    if method == "delift-se":
        return LMCost(0, 0)
    if method == "delift":
        if design.cols is None:
            raise InputError("DELIFT labels pairs; a pointwise design does not fit it")
        return _delift_cost(design, lengths, kv_reuse)
    if method == "less":
        if design.cols is None:
            raise InputError("LESS pairs need a pairwise design; use less-mean for items")
        rows, cols = design.labelled_rows(), design.labelled_cols()
        passes = (rows.size + cols.size) * checkpoints + warmup_passes
        tokens = None
        if lengths.item is not None and lengths.target is not None:
            per = int(lengths.item[rows].sum()) + int(lengths.target[cols].sum())
            tokens = per * checkpoints + warmup_tokens
        return LMCost(int(passes), tokens, warmup_passes, warmup_tokens)
    if method in ("selectit", "less-mean"):
        per = passes_per_item if method == "selectit" else checkpoints
        items = np.unique(design.rows)
        tokens = None if lengths.item is None else int(lengths.item[items].sum()) * per
        fixed = warmup_passes if method == "less-mean" else 0
        fixed_t = warmup_tokens if method == "less-mean" else 0
        return LMCost(
            int(items.size * per + fixed), None if tokens is None else tokens + fixed_t,
            fixed, fixed_t,
        )  # fmt: skip
    raise InputError(
        f"unknown method {method!r} for design_cost; choose from "
        f"{', '.join(PAIRWISE_METHODS + POINTWISE_METHODS)}"
    )


def _delift_cost(design: Design, lengths: Lengths, kv_reuse: bool) -> LMCost:
    assert design.cols is not None
    rows, cols = design.rows, design.cols
    used_cols = np.unique(cols)
    row_ids, per_row = np.unique(rows, return_counts=True)
    shared = row_ids[per_row > 1] if kv_reuse else np.zeros(0, np.int64)
    passes = used_cols.size + shared.size + rows.size
    tokens = None
    if lengths.example is not None and lengths.query is not None and lengths.no_example is not None:
        ex = lengths.example
        is_shared = np.zeros(design.n_rows, dtype=bool)
        is_shared[shared] = True
        pair_tokens = lengths.query[cols] + np.where(is_shared[rows], 0, ex[rows])
        tokens = int(lengths.no_example[used_cols].sum() + ex[shared].sum() + pair_tokens.sum())
    return LMCost(int(passes), tokens)


def full_design(n_rows: int, n_cols: int | None) -> Design:
    """Every pair (or item): the exact matrix, whose cost the budgets are fractions of."""
    if n_cols is None:
        return Design("full", np.arange(n_rows, dtype=np.int64), None, n_rows, None)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), n_cols)
    cols = np.tile(np.arange(n_cols, dtype=np.int64), n_rows)
    return Design("full", rows, cols, n_rows, n_cols)


# ----------------------------------------------------------------------- pairwise designs

CostFn = Callable[[Design], float]


def block(n_rows: int, n_cols: int, *, u: float, seed: int = 0) -> Design:
    """The paper's first-u block of the seeded shuffle (`nncift.labelling.labelled_block`),
    as pairs (row-major over the block)."""
    from nncift.labelling import labelled_block

    r, c = labelled_block(n_rows, n_cols, u=u, seed=seed)
    assert c is not None
    rows, cols = np.repeat(r, c.size), np.tile(c, r.size)
    info = {"u": float(u), "block_rows": int(r.size), "block_cols": int(c.size)}
    return Design("block", rows, cols, n_rows, n_cols, info)


def block_for_budget(
    n_rows: int, n_cols: int, *, budget: float, cost: CostFn, seed: int = 0
) -> Design:
    """The largest first-u block whose cost is within `budget` (u = block rows / n_rows).

    Raises InputError naming the cost of the smallest block when even that does not fit.
    """
    best = None
    for a in range(1, n_rows + 1):
        d = block(n_rows, n_cols, u=a / n_rows, seed=seed)
        if cost(d) > budget:
            if best is None:
                raise InputError(
                    f"label budget {budget:g} is below the smallest block's cost {cost(d):g} "
                    f"({len(d)} pair(s)); raise the budget to at least {cost(d):g}"
                )
            break
        best = d
    assert best is not None
    return best


def spread(
    n_rows: int,
    n_cols: int,
    *,
    per_row: int,
    seed: int = 0,
    rows: np.ndarray | None = None,
    cols: np.ndarray | None = None,
    name: str = "spread",
) -> Design:
    """A balanced incidence design: each of `rows` (default: every pool item) gets `per_row`
    distinct targets from `cols` (default: every target), and every target of `cols` gets
    floor or ceil of per_row * len(rows) / len(cols) items (exactly that when it divides).

    Rows and targets are shuffled with `seed`; row a of the shuffle takes targets
    a * per_row .. a * per_row + per_row - 1 (mod len(cols)) of the targets' shuffle, so the
    targets are used cyclically and no target is used twice by one row.
    """
    rng = np.random.default_rng(seed)
    r = np.arange(n_rows, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    c = np.arange(n_cols, dtype=np.int64) if cols is None else np.asarray(cols, np.int64)
    if not 1 <= per_row <= c.size:
        raise InputError(f"per_row must be in 1..{c.size} (targets used), got {per_row}")
    r, c = rng.permutation(r), rng.permutation(c)
    slot = np.arange(r.size)[:, None] * per_row + np.arange(per_row)[None, :]  # (m, per_row)
    out_rows = np.repeat(r, per_row)
    out_cols = c[(slot % c.size).ravel()]
    info = {"per_row": int(per_row), "rows_used": int(r.size), "cols_used": int(c.size)}
    return Design(name, out_rows, out_cols, n_rows, n_cols, info)


def spread_for_budget(
    n_rows: int,
    n_cols: int,
    *,
    budget: float,
    cost: CostFn,
    seed: int = 0,
    max_per_row: int | None = None,
) -> Design:
    """The spread over every pool item with the most labels per item within `budget`.

    Targets used: all of them, or fewer when that buys more labels per item (fewer
    no-example passes); among designs with equal labels per item the one using more targets
    wins. Raises InputError naming the minimum (one label per pool item, on one target).
    """
    rng_cols = np.random.default_rng(seed + 1).permutation(n_cols)
    best: Design | None = None
    best_key: tuple[int, int] = (0, 0)
    cap = n_cols if max_per_row is None else min(n_cols, max_per_row)
    minimum = float("inf")
    for n_used in _target_counts(n_cols):
        cols = np.sort(rng_cols[:n_used])
        minimum = min(minimum, cost(spread(n_rows, n_cols, per_row=1, seed=seed, cols=cols)))
        lo, hi = 0, min(cap, n_used)
        while lo < hi:  # the largest per_row that fits with these targets
            mid = (lo + hi + 1) // 2
            if cost(spread(n_rows, n_cols, per_row=mid, seed=seed, cols=cols)) <= budget:
                lo = mid
            else:
                hi = mid - 1
        if lo and (lo, n_used) > best_key:
            best_key = (lo, n_used)
            best = spread(n_rows, n_cols, per_row=lo, seed=seed, cols=cols)
    if best is None:
        raise InputError(
            f"label budget {budget:g} is too small for the spread design: it labels every one "
            f"of the {n_rows} pool items at least once, which costs at least {minimum:g}; "
            "raise the budget or use the landmark or block design"
        )
    return best


def _target_counts(n_cols: int) -> list[int]:
    counts, n = [], n_cols
    while n >= 1:
        counts.append(n)
        n //= 2
    return counts


def landmark_for_budget(
    n_rows: int,
    n_cols: int,
    *,
    budget: float,
    cost: CostFn,
    per_row: int = 2,
    seed: int = 0,
    features: np.ndarray | None = None,
) -> Design:
    """A spread over as many pool items ("landmarks") as `budget` allows, `per_row` labels
    each, on every target. Landmarks are chosen by k-centre on `features` (diverse), else at
    random. Raises InputError naming the cost of one landmark."""
    order = (
        k_centre_order(features, n_rows, seed)
        if features is not None
        else np.random.default_rng(seed).permutation(n_rows)
    )
    per_row = min(per_row, n_cols)

    def make(m: int) -> Design:
        d = spread(n_rows, n_cols, per_row=per_row, seed=seed, rows=order[:m], name="landmark")
        return Design("landmark", d.rows, d.cols, n_rows, n_cols, d.info)

    if cost(make(1)) > budget:
        raise InputError(
            f"label budget {budget:g} is below one landmark's cost {cost(make(1)):g} "
            f"({per_row} label(s)); raise the budget to at least {cost(make(1)):g}"
        )
    lo, hi = 1, n_rows
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(make(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return make(lo)


# ----------------------------------------------------------------------- pointwise designs


def k_centre_order(features: np.ndarray, n: int | None = None, seed: int = 0) -> np.ndarray:
    """Items in greedy k-centre order on L2-normalised `features` (n, d): a seeded random
    first item, then each next item the farthest from those chosen. Ties go to the lowest
    index. Returns (n,) int64, a permutation of range(n)."""
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0] if n is None else n
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    first = int(np.random.default_rng(seed).integers(n))
    order = [first]
    dist = np.maximum(0.0, 2.0 - 2.0 * x @ x[first])
    dist[first] = -1.0
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        order.append(nxt)
        dist = np.minimum(dist, np.maximum(0.0, 2.0 - 2.0 * x @ x[nxt]))
        dist[order] = -1.0
    return np.asarray(order, dtype=np.int64)


def random_items(n_rows: int, k: int, *, seed: int = 0) -> Design:
    """k items of the pool drawn uniformly without replacement."""
    _check_k(n_rows, k)
    rows = np.random.default_rng(seed).permutation(n_rows)[:k].astype(np.int64)
    return Design("random", rows, None, n_rows, None, {"k": int(k)})


def diverse_items(features: np.ndarray, k: int, *, seed: int = 0) -> Design:
    """The first k items of the k-centre order on `features` (n, d)."""
    n = int(np.asarray(features).shape[0])
    _check_k(n, k)
    return Design("diverse", k_centre_order(features, n, seed)[:k], None, n, None, {"k": int(k)})


def _check_k(n: int, k: int) -> None:
    if not 1 <= k <= n:
        raise InputError(f"number of items to label must be in 1..{n}, got {k}")


def items_for_budget(budget: float, cost: CostFn, make: Callable[[int], Design], n: int) -> Design:
    """The largest `make(k)` (k = 1..n items) within `budget`; InputError naming one item's
    cost when even that does not fit."""
    if cost(make(1)) > budget:
        raise InputError(
            f"label budget {budget:g} is below the cost of labelling one item "
            f"({cost(make(1)):g}); raise the budget to at least {cost(make(1)):g}"
        )
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(make(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return make(lo)


# ------------------------------------------------------------------------- label budgets

#: Units of `--label-budget`: pairs labelled (items for pointwise methods), distinct pool
#: items labelled, a share of the full matrix's LM passes, or LM seconds on this machine
#: (`nncift select` turns seconds into the share they buy, `nncift.lm_work.seconds_to_share`).
BUDGET_UNITS = ("pairs", "items", "share", "seconds")
BUDGET_GRAMMAR = (
    "N (pairs labelled; items for selectit), Nitems (distinct pool items labelled), P% "
    "(a share of the LM passes of labelling every pair, 0 < P <= 100) or LM time on this "
    "machine as Ns, Nmin or Nh; e.g. 5000, 300items, 2%, 20min"
)
_TIME_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class LabelBudget:
    """A parsed `--label-budget`: `amount` in `unit` ("pairs", "items" or "share", the last
    a fraction in (0, 1]); `text` as the user wrote it."""

    amount: float
    unit: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "amount": self.amount, "unit": self.unit}


def parse_label_budget(text: str) -> LabelBudget:
    """`5000` -> pairs, `300items` (or `300 items`) -> items, `2%` -> share 0.02, `90s` /
    `20min` / `1.5h` -> seconds of LM time (priced into a share by the run).

    Anything else is refused, naming the grammar: a bare fraction like 0.02 could mean a
    share of the pairs, of the items or of the LM cost, so it is not accepted."""
    import re

    t = str(text).strip().lower().replace(" ", "")
    m = re.fullmatch(r"(\d+)(items?|pairs?)?", t)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise InputError(f"--label-budget {text!r}: must be at least 1")
        unit = "items" if (m.group(2) or "").startswith("item") else "pairs"
        return LabelBudget(float(n), unit, str(text))
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)%", t)
    if m:
        pct = float(m.group(1))
        if not 0 < pct <= 100:
            raise InputError(f"--label-budget {text!r}: a share must be in (0%, 100%]")
        return LabelBudget(pct / 100.0, "share", str(text))
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)(s|sec|min|h)", t)
    if m:
        seconds = float(m.group(1)) * _TIME_UNITS[m.group(2)]
        if seconds <= 0:
            raise InputError(f"--label-budget {text!r}: LM time must be positive")
        return LabelBudget(seconds, "seconds", str(text))
    raise InputError(f"--label-budget {text!r} is not understood; use {BUDGET_GRAMMAR}")


def check_time_budget(budget: LabelBudget, method: str) -> None:
    """Refuse LM time as the budget of a method that runs no LM."""
    if budget.unit == "seconds" and method not in ("delift", "less", "selectit"):
        raise InputError(
            f"--label-budget {budget.text!r}: {method} runs no LM, so LM time means nothing; "
            "give pairs (e.g. 5000) or items (e.g. 300items)"
        )


def budget_cost(
    budget: LabelBudget,
    method: str,
    n_rows: int,
    n_cols: int | None,
    lengths: Lengths | None = None,
) -> CostFn:
    """The cost function the budget is counted in, on an (n_rows, n_cols) matrix (n_cols
    None: items): pairs, distinct pool items, or the design's share of the full matrix's LM
    cost (`design_cost`): tokens for DELIFT given its `lengths` (an example prefix costs
    several pairs' tokens), else LM passes (LESS's fixed warm-up left out)."""
    if budget.unit == "seconds":
        raise InputError(
            f"--label-budget {budget.text!r}: LM time is turned into a share of the LM cost "
            "with the run's own LM (nncift select); here give a share (e.g. 2%), pairs or items"
        )
    if budget.unit == "pairs":
        return lambda d: float(len(d))
    if budget.unit == "items":
        return lambda d: float(d.labelled_rows().size)
    if method == "delift-se":
        raise InputError(
            "delift-se costs no LM passes (its labels are embedding cosines), so a share of "
            "the LM cost means nothing; give --label-budget in pairs (e.g. 5000) or items "
            "(e.g. 300items)"
        )
    cost_method = method if n_cols is not None or method != "less" else "less-mean"
    if method == "delift" and lengths is not None and lengths.example is not None:
        full_t = design_cost(full_design(n_rows, n_cols), "delift", lengths=lengths).tokens
        return lambda d: (
            float(design_cost(d, "delift", lengths=lengths).tokens or 0) / max(full_t or 0, 1)
        )
    full = design_cost(full_design(n_rows, n_cols), cost_method).variable_passes
    return lambda d: float(design_cost(d, cost_method).variable_passes) / max(full, 1)


def budget_amount(budget: LabelBudget) -> float:
    """The budget in the units of `budget_cost` (a share is a fraction of the full cost)."""
    return budget.amount


#: Per method: the designs that fit it (first: the default with --label-budget; see
#: docs/valuation.md, "what nncift select uses").
DESIGNS_FOR = {
    "delift": ("active", "spread", "landmark", "block"),
    "delift-se": ("block", "spread", "landmark", "active"),
    "less": ("block", "spread", "landmark", "active"),
    "selectit": ("random", "diverse", "active", "block"),
}


def check_design(design: str, method: str) -> None:
    """Refuse a design that does not fit the method, naming the ones that do."""
    fits = DESIGNS_FOR.get(method)
    if fits is None:
        raise InputError(f"--design applies to delift, delift-se, less and selectit, not {method}")
    if design not in fits:
        kind = "pool items (pointwise)" if method == "selectit" else "(pool item, target) pairs"
        raise InputError(
            f"design {design!r} does not fit --method {method}, which labels {kind}; "
            f"choose from {', '.join(fits)}"
        )


def make_design(
    design: str,
    *,
    method: str,
    n_rows: int,
    n_cols: int | None,
    budget: LabelBudget,
    seed: int = 0,
    features: np.ndarray | None = None,
    square: bool = False,
    lengths: Lengths | None = None,
) -> Design:
    """The non-active design `design` of `method` within `budget` on an (n_rows, n_cols)
    matrix (n_cols None: items). features: (n_rows, d) pool features for k-centre choices.
    square: a pool x pool kernel (the block labels the same items on both sides). lengths:
    DELIFT's token lengths, to count a share of the LM cost in tokens (`budget_cost`).

    Raises InputError when the design does not fit the method, or the budget is below the
    design's minimum (naming it)."""
    check_design(design, method)
    cost = budget_cost(budget, method, n_rows, n_cols, lengths)
    amount = budget_amount(budget)
    if n_cols is None:
        if design == "block" or design == "random":
            return items_for_budget(amount, cost, lambda k: random_items(n_rows, k, seed=seed),
                                    n_rows)  # fmt: skip
        if design == "diverse":
            if features is None:
                raise InputError("the diverse design needs item features")
            return items_for_budget(amount, cost, lambda k: diverse_items(features, k, seed=seed),
                                    n_rows)  # fmt: skip
        raise InputError(f"make_design does not build {design!r}; see active_round")
    if design == "block":
        if square:
            return _square_block_for_budget(n_rows, budget=amount, cost=cost, seed=seed)
        return block_for_budget(n_rows, n_cols, budget=amount, cost=cost, seed=seed)
    if design == "spread":
        return spread_for_budget(n_rows, n_cols, budget=amount, cost=cost, seed=seed)
    if design == "landmark":
        return landmark_for_budget(n_rows, n_cols, budget=amount, cost=cost, per_row=2,
                                   seed=seed, features=features)  # fmt: skip
    raise InputError(f"make_design does not build {design!r}; see active_round")


def _square_block_for_budget(n: int, *, budget: float, cost: CostFn, seed: int) -> Design:
    """The largest first-u block of a pool x pool kernel (same items on both sides)."""
    from nncift.split import u_split

    best = None
    for a in range(1, n + 1):
        items = u_split(n, None, u=a / n, seed=seed).rows_in
        d = Design("block", np.repeat(items, items.size), np.tile(items, items.size), n, n,
                   {"u": a / n, "block_rows": int(items.size), "block_cols": int(items.size)})  # fmt: skip
        if cost(d) > budget:
            if best is None:
                raise InputError(
                    f"label budget {budget:g} is below the smallest block's cost {cost(d):g}; "
                    f"raise the budget to at least {cost(d):g}"
                )
            break
        best = d
    assert best is not None
    return best


def initial_active(
    *,
    method: str,
    n_rows: int,
    n_cols: int | None,
    budget: LabelBudget,
    seed: int = 0,
    features: np.ndarray | None = None,
    lengths: Lengths | None = None,
) -> Design:
    """The start of the active design: landmark-1 (pairwise; diverse landmarks when features
    are given) or diverse items (pointwise) at half the budget, as benchmarked."""
    check_design("active", method)
    cost = budget_cost(budget, method, n_rows, n_cols, lengths)
    half = budget_amount(budget) / 2
    if n_cols is None:
        if features is None:
            return items_for_budget(half, cost, lambda k: random_items(n_rows, k, seed=seed),
                                    n_rows)  # fmt: skip
        return items_for_budget(half, cost, lambda k: diverse_items(features, k, seed=seed),
                                n_rows)  # fmt: skip
    return landmark_for_budget(n_rows, n_cols, budget=half, cost=cost, per_row=1, seed=seed,
                               features=features)  # fmt: skip


# ------------------------------------------------------------------------------ active


def active(
    initial: Design,
    *,
    budget: float,
    cost: CostFn,
    label: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
    fit: Callable[[Design, np.ndarray, np.random.Generator | None], Any],
    select_fraction: float = 0.1,
    rounds: int = 3,
    n_boot: int = 8,
    seed: int = 0,
) -> tuple[Design, np.ndarray]:
    """Label `initial`, then in `rounds` rounds label more where it matters, until `budget`.

    label(rows, cols) -> (n,) values of those pairs (cols None: items). fit(design, values,
    rng) -> an estimator with `predict(rows, cols)`; with an rng it fits a bootstrap
    resample (the function resamples). Each round is `active_round`.

    Returns (design, values): the final design ("active") and its labels in design order.
    """
    rng = np.random.default_rng(seed)
    if cost(initial) > budget:
        raise InputError(
            f"label budget {budget:g} is below the initial design's cost {cost(initial):g}"
        )
    design = Design("active", initial.rows, initial.cols, initial.n_rows, initial.n_cols,
                    {**initial.info, "initial": initial.name})  # fmt: skip
    values = np.asarray(label(design.rows, design.cols), dtype=np.float64)
    for r in range(rounds):
        new = active_round(
            design, values, budget=budget, cost=cost, fit=fit, round_index=r, rounds=rounds,
            rng=rng, select_fraction=select_fraction, n_boot=n_boot,
        )  # fmt: skip
        if new is None:
            break
        new_vals = np.asarray(label(new.rows, new.cols), dtype=np.float64)
        design = design.union(new, name="active")
        values = np.concatenate([values, new_vals])
    return design, values


def active_round(
    design: Design,
    values: np.ndarray,
    *,
    budget: float,
    cost: CostFn,
    fit: Callable[[Design, np.ndarray, np.random.Generator | None], Any],
    round_index: int,
    rounds: int,
    rng: np.random.Generator,
    select_fraction: float = 0.1,
    n_boot: int = 8,
) -> Design | None:
    """The pairs (or items) round `round_index` of `rounds` adds to `design`, or None when
    the budget is spent or nothing fits.

    After `n_boot` bootstrap fits on (design, values), every pool item gets a score: the
    spread (std) of its predicted mean value, times 2 when its mean prediction is inside
    the top `select_fraction` (the items the selection would take, where an error changes
    the subset) or within one std of the threshold. The highest-scored items get one more
    label each (pairwise: a target already used, the least-labelled, not yet paired with
    it, so no new no-example pass), until the round's share of the budget left is spent.
    Pure: the caller labels the returned pairs (so a run can store a round before labelling
    it, and resume it).
    """
    spent = cost(design)
    left = budget - spent
    if left <= 0 or round_index >= rounds:
        return None
    round_budget = spent + left / (rounds - round_index)
    n = design.n_rows
    pairwise = design.cols is not None
    eval_cols = design.labelled_cols() if pairwise else None
    means = []
    for _ in range(n_boot):
        est = fit(design, values, np.random.default_rng(int(rng.integers(2**31))))
        means.append(_row_means(est, n, eval_cols))
    m = np.mean(means, axis=0)
    sd = np.std(means, axis=0)
    k = max(1, int(round(select_fraction * n)))
    thr = np.sort(m)[::-1][k - 1]
    weight = np.where((m >= thr) | (np.abs(m - thr) <= sd), 2.0, 1.0)
    order = np.lexsort((np.arange(n), -(sd * weight)))
    grown = design
    added: Design | None = None
    for i in order:
        new = _one_more(grown, int(i), eval_cols)
        if new is None:
            continue
        trial = grown.union(new, name="active")
        if cost(trial) > round_budget:
            continue
        grown = trial
        added = new if added is None else added.union(new, name="add")
    return added


def _row_means(est: Any, n: int, cols: np.ndarray | None) -> np.ndarray:
    rows = np.arange(n, dtype=np.int64)
    if cols is None:
        return np.asarray(est.predict(rows, None), dtype=np.float64)
    r = np.repeat(rows, cols.size)
    c = np.tile(cols, n)
    return np.asarray(est.predict(r, c), dtype=np.float64).reshape(n, cols.size).mean(axis=1)


def _one_more(design: Design, i: int, cols: np.ndarray | None) -> Design | None:
    """One more label for item i: pointwise, the item itself if unlabelled; pairwise, the
    least-used target of `cols` not yet paired with i."""
    if design.cols is None:
        if np.any(design.rows == i):
            return None
        return Design("add", np.array([i], np.int64), None, design.n_rows, None)
    assert cols is not None
    have = set(design.cols[design.rows == i].tolist())
    free = [int(c) for c in cols if int(c) not in have]
    if not free:
        return None
    counts = np.bincount(design.cols, minlength=design.n_cols or 0)
    j = min(free, key=lambda c: (counts[c], c))
    return Design("add", np.array([i], np.int64), np.array([j], np.int64), design.n_rows,
                  design.n_cols)  # fmt: skip


__all__ = [
    "BUDGET_GRAMMAR",
    "DESIGNS_FOR",
    "LabelBudget",
    "POINTWISE_DESIGNS",
    "PAIRWISE_DESIGNS",
    "Design",
    "LMCost",
    "Lengths",
    "active",
    "active_round",
    "block",
    "block_for_budget",
    "budget_cost",
    "check_design",
    "design_cost",
    "diverse_items",
    "full_design",
    "items_for_budget",
    "k_centre_order",
    "initial_active",
    "landmark_for_budget",
    "make_design",
    "parse_label_budget",
    "check_time_budget",
    "random_items",
    "spread",
    "spread_for_budget",
]
