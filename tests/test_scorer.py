"""PairwiseScorer: parity with a plain PyTorch forward on the concatenated input, determinism
across thread counts, top-k / aggregates against numpy on the dense matrix, and clear errors."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch
from nncift import NnciftError, PairwiseScorer

D = 12


def _net(
    rng: np.random.Generator, in0: int, hidden: list[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    layers = []
    for h in [*hidden, 1]:
        s = 1.0 / np.sqrt(in0)
        layers.append(
            (
                (rng.uniform(-s, s, (h, in0))).astype(np.float32),
                rng.uniform(-s, s, h).astype(np.float32),
            )
        )
        in0 = h
    return layers


def _torch_forward(layers, x: torch.Tensor) -> torch.Tensor:
    """The straightforward network: nn.Linear + ReLU on the concatenated features."""
    mods: list[torch.nn.Module] = []
    for k, (w, b) in enumerate(layers):
        lin = torch.nn.Linear(w.shape[1], w.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w).double())
            lin.bias.copy_(torch.from_numpy(b).double())
        mods.append(lin)
        if k + 1 < len(layers):
            mods.append(torch.nn.ReLU())
    with torch.no_grad():
        return torch.nn.Sequential(*mods)(x)[:, 0]


def _reference(
    layers,
    rows,
    cols,
    layout,
    *,
    cos_feature=False,
    cos_weight=None,
    bilinear=None,
    scale=1.0,
    offset=0.0,
) -> np.ndarray:
    r = torch.from_numpy(rows).double()
    c = torch.from_numpy(cols).double()
    m, n = len(rows), len(cols)
    ei = r[:, None, :].expand(m, n, -1).reshape(m * n, -1)
    ej = c[None, :, :].expand(m, n, -1).reshape(m * n, -1)
    parts = [ei, torch.zeros(m * n, 1, dtype=torch.float64), ej] if layout == "paper" else [ei, ej]
    # docs/weights.md: cos = a.b / (max(|a|, 1e-12) max(|b|, 1e-12)).
    cos = (
        (ei / ei.norm(dim=1, keepdim=True).clamp_min(1e-12))
        * (ej / ej.norm(dim=1, keepdim=True).clamp_min(1e-12))
    ).sum(1)
    if cos_feature:
        parts.append(cos[:, None])
    raw = _torch_forward(layers, torch.cat(parts, dim=1))
    if cos_weight is not None:
        raw = raw + cos_weight * cos
    if bilinear is not None:
        u, v = (torch.from_numpy(a).double() for a in bilinear)
        raw = raw + ((ei @ u.T) * (ej @ v.T)).sum(1)
    return (raw * scale + offset).reshape(m, n).numpy()


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: relative to the matrix's scale (per-element relative
    error is meaningless where the prediction crosses zero)."""
    return float(np.max(np.abs(got.astype(np.float64) - want)) / max(np.max(np.abs(want)), 1e-12))


@pytest.mark.parametrize("layout", ["paper", "concat"])
@pytest.mark.parametrize(
    "hidden", [[], [100], [40, 7], [16, 12, 8], [9, 8, 7, 6]], ids=lambda h: f"depth{len(h) + 1}"
)
def test_parity_with_torch_forward(layout: str, hidden: list[int]) -> None:
    rng = np.random.default_rng(len(hidden) * 7 + len(layout))
    in0 = 2 * D + (1 if layout == "paper" else 0)
    layers = _net(rng, in0, hidden)
    rows = rng.standard_normal((23, D)).astype(np.float32)
    cols = rng.standard_normal((41, D)).astype(np.float32)
    scorer = PairwiseScorer.from_arrays(
        layers, input_layout=layout, embedding_dim=D, label_scale=1.7, label_offset=-0.3
    )
    want = _reference(layers, rows, cols, layout, scale=1.7, offset=-0.3)
    assert _rel_err(scorer.score(rows, cols), want) <= 1e-5


VARIANTS = {
    "cos-feature": dict(cos_feature=True),
    "cos-feature-deep": dict(cos_feature=True, hidden=[10, 5]),
    "cos-feature-linear": dict(cos_feature=True, hidden=[]),
    "cos-weight": dict(cos_weight=0.8),
    "bilinear": dict(rank=4),
    "all": dict(cos_feature=True, cos_weight=-0.6, rank=2, hidden=[30, 4]),
}


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_parity_similarity_aware_variants(name: str, isa: str) -> None:
    v = dict(VARIANTS[name])
    hidden = v.pop("hidden", [64])
    rank = v.pop("rank", None)
    rng = np.random.default_rng(11)
    cos_feature = v.get("cos_feature", False)
    layers = _net(rng, 2 * D + 1 + int(cos_feature), hidden)
    bil = (
        None
        if rank is None
        else (rng.standard_normal((rank, D)) * 0.3, rng.standard_normal((rank, D)) * 0.3)
    )
    rows = rng.standard_normal((19, D)).astype(np.float32)
    cols = rng.standard_normal((70, D)).astype(np.float32)
    cols[3] = 0.0  # a zero vector: cosine is 0 there (eps clamp), not NaN
    scorer = PairwiseScorer.from_arrays(
        layers,
        embedding_dim=D,
        cosine_feature=cos_feature,
        cosine_weight=v.get("cos_weight"),
        bilinear=bil,
        isa=isa,
    )
    want = _reference(
        layers,
        rows,
        cols,
        "paper",
        cos_feature=cos_feature,
        cos_weight=v.get("cos_weight"),
        bilinear=bil,
    )
    got = scorer.score(rows, cols)
    assert np.isfinite(got).all()
    assert _rel_err(got, want) <= 1e-5


@pytest.mark.parametrize("hidden", [[], [50], [8, 4], [5, 5, 5, 5]])
def test_pointwise_parity(hidden: list[int]) -> None:
    rng = np.random.default_rng(3)
    layers = _net(rng, D, hidden)
    rows = rng.standard_normal((300, D)).astype(np.float32)
    s = PairwiseScorer.from_arrays(
        layers, kind="pointwise", input_layout="pointwise", embedding_dim=D, label_scale=3.0
    )
    want = _torch_forward(layers, torch.from_numpy(rows).double()).numpy() * 3.0
    got = s.pointwise(rows)
    assert got.shape == (300,) and got.dtype == np.float32
    assert _rel_err(got, want) <= 1e-5
    np.testing.assert_array_equal(got, s.pointwise(rows, n_jobs=1))


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(5)
    layers = _net(rng, 2 * D + 1, [100])
    scorer = PairwiseScorer.from_arrays(layers, embedding_dim=D)
    rows = rng.standard_normal((301, D)).astype(np.float32)
    cols = rng.standard_normal((1100, D)).astype(np.float32)
    return scorer, rows, cols, scorer.score(rows, cols, n_jobs=2)


def test_identical_for_one_and_two_threads(case) -> None:
    scorer, rows, cols, dense = case
    np.testing.assert_array_equal(scorer.score(rows, cols, n_jobs=1), dense)
    i1, v1 = scorer.topk(rows, cols, 9, n_jobs=1)
    i2, v2 = scorer.topk(rows, cols, 9, n_jobs=2)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(
        scorer.aggregate(rows, cols, "mean", n_jobs=1),
        scorer.aggregate(rows, cols, "mean", n_jobs=2),
    )


def test_topk_equals_argsort_of_dense(case) -> None:
    scorer, rows, cols, dense = case
    k = 25
    idx, val = scorer.topk(rows, cols, k)
    assert idx.shape == val.shape == (len(rows), k)
    assert idx.dtype == np.int64 and val.dtype == np.float32
    order = np.lexsort((np.broadcast_to(np.arange(dense.shape[1]), dense.shape), -dense), axis=1)[
        :, :k
    ]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(val, np.take_along_axis(dense, order, axis=1))


def test_topk_ties_go_to_lowest_index() -> None:
    rng = np.random.default_rng(8)
    s = PairwiseScorer.from_arrays(_net(rng, 2 * D, [8]), input_layout="concat", embedding_dim=D)
    rows = rng.standard_normal((2, D)).astype(np.float32)
    cols = np.repeat(rng.standard_normal((1, D)).astype(np.float32), 40, axis=0)
    idx, _ = s.topk(rows, cols, 6)
    np.testing.assert_array_equal(idx, [[0, 1, 2, 3, 4, 5]] * 2)


def test_aggregates_equal_numpy_on_dense(case) -> None:
    scorer, rows, cols, dense = case
    d64 = dense.astype(np.float64)
    np.testing.assert_allclose(
        scorer.aggregate(rows, cols, "mean"), d64.mean(1), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(scorer.aggregate(rows, cols, "max"), dense.max(1))
    labels = np.array(["task-a", "task-b", "task-c"])[np.arange(len(cols)) % 3]
    want = np.stack([d64[:, labels == t].mean(1) for t in ("task-a", "task-b", "task-c")], 1).max(1)
    np.testing.assert_allclose(
        scorer.aggregate(rows, cols, "mean-max", groups=labels), want, rtol=1e-6, atol=1e-6
    )


def test_bound_kernel_blocks_match_dense(case) -> None:
    scorer, rows, cols, dense = case
    kern = scorer.bind(rows, cols)
    assert kern.shape == (301, 1100)
    ri = np.array([300, 0, 7, 7, 150])
    ci = np.array([1099, 3, 512, 511, 0, 64])
    np.testing.assert_array_equal(kern.block(ri, ci), dense[np.ix_(ri, ci)])
    np.testing.assert_array_equal(scorer.block(rows, cols, ri, ci), dense[np.ix_(ri, ci)])
    np.testing.assert_array_equal(kern.dense(), dense)
    with pytest.raises(ValueError, match="out of range"):
        kern.block(np.array([301]), np.array([0]))
    with pytest.raises(ValueError, match="negative"):
        kern.block(np.array([-1]), np.array([0]))


def test_float64_and_noncontiguous_inputs_are_converted(case) -> None:
    scorer, rows, cols, dense = case
    np.testing.assert_array_equal(scorer.score(rows.astype(np.float64), cols), dense)
    wide = np.zeros((len(cols), 2 * D), np.float32)
    wide[:, ::2] = cols
    np.testing.assert_array_equal(scorer.score(rows, wide[:, ::2]), dense)
    np.testing.assert_array_equal(scorer.score(np.asfortranarray(rows), cols), dense)


def test_out_array_is_filled_in_place(case, tmp_path) -> None:
    scorer, rows, cols, dense = case
    out = np.lib.format.open_memmap(
        tmp_path / "k.npy", mode="w+", dtype=np.float32, shape=dense.shape
    )
    assert scorer.score(rows, cols, out=out) is out
    out.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "k.npy"), dense)
    with pytest.raises(ValueError, match="shape"):
        scorer.score(rows, cols, out=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="float32"):
        scorer.score(rows, cols, out=np.zeros(dense.shape, np.float64))


def test_bad_inputs_are_clear_errors(case) -> None:
    scorer, rows, cols, _ = case
    with pytest.raises(ValueError, match="12-dimensional"):
        scorer.score(rows, cols[:, :5])
    with pytest.raises(ValueError, match="empty"):
        scorer.score(rows[:0], cols)
    with pytest.raises(ValueError, match="2-D"):
        scorer.score(rows[0], cols)
    bad = cols.copy()
    bad[17, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite.*row 17"):
        scorer.score(rows, bad)
    bad[17, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        scorer.topk(bad, cols, 3)
    with pytest.raises(ValueError, match="dtype"):
        scorer.score(rows.astype(str), cols)
    with pytest.raises(ValueError, match="k must"):
        scorer.topk(rows, cols, 0)
    with pytest.raises(ValueError, match="between 1 and"):
        scorer.topk(rows, cols, 5000)
    with pytest.raises(ValueError, match="how"):
        scorer.aggregate(rows, cols, "median")
    with pytest.raises(ValueError, match="groups"):
        scorer.aggregate(rows, cols, "mean-max")
    with pytest.raises(ValueError, match="one label per column"):
        scorer.aggregate(rows, cols, "mean-max", groups=[0, 1])
    with pytest.raises(ValueError, match="pairwise network"):
        scorer.pointwise(rows)
    with pytest.raises(ValueError, match="n_jobs"):
        scorer.score(rows, cols, n_jobs=-3)


def test_bad_in_memory_weights_are_value_errors() -> None:
    rng = np.random.default_rng(0)
    layers = _net(rng, 2 * D + 1, [4])
    with pytest.raises(ValueError, match="input columns"):
        PairwiseScorer.from_arrays(layers, embedding_dim=D + 1)
    layers[1][0][0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        PairwiseScorer.from_arrays(layers, embedding_dim=D)


def test_memory_guard_refuses_before_allocating(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    s = PairwiseScorer.from_arrays(_net(rng, 2 * 4 + 1, [3]), embedding_dim=4)
    # 3e5 x 3e5 float32 = 335 GiB: far beyond this machine; refused at once, no allocation.
    rows = np.broadcast_to(np.ones(4, np.float32), (300_000, 4))
    t = time.perf_counter()
    with pytest.raises(NnciftError, match="top-k"):
        s.score(rows, rows)
    assert time.perf_counter() - t < 5.0
    # The streaming modes need no dense matrix and still work on the same request size.
    assert s.aggregate(rows[:2000], rows, "max").shape == (2000,)


def test_gil_is_released_during_scoring(ticks_while: Any) -> None:
    rng = np.random.default_rng(0)
    s = PairwiseScorer.from_arrays(_net(rng, 2 * 64 + 1, [100]), embedding_dim=64)
    rows = rng.standard_normal((4000, 64)).astype(np.float32)  # ~0.2-1 s on one thread
    ticks, elapsed, _ = ticks_while(lambda: s.aggregate(rows, rows, "mean", n_jobs=1))
    # A held GIL would leave the counter at ~0 for the whole (single) call.
    assert ticks >= 10, (elapsed, ticks)


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"hidden_sizes": (24, 8), "input_layout": "concat"},
        {"cosine_feature": True, "output_cosine": True, "bilinear_rank": 3},
        {"hidden_sizes": (), "cosine_feature": True},
    ],
    ids=["paper", "deep-concat", "similarity-aware", "linear-cos"],
)
def test_parity_with_the_trainers_network_file(tmp_path, opts: dict) -> None:
    """A file exported by nncift.network scores like that network's own forward."""
    from nncift.network import InfluenceNetwork

    torch.manual_seed(0)
    net = InfluenceNetwork(D, **opts)
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised terms would hide mistakes
            p.copy_(torch.randn_like(p) * 0.3)
    path = tmp_path / "net.safetensors"
    net.export(path, embedding_model="m", label_scale=1.0, label_offset=0.0)
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((17, D)).astype(np.float32)
    cols = rng.standard_normal((29, D)).astype(np.float32)
    ri = torch.arange(17).repeat_interleave(29)
    ci = torch.arange(29).repeat(17)
    er, ec = torch.from_numpy(rows).double(), torch.from_numpy(cols).double()
    net = net.double()
    with torch.no_grad():
        want = net.forward_features(net.build_features(er[ri], ec[ci]), er[ri], ec[ci])
    got = PairwiseScorer.load(path).score(rows, cols)
    assert _rel_err(got, want.reshape(17, 29).numpy()) <= 1e-5
