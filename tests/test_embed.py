"""Embeddings: the packaged default model, the content-addressed cache, bad embedder paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nncift.embed import (
    CHARS_PER_TOKEN_CAP,
    DEFAULT_EMBEDDER_ID,
    Embedder,
    cut_for_context,
    resolve_embedder,
)
from nncift.errors import InputError

TEXTS = [
    "How do I bake bread?\n##Answer: Mix flour, water, yeast and salt, then bake.",
    "What is the capital of France?\n##Answer: Paris.",
    "Give me a bread recipe.\n##Answer: Flour, water, salt and yeast; bake at 230C.",
    "Name the capital city of France.\n##Answer: It is Paris.",
]


def test_default_embedder_is_real_and_normalised(tmp_path: Path) -> None:
    emb = Embedder(cache_dir=tmp_path, progress=False).embed(TEXTS)
    assert emb.shape == (4, 384) and emb.dtype == np.float32 and emb.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    # A real sentence model puts paraphrases closer than unrelated texts.
    assert sim[0, 2] > sim[0, 1] + 0.2
    assert sim[1, 3] > sim[1, 2] + 0.2


def test_cache_skips_the_model_and_embeds_only_new_texts(tmp_path: Path) -> None:
    first = Embedder(cache_dir=tmp_path, progress=False)
    a = first.embed(TEXTS[:3])
    assert first.last_stats == {"texts": 3, "cached": 0, "embedded": 3}

    again = Embedder(cache_dir=tmp_path, progress=False)
    b = again.embed(TEXTS[:3])
    assert again._model is None  # answered from disk: the model was never loaded
    assert again.last_stats["cached"] == 3
    np.testing.assert_array_equal(a, b)

    grown = Embedder(cache_dir=tmp_path, progress=False)
    c = grown.embed(TEXTS + [TEXTS[0]])
    assert grown.last_stats == {"texts": 5, "cached": 4, "embedded": 1}
    np.testing.assert_array_equal(c[:3], a)
    np.testing.assert_array_equal(c[4], a[0])
    fresh = Embedder(use_cache=False, progress=False).embed([TEXTS[3]])
    np.testing.assert_allclose(c[3], fresh[0], atol=1e-5)


def test_corrupt_cache_shard_is_ignored(tmp_path: Path) -> None:
    e = Embedder(cache_dir=tmp_path, progress=False)
    ref = e.embed(TEXTS[:2])
    for f in e.cache.dir.glob("*.keys.npy"):  # type: ignore[union-attr]
        f.write_bytes(b"garbage")
    again = Embedder(cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(again.embed(TEXTS[:2]), ref, atol=1e-5)
    assert again.last_stats["embedded"] == 2


def test_embedder_path_that_does_not_exist() -> None:
    with pytest.raises(InputError, match="no such folder"):
        Embedder("./no/such/model")


def test_hub_id_offline_is_a_clear_error(tmp_path: Path) -> None:
    e = Embedder("some-org/some-model-that-is-not-here", cache_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match="cannot load embedder"):
        e.embed(["x"])


def test_default_id_is_recorded() -> None:
    assert resolve_embedder("default").model_id == DEFAULT_EMBEDDER_ID


def test_empty_input() -> None:
    with pytest.raises(InputError, match="empty"):
        Embedder(progress=False).embed([])


def test_very_long_text_is_cut_before_tokenizing_without_changing_its_embedding(
    tmp_path: Path,
) -> None:
    # Far past MiniLM's 256-token context: the model sees the same first 256 tokens either way,
    # but only the cut text is tokenized (a whole 50 MB line took gigabytes of token ids).
    long = " ".join(f"word{i % 97} and more" for i in range(60_000))  # ~0.9 MB
    cut = cut_for_context([long, "short"], 256)
    assert len(cut[0]) == 256 * CHARS_PER_TOKEN_CAP < len(long) and cut[1] == "short"
    emb = Embedder(cache_dir=None, progress=False)
    ours = emb.embed([long])
    direct = emb._load().encode([long], normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(ours, direct, atol=1e-6)
