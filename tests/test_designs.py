"""Labelling designs (nncift.designs): balance, cost within budget, budget errors."""

from __future__ import annotations

import numpy as np
import pytest
from nncift import designs as D
from nncift.errors import InputError


def _lengths(m: int, n: int) -> D.Lengths:
    rng = np.random.default_rng(0)
    return D.Lengths(example=rng.integers(40, 90, m), query=rng.integers(10, 40, n),
                     no_example=rng.integers(30, 60, n))  # fmt: skip


def test_spread_is_balanced() -> None:
    d = D.spread(40, 20, per_row=3, seed=1)
    rows, cols = np.bincount(d.rows, minlength=40), np.bincount(d.cols, minlength=20)
    assert np.all(rows == 3) and np.all(cols == 3 * 40 // 20)
    assert len({(int(a), int(b)) for a, b in zip(d.rows, d.cols, strict=True)}) == len(d)
    # Not divisible: target counts differ by at most one.
    d = D.spread(41, 20, per_row=3, seed=2)
    c = np.bincount(d.cols, minlength=20)
    assert c.max() - c.min() <= 1 and c.sum() == 123


def test_block_reuses_labelled_block() -> None:
    from nncift.labelling import labelled_block

    d = D.block(40, 20, u=0.25, seed=3)
    r, c = labelled_block(40, 20, u=0.25, seed=3)
    assert set(d.rows.tolist()) == set(r.tolist()) and set(d.cols.tolist()) == set(c.tolist())
    assert len(d) == r.size * c.size


def test_delift_cost_counts_shared_passes() -> None:
    lengths = _lengths(4, 3)
    full = D.full_design(4, 3)
    cost = D.design_cost(full, "delift", lengths=lengths)
    # 3 no-example passes + 4 shared prefixes + 12 pairs.
    assert cost.passes == 3 + 4 + 12
    assert cost.tokens == int(lengths.no_example.sum() + lengths.example.sum()
                              + 4 * lengths.query.sum())  # fmt: skip
    one = D.Design("x", np.array([0]), np.array([1]), 4, 3)
    c1 = D.design_cost(one, "delift", lengths=lengths)  # the prefix is part of the pair's pass
    assert c1.passes == 2 and c1.tokens == int(
        lengths.no_example[1] + lengths.example[0] + lengths.query[1]
    )


def test_designs_within_budget() -> None:
    lengths = _lengths(40, 20)

    def cost(d: D.Design) -> float:
        return float(D.design_cost(d, "delift", lengths=lengths).tokens or 0)

    budget = 0.2 * cost(D.full_design(40, 20))
    for d in (
        D.block_for_budget(40, 20, budget=budget, cost=cost),
        D.spread_for_budget(40, 20, budget=budget, cost=cost),
        D.landmark_for_budget(40, 20, budget=budget, cost=cost, per_row=2),
    ):
        assert cost(d) <= budget
    s = D.spread_for_budget(40, 20, budget=budget, cost=cost)
    assert np.unique(s.rows).size == 40


def test_budget_errors_name_the_minimum() -> None:
    lengths = _lengths(40, 20)

    def cost(d: D.Design) -> float:
        return float(D.design_cost(d, "delift", lengths=lengths).tokens or 0)

    with pytest.raises(InputError, match=r"every one of the 40 pool items.*at least \d+"):
        D.spread_for_budget(40, 20, budget=500, cost=cost)
    with pytest.raises(InputError, match="at least"):
        D.block_for_budget(40, 20, budget=10, cost=cost)
    with pytest.raises(InputError, match="at least 5"):
        D.items_for_budget(4, lambda d: float(D.design_cost(d, "selectit").passes),
                           lambda k: D.random_items(40, k), 40)  # fmt: skip


def test_pointwise_designs_and_k_centre() -> None:
    x = np.vstack([np.eye(4)[i % 4] + 0.01 * i for i in range(40)])
    d = D.diverse_items(x, 4, seed=0)
    # k-centre covers the four directions first.
    assert len({int(np.argmax(x[i])) for i in d.rows}) == 4
    r = D.random_items(40, 7, seed=1)
    assert np.unique(r.rows).size == 7
    assert D.design_cost(r, "selectit").passes == 35


def test_less_cost_is_per_item() -> None:
    d = D.block(40, 20, u=0.1, seed=0)
    c = D.design_cost(d, "less", checkpoints=2, warmup_passes=8)
    assert c.passes == (4 + 2) * 2 + 8 and c.variable_passes == 12


def test_active_stays_within_budget() -> None:
    from nncift.effects import AdditiveEffects

    rng = np.random.default_rng(0)
    k = rng.normal(size=(30, 10))
    init = D.spread(30, 10, per_row=1, seed=0)

    def cost(d: D.Design) -> float:
        return float(D.design_cost(d, "delift").passes)

    def fit(d: D.Design, v: np.ndarray, g: np.random.Generator | None) -> AdditiveEffects:
        i = np.arange(len(d)) if g is None else g.integers(0, len(d), len(d))
        return AdditiveEffects().fit(d.rows[i], d.cols[i], v[i], n_rows=30, n_cols=10)

    d, v = D.active(init, budget=cost(init) + 20, cost=cost,
                    label=lambda r, c: k[r, c], fit=fit, n_boot=3)  # fmt: skip
    assert cost(d) <= cost(init) + 20 and len(d) > len(init)
    assert np.allclose(v, k[d.rows, d.cols])
