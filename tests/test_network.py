"""The InfluenceNetwork: factorised forward == explicit features, export round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nncift.errors import InputError
from nncift.network import InfluenceNetwork, check_embeddings

D = 24


def _emb(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g)


VARIANTS = [
    {"input_layout": "paper"},
    {"input_layout": "concat", "hidden_sizes": (16, 8)},
    {"input_layout": "paper", "cosine_feature": True},
    {"input_layout": "paper", "output_cosine": True, "bilinear_rank": 3},
    {"input_layout": "concat", "hidden_sizes": ()},
]


@pytest.mark.parametrize("kw", VARIANTS)
def test_factorised_matches_explicit_features(kw: dict) -> None:
    torch.manual_seed(0)
    net = InfluenceNetwork(D, **kw)
    if net.cosine_weight is not None:
        with torch.no_grad():
            net.cosine_weight.fill_(0.7)
    r, c = _emb(9, 1), _emb(7, 2)
    i = torch.tensor([0, 3, 8, 8, 1])
    j = torch.tensor([6, 0, 2, 2, 5])
    fact = net.forward_pairs(r, c, i, j)
    x = net.build_features(r[i], c[j])
    assert x.shape[1] == net.linear(0).in_features
    ref = net.forward_features(x, r[i], c[j])
    torch.testing.assert_close(fact, ref, rtol=1e-5, atol=1e-6)
    full = net.predict_matrix(r, c, chunk_elems=50)  # tiny chunks exercise the blocking
    torch.testing.assert_close(full[i, j], ref, rtol=1e-5, atol=1e-6)


def test_paper_layout_separator_is_dead_and_sizes() -> None:
    net = InfluenceNetwork(D)
    assert net.linear(0).in_features == 2 * D + 1
    assert sum(p.numel() for p in net.parameters()) == (2 * D + 1) * 100 + 100 + 101
    r, c = _emb(3, 3), _emb(3, 4)
    i = torch.arange(3)
    before = net.forward_pairs(r, c, i, i)
    with torch.no_grad():
        net.linear(0).weight[:, D] = 123.0  # the separator column multiplies a constant 0
    torch.testing.assert_close(net.forward_pairs(r, c, i, i), before)


def test_order_matters() -> None:
    torch.manual_seed(1)
    net = InfluenceNetwork(D)
    e = _emb(2, 5)
    a = net.forward_pairs(e, e, torch.tensor([0]), torch.tensor([1]))
    b = net.forward_pairs(e, e, torch.tensor([1]), torch.tensor([0]))
    assert not torch.allclose(a, b)


def test_pointwise() -> None:
    net = InfluenceNetwork(D, input_layout="pointwise")
    e = _emb(5, 6)
    out = net.forward_points(e, torch.arange(5))
    torch.testing.assert_close(out, net.forward_features(e))
    with pytest.raises(InputError, match="pairwise"):
        InfluenceNetwork(D, input_layout="pointwise", cosine_feature=True)


def test_bad_configs() -> None:
    with pytest.raises(InputError, match="input_layout"):
        InfluenceNetwork(D, input_layout="sideways")
    with pytest.raises(InputError, match="hidden_sizes"):
        InfluenceNetwork(D, hidden_sizes=(10, 10, 10, 10, 10))


@pytest.mark.parametrize("kw", VARIANTS)
def test_export_load_round_trip(tmp_path, kw: dict) -> None:
    torch.manual_seed(2)
    net = InfluenceNetwork(D, **kw)
    path = tmp_path / "net.safetensors"
    net.export(path, embedding_model="m", label_scale=2.0, label_offset=0.5, label_name="x")
    back, w = InfluenceNetwork.load(path)
    assert w.label_scale == 2.0 and w.label_offset == 0.5 and w.embedding_model == "m"
    r, c = _emb(6, 7), _emb(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(back.predict_matrix(r, c), net.predict_matrix(r, c))


def test_check_embeddings_refuses_other_model() -> None:
    meta = {"embedding_dim": "384", "embedding_model": "sentence-transformers/all-MiniLM-L6-v2"}
    check_embeddings(meta, np.zeros((2, 384), np.float32), "sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(InputError, match="dimension 768"):
        check_embeddings(meta, np.zeros((2, 768), np.float32))
    with pytest.raises(InputError, match="bge"):
        check_embeddings(meta, np.zeros((2, 384), np.float32), "BAAI/bge-small-en-v1.5")


def _scorer_cls():  # the Rust scorer, when the extension has been built with it
    try:
        from nncift.scorer import PairwiseScorer
    except ImportError:
        return None
    return PairwiseScorer


@pytest.mark.skipif(_scorer_cls() is None, reason="nncift.PairwiseScorer not built yet")
@pytest.mark.parametrize("kw", VARIANTS)
def test_rust_scorer_reproduces_trained_torch(tmp_path, kw: dict) -> None:
    from nncift.estimator import EstimatorSettings, InfluenceEstimator

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(40, D)).astype(np.float32)
    cols = rng.normal(size=(30, D)).astype(np.float32)
    lab = rows[:20] @ cols[:15].T
    st = EstimatorSettings(
        epochs=2,
        lr=1e-3,
        hidden_sizes=kw.get("hidden_sizes", (100,)),
        input_layout=kw["input_layout"],
        cosine_feature=kw.get("cosine_feature", False),
        output_cosine=kw.get("output_cosine", False),
        bilinear_rank=kw.get("bilinear_rank", 0),
    )
    est = InfluenceEstimator(st, random_state=0, progress=False).fit(rows, cols, lab)
    torch_pred = est.predict(rows, cols, use_rust=False)
    path = tmp_path / "net.safetensors"
    est.export(path)
    rust = np.asarray(_scorer_cls().load(str(path)).score(rows, cols))
    scale = np.abs(torch_pred).max()
    assert np.max(np.abs(rust - torch_pred)) <= 1e-5 * scale
    # predict() takes the Rust path by default and agrees too.
    np.testing.assert_allclose(est.predict(rows, cols), torch_pred, rtol=0, atol=1e-5 * scale)
