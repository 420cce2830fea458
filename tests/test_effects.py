"""Estimators on sparse labels (nncift.effects) and the valuation bench's schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from nncift.designs import spread
from nncift.effects import AdditiveEffects, KernelPairRegression, LowRankEffects, predict_all
from nncift.errors import InputError


def _planted(m: int = 60, n: int = 30, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, 6))
    z = rng.normal(size=(n, 6))
    a = 2.0 * x[:, 0]
    b = rng.normal(size=n)
    k = 1.0 + a[:, None] + b[None, :] + 0.3 * rng.normal(size=(m, n))
    return k, a, b, x, z


def test_additive_recovers_planted_effects() -> None:
    k, a, b, x, z = _planted()
    d = spread(60, 30, per_row=6, seed=0)
    est = AdditiveEffects(alpha=0.5, alpha_target=0.5, propagate=False, n_iter=50)
    est.fit(d.rows, d.cols, k[d.rows, d.cols], n_rows=60, n_cols=30)
    assert np.corrcoef(est.row_effects_, a)[0, 1] > 0.95
    assert np.corrcoef(est.col_effects_, b)[0, 1] > 0.9
    pred = est.predict(np.repeat(np.arange(60), 30), np.tile(np.arange(30), 60)).reshape(60, 30)
    assert np.mean((pred - k) ** 2) < 0.5 * np.var(k)


def test_propagation_gives_unlabelled_items_effects_from_features() -> None:
    k, a, _, x, z = _planted()
    d = spread(60, 30, per_row=4, seed=0, rows=np.arange(30))  # items 30..59 unlabelled
    est = AdditiveEffects().fit(d.rows, d.cols, k[d.rows, d.cols], n_rows=60, n_cols=30,
                                row_features=x, col_features=z)  # fmt: skip
    assert np.corrcoef(est.row_effects_[30:], a[30:])[0, 1] > 0.6
    flat = AdditiveEffects(propagate=False).fit(d.rows, d.cols, k[d.rows, d.cols], n_rows=60,
                                                n_cols=30)  # fmt: skip
    assert np.allclose(flat.row_effects_[30:], 0.0)
    # Features that carry nothing: the leave-one-out ridge keeps the priors near the mean.
    noise = np.random.default_rng(9).normal(size=(60, 6))
    est2 = AdditiveEffects().fit(d.rows, d.cols, k[d.rows, d.cols], n_rows=60, n_cols=30,
                                 row_features=noise, col_features=z)  # fmt: skip
    assert np.std(est2.row_effects_[30:]) < 0.5 * np.std(est.row_effects_[30:])


def test_cosine_term_and_other_estimators() -> None:
    k, a, b, x, z = _planted()
    ux = x / np.linalg.norm(x, axis=1, keepdims=True)
    uz = z / np.linalg.norm(z, axis=1, keepdims=True)
    k2 = k + 3.0 * ux @ uz.T
    d = spread(60, 30, per_row=6, seed=1)
    r, c, v = d.rows, d.cols, k2[d.rows, d.cols]
    est = AdditiveEffects(cosine=True, alpha="auto").fit(
        r, c, v, n_rows=60, n_cols=30, row_features=x, col_features=z
    )
    assert 2.0 < est.cosine_weight_ < 4.0
    # The whole-matrix path (one matrix product) is the pair path on the grid.
    grid = est.predict(np.repeat(np.arange(60), 30), np.tile(np.arange(30), 60)).reshape(60, 30)
    assert np.allclose(est.predict_block(np.arange(60), np.arange(30)), grid, atol=1e-12)
    sub_r, sub_c = np.array([5, 2, 59]), np.array([29, 0])
    assert np.allclose(est.predict_block(sub_r, sub_c), grid[np.ix_(sub_r, sub_c)], atol=1e-12)
    assert np.allclose(predict_all(est, 60, 30, chunk_rows=7), grid, atol=1e-6)
    for e in (LowRankEffects(rank=2), KernelPairRegression()):
        e.fit(r, c, v, n_rows=60, n_cols=30, row_features=x, col_features=z)
        p = e.predict(np.repeat(np.arange(60), 30), np.tile(np.arange(30), 60)).reshape(60, 30)
        assert np.corrcoef(p.ravel(), k2.ravel())[0, 1] > 0.5
        if hasattr(e, "predict_block"):
            assert np.allclose(e.predict_block(np.arange(60), np.arange(30)), p, atol=1e-10)
    # Pointwise: kernel ridge on item features.
    kp = KernelPairRegression().fit(np.arange(40), None, a[:40], n_rows=60, row_features=x)
    assert np.corrcoef(kp.predict(np.arange(40, 60)), a[40:])[0, 1] > 0.5


def test_bench_quick_json_schema() -> None:
    bench = Path(__file__).resolve().parents[1] / "benches" / "valuation.py"
    out = subprocess.run(
        [sys.executable, str(bench), "--synthetic", "--quick", "--json", "--seeds", "1",
         "--fractions", "0.05"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    assert [c["function"] for c in lines] == ["delift", "selectit"]
    for c in lines:
        assert {"matrix", "function", "cost_fraction", "oracle_within_target", "results"} <= set(c)
        for r in c["results"]:
            assert {"design", "estimator", "features", "spearman_within_target",
                    "spearman_pooled", "selection_overlap", "random_overlap"} <= set(r)  # fmt: skip
    assert any(r["design"] == "block" for r in lines[0]["results"])
    assert lines[0]["oracle_within_target"] > 0.5


def test_choose_effects_on_held_out_items_prefers_the_planted_structure() -> None:
    """Out-of-fold over labelled pool items: a constant ranks nothing (score exactly 0, not
    a ranking by fold), and on labels with a cosine interaction the cosine estimators win."""
    from nncift import designs as D
    from nncift.effects import EFFECT_NAMES, POINTWISE_EFFECT_NAMES, choose_effects

    rng = np.random.default_rng(0)
    m, n = 120, 60
    x, z = rng.normal(size=(m, 16)), rng.normal(size=(n, 16))
    ux = x / np.linalg.norm(x, axis=1, keepdims=True)
    uz = z / np.linalg.norm(z, axis=1, keepdims=True)
    values = rng.normal(size=m)[:, None] + 3 * ux @ uz.T + 0.1 * rng.normal(size=(m, n))
    kw = {"n_rows": m, "n_cols": n, "row_features": x, "col_features": z}
    for per_row in (1, 4):  # centred-pooled score / within-target score
        d = D.spread(m, n, per_row=per_row, seed=0)
        ch = choose_effects(EFFECT_NAMES, d.rows, d.cols, values[d.rows, d.cols], **kw)
        assert ch.scores["constant"] == 0.0
        assert ch.chosen in ("additive+cos", "additive+cos-eb", "lowrank", "cosine-linear")
        assert ch.score is not None and ch.score > 0.3
        assert ch.scores["additive"] is not None and ch.scores["additive"] < ch.score
    rows = np.arange(40)
    ch = choose_effects(POINTWISE_EFFECT_NAMES, rows, None, x[rows, 0], n_rows=m, n_cols=None,
                        row_features=x, col_features=None)  # fmt: skip
    assert ch.scores["constant"] == 0.0 and ch.criterion == "spearman over held-out items"
    with pytest.raises(InputError, match="at least 4 needed"):
        choose_effects(EFFECT_NAMES, np.array([0, 1, 2]), np.array([0, 1, 2]),
                       np.array([0.0, 1.0, 2.0]), **kw)  # fmt: skip


def test_kernel_regression_is_left_out_when_too_costly() -> None:
    from nncift.effects import kernel_too_big

    assert kernel_too_big("kernel", 100, 120, 60) is None
    assert "too costly" in (kernel_too_big("kernel", 5000, 10, 10) or "")
    assert "too costly" in (kernel_too_big("kernel", 2000, 10_000, 10_000) or "")
    assert kernel_too_big("additive", 10**6, 10**5, 10**5) is None
