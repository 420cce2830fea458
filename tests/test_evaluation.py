"""Quadrant evaluation: metrics, baselines, report, sweeps and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from nncift.errors import InputError
from nncift.estimator import EstimatorSettings
from nncift.evaluation import (
    baseline_predictions,
    block_metrics,
    evaluate_quadrants,
    fit_and_evaluate,
    plot_error_vs_size,
    plot_error_vs_u,
    selection_quality,
    spearman,
    sweep,
    topk_overlap,
)
from nncift.split import u_split

D = 12


def _unit(n: int, seed: int) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_spearman_matches_definition() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # Ties get average ranks: ranks of [1, 1, 2] are [1.5, 1.5, 3].
    x, y = np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])
    rx, ry = np.array([1.5, 1.5, 3.0]), np.array([1.0, 2.0, 3.0])
    assert spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    assert np.isnan(spearman(np.ones(3), y))


def test_topk_overlap() -> None:
    true = np.array([[5.0, 4, 3, 2, 1], [1, 2, 3, 4, 5]])
    assert topk_overlap(true, true, 2) == 1.0
    assert topk_overlap(-true, true, 2) == 0.0
    pred = np.array([[5.0, 1, 3, 2, 4], [1, 2, 3, 4, 5]])  # row 0: {0, 4} vs {0, 1}
    assert topk_overlap(pred, true, 2) == pytest.approx(0.75)
    assert topk_overlap(pred, true, 99) == 1.0  # k capped at the row length


def test_block_metrics_values() -> None:
    t = np.array([[0.0, 1.0], [2.0, 3.0]])
    m = block_metrics(t + 0.5, t)
    assert m["mse"] == pytest.approx(0.25) and m["mae"] == pytest.approx(0.5)
    assert m["spearman"] == pytest.approx(1.0) and m["top10"] == 1.0


def test_baselines_use_only_q1() -> None:
    rows, cols = _unit(40, 0), _unit(30, 1)
    lab = (rows @ cols.T).astype(np.float32)
    sp = u_split(40, 30, u=0.25, seed=0)
    r, c = sp.quadrant("Q1")
    poisoned = lab.copy()
    q4r, q4c = sp.quadrant("Q4")
    poisoned[np.ix_(q4r, q4c)] = 100.0  # nothing outside Q1 may leak into a baseline
    b = baseline_predictions(poisoned, sp, rows, cols)
    assert b["constant"][0, 0] == pytest.approx(lab[np.ix_(r, c)].mean(), rel=1e-5)
    assert b["random"].max() <= lab[np.ix_(r, c)].max()
    assert np.allclose(b["cosine"], lab, atol=1e-5)  # labels are exactly the cosine
    # Additive on Q4 (both items unseen) degenerates to the Q1 mean.
    assert np.allclose(b["additive"][np.ix_(q4r, q4c)], b["constant"][0, 0])
    assert (b["zero"] == 0).all()


def test_evaluate_quadrants_report(tmp_path) -> None:
    rows, cols = _unit(40, 0), _unit(30, 1)
    lab = (rows @ cols.T).astype(np.float32)
    sp = u_split(40, 30, u=0.25, seed=0)
    rep = evaluate_quadrants({"oracle": lab.copy()}, lab, sp, rows, cols)
    assert set(rep.quadrants) == {"Q1", "Q2", "Q3", "Q4"}
    assert set(rep.predictors()) == {"oracle", "zero", "constant", "random", "additive", "cosine"}
    assert rep.quadrants["Q4"]["oracle"]["mse"] == 0.0
    assert rep.quadrants["Q4"]["constant"]["mse"] > 0.0
    assert rep.selection["oracle"]["topk_utility_ratio"] == pytest.approx(1.0)
    assert rep.selection["oracle"]["fl_ratio"] == pytest.approx(1.0)
    assert np.isnan(rep.selection["constant"]["fl_ratio"])
    assert 0.0 < rep.selection["random"]["fl_ratio"] <= 1.0 + 1e-9
    rep.write_json(tmp_path / "e.json")
    back = json.loads((tmp_path / "e.json").read_text())
    assert back["quadrants"]["Q4"]["constant"]["spearman"] is None  # NaN -> null
    assert back["info"]["quadrant_sizes"]["Q1"] == [10, 8]
    from rich.console import Console

    con = Console(record=True, width=120)
    con.print(rep.rich_table())
    text = con.export_text()
    assert "Q4" in text and "cosine" in text
    with pytest.raises(InputError, match="do not match the split"):
        evaluate_quadrants(lab, lab[:, :5], sp, rows, cols)
    bad = lab.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        evaluate_quadrants(lab, bad, sp, rows, cols)


def test_selection_quality() -> None:
    true = np.arange(20, dtype=float)[:, None] * np.ones((1, 3))
    assert selection_quality(true, true, 0.2)["topk_utility_ratio"] == 1.0
    worst = selection_quality(-true, true, 0.2)
    # The 4 worst rows (means 0..3) reach (0+1+2+3) / (16+17+18+19) of the optimum.
    assert worst["topk_utility_ratio"] == pytest.approx(6 / 70)
    assert worst["topk_overlap"] == 0.0


def test_fit_and_evaluate_and_sweeps(tmp_path) -> None:
    rows, cols = _unit(60, 2), _unit(40, 3)
    lab = (np.tanh(rows @ np.linspace(-1, 1, D))[:, None] + (cols @ np.ones(D))[None, :]).astype(
        np.float32
    )
    st = EstimatorSettings(epochs=2, lr=3e-3)
    rep, est = fit_and_evaluate(lab, rows, cols, u=0.5, seed=0, settings=st)
    assert rep.info["variant"] == "paper" and est.n_train_pairs_ > 0
    assert rep.quadrants["Q1"]["network"]["mse"] < rep.quadrants["Q1"]["zero"]["mse"]
    recs = sweep(lab, rows, cols, us=[0.3, 0.5], archs=[(4,), (16,)], seeds=[0], settings=st)
    assert len(recs) == 4 and recs[0]["n_params"] < recs[2]["n_params"]
    plot_error_vs_u(recs, tmp_path / "u.png")
    plot_error_vs_size(recs, tmp_path / "s.png")
    for f in ("u.png", "s.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
