"""InfluenceEstimator: training, held-out-item validation, variants, label files, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from nncift.errors import InputError
from nncift.estimator import (
    EstimatorSettings,
    InfluenceEstimator,
    PairLabels,
    read_labels,
    select_one_se,
    settings_for,
)
from nncift.split import u_split

D = 16
FAST = EstimatorSettings(epochs=4, lr=3e-3, batch_size=64)


def _unit(n: int, seed: int) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return _unit(80, 0), _unit(60, 1)


def _additive(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    # Learnable by the paper's additive first layer: f(i, j) = g(e_i) + h(e_j).
    w, v = np.linspace(-1, 1, D), np.cos(np.arange(D))
    return (np.tanh(rows @ w)[:, None] + (cols @ v)[None, :]).astype(np.float32)


def test_settings_defaults_are_the_papers() -> None:
    s = EstimatorSettings()
    assert (s.hidden_sizes, s.lr, s.epochs, s.batch_size) == ((100,), 1e-4, 20, 64)
    assert s.input_layout == "paper"
    with pytest.raises(InputError, match="unknown variant"):
        settings_for("mystery")


def test_fit_learns_and_beats_constant_on_unseen_pairs(data) -> None:
    rows, cols = data
    full = _additive(rows, cols)
    sp = u_split(80, 60, u=0.5, seed=0)
    r, c = sp.quadrant("Q1")
    est = InfluenceEstimator(FAST, random_state=0, progress=False)
    assert est.fit(rows, cols, full[np.ix_(r, c)], rows=r, cols=c) is est
    pred = est.predict(rows, cols, use_rust=False)
    assert pred.shape == (80, 60) and pred.dtype == np.float32
    q4r, q4c = sp.quadrant("Q4")
    err = np.mean((pred[np.ix_(q4r, q4c)] - full[np.ix_(q4r, q4c)]) ** 2)
    const = np.mean((full[np.ix_(r, c)].mean() - full[np.ix_(q4r, q4c)]) ** 2)
    assert err < 0.5 * const
    # predict_pairs agrees with the all-pairs matrix.
    pp = est.predict_pairs(rows, cols, [0, 5, 79], [59, 2, 0])
    np.testing.assert_allclose(pp, pred[[0, 5, 79], [59, 2, 0]], rtol=1e-5, atol=1e-6)


def test_reproducible_with_seed(data) -> None:
    rows, cols = data
    lab = _additive(rows[:30], cols[:20])
    a = InfluenceEstimator(FAST, random_state=3, progress=False).fit(rows, cols, lab)
    b = InfluenceEstimator(FAST, random_state=3, progress=False).fit(rows, cols, lab)
    c = InfluenceEstimator(FAST, random_state=4, progress=False).fit(rows, cols, lab)
    pa, pb = a.predict(rows, cols, use_rust=False), b.predict(rows, cols, use_rust=False)
    assert np.array_equal(pa, pb)
    assert not np.array_equal(pa, c.predict(rows, cols, use_rust=False))
    assert a.random_state_ == 3


def test_validation_holds_out_items_and_scaling_uses_training_only(data) -> None:
    rows, cols = data
    lab = _additive(rows[:30], cols[:20])
    est = InfluenceEstimator(FAST, random_state=1, progress=False).fit(rows, cols, lab)
    vr, vc = est.val_rows_, est.val_cols_
    assert len(vr) == 6 and len(vc) == 4  # 20% of the labelled items on each side
    assert est.n_train_pairs_ == (30 - 6) * (20 - 4)
    tr_r = np.setdiff1d(np.arange(30), vr)
    tr_c = np.setdiff1d(np.arange(20), vc)
    train_labels = lab[np.ix_(tr_r, tr_c)].astype(np.float64)
    assert est.label_offset_ == pytest.approx(train_labels.mean(), rel=1e-9)
    assert est.label_scale_ == pytest.approx(train_labels.std(), rel=1e-9)
    # The kept network is the best epoch: its MSE on held-out pairs is the recorded one.
    pred = est.predict(rows, cols, use_rust=False)[:30, :20]
    mask = np.isin(np.arange(30), vr)[:, None] | np.isin(np.arange(20), vc)[None, :]
    val = np.mean(((pred - lab) / est.label_scale_)[mask] ** 2)
    assert val == pytest.approx(est.val_mse_, rel=1e-3)
    assert est.val_mse_ == pytest.approx(min(h["val_mse"] for h in est.history_), rel=1e-9)


def test_validation_on_fully_unseen_pairs_when_enough(data) -> None:
    rows, cols = data
    lab = _additive(rows[:40], cols[:40])
    est = InfluenceEstimator(FAST, random_state=0, progress=False).fit(rows, cols, lab)
    # 8 held-out rows x 8 held-out columns: 64 Q4-like pairs score validation.
    assert est.n_val_pairs_ == len(est.val_rows_) * len(est.val_cols_) == 64
    any_st = EstimatorSettings(epochs=1, val_pairs="unseen-any")
    est2 = InfluenceEstimator(any_st, random_state=0, progress=False).fit(rows, cols, lab)
    assert est2.n_val_pairs_ == 40 * 40 - 32 * 32
    assert est2.n_train_pairs_ == est.n_train_pairs_ == 32 * 32


def test_early_stopping_stops(data) -> None:
    rows, cols = data
    noise = np.random.default_rng(0).normal(size=(30, 20)).astype(np.float32)
    st = EstimatorSettings(epochs=40, lr=1e-2, patience=2)
    est = InfluenceEstimator(st, random_state=0, progress=False).fit(rows, cols, noise)
    # Pure noise cannot be predicted on unseen items: training stops long before 40 epochs.
    assert len(est.history_) - 1 < 40
    assert est.best_epoch_ <= len(est.history_) - 1


def test_auto_picks_cosine_linear_for_cosine_labels(data) -> None:
    rows, cols = data
    lab = 2.0 * (rows[:30] @ cols[:20].T) + 0.5
    est = InfluenceEstimator(FAST, variant="auto", random_state=0, progress=False)
    est.fit(rows, cols, lab)
    assert set(est.candidates_) == {
        "constant",
        "cosine-linear",
        "paper",
        "cosine-residual",
        "bilinear",
    }
    assert est.variant_ in ("cosine-linear", "cosine-residual")
    assert est.candidates_[est.variant_] <= min(
        v for v in est.candidates_.values() if v is not None
    )
    full = est.predict(rows, cols, use_rust=False)
    np.testing.assert_allclose(full, 2.0 * (rows @ cols.T) + 0.5, atol=1e-4)


def test_one_se_rule_prefers_the_simpler_candidate_within_noise() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 10)  # 12 held-out items, 10 validation pairs each
    item_noise = rng.normal(size=12)[groups] ** 2  # items differ in difficulty
    simple = item_noise + rng.normal(size=120) ** 2
    # A complex candidate that is lower by far less than the noise between items: not enough.
    slightly = simple - 1e-3 + 0.05 * rng.normal(size=120)
    chosen, ses = select_one_se(
        ["simple", "complex"], {"simple": simple, "complex": slightly}, groups
    )
    assert np.mean(slightly) < np.mean(simple)
    assert chosen == "simple" and set(ses) == {"simple", "complex"} and ses["complex"] == 0.0
    # Lower on every item by a clear margin: the complex candidate wins.
    clearly = simple * 0.5
    chosen, _ = select_one_se(["simple", "complex"], {"simple": simple, "complex": clearly}, groups)
    assert chosen == "complex"
    # Rows and columns are the same items (square kernel): an item effect enters a pair twice,
    # and deleting an item removes its row and its column, so the SE is about twice the
    # rows-only one (pairs are not independent units).
    k = 30
    alpha = rng.normal(size=k)
    alpha -= alpha.mean()  # "x" stays the best
    a, b = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    a, b = a.ravel(), b.ravel()
    base = np.full(k * k, 1.0)
    other = base + 0.02 + alpha[a] + alpha[b]
    _, se_sq = select_one_se(["x", "y"], {"x": base, "y": other}, a, b, square=True)
    _, se_rows = select_one_se(["x", "y"], {"x": base, "y": other}, a)
    assert 1.8 < se_sq["y"] / se_rows["y"] < 2.2
    # Fewer than two held-out items: no noise estimate, the lowest wins.
    one = np.zeros(120, np.int64)
    chosen, ses = select_one_se(["simple", "complex"], {"simple": simple, "complex": slightly}, one)
    assert chosen == "complex" and ses == {}


def test_auto_rules(data) -> None:
    rows, cols = data
    lab = _additive(rows[:40], cols[:30]) + 0.3 * (rows[:40] @ cols[:30].T)
    with pytest.raises(InputError, match="auto_rule"):
        EstimatorSettings(auto_rule="best")
    mins = InfluenceEstimator(
        dataclasses.replace(FAST, auto_rule="min"), variant="auto", random_state=0, progress=False
    ).fit(rows, cols, lab)
    vals = mins.candidates_
    assert mins.variant_ == min(vals, key=lambda k: vals[k])
    assert mins.candidates_se_ == {}
    one = InfluenceEstimator(FAST, variant="auto", random_state=0, progress=False).fit(
        rows, cols, lab
    )
    assert one.candidates_ == vals  # same candidates, same seeds; only the choice differs
    assert set(one.candidates_se_) == set(vals) and set(one.candidate_networks_) == set(vals)
    best = min(vals.values())
    assert vals[one.variant_] <= best + one.candidates_se_[one.variant_] + 1e-12


def test_closed_form_proxies_are_refitted_on_all_labelled_pairs(data) -> None:
    rows, cols = data
    cos = rows[:30] @ cols[:20].T  # unit vectors: the cosine
    noise = np.random.default_rng(3).normal(size=cos.shape)
    lab = 2.0 * cos + 0.5 + 0.3 * noise
    a, b = np.polyfit(cos.ravel(), lab.ravel(), 1)
    est = InfluenceEstimator(FAST, variant="cosine-linear", random_state=0, progress=False)
    pred = est.fit(rows, cols, lab).predict(rows[:30], cols[:20], use_rust=False)
    np.testing.assert_allclose(pred, a * cos + b, atol=1e-5)
    off = dataclasses.replace(FAST, refit=False)
    est = InfluenceEstimator(off, variant="cosine-linear", random_state=0, progress=False)
    pred = est.fit(rows, cols, lab).predict(rows[:30], cols[:20], use_rust=False)
    assert np.abs(pred - (a * cos + b)).max() > 1e-3  # fitted on the training pairs only


def test_square_and_pointwise(data) -> None:
    rows, _ = data
    lab = _additive(rows[:25], rows[:25])
    est = InfluenceEstimator(FAST, random_state=0, progress=False).fit(rows, None, lab)
    assert np.array_equal(est.val_rows_, est.val_cols_)  # same items on both sides
    assert est.predict(rows).shape == (80, 80)
    y = np.tanh(rows[:40] @ np.linspace(-1, 1, D))
    pw = InfluenceEstimator(FAST, kind="pointwise", random_state=0, progress=False).fit(
        rows, None, y
    )
    assert pw.predict(rows, use_rust=False).shape == (80,)
    with pytest.raises(InputError, match="pairwise"):
        InfluenceEstimator(FAST, kind="pointwise", progress=False).fit(rows, None, lab)


def test_label_files(tmp_path, data) -> None:
    rows, cols = data
    lab = _additive(rows[:12], cols[:10])
    r, c = np.arange(12) + 3, np.arange(10) * 2
    blk = PairLabels.from_block(lab, r, c)
    np.savez(tmp_path / "l.npz", labels=lab, rows=r, cols=c)
    pl.DataFrame({"row": blk.rows, "col": blk.cols, "value": blk.values}).write_parquet(
        tmp_path / "l.parquet"
    )
    np.save(tmp_path / "l.npy", lab)
    for got in (read_labels(tmp_path / "l.npz"), read_labels(tmp_path / "l.parquet")):
        assert np.array_equal(got.rows, blk.rows) and np.array_equal(got.cols, blk.cols)
        np.testing.assert_allclose(got.values, blk.values, rtol=1e-6)
    assert np.array_equal(read_labels(tmp_path / "l.npy", r, c).rows, blk.rows)
    obj = np.array([{"a": 1}], dtype=object)
    np.save(tmp_path / "bad.npy", obj, allow_pickle=True)
    with pytest.raises(InputError, match="not a plain numeric"):
        read_labels(tmp_path / "bad.npy")
    with pytest.raises(InputError, match="unsupported"):
        read_labels(tmp_path / "l.txt" if (tmp_path / "l.txt").write_text("x") else "")
    est = InfluenceEstimator(FAST, random_state=0, progress=False)
    est.fit(rows, cols, read_labels(tmp_path / "l.parquet"))
    assert est.n_train_pairs_ > 0


# -- bad input -------------------------------------------------------------------------------
def test_nan_labels(data) -> None:
    rows, cols = data
    lab = _additive(rows[:10], cols[:10])
    lab[3, 4] = np.nan
    with pytest.raises(InputError, match=r"NaN.*\(3, 4\)"):
        InfluenceEstimator(FAST, progress=False).fit(rows, cols, lab)


def test_block_shape_mismatch(data) -> None:
    rows, cols = data
    with pytest.raises(InputError, match="shape"):
        InfluenceEstimator(FAST, progress=False).fit(
            rows, cols, np.ones((10, 10)), rows=np.arange(9), cols=np.arange(10)
        )
    with pytest.raises(InputError, match="column embeddings"):
        InfluenceEstimator(FAST, progress=False).fit(rows, cols, np.random.rand(10, 61))


def test_single_distinct_value(data) -> None:
    rows, cols = data
    with pytest.raises(InputError, match="single distinct value"):
        InfluenceEstimator(FAST, progress=False).fit(rows, cols, np.full((10, 10), 0.3))


def test_too_few_items_to_validate(data) -> None:
    rows, cols = data
    with pytest.raises(InputError, match="too few labelled"):
        InfluenceEstimator(FAST, progress=False).fit(rows, cols, np.random.rand(2, 10))
    # Without validation the same block trains.
    st = EstimatorSettings(epochs=1, val_fraction=0.0)
    est = InfluenceEstimator(st, progress=False).fit(rows, cols, np.random.rand(2, 10))
    assert est.val_mse_ is None


def test_embeddings_from_another_model(data) -> None:
    rows, cols = data
    est = InfluenceEstimator(FAST, random_state=0, progress=False, embedding_model="minilm")
    est.fit(rows, cols, _additive(rows[:10], cols[:10]))
    with pytest.raises(InputError, match="'bge' but the network was trained with 'minilm'"):
        est.predict(rows, cols, embedding_model="bge")
    with pytest.raises(InputError, match="dimension 8"):
        est.predict(rows[:, :8], cols[:, :8])


def test_not_fitted() -> None:
    with pytest.raises(InputError, match="not fitted"):
        InfluenceEstimator().predict(np.zeros((2, 3), np.float32))
