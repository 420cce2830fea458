"""NN-CIFT valuation: labels already paid for are used as computed, and run folders are keyed
so that only what determines the labels relabels (issue 14, items 2 and 3)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nncift.data import Items
from nncift.influence import CostMeter, PointwiseInfluence, make
from nncift.manifest import Manifest
from nncift.scorer import PairwiseScorer
from nncift.valuation import (
    ValuationOptions,
    Valuer,
    _scale01,
    label_key,
    network_key,
    use_true_labels,
)


def items(n: int, tag: str) -> Items:
    prompts = [f"{tag} prompt {i}" for i in range(n)]
    responses = [f"{tag} response {i}" for i in range(n)]
    records = [{"prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)]
    return Items([f"{tag}{i}" for i in range(n)], prompts, responses, records)


def unit(n: int, d: int, seed: int) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


POOL, TARGET = items(40, "p"), items(20, "t")
POOL_EMB, TARGET_EMB = unit(40, 8, 1), unit(20, 8, 2)
#: The paper's network after 2 epochs is far from the labels, so a kernel that equals the
#: labels on the block can only come from using them.
OPTS = ValuationOptions(method="delift-se", u=0.25, variant="paper", epochs=2)


def valuer(tmp_path: Path, options: ValuationOptions = OPTS) -> tuple[Valuer, Manifest]:
    manifest = Manifest(command="test")
    v = Valuer(
        POOL, TARGET, POOL_EMB, TARGET_EMB, options,
        run_dir=tmp_path / "run", manifest=manifest, progress=False,
    )  # fmt: skip
    return v, manifest


def stored(run_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    d = run_dir / f"labels-{name}"
    cols = np.load(d / "cols.npy") if (d / "cols.npy").exists() else None
    return np.load(d / "labels.npy"), np.load(d / "rows.npy"), cols


# ---------------------------------------------------------------- item 2: true labels used


def test_use_true_labels_dense_pointwise_and_mean() -> None:
    rows, cols = np.array([3, 0]), np.array([1, 4])
    pred = np.zeros((5, 6), dtype=np.float32)
    labels = np.array([[1, 2], [3, 4]], dtype=np.float32)
    counts = use_true_labels(pred, labels, rows, cols, how="dense")
    assert pred[3, 1] == 1 and pred[3, 4] == 2 and pred[0, 1] == 3 and pred[0, 4] == 4
    assert pred.sum() == 10 and counts == {"true_labels": 4, "predicted": 26}

    points = np.zeros(5, dtype=np.float32)
    counts = use_true_labels(points, np.array([7, 8], np.float32), rows, None, how="pointwise")
    assert points.tolist() == [8, 0, 0, 7, 0] and counts == {"true_labels": 2, "predicted": 3}

    # LESS: the value is a mean over targets; labelled pairs count with their true value.
    full = np.arange(30, dtype=np.float32).reshape(5, 6) / 7  # the network's dense predictions
    means = full.mean(axis=1)
    counts = use_true_labels(
        means, labels, rows, cols, how="mean", n_cols=6, predicted_block=full[np.ix_(rows, cols)]
    )
    want = full.copy()
    want[np.ix_(rows, cols)] = labels
    np.testing.assert_allclose(means, want.mean(axis=1), rtol=1e-6)
    assert counts == {"true_labels": 4, "predicted": 26}
    with pytest.raises(ValueError, match="predicted_block"):
        use_true_labels(means, labels, rows, cols, how="mean")
    with pytest.raises(ValueError, match="how must be"):
        use_true_labels(means, labels, rows, cols, how="max")


def test_nncift_kernels_equal_the_scaled_labels_on_the_labelled_block(tmp_path: Path) -> None:
    v, manifest = valuer(tmp_path)
    val = v.value("flmi")
    assert val.data_kernel is not None and val.query_kernel is not None
    for name, kernel in (("data", val.data_kernel), ("pairwise", val.query_kernel)):
        labels, rows, cols = stored(tmp_path / "run", name)
        assert cols is not None
        lo, hi = val.info[f"label_range_{name}"]
        np.testing.assert_array_equal(kernel[np.ix_(rows, cols)], _scale01(labels, lo, hi))
        # ... and everything else is the network's prediction, not the exact cosine.
        assert val.info["entries"][name] == {
            "true_labels": labels.size,
            "predicted": kernel.size - labels.size,
        }
        assert manifest.stages[f"predict_{name}"]["true_labels"] == labels.size
    exact = _scale01(POOL_EMB @ POOL_EMB.T, *val.info["label_range_data"])
    assert not np.allclose(val.data_kernel, exact, atol=1e-3)


class Norm0(PointwiseInfluence):
    """A cheap pointwise function standing in for SelectIT (the first embedding coordinate)."""

    name = "first-coordinate"

    def _points(self, rows: np.ndarray, meter: CostMeter) -> tuple[np.ndarray, dict[str, Any]]:
        return POOL_EMB[rows, 0], {}


def test_pointwise_scores_keep_the_labelled_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Valuer, "_function", lambda self, t, te: Norm0(self.pool))
    v, manifest = valuer(tmp_path, replace(OPTS, method="selectit"))
    val = v.value("topk")
    labels, rows, _ = stored(tmp_path / "run", "points")
    assert val.scores is not None
    np.testing.assert_array_equal(val.scores[rows], labels)
    assert val.info["entries"]["points"] == {"true_labels": 10, "predicted": 30}


def test_less_mean_uses_true_labels_where_labelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LESS's value is a mean over targets: labelled (item, target) pairs enter as computed."""

    def cosine(self: Valuer, targets: Any, target_emb: Any) -> Any:  # stands in for LESS
        return make("delift-se", self.pool, targets, pool_embeddings=self.pool_emb,
                    target_embeddings=target_emb)  # fmt: skip

    monkeypatch.setattr(Valuer, "_function", cosine)
    v, manifest = valuer(tmp_path, replace(OPTS, method="less"))
    val = v.value("topk")
    labels, rows, cols = stored(tmp_path / "run", "pairwise")
    (net,) = (tmp_path / "run").glob("net-*pairwise.safetensors")
    predicted = PairwiseScorer.load(net).score(POOL_EMB, TARGET_EMB)
    want = predicted.copy()
    want[np.ix_(rows, cols)] = labels
    assert val.scores is not None
    np.testing.assert_allclose(val.scores, want.mean(axis=1), rtol=1e-5, atol=1e-6)
    assert not np.allclose(val.scores[rows], predicted.mean(axis=1)[rows], atol=1e-4)
    assert val.info["entries"]["pairwise"] == {"true_labels": 50, "predicted": 750}


def test_ray_prediction_gets_the_same_correction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --ray the predictions come from Ray row shards; the true labels go in all the same.

    The shard scorer is replaced by a local one (no cluster): what is tested is that the
    labels are applied after the Ray path, for a dense kernel and for LESS's mean.
    """
    import nncift.distributed.shards as shards

    calls: list[str] = []

    def fake_sharded(settings: Any, path: Any, rows: Any, cols: Any = None, *, how: str) -> Any:
        calls.append(how)
        scorer = PairwiseScorer.load(path)
        return scorer.score(rows, cols) if how == "dense" else scorer.aggregate(rows, cols, how)

    monkeypatch.setattr(shards, "score_sharded", fake_sharded)
    local = valuer(tmp_path / "local", replace(OPTS, method="less"))[0]
    on_ray = valuer(tmp_path / "ray", replace(OPTS, method="less"))[0]
    on_ray.ray = object()  # DELIFT (SE) labels stay local; prediction takes the Ray path

    @contextlib.contextmanager
    def cosine(self: Valuer, targets: Any, target_emb: Any) -> Iterator[Any]:  # LESS stand-in
        yield make("delift-se", self.pool, targets, pool_embeddings=self.pool_emb,
                   target_embeddings=target_emb)  # fmt: skip

    monkeypatch.setattr(Valuer, "_label_function", cosine)  # labels here, not on Ray workers
    want, got = local.value("topk"), on_ray.value("topk")
    assert calls == ["mean", "dense"]  # the row means, then the labelled block to replace
    assert want.scores is not None and got.scores is not None
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-7)
    assert got.info["entries"] == want.info["entries"]

    calls.clear()
    v = valuer(tmp_path / "ray-kernel")[0]
    v.ray = object()
    val = v.value("fl")
    labels, rows, cols = stored(tmp_path / "ray-kernel" / "run", "data")
    assert calls == ["dense"] and val.data_kernel is not None
    lo, hi = val.info["label_range_data"]
    np.testing.assert_array_equal(val.data_kernel[np.ix_(rows, cols)], _scale01(labels, lo, hi))


# ---------------------------------------------------------------- item 3: run keys


def test_label_key_holds_only_what_determines_the_labels() -> None:
    base = label_key(POOL, TARGET, OPTS)
    # The network's settings, the device and (for DELIFT (SE)) the LM do not determine labels.
    for same in (
        replace(OPTS, variant="auto"),
        replace(OPTS, epochs=50),
        replace(OPTS, hidden_sizes=(7, 7)),
        replace(OPTS, device="cpu"),
        replace(OPTS, lm="other", dtype="float16", max_length=64),
    ):
        assert label_key(POOL, TARGET, same) == base, same
    for other in (
        replace(OPTS, u=0.5),
        replace(OPTS, seed=1),
        replace(OPTS, exact=True),
        replace(OPTS, embedder="other-embedder"),
        replace(OPTS, influence_settings={"x": 1}),
        replace(OPTS, method="delift"),
    ):
        assert label_key(POOL, TARGET, other) != base, other
    assert label_key(POOL, None, OPTS) != base
    # Same ids, changed text: relabel (labels come from the texts).
    edited = Items(POOL.ids, ["changed"] + POOL.prompts[1:], POOL.responses, POOL.records)
    assert label_key(edited, TARGET, OPTS) != base
    # LM methods: the LM and its settings count, the embedder does not.
    lm = replace(OPTS, method="delift")
    assert label_key(POOL, TARGET, replace(lm, lm="other")) != label_key(POOL, TARGET, lm)
    assert label_key(POOL, TARGET, replace(lm, max_length=64)) != label_key(POOL, TARGET, lm)
    assert label_key(POOL, TARGET, replace(lm, embedder="e")) == label_key(POOL, TARGET, lm)
    # Networks are keyed by their own settings too.
    assert network_key(replace(OPTS, variant="auto")) != network_key(OPTS)
    assert network_key(replace(OPTS, epochs=3)) != network_key(OPTS)
    assert network_key(replace(OPTS, device="cpu")) == network_key(OPTS)


def test_changing_the_network_reuses_labels_and_trains_a_new_network(tmp_path: Path) -> None:
    v, m1 = valuer(tmp_path)
    first = v.value("fl")
    v, m2 = valuer(tmp_path, replace(OPTS, variant="auto", epochs=3))
    second = v.value("fl")
    assert m1.stages["label_data"]["computed_tiles"] > 0
    assert m2.stages["label_data"]["computed_tiles"] == 0
    assert m2.stages["label_data"]["reused_tiles"] > 0
    assert m2.stages["train_data"]["reused"] is False
    assert m2.stages["train_data"]["path"] != m1.stages["train_data"]["path"]
    assert first.data_kernel is not None and second.data_kernel is not None
    assert not np.array_equal(first.data_kernel, second.data_kernel)  # another network
