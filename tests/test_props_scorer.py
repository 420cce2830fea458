"""Property tests of `PairwiseScorer` on random networks and embeddings (hypothesis).

Random `NetworkWeights` (paper / concat / pointwise layouts, 1 to 3 layers, the cosine
feature, the output cosine term, a bilinear term, label scale and offset) and random
embeddings with repeated rows (exact ties on purpose). The modes agree with each other:
dense equals a float64 NumPy forward of docs/weights.md; top-k equals a stable argsort of
the dense matrix (ties to the lowest column, values equal to the dense entries);
mean / max / mean-max aggregates equal the dense matrix reduced; a bound `ScorerKernel`
gives the same dense matrix, blocks, top-k and aggregates; pointwise networks equal the
forward on single items; and nothing depends on n_jobs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st
from nncift import PairwiseScorer
from nncift.weights import NetworkWeights
from props import bounded

#: The scorer's pair kernels, each needing the CPU features of the ones before it.
ISAS = ("generic", "avx2", "avx512")


@st.composite
def networks(draw: st.DrawFn) -> tuple[NetworkWeights, np.random.Generator]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layout = draw(st.sampled_from(["paper", "concat", "pointwise"]))
    d = draw(st.integers(1, 8))
    cos_feature = layout != "pointwise" and draw(st.booleans())
    in0 = {"paper": 2 * d + 1, "concat": 2 * d, "pointwise": d}[layout] + int(cos_feature)
    hidden = draw(st.lists(st.integers(1, 8), max_size=2))
    layers, width = [], in0
    for h in [*hidden, 1]:
        layers.append(
            (
                rng.normal(0, 1 / np.sqrt(width), (h, width)).astype(np.float32),
                rng.normal(0, 0.1, h).astype(np.float32),
            )
        )
        width = h
    extra: dict[str, Any] = {}
    if layout != "pointwise":
        if draw(st.booleans()):
            extra["cosine_weight"] = draw(st.floats(-2, 2))
        if draw(st.booleans()):
            r = draw(st.integers(1, 3))
            extra["bilinear"] = (
                rng.normal(size=(r, d)).astype(np.float32),
                rng.normal(size=(r, d)).astype(np.float32),
            )
    net = NetworkWeights(
        layers,
        kind="pointwise" if layout == "pointwise" else "pairwise",
        input_layout=layout,
        embedding_dim=d,
        embedding_model="test",
        label_scale=draw(st.sampled_from([1.0, 0.5, 3.0])),
        label_offset=draw(st.sampled_from([0.0, -1.0, 5.0])),
        cosine_feature=cos_feature,
        **extra,
    )
    return net, rng


def _embeddings(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """(n, d) float32 with repeated rows (exact ties), and sometimes a zero row."""
    base = rng.normal(size=(max(1, n // 2), d)).astype(np.float32)
    e = base[rng.integers(0, len(base), n)]
    if rng.random() < 0.3:
        e[rng.integers(0, n)] = 0.0  # a zero embedding: cosine uses max(|a|, 1e-12)
    return np.ascontiguousarray(e)


def forward(net: NetworkWeights, rows: np.ndarray, cols: np.ndarray | None) -> np.ndarray:
    """docs/weights.md in float64: (M, N) for a pairwise network, (M,) for a pointwise one."""
    r = rows.astype(np.float64)
    if cols is None:
        x = r
    else:
        c = cols.astype(np.float64)
        m, n = len(r), len(c)
        ei = np.repeat(r, n, axis=0)  # (M*N, d)
        ej = np.tile(c, (m, 1))
        parts = [ei, np.zeros((m * n, 1)), ej] if net.input_layout == "paper" else [ei, ej]
        ni = np.maximum(np.linalg.norm(ei, axis=1), 1e-12)
        nj = np.maximum(np.linalg.norm(ej, axis=1), 1e-12)
        cos = (ei * ej).sum(1) / (ni * nj)
        if net.cosine_feature:
            parts.append(cos[:, None])
        x = np.concatenate(parts, axis=1)
    for k, (w, b) in enumerate(net.layers):
        x = x @ w.astype(np.float64).T + b.astype(np.float64)
        if k + 1 < len(net.layers):
            x = np.maximum(x, 0)
    raw = x[:, 0]
    if cols is not None:
        if net.cosine_weight is not None:
            raw = raw + net.cosine_weight * cos
        if net.bilinear is not None:
            u, v = (a.astype(np.float64) for a in net.bilinear)
            raw = raw + ((ei @ u.T) * (ej @ v.T)).sum(1)
    out = raw * net.label_scale + net.label_offset
    return out if cols is None else out.reshape(len(rows), len(cols))


@bounded(150)
@given(net_rng=networks(), m=st.integers(1, 12), n=st.integers(1, 16), data=st.data())
def test_dense_topk_aggregate_and_bound_kernel_agree(
    net_rng: tuple[NetworkWeights, np.random.Generator], m: int, n: int, data: st.DataObject
) -> None:
    net, rng = net_rng
    # Every pair kernel this CPU has (the generic one everywhere), each consistent with
    # itself across modes and with the float64 forward. Only instruction sets up to the
    # detected one: forcing one the CPU lacks is not refused by the core.
    best = PairwiseScorer.from_network(net)
    have = ISAS[: ISAS.index(best.isa) + 1] if best.isa in ISAS else ("generic",)
    scorer = PairwiseScorer.from_network(net, isa=data.draw(st.sampled_from(have)))
    event(f"{net.input_layout} isa={scorer.isa}")
    d = net.embedding_dim
    rows = _embeddings(rng, m, d)
    if net.kind == "pointwise":
        got = scorer.pointwise(rows, n_jobs=1)
        assert got.shape == (m,) and got.dtype == np.float32
        np.testing.assert_allclose(got, forward(net, rows, None), rtol=1e-4, atol=1e-4)
        for n_jobs in (2, 4):
            assert np.array_equal(scorer.pointwise(rows, n_jobs=n_jobs), got)
        return
    cols = _embeddings(rng, n, d)
    dense = scorer.score(rows, cols, n_jobs=1)
    assert dense.shape == (m, n) and dense.dtype == np.float32
    want = forward(net, rows, cols)
    np.testing.assert_allclose(dense, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))
    for n_jobs in (2, 4):
        assert np.array_equal(scorer.score(rows, cols, n_jobs=n_jobs), dense)

    # Top-k: the dense matrix's stable descending order (ties to the lowest column).
    k = data.draw(st.integers(1, n))
    idx, val = scorer.topk(rows, cols, k, n_jobs=1)
    assert idx.shape == val.shape == (m, k) and idx.dtype == np.int64
    order = np.argsort(-dense, axis=1, kind="stable")[:, :k]
    assert np.array_equal(idx, order), f"top-k {idx} != stable argsort {order}"
    assert np.array_equal(val, np.take_along_axis(dense, idx, axis=1))
    for n_jobs in (2, 4):
        i2, v2 = scorer.topk(rows, cols, k, n_jobs=n_jobs)
        assert np.array_equal(i2, idx) and np.array_equal(v2, val)

    # Aggregates: the dense matrix reduced.
    scale = max(1.0, float(np.abs(dense).max()))
    mean = scorer.aggregate(rows, cols, how="mean", n_jobs=1)
    np.testing.assert_allclose(
        mean, dense.astype(np.float64).mean(axis=1), rtol=1e-5, atol=1e-6 * scale
    )
    assert np.array_equal(scorer.aggregate(rows, cols, how="max", n_jobs=1), dense.max(axis=1))
    labels = rng.choice(np.array(["a", "b", "c"]), size=n)
    group_means = [dense[:, labels == g].astype(np.float64).mean(axis=1) for g in np.unique(labels)]
    mean_max = scorer.aggregate(rows, cols, how="mean-max", groups=labels, n_jobs=1)
    np.testing.assert_allclose(mean_max, np.max(group_means, axis=0), rtol=1e-5, atol=1e-6 * scale)
    for how in ("mean", "max", "mean-max"):
        g = labels if how == "mean-max" else None
        one = scorer.aggregate(rows, cols, how=how, groups=g, n_jobs=1)
        for n_jobs in (2, 4):
            assert np.array_equal(
                scorer.aggregate(rows, cols, how=how, groups=g, n_jobs=n_jobs), one
            )

    # A bound kernel computes the same entries, blocks, top-k and aggregates.
    kern = scorer.bind(rows, cols, n_jobs=1)
    assert kern.shape == (m, n)
    assert np.array_equal(kern.dense(n_jobs=1), dense)
    ri = rng.integers(0, m, data.draw(st.integers(1, 2 * m)), dtype=np.int64)
    ci = rng.integers(0, n, data.draw(st.integers(1, 2 * n)), dtype=np.int64)
    assert np.array_equal(kern.block(ri, ci), dense[np.ix_(ri, ci)])
    ki, kv = kern.topk(k, n_jobs=1)
    assert np.array_equal(ki, idx) and np.array_equal(kv, val)
    assert np.array_equal(kern.aggregate("max", None, 1), dense.max(axis=1))
    np.testing.assert_allclose(kern.aggregate("mean", None, 1), mean, rtol=1e-6, atol=1e-7 * scale)
