"""Selection engine: parity with submodlib and apricot, modes, optimizers, determinism, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from nncift import _core
from nncift.selection import (
    STOP_IF_ZERO_GAIN_DEFAULT,
    STOP_REASONS,
    resolve_budget,
    select,
)
from nncift.selection_plan import estimate_selection


@pytest.fixture
def submodlib() -> Any:
    """The peer library, for the parity tests only: without it they skip, the rest runs."""
    return pytest.importorskip("submodlib")


def blobs(n: int, d: int, seed: int, centers: int = 6) -> np.ndarray:
    """Clustered points: a 'real-ish' embedding cloud (float32, (n, d))."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)) * 3
    x = c[rng.integers(0, centers, size=n)] + rng.normal(size=(n, d))
    return x.astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = an if b is None else b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.clip(an @ bn.T, 0, 1).astype(np.float32)


def kernels(seed: int, n: int = 120) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    u = rng.random((n, n), dtype=np.float32)
    sym = ((u + u.T) / 2).astype(np.float32)
    return [sym, cosine(blobs(n, 16, seed))]


def sm_pairs(result: list[tuple[int, float]]) -> tuple[list[int], np.ndarray]:
    return [int(i) for i, _ in result], np.array([g for _, g in result])


SM_OPT = {"naive": "NaiveGreedy", "lazy": "LazyGreedy"}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("optimizer", ["naive", "lazy"])
def test_fl_matches_submodlib(seed: int, optimizer: str, submodlib: Any) -> None:
    for k in kernels(seed):
        n = k.shape[0]
        f = submodlib.FacilityLocationFunction(n=n, mode="dense", sijs=k, separate_rep=False)
        want_idx, want_g = sm_pairs(
            f.maximize(budget=15, optimizer=SM_OPT[optimizer], show_progress=False)
        )
        got = select(
            "fl", budget=15, kernel=k, optimizer=optimizer, stop_if_zero_gain=False, n_jobs=1
        )
        assert got.indices.tolist() == want_idx
        np.testing.assert_allclose(got.gains, want_g, rtol=1e-4)
        assert got.objective == pytest.approx(f.evaluate(set(want_idx)), rel=1e-4)


def test_fl_separate_represented_set_matches_submodlib(submodlib: Any) -> None:
    x = blobs(80, 12, 1)
    rep = blobs(30, 12, 2)
    k = cosine(x, rep)  # (n, n_rep): rows are pool items (nncift orientation)
    f = submodlib.FacilityLocationFunction(
        n=80, mode="dense", sijs=np.ascontiguousarray(k.T), separate_rep=True, n_rep=30
    )
    want_idx, want_g = sm_pairs(f.maximize(budget=10, optimizer="LazyGreedy", show_progress=False))
    got = select("fl", budget=10, kernel=k, stop_if_zero_gain=False)
    assert got.indices.tolist() == want_idx
    np.testing.assert_allclose(got.gains, want_g, rtol=1e-4)
    by_emb = select(
        "fl", budget=10, embeddings=x, represented_embeddings=rep, stop_if_zero_gain=False
    )
    assert by_emb.indices.tolist() == want_idx


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("optimizer", ["naive", "lazy"])
@pytest.mark.parametrize("eta", [1.0, 2.0])
def test_flmi_matches_submodlib(seed: int, optimizer: str, eta: float, submodlib: Any) -> None:
    # Uniform random kernels with many queries: no saturation within the budget. (Once
    # every query is covered all gains are 0 and the order among those ties is a
    # convention: submodlib walks a hash set, nncift a seeded permutation. submodlib's
    # stopIfZeroGain=True also stops early on positive gains, so it is not used here.)
    rng = np.random.default_rng(seed)
    u = rng.random((100, 100), dtype=np.float32)
    k = ((u + u.T) / 2).astype(np.float32)
    kq = rng.random((100, 40), dtype=np.float32)
    f = submodlib.FacilityLocationMutualInformationFunction(
        n=100, num_queries=40, data_sijs=k, query_sijs=kq, magnificationEta=eta
    )
    want_idx, want_g = sm_pairs(
        f.maximize(budget=12, optimizer=SM_OPT[optimizer], show_progress=False)
    )
    got = select("flmi", budget=12, kernel=k, query_kernel=kq, eta=eta, optimizer=optimizer)
    assert got.gains.min() > 1e-3  # no ties decided by convention
    assert got.indices.tolist() == want_idx
    np.testing.assert_allclose(got.gains, want_g, rtol=1e-4)
    # The same function from embeddings (cosine, clipped) agrees with its explicit kernels.
    x, q = blobs(100, 16, seed), blobs(7, 16, seed + 50)
    a = select("flmi", budget=5, embeddings=x, query_embeddings=q, eta=eta)
    b = select("flmi", budget=5, kernel=cosine(x), query_kernel=cosine(x, q), eta=eta)
    assert a.indices.tolist() == b.indices.tolist()
    np.testing.assert_allclose(a.gains, b.gains, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("optimizer", ["naive", "lazy"])
@pytest.mark.parametrize("nu", [1.0, 0.7])
def test_flcg_matches_submodlib(seed: int, optimizer: str, nu: float, submodlib: Any) -> None:
    rng = np.random.default_rng(seed + 10)
    u = rng.random((100, 100), dtype=np.float32)
    k = ((u + u.T) / 2).astype(np.float32)
    kp = (0.8 * rng.random((100, 5))).astype(np.float32)
    f = submodlib.FacilityLocationConditionalGainFunction(
        n=100, num_privates=5, data_sijs=k, private_sijs=kp, privacyHardness=nu
    )
    want_idx, want_g = sm_pairs(
        f.maximize(budget=12, optimizer=SM_OPT[optimizer], show_progress=False)
    )
    got = select("flcg", budget=12, kernel=k, private_kernel=kp, nu=nu, optimizer=optimizer)
    assert got.gains.min() > 1e-3
    assert got.indices.tolist() == want_idx
    np.testing.assert_allclose(got.gains, want_g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("optimizer", ["naive", "lazy"])
@pytest.mark.parametrize("lam", [0.2, 0.5])
def test_graph_cut_matches_submodlib(seed: int, optimizer: str, lam: float, submodlib: Any) -> None:
    for k in kernels(seed, n=90):
        f = submodlib.GraphCutFunction(
            n=90, mode="dense", lambdaVal=lam, separate_rep=False, ggsijs=k
        )
        want_idx, want_g = sm_pairs(
            f.maximize(budget=10, optimizer=SM_OPT[optimizer], show_progress=False)
        )
        got = select(
            "graph-cut",
            budget=10,
            kernel=k,
            lambda_=lam,
            optimizer=optimizer,
            stop_if_zero_gain=False,
        )
        assert got.indices.tolist() == want_idx
        np.testing.assert_allclose(got.gains, want_g, rtol=1e-4)


def test_fl_objective_matches_apricot() -> None:
    apricot = pytest.importorskip("apricot")
    for seed in range(2):
        k = cosine(blobs(150, 16, seed)).astype(np.float64)
        sel = apricot.FacilityLocationSelection(
            20, metric="precomputed", optimizer="lazy", verbose=False
        )
        sel.fit(k)
        ours = select("fl", budget=20, kernel=k, stop_if_zero_gain=False)
        ours_value = k[:, ours.indices].max(axis=1).sum()
        theirs_value = k[:, np.asarray(sel.ranking)].max(axis=1).sum()
        assert ours_value == pytest.approx(theirs_value, rel=1e-5)
        assert ours.objective == pytest.approx(ours_value, rel=1e-5)


def test_stochastic_optimizers_keep_the_guarantee_over_seeds() -> None:
    x = blobs(600, 16, 3)
    lazy = select("fl", budget=30, embeddings=x, mode="dense")
    eps = 0.1
    for name in ("stochastic", "lazier-than-lazy"):
        ratios = [
            select(
                "fl", budget=30, embeddings=x, optimizer=name, epsilon=eps, random_state=s
            ).objective
            / lazy.objective
            for s in range(8)
        ]
        assert np.mean(ratios) >= 1 - 1 / np.e - eps
        assert min(ratios) > 0.9  # in practice far above the bound


def test_sparse_and_on_the_fly_equal_dense_with_all_neighbours() -> None:
    x = blobs(150, 12, 4)
    dense = select("fl", budget=15, embeddings=x, mode="dense", stop_if_zero_gain=False)
    sparse = select("fl", budget=15, embeddings=x, mode="sparse", knn=150, stop_if_zero_gain=False)
    fly = select("fl", budget=15, embeddings=x, mode="onthefly", stop_if_zero_gain=False)
    assert dense.mode == "dense" and sparse.mode == "sparse" and fly.mode == "onthefly"
    assert sparse.indices.tolist() == dense.indices.tolist() == fly.indices.tolist()
    np.testing.assert_allclose(sparse.gains, dense.gains, rtol=1e-6)
    q = blobs(6, 12, 9)
    a = select(
        "flmi", budget=10, embeddings=x, query_embeddings=q, mode="dense", stop_if_zero_gain=False
    )
    b = select(
        "flmi",
        budget=10,
        embeddings=x,
        query_embeddings=q,
        mode="sparse",
        knn=150,
        stop_if_zero_gain=False,
    )
    assert a.indices.tolist() == b.indices.tolist()


@pytest.mark.parametrize("optimizer", ["naive", "lazy", "stochastic", "lazier-than-lazy", "greedi"])
def test_thread_count_does_not_change_bits(optimizer: str) -> None:
    x = blobs(400, 16, 5)
    kw = dict(
        budget=25,
        embeddings=x,
        optimizer=optimizer,
        random_state=3,
        greedi_parts=3,
        stop_if_zero_gain=False,
    )
    a = select("fl", n_jobs=1, **kw)  # type: ignore[arg-type]
    b = select("fl", n_jobs=2, **kw)  # type: ignore[arg-type]
    assert a.indices.tolist() == b.indices.tolist()
    assert a.gains.tobytes() == b.gains.tobytes()
    assert a.objective == b.objective


def test_seeds_reproduce_and_differ() -> None:
    x = blobs(500, 8, 6)
    runs = [
        select("fl", budget=20, embeddings=x, optimizer="stochastic", epsilon=0.5, random_state=s)
        for s in (1, 1, 2)
    ]
    assert runs[0].indices.tolist() == runs[1].indices.tolist()
    assert runs[0].indices.tolist() != runs[2].indices.tolist()


def test_lazy_equals_naive_exactly() -> None:
    k = cosine(blobs(300, 16, 8))
    for obj in ("fl", "graph-cut", "disparity-min"):
        a = select(obj, budget=25, kernel=k, optimizer="naive", stop_if_zero_gain=False)
        b = select(obj, budget=25, kernel=k, optimizer="lazy", stop_if_zero_gain=False)
        assert a.indices.tolist() == b.indices.tolist(), obj
        assert a.gains.tobytes() == b.gains.tobytes(), obj


def test_result_shapes_and_dtypes() -> None:
    r = select("fl", budget=0.1, embeddings=blobs(200, 8, 0))
    assert r.indices.dtype == np.int64 and r.indices.shape == (20,)
    assert r.gains.dtype == np.float64 and r.gains.shape == (20,)
    assert np.all(np.diff(r.gains) <= 1e-12)  # FL gains never grow
    assert len(set(r.indices.tolist())) == 20
    assert {"kernel", "select", "total"} <= set(r.timings)


def test_topk_mix_costs_and_initial() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.3], dtype=np.float32)
    top = select("topk", budget=3, scores=scores)
    # The tie 1/3 goes to the item ranked first in the seed's tie order (it used to go to the
    # lowest index; that made a sorted pool file decide).
    rank = _core.tie_ranks(5, 0)
    first, second = sorted((1, 3), key=lambda j: rank[j])
    assert top.indices.tolist() == [first, second, 2]
    assert top.objective == pytest.approx(2.3, rel=1e-6)
    x = blobs(100, 8, 1)
    s = np.random.default_rng(0).random(100).astype(np.float32)
    mix = select("mix", budget=10, embeddings=x, scores=s, quality_weight=50.0)
    fl = select("fl", budget=10, embeddings=x)
    assert mix.indices.tolist() != fl.indices.tolist()
    assert s[mix.indices].sum() > s[fl.indices].sum()
    costs = np.ones(100)
    costs[fl.indices[0]] = 1000.0  # FL's first pick no longer fits
    cheap = select("fl", budget=10, embeddings=x, costs=costs, cost_budget=10.0)
    assert fl.indices[0] not in cheap.indices.tolist()
    assert costs[cheap.indices].sum() <= 10.0
    init = fl.indices[:3]
    cont = select("fl", budget=7, embeddings=x, initial=init, stop_if_zero_gain=False)
    assert cont.indices.tolist() == fl.indices[3:].tolist()
    assert cont.objective == pytest.approx(fl.objective, rel=1e-9)


def test_disparity_objectives() -> None:
    k = cosine(blobs(60, 8, 2))
    ds = select("disparity-sum", budget=5, kernel=k)
    assert len(ds) == 5  # the first pick (gain 0) is exempt from the zero-gain stop
    sub = ds.indices
    want = sum(1 - k[a, b] for i, a in enumerate(sub) for b in sub[i + 1 :])
    assert ds.objective == pytest.approx(want, rel=1e-5)
    dm = select("disparity-min", budget=5, kernel=k)
    d = 1 - k[np.ix_(dm.indices, dm.indices)]
    np.fill_diagonal(d, np.inf)
    assert dm.objective == pytest.approx(d.min(), rel=1e-5)


def test_greedi_runs_and_reports_mode() -> None:
    x = blobs(900, 8, 7)
    r = select("fl", budget=30, embeddings=x, optimizer="greedi", greedi_parts=3, knn=20)
    assert r.mode == "greedi-sparse" and r.optimizer == "greedi"
    assert len(r) == 30 and len(set(r.indices.tolist())) == 30


def test_estimate_picks_modes_and_prints() -> None:
    small = estimate_selection(5_000, budget=0.1, d=384)
    assert small.mode == "dense" and small.budget == 500
    big = estimate_selection(100_000, budget=0.1, d=384, memory_limit=8 * 1024**3)
    assert big.mode == "sparse"
    assert big.memory_bytes < 4 * 1024**3
    huge = estimate_selection(1_000_000, budget=0.1, d=384, memory_limit=8 * 1024**3)
    assert huge.mode.startswith("greedi")
    assert "100,000 items" in str(big) and "memory" in str(big)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(budget=0), "budget must be > 0"),
        (dict(budget=-3), "budget must be > 0"),
        (dict(budget=11), "larger than"),
        (dict(budget=2.5), "whole"),
        (dict(budget=2, kernel=np.full((10, 10), np.nan, dtype=np.float32)), "NaN or inf"),
        (dict(budget=2, kernel=-np.ones((10, 10), dtype=np.float32)), "non-negative"),
        (dict(budget=2, kernel=np.ones((0, 0), dtype=np.float32)), "empty"),
        (dict(budget=2, kernel=np.ones(10, dtype=np.float32)), "2-D"),
        (dict(budget=2, optimizer="magic"), "unknown optimizer"),
    ],
)
def test_bad_inputs_raise_value_errors(kwargs: dict, message: str) -> None:
    kwargs.setdefault("kernel", np.ones((10, 10), dtype=np.float32))
    with pytest.raises(ValueError, match=message):
        select("fl", **kwargs)


def test_shape_errors_name_the_problem() -> None:
    k = np.ones((10, 10), dtype=np.float32)
    with pytest.raises(ValueError, match="square"):
        select("graph-cut", budget=2, kernel=np.ones((10, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="query_kernel has 3 rows"):
        select("flmi", budget=2, kernel=k, query_kernel=np.ones((3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="private"):
        select("flcg", budget=2, kernel=k)
    with pytest.raises(ValueError, match="d=5"):
        select(
            "flmi",
            budget=2,
            embeddings=np.ones((10, 4), np.float32),
            query_embeddings=np.ones((2, 5), np.float32),
        )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        select("disparity-sum", budget=2, kernel=2 * k)
    with pytest.raises(ValueError, match="scores"):
        select("topk", budget=2)


def test_resolve_budget() -> None:
    assert resolve_budget(0.1, 1000) == 100
    assert resolve_budget(7, 1000) == 7
    assert resolve_budget(0.0001, 10) == 1


def test_scorer_kernel_source_matches_its_dense_kernel() -> None:
    """`kernel_source=scorer.bind(E, E)`: the InfluenceNetwork evaluated on the fly (and as a
    kNN kernel keeping every neighbour) selects exactly what its dense matrix selects."""
    from nncift.scorer import PairwiseScorer

    rng = np.random.default_rng(5)
    d, n = 8, 60
    layers = []
    fan_in = 2 * d + 1  # paper layout: both embeddings and their cosine
    for h in (6, 1):
        s = 1.0 / np.sqrt(fan_in)
        layers.append(
            (
                rng.uniform(-s, s, (h, fan_in)).astype(np.float32),
                rng.uniform(-s, s, h).astype(np.float32),
            )
        )
        fan_in = h
    # A positive offset keeps every influence score > 0, as coverage functions require.
    scorer = PairwiseScorer.from_arrays(layers, embedding_dim=d, label_offset=5.0)
    e = rng.normal(size=(n, d)).astype(np.float32)
    kern = scorer.bind(e, e)
    dense = kern.dense()
    assert dense.shape == (n, n) and dense.min() > 0
    want = select("fl", kernel=dense, budget=8)
    for mode, extra in (("onthefly", {}), ("sparse", {"knn": n})):
        got = select("fl", kernel_source=kern, budget=8, mode=mode, **extra)
        assert got.indices.tolist() == want.indices.tolist(), mode
        np.testing.assert_allclose(got.gains, want.gains, rtol=1e-9)
    with pytest.raises(ValueError, match="ScorerKernel"):
        select("fl", kernel_source=object(), budget=2, mode="onthefly")


# ---------------------------------------------------------------- ties and early stops


def _tie_runs(objective: str, **kw: object) -> dict[tuple[str, int, int], list[int]]:
    """Selections on a problem where every gain ties, per (optimizer, seed, n_jobs)."""
    out = {}
    optimizers = ["naive", "lazy", "stochastic", "lazier-than-lazy"]
    if objective != "topk":  # partition-and-merge needs a kernel
        optimizers.append("greedi")
    for optimizer in optimizers:
        for seed in (0, 1):
            for n_jobs in (1, 2, 4):
                r = select(objective, budget=10, optimizer=optimizer, random_state=seed, n_jobs=n_jobs,
                           greedi_parts=3, **kw)  # type: ignore[arg-type]  # fmt: skip
                assert len(r) == 10 and not r.short
                out[optimizer, seed, n_jobs] = r.indices.tolist()
    return out


@pytest.mark.parametrize(
    ("objective", "kw"),
    [
        ("fl", {"kernel": np.ones((60, 60), np.float32)}),  # saturated after one pick
        ("graph-cut", {"kernel": np.ones((60, 60), np.float32), "lambda_": 0.0}),  # all equal
        ("disparity-min", {"kernel": np.ones((60, 60), np.float32)}),
        ("fl", {"embeddings": np.ones((60, 4), np.float32), "mode": "onthefly"}),
        # kNN: equal similarities keep the lower-ranked neighbours, not the file's head.
        ("fl", {"embeddings": np.ones((60, 4), np.float32), "mode": "sparse", "knn": 5}),
        ("topk", {"scores": np.full(60, 0.5, np.float32)}),  # equal scores
    ],
)
def test_ties_follow_a_seeded_permutation_not_the_pool_order(objective: str, kw: dict) -> None:
    runs = _tie_runs(objective, **kw)
    head = list(range(10))
    rank = _core.tie_ranks(60, 0)
    by_rank = sorted(range(60), key=lambda j: rank[j])[:10]
    for (optimizer, seed, _), got in runs.items():
        assert got != head, (optimizer, seed)
        # Thread count never changes a pick; lazy returns exactly what naive returns.
        assert got == runs[optimizer, seed, 1], (optimizer, seed)
        assert runs["lazy", seed, 1] == runs["naive", seed, 1]
        assert runs[optimizer, 0, 1] != runs[optimizer, 1, 1], optimizer  # the seed decides
    # Exact greedy on all-equal gains takes the items in the seed's tie order.
    assert runs["naive", 0, 1] == by_rank


def test_topk_never_stops_on_zero_or_negative_scores() -> None:
    """A LESS value of 0 or -0.1 is a value: top-k ignores both stop rules."""
    scores = np.array([0.3, 0.0, -0.1, 0.0, -0.5, 0.2, 0.0, -0.1], dtype=np.float32)
    for optimizer in ("naive", "lazy", "stochastic", "lazier-than-lazy"):
        r = select("topk", budget=7, scores=scores, optimizer=optimizer,
                   stop_if_zero_gain=True, stop_if_negative_gain=True)  # fmt: skip
        assert len(r) == 7 and not r.short and r.stopped_early is None, optimizer
    r = select("topk", budget=7, scores=scores, stop_if_zero_gain=True, stop_if_negative_gain=True)
    assert scores[r.indices].tolist() == pytest.approx([0.3, 0.2, 0, 0, 0, -0.1, -0.1])
    assert 4 not in r.indices.tolist()  # only the lowest score is left out


def test_one_default_for_stop_if_zero_gain() -> None:
    """Python API, binding, stub and CLI agree: by default the budget is filled."""
    import inspect
    from pathlib import Path

    import nncift
    from nncift.cli.select_cmd import select_command as select_cmd

    assert STOP_IF_ZERO_GAIN_DEFAULT is False
    assert inspect.signature(select).parameters["stop_if_zero_gain"].default is False
    assert (
        f"stop_if_zero_gain={STOP_IF_ZERO_GAIN_DEFAULT}".lower()
        in (_core.select_core.__text_signature__ or "").lower()
    )
    stub = (Path(nncift.__file__).parent / "_core.pyi").read_text()
    assert f"stop_if_zero_gain: bool = {STOP_IF_ZERO_GAIN_DEFAULT}" in stub
    opt = next(p for p in select_cmd.params if p.name == "stop_at_zero")
    assert opt.default is STOP_IF_ZERO_GAIN_DEFAULT
    # ... and it does fill the budget on a saturated kernel.
    assert len(select("fl", budget=8, kernel=np.ones((20, 20), np.float32))) == 8


def test_short_results_say_so_and_why() -> None:
    ones = np.ones((20, 20), np.float32)
    full = select("fl", budget=5, kernel=ones)
    assert (full.budget, full.short, full.stopped_early, full.shortfall()) == (5, False, None, None)
    zero = select("fl", budget=5, kernel=ones, stop_if_zero_gain=True)
    assert (len(zero), zero.budget, zero.short, zero.stopped_early) == (1, 5, True, "zero_gain")
    assert zero.shortfall() == f"selected 1 of the budget 5: {STOP_REASONS['zero_gain']}"
    neg = select("graph-cut", budget=5, kernel=ones, lambda_=5.0, stop_if_negative_gain=True)
    assert neg.short and neg.stopped_early == "negative_gain"
    cost = select("fl", budget=5, kernel=ones, costs=np.ones(20), cost_budget=3.0)
    assert (len(cost), cost.stopped_early) == (3, "cost_budget")
    parts = select("fl", budget=6, kernel=ones, optimizer="greedi", greedi_parts=2,
                   stop_if_zero_gain=True)  # fmt: skip
    assert parts.short and parts.stopped_early == "zero_gain"


def test_tie_ranks_given_explicitly_are_used_and_checked() -> None:
    ones = np.ones((10, 10), np.float32)
    ranks = np.arange(10)[::-1].copy()  # reverse order: the last item wins every tie
    assert select("fl", budget=3, kernel=ones, tie_ranks=ranks).indices.tolist() == [9, 8, 7]
    with pytest.raises(ValueError, match="tie_ranks"):
        select("fl", budget=3, kernel=ones, tie_ranks=np.arange(4))
    with pytest.raises(ValueError, match="tie_ranks"):
        select("fl", budget=3, kernel=ones, tie_ranks=-np.ones(10, np.int64))


def test_gil_is_released_during_selection(ticks_while: Any) -> None:
    """`select` runs the kernel build and the greedy with the GIL released (as the scorer)."""
    x = np.random.default_rng(0).standard_normal((4000, 64)).astype(np.float32)
    ticks, elapsed, result = ticks_while(
        lambda: select("fl", budget=100, embeddings=x, mode="dense", n_jobs=1)  # ~0.1-1 s
    )
    assert len(result) == 100
    # A held GIL would leave the counter at ~0 for the whole (single) call.
    assert ticks >= 10, (elapsed, ticks)
