"""LESS: per-example LoRA gradients vs autograd, JL projection, scores, pointwise, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import LM_CACHE
from nncift.errors import InputError
from nncift.influence import CostMeter, TextItems
from nncift.influence.less import Less, RademacherProjection

P = [
    "What is the capital of France?",
    "How do I bake bread?",
    "Name a primary colour.",
    "Add 2 and 3.",
    "Say hi.",
]
R = [
    "Paris is the capital of France.",
    "Mix flour, water and yeast; bake.",
    "Red.",
    "2 + 3 = 5.",
    "",
]
POOL = TextItems(P * 2, [r + (f" ({i})" if r else "") for i in range(2) for r in R])
TARGETS = TextItems(P[:3], R[:3])
SMALL = {"warmup_fraction": 0.5, "epochs": 2, "lr": 1e-3, "proj_dim": 64, "batch_size": 2}


@pytest.fixture(scope="module")
def tiny(torch_threads):  # type: ignore[no-untyped-def]
    from nncift.lm import tiny_random_lm

    torch_threads(2)
    return tiny_random_lm(cache=LM_CACHE)


@pytest.fixture(scope="module")
def less(tiny):  # type: ignore[no-untyped-def]
    fn = Less(POOL, TARGETS, lm=tiny, **SMALL)
    fn.warm_up()
    return fn


def test_per_example_gradients_match_autograd(less) -> None:  # type: ignore[no-untyped-def]
    seqs = [less._seq(POOL, i) for i in range(5)]  # includes an empty response (item 4)
    less._load_checkpoint(1)
    batched = less.per_example_gradients(seqs, CostMeter())
    for j, s in enumerate(seqs[:4]):
        for p in less._params:
            p.grad = None
        less._forward_losses([s], CostMeter()).sum().backward()
        ref = torch.cat([p.grad.reshape(-1) for p in less._params])
        assert ref.abs().max() > 0
        torch.testing.assert_close(batched[j], ref, atol=1e-6, rtol=1e-4)
    assert batched[4].abs().sum() == 0  # empty response: zero gradient by definition


def test_projection_preserves_inner_products() -> None:
    gen = torch.Generator().manual_seed(3)
    d, k = 40_000, 1024
    x = torch.randn(12, d, generator=gen)
    x[1] = x[0] + 0.5 * x[1]  # some correlated pairs too
    proj = RademacherProjection(d, k, seed=7)
    z = proj.project(x)
    exact = (x @ x.T) / (x.norm(dim=1)[:, None] * x.norm(dim=1)[None, :])
    approx = (z @ z.T) / (z.norm(dim=1)[:, None] * z.norm(dim=1)[None, :])
    err = (exact - approx).abs()
    # JL: cosine error ~ 1/sqrt(k) = 0.031; allow 5 sigma for the max over 66 pairs.
    assert float(err.max()) < 5 / k**0.5
    assert float(err.mean()) < 1.5 / k**0.5
    # Seeded and regenerable: a second object (no cache) gives the same projection.
    again = RademacherProjection(d, k, seed=7, cache_bytes=0).project(x)
    torch.testing.assert_close(again, z)
    assert not torch.allclose(RademacherProjection(d, k, seed=8).project(x), z)


def test_scores_are_weighted_cosines_and_blocks_are_consistent(less) -> None:  # type: ignore[no-untyped-def]
    full = less.block()
    assert full.values.shape == (10, 3) and full.values.dtype == np.float32
    assert np.all(np.abs(full.values) <= 1 + 1e-5)
    assert np.allclose(full.values[4], 0) and np.allclose(full.values[9], 0)  # empty responses
    w = less.checkpoint_weights
    assert w.shape == (2,) and w.sum() == pytest.approx(1.0) and w[0] > w[1]  # lr decays
    fresh = Less(POOL, TARGETS, lm=less.lm, **SMALL)  # same seed: same warm-up, same features
    rows, cols = np.array([7, 2, 8]), np.array([2, 0])
    np.testing.assert_allclose(
        fresh.block(rows, cols).values, full.values[np.ix_(rows, cols)], atol=1e-5
    )


def test_pointwise_is_max_over_tasks_of_mean(tiny) -> None:  # type: ignore[no-untyped-def]
    fn = Less(POOL, TARGETS, lm=tiny, target_tasks=["geo", "food", "geo"], **SMALL)
    k = fn.block([0, 1, 2]).values
    expect = np.maximum(k[:, [0, 2]].mean(axis=1), k[:, 1])
    np.testing.assert_allclose(fn.points([0, 1, 2]).values, expect, atol=1e-6)


def test_model_is_not_modified(tiny) -> None:  # type: ignore[no-untyped-def]
    before = {n for n, _ in tiny.model.named_modules()}
    Less(POOL, TARGETS, lm=tiny, **SMALL).block([0], [0])
    assert {n for n, _ in tiny.model.named_modules()} == before  # no LoRA injected


def test_bad_input(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        InputError, match=r"LoRA target module\(s\) \['attn_nonexistent'\] do not exist"
    ):
        Less(POOL, TARGETS, lm=tiny, target_modules=["q_proj", "attn_nonexistent"])
    for bad in (0.0, 1.5):
        with pytest.raises(InputError, match="warmup_fraction"):
            Less(POOL, TARGETS, lm=tiny, warmup_fraction=bad)
    with pytest.raises(InputError, match="task names"):
        Less(POOL, TARGETS, lm=tiny, target_tasks=["a"])
    with pytest.raises(InputError, match="never truncated"):
        small = type(tiny)(**{**tiny.__dict__, "max_length": 16})
        Less(POOL, TextItems(["q"], ["word " * 40]), lm=small, **SMALL).block([0], [0])
