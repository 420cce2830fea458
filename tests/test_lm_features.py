"""RDS+ LM features (`nncift.lm_features`): the pooling formula, batching, cache, truncation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nncift.data import Items, load_named
from nncift.errors import InputError


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir: Path) -> Any:
    from nncift.lm import load_lm

    return load_lm(str(tiny_lm_dir), device="cpu")


@pytest.fixture(scope="module")
def items() -> Items:
    # Different lengths, so batches are padded.
    return load_named("chatterbot", limit=12)


def make(lm: Any, tmp_path: Path | None = None, **kw: Any) -> Any:
    from nncift.lm_features import LMFeaturizer

    if tmp_path is None:
        kw.setdefault("use_cache", False)
    return LMFeaturizer(lm, cache_dir=tmp_path, progress=False, **kw)


def test_position_weighted_mean_on_a_hand_example() -> None:
    """Three tokens weigh 1/6, 2/6, 3/6; padding weighs nothing, on either side."""
    import torch
    from nncift.lm_features import pool_hidden, position_weights

    h = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])  # (1, 3, 2)
    w = position_weights(torch.tensor([[1, 1, 1]]))
    assert torch.allclose(w, torch.tensor([[1 / 6, 2 / 6, 3 / 6]]))
    v = np.array([1 / 6 + 9 / 6, 4 / 6 + 9 / 6])  # sum_i w_i h_i
    got = pool_hidden(h, torch.tensor([[1, 1, 1]]))[0].numpy()
    np.testing.assert_allclose(got, v / np.linalg.norm(v), rtol=1e-6)
    # The last position padded (right) or the first (left): the two real tokens weigh 1/3, 2/3.
    right = pool_hidden(h, torch.tensor([[1, 1, 0]]))[0].numpy()
    v2 = np.array([1 / 3, 4 / 3])
    np.testing.assert_allclose(right, v2 / np.linalg.norm(v2), rtol=1e-6)
    left = pool_hidden(h, torch.tensor([[0, 1, 1]]))[0].numpy()
    v3 = np.array([2 / 3 * 3, 1 / 3 * 2 + 2 / 3 * 3])
    np.testing.assert_allclose(left, v3 / np.linalg.norm(v3), rtol=1e-6)


def test_features_are_the_formula_on_the_lm_final_hidden_states(tiny: Any, items: Items) -> None:
    """A feature is the position-weighted mean of the model's last hidden states (after its
    final norm: `hidden_states[-1]` of the causal LM) over the item's text, L2-normalised."""
    import torch
    from nncift.lm_features import token_ids

    x = make(tiny).features(items)
    assert x.shape == (len(items), tiny.model.config.hidden_size) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    i = 3
    ids, cut = token_ids(tiny.tokenizer, items.prompts[i] + "\n" + items.responses[i], "plain", 512)
    assert not cut
    with torch.inference_mode():
        out = tiny.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    h = out.hidden_states[-1][0].numpy().astype(np.float64)  # (L, H)
    w = np.arange(1, len(ids) + 1, dtype=np.float64)
    v = (w[:, None] * h).sum(axis=0) / w.sum()
    np.testing.assert_allclose(x[i], v / np.linalg.norm(v), atol=1e-5)


def test_batching_and_padding_do_not_change_features(tiny: Any, items: Items) -> None:
    one = make(tiny, max_batch=1).features(items)
    four = make(tiny, max_batch=4).features(items)
    np.testing.assert_allclose(one, four, atol=1e-5)
    # Items of distinct lengths, so the batches of four really were padded.
    from nncift.lm_features import token_ids

    lengths = {len(token_ids(tiny.tokenizer, p + "\n" + r, "plain", 512)[0])
               for p, r in zip(items.prompts, items.responses, strict=True)}  # fmt: skip
    assert len(lengths) > 3


def test_cache_hit_returns_the_same_vectors_without_a_forward_pass(
    tiny: Any, items: Items, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nncift.lm_features import LMFeaturizer

    first = make(tiny, tmp_path)
    x = first.features(items.subset(range(8)))
    assert first.last_stats["computed"] == 8 and first.last_stats["cached"] == 0
    assert (tmp_path / "embeddings").is_dir()  # the embeddings' cache layout

    calls: list[int] = []
    real = LMFeaturizer._forward

    def counted(self: Any, seqs: list[list[int]]) -> np.ndarray:
        calls.append(len(seqs))
        return real(self, seqs)

    monkeypatch.setattr(LMFeaturizer, "_forward", counted)
    again = make(tiny, tmp_path)
    y = again.features(items.subset(range(8)))
    assert calls == [] and again.last_stats["cached"] == 8
    np.testing.assert_array_equal(x, y)
    # A pool that grew runs the LM on the new items only.
    z = again.features(items)
    assert calls == [len(items) - 8] and again.last_stats["computed"] == len(items) - 8
    np.testing.assert_array_equal(z[:8], x)
    np.testing.assert_allclose(z, make(tiny).features(items), atol=1e-6)


def test_cache_is_keyed_by_lm_template_and_context(tiny: Any, tmp_path: Path) -> None:
    from nncift.lm import tiny_random_lm

    base = make(tiny, tmp_path).model_id
    other = tiny_random_lm(seed=1, tokenizer=tiny.tokenizer)
    assert make(other, tmp_path).model_id != base
    assert make(tiny, tmp_path, max_length=64).model_id != base
    assert make(tiny, tmp_path, template="chat").model_id != base
    assert make(tiny, tmp_path).model_id == base


def test_long_items_are_cut_from_the_left_and_counted(tiny: Any) -> None:
    n = 6
    prompts = ["tell me about the weather " * k for k in (1, 2, 30, 40, 1, 50)]
    responses = [f"answer {i}" for i in range(n)]
    long = Items([str(i) for i in range(n)], prompts, responses, [{}] * n)
    f = make(tiny, max_length=32)
    x = f.features(long)
    assert f.last_stats["truncated"] == 3 and np.isfinite(x).all()
    # A cut item is its last 32 tokens: changing its start changes nothing.
    changed = Items(long.ids, ["XYZ " + p for p in prompts], responses, [{}] * n)
    y = make(tiny, max_length=32).features(changed)
    np.testing.assert_allclose(x[[2, 3, 5]], y[[2, 3, 5]], atol=1e-6)
    assert not np.allclose(x[0], y[0], atol=1e-3)


def test_chat_template_renders_user_and_assistant(tiny: Any, items: Items) -> None:
    from nncift.lm_features import format_texts

    text = format_texts(tiny.tokenizer, ["hi there"], ["hello!"], "chat")[0]
    assert "hi there" in text and "hello!" in text and text.index("hi there") < text.index("hello!")
    x = make(tiny, template="chat").features(items.subset(range(3)))
    assert x.shape[0] == 3 and not np.allclose(x, make(tiny).features(items.subset(range(3))))


def test_bad_settings_are_refused(tiny: Any) -> None:
    from nncift.lm_features import LMFeaturizer

    with pytest.raises(InputError, match="template"):
        LMFeaturizer(tiny, template="fancy")
    with pytest.raises(InputError, match="max_length"):
        LMFeaturizer(tiny, max_length=2)
    with pytest.raises(InputError, match="no items"):
        make(tiny).features_of([], [])
