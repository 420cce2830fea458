"""Shared pytest setup: no model hub, a throw-away nncift cache per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

#: The materialised SmolLM2 (and its tokenizer) kept across test sessions in the git-ignored
#: repository folder, so only the first session pays the ~40 s GGUF conversion.
LM_CACHE = Path(__file__).resolve().parents[1] / ".nncift-cache"


@pytest.fixture(scope="session", autouse=True)
def _nncift_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests must not read or write a user's cache; a session-wide one keeps the embedding
    # model's work shared between tests.
    if "NNCIFT_CACHE" not in os.environ or not os.environ.get("NNCIFT_TEST_KEEP_CACHE"):
        os.environ["NNCIFT_CACHE"] = str(tmp_path_factory.mktemp("nncift-cache"))


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded tiny random Llama saved as a local model folder (for `--lm PATH`)."""
    from nncift.lm import tiny_random_lm

    d = tmp_path_factory.mktemp("tiny-lm")
    tiny = tiny_random_lm(cache=LM_CACHE)
    tiny.model.save_pretrained(d)
    tiny.tokenizer.save_pretrained(d)
    return d
