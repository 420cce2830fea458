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
    assert (s.hidden_sizes, s.lr, s.batch_size) == ((100,), 1e-4, 64)
    # The paper's 20 epochs over ~187k pairs are ~58k Adam steps: the budget is in steps,
    # so a small labelled block is not stopped after a few hundred (issue 14, item 5).
    assert s.max_steps == 50_000 and s.epochs is None
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
    # Nested (issue 14, item 4): the held-out items split into an early-stopping half and a
    # model-selection half, disjoint and both non-empty on each side.
    assert est.nested_
    for stop, sel, held in (
        (est.stop_rows_, est.sel_rows_, vr),
        (est.stop_cols_, est.sel_cols_, vc),
    ):
        assert len(stop) and len(sel) and not np.intersect1d(stop, sel).size
        assert np.array_equal(np.union1d(stop, sel), held)
    # val_mse_ is scored on the selection half (pairs touching a selection item and no stop
    # item), with the restored network; early stopping's minimum is on the stop half.
    pred = est.predict(rows, cols, use_rust=False)[:30, :20]
    r, c = np.arange(30)[:, None], np.arange(20)[None, :]
    touch_sel = np.isin(r, est.sel_rows_) | np.isin(c, est.sel_cols_)
    touch_stop = np.isin(r, est.stop_rows_) | np.isin(c, est.stop_cols_)
    err = ((pred - lab) / est.label_scale_) ** 2
    assert np.mean(err[touch_sel & ~touch_stop]) == pytest.approx(est.val_mse_, rel=1e-3)
    assert np.mean(err[touch_stop & ~touch_sel]) == pytest.approx(
        min(h["val_mse"] for h in est.history_), rel=1e-3
    )
    assert est.n_val_pairs_ == int((touch_sel & ~touch_stop).sum())
    assert est.n_stop_pairs_ == int((touch_stop & ~touch_sel).sum())


def test_validation_on_fully_unseen_pairs_when_enough(data) -> None:
    rows, cols = data
    lab = _additive(rows[:80], cols[:60])
    est = InfluenceEstimator(FAST, random_state=0, progress=False).fit(rows, cols, lab)
    # 16 held-out rows x 12 held-out columns, halved: each half scores on its 8 x 6 = 48
    # < 50 Q4-like pairs... so on every pair that touches its items and not the other half's.
    assert est.n_val_pairs_ == 8 * (60 - 6) + (80 - 16) * 6
    big = _unit(100, 7)
    lab = _additive(big, big[:80])
    est = InfluenceEstimator(FAST, random_state=0, progress=False).fit(big, big[:80], lab)
    # 20 x 16 held out, halved to 10 x 8: 80 Q4-like pairs per half score validation.
    assert est.n_val_pairs_ == len(est.sel_rows_) * len(est.sel_cols_) == 80
    assert est.n_stop_pairs_ == len(est.stop_rows_) * len(est.stop_cols_) == 80
    any_st = dataclasses.replace(FAST, epochs=1, val_pairs="unseen-any")
    est2 = InfluenceEstimator(any_st, random_state=0, progress=False).fit(big, big[:80], lab)
    assert est2.n_val_pairs_ == 10 * (80 - 8) + (100 - 20) * 8
    assert est2.n_train_pairs_ == est.n_train_pairs_ == 80 * 64


def test_early_stopping_stops(data) -> None:
    rows, cols = data
    noise = np.random.default_rng(0).normal(size=(30, 20)).astype(np.float32)
    st = EstimatorSettings(epochs=40, lr=1e-2, patience=2, eval_every=6)
    est = InfluenceEstimator(st, random_state=0, progress=False).fit(rows, cols, noise)
    # 24 x 16 training pairs = 6 steps per epoch; one evaluation every 6 steps. Pure noise
    # cannot be predicted on unseen items: training stops long before 40 epochs (240 steps).
    assert [h["step"] for h in est.history_] == list(range(0, est.steps_ + 1, 6))
    assert est.steps_ < 240 and len(est.history_) - 1 < 40
    assert est.best_step_ <= est.steps_ and est.best_epoch_ == -(-est.best_step_ // 6)


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
    # The choice is by rank score on the selection half (issue 14, item 4); the constant
    # has no order, so its rank score is 0.
    ranks = mins.candidates_rank_
    assert ranks["constant"] == 0.0 and mins.criterion_.startswith("spearman within")
    assert ranks[mins.variant_] == max(ranks.values())
    assert mins.candidates_se_ == {}
    one = InfluenceEstimator(FAST, variant="auto", random_state=0, progress=False).fit(
        rows, cols, lab
    )
    assert one.candidates_rank_ == ranks  # same candidates, same seeds; only the choice differs
    assert set(one.candidates_se_) == set(ranks) and set(one.candidate_networks_) == set(ranks)
    assert ranks[one.variant_] >= max(ranks.values()) - one.candidates_se_[one.variant_] - 1e-12
    assert not one.no_signal_ and one.val_rank_ == ranks[one.variant_] > 0.5


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


# -- issue 14: model choice that fits selection; the paper's training --------------------------
def test_auto_refuses_without_held_out_items(data) -> None:
    rows, cols = data
    lab = _additive(rows[:30], cols[:20])
    none = dataclasses.replace(FAST, val_fraction=0.0)
    with pytest.raises(InputError, match=r"val_fraction=0 holds out none.*choose a variant"):
        InfluenceEstimator(none, variant="auto", progress=False).fit(rows, cols, lab)
    # Three labelled items: one can be held out, not one to stop on and one to choose on.
    y = np.tanh(rows[:3] @ np.linspace(-1, 1, D))
    with pytest.raises(InputError, match="Label more items, raise val_fraction, or choose"):
        InfluenceEstimator(FAST, variant="auto", kind="pointwise", progress=False).fit(
            rows, None, y
        )
    # A named variant still trains without validation.
    est = InfluenceEstimator(none, variant="paper", progress=False).fit(rows, cols, lab)
    assert est.val_mse_ is None and est.val_rank_ is None and not est.no_signal_


def test_auto_on_noise_chooses_the_constant_and_says_so(data) -> None:
    rows, cols = data
    noise = np.random.default_rng(100).normal(size=(30, 20))
    est = InfluenceEstimator(FAST, variant="auto", random_state=0, progress=False)
    est.fit(rows, cols, noise)
    assert est.variant_ == "constant" and est.no_signal_ and est.val_rank_ == 0.0
    # No candidate ranked held-out items beyond one SE above the constant's 0.
    best = max(est.candidates_rank_.values())
    assert best - est.candidates_rank_["constant"] <= est.candidates_se_["constant"]
    assert est.metadata()["no_signal"] == "true"


def test_auto_finds_a_per_item_signal() -> None:
    e = _unit(60, 4)
    y = np.tanh(3 * e @ np.linspace(-1, 1, D))  # a per-item value the network can learn
    st = dataclasses.replace(FAST, epochs=None, max_steps=400, lr=3e-3)
    est = InfluenceEstimator(st, variant="auto", kind="pointwise", random_state=0, progress=False)
    est.fit(e, None, y)
    assert est.variant_ == "paper" and not est.no_signal_
    assert est.criterion_ == "spearman over held-out items" and est.val_rank_ > 0.5


def test_auto_rank_rule_can_differ_from_the_mse_rule(data) -> None:
    rows, cols = data
    # Labels = a large per-target offset (a function of the target's embedding) + a small
    # cosine term. Only the cosine orders the pool items within a target (what selection
    # uses); the offset dominates the squared error.
    off = 3.0 * np.tanh(cols[:30] @ (3 * np.linspace(-1, 1, D)))
    lab = off[None, :] * np.ones((40, 1)) + 0.2 * (rows[:40] @ cols[:30].T)
    est = InfluenceEstimator(FAST, variant="auto", random_state=0, progress=False)
    est.fit(rows, cols, lab)
    assert est.variant_ == "cosine-linear" and est.val_rank_ > 0.9
    mse = est.candidates_
    lowest = min(mse, key=lambda n: mse[n])
    assert lowest != "cosine-linear" and mse["cosine-linear"] > 2 * mse[lowest]


def test_choice_score_is_computed_on_the_selection_half(data) -> None:
    import torch
    from nncift.model_selection import _spearman

    rows, cols = data
    lab = _additive(rows[:40], cols[:30]) + 0.3 * (rows[:40] @ cols[:30].T)
    est = InfluenceEstimator(FAST, variant="auto", random_state=0, progress=False)
    est.fit(rows, cols, lab)
    r, c = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    r, c = r.ravel(), c.ravel()
    sel = (np.isin(r, est.sel_rows_) | np.isin(c, est.sel_cols_)) & ~(
        np.isin(r, est.stop_rows_) | np.isin(c, est.stop_cols_)
    )
    y = (lab.ravel() - est.label_offset_) / est.label_scale_
    with torch.no_grad():
        p = (
            est.candidate_networks_["paper"]
            .forward_pairs(
                torch.from_numpy(rows),
                torch.from_numpy(cols),
                torch.from_numpy(r),
                torch.from_numpy(c),
            )
            .double()
            .numpy()
        )
    per_col = [
        _spearman(p[sel & (c == j)], y[sel & (c == j)])
        for j in range(30)
        if (sel & (c == j)).sum() >= 5
    ]
    assert est.candidates_rank_["paper"] == pytest.approx(np.mean(per_col), abs=1e-6)
    assert est.candidates_["paper"] == pytest.approx(np.mean((p[sel] - y[sel]) ** 2), rel=1e-4)


def test_step_budget_epochs_cap_and_reported_steps(data) -> None:
    from nncift.estimator import step_budget

    rows, cols = data
    lab = _additive(rows[:30], cols[:20])  # 24 x 16 = 384 training pairs: 6 steps per epoch
    assert step_budget(EstimatorSettings(), 384) == (6, 50_000, 100)
    assert step_budget(EstimatorSettings(epochs=20), 384) == (6, 120, 100)  # the old budget
    assert step_budget(EstimatorSettings(), 187_000)[2] == 2922  # paper-size: once per epoch
    st = EstimatorSettings(max_steps=250, patience=None, lr=3e-3)
    est = InfluenceEstimator(st, random_state=0, progress=False).fit(rows, cols, lab)
    assert est.steps_ == 250 and [h["step"] for h in est.history_] == [0, 100, 200, 250]
    assert est.metadata()["steps"] == "250"
    capped = dataclasses.replace(st, epochs=3)
    est = InfluenceEstimator(capped, random_state=0, progress=False).fit(rows, cols, lab)
    assert est.steps_ == 18 and est.history_[-1]["epoch"] == 3.0
    with pytest.raises(InputError, match="max_steps"):
        EstimatorSettings(max_steps=-1)
    with pytest.raises(InputError, match="eval_every"):
        EstimatorSettings(eval_every=0)


# ---------------------------------------------------------------------------------------
# scikit-learn's estimator contract
# ---------------------------------------------------------------------------------------
INIT_PARAMS = {
    "device",
    "embedding_model",
    "kind",
    "label_name",
    "progress",
    "random_state",
    "settings",
    "variant",
}


def test_get_params_and_set_params_cover_every_init_parameter() -> None:
    import inspect

    sig = set(inspect.signature(InfluenceEstimator.__init__).parameters) - {"self"}
    assert sig == INIT_PARAMS  # a new parameter must be added here and to get_params
    est = InfluenceEstimator(FAST, variant="auto", random_state=7, progress=False)
    params = est.get_params()
    assert set(params) == INIT_PARAMS
    assert params["settings"] is FAST and params["variant"] == "auto"
    assert params["random_state"] == 7 and params["progress"] is False
    assert est.get_params(deep=False) == params  # no parameter is itself an estimator
    assert InfluenceEstimator(**params).get_params() == params
    assert est.set_params(variant="paper", random_state=1, label_name="delift") is est
    assert (est.variant, est.random_state, est.label_name) == ("paper", 1, "delift")
    # Like __init__, set_params stores only; fit checks the values.
    est.set_params(kind="mystery")
    with pytest.raises(InputError, match="kind"):
        est.fit(_unit(10, 0), None, np.arange(100, dtype=float).reshape(10, 10))
    with pytest.raises(InputError, match="invalid parameter 'seed'"):
        est.set_params(seed=3)
    with pytest.raises(ValueError, match="no nested parameters"):
        est.set_params(settings__lr=1e-3)


def _clone(est: InfluenceEstimator) -> InfluenceEstimator:
    """What sklearn.base.clone does for an estimator without nested estimators."""
    import copy

    params = est.get_params(deep=False)
    new = type(est)(**{k: copy.deepcopy(v) for k, v in params.items()})
    for k, v in new.get_params(deep=False).items():
        assert v == params[k]
    return new


def test_clone_is_unfitted_with_the_same_parameters_and_refits_identically(data) -> None:
    rows, cols = data
    lab = _additive(rows[:30], cols[:20])
    est = InfluenceEstimator(FAST, random_state=3, progress=False, label_name="delift")
    est.fit(rows, cols, lab)
    twin = _clone(est)
    assert twin.get_params() == est.get_params()
    assert not hasattr(twin, "network_") and not hasattr(twin, "random_state_")
    with pytest.raises(InputError, match="not fitted"):
        twin.predict(rows, cols)
    twin.fit(rows, cols, lab)
    assert np.array_equal(
        twin.predict(rows, cols, use_rust=False), est.predict(rows, cols, use_rust=False)
    )


def test_sklearn_clone(data) -> None:
    # scikit-learn is not a dependency; when it is installed, its own clone must work.
    base = pytest.importorskip("sklearn.base")
    est = InfluenceEstimator(FAST, variant="cosine-linear", random_state=5, progress=False)
    rows, cols = data
    est.fit(rows, cols, _additive(rows[:30], cols[:20]))
    twin = base.clone(est)
    assert type(twin) is InfluenceEstimator and twin is not est
    assert twin.get_params() == est.get_params()
    assert not hasattr(twin, "network_")


def test_random_state_is_resolved_in_fit(data) -> None:
    rows, cols = data
    lab = _additive(rows[:30], cols[:20])
    est = InfluenceEstimator(FAST, progress=False)  # random_state=None: a fresh seed per fit
    est.fit(rows, cols, lab)
    assert est.random_state is None and isinstance(est.random_state_, int)
    again = InfluenceEstimator(FAST, random_state=est.random_state_, progress=False)
    pred = est.predict(rows, cols, use_rust=False)
    assert np.array_equal(again.fit(rows, cols, lab).predict(rows, cols, use_rust=False), pred)
    # A NumPy integer seeds as the same int; set_params(random_state=...) changes the fit.
    a = InfluenceEstimator(FAST, random_state=np.int64(3), progress=False).fit(rows, cols, lab)
    assert a.random_state_ == 3 and isinstance(a.random_state_, int)
    b = InfluenceEstimator(FAST, random_state=3, progress=False).fit(rows, cols, lab)
    assert np.array_equal(
        a.predict(rows, cols, use_rust=False), b.predict(rows, cols, use_rust=False)
    )
    b.set_params(random_state=4).fit(rows, cols, lab)
    assert b.random_state_ == 4
    assert not np.array_equal(
        a.predict(rows, cols, use_rust=False), b.predict(rows, cols, use_rust=False)
    )


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_hand_written_adam_equals_torch_optim_step_by_step(weight_decay) -> None:
    # nncift.training._Adam exists only to skip torch.optim's start-up cost (it imports
    # torch._dynamo); it must be the same update as torch.optim.Adam / AdamW.
    import torch
    from nncift.network import InfluenceNetwork
    from nncift.training import _Adam

    torch.manual_seed(0)
    ours = InfluenceNetwork(D, hidden_sizes=(12,))  # the paper layout: a grad-less column
    ref = InfluenceNetwork(D, hidden_sizes=(12,))
    ref.load_state_dict(ours.state_dict())
    start = [p.detach().clone() for p in ours.parameters()]
    lr = 1e-2
    opt_a = _Adam([p for p in ours.parameters()], lr=lr, weight_decay=weight_decay)
    opt_b = (
        torch.optim.AdamW(ref.parameters(), lr=lr, weight_decay=weight_decay)
        if weight_decay
        else torch.optim.Adam(ref.parameters(), lr=lr)
    )
    e = torch.from_numpy(_unit(20, 5))
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        i = torch.randint(0, 20, (16,), generator=gen)
        j = torch.randint(0, 20, (16,), generator=gen)
        y = (e[i] * e[j]).sum(1)
        for net, opt in ((ours, opt_a), (ref, opt_b)):
            loss = torch.mean((net.forward_pairs(e, e, i, j) - y) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for pa, pb in zip(ours.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    # The comparison is not vacuous: 50 steps at lr 1e-2 moved every weight matrix.
    assert all(
        not torch.equal(p, p0)
        for p, p0 in zip(ours.parameters(), start, strict=True)
        if p.ndim == 2
    )
