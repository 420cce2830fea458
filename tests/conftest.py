"""Shared pytest setup: no model hub, a throw-away nncift cache per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _nncift_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests must not read or write a user's cache; a session-wide one keeps the embedding
    # model's work shared between tests.
    if "NNCIFT_CACHE" not in os.environ or not os.environ.get("NNCIFT_TEST_KEEP_CACHE"):
        os.environ["NNCIFT_CACHE"] = str(tmp_path_factory.mktemp("nncift-cache"))
