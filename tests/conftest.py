"""Shared pytest setup: no model hub, a throw-away nncift cache per test session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

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


@pytest.fixture(scope="module")
def torch_threads() -> Iterator[Callable[[int], None]]:
    """`torch.set_num_threads` for one test module, the previous count restored after it.

    The count is process-wide: set bare, it would leak into every later test module.
    """
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def ticks_while() -> Callable[[Callable[[], object]], tuple[int, float, object]]:
    """Run `fn` while a Python thread counts 1 ms sleeps: (ticks, seconds, fn's result).

    A call that holds the GIL leaves the counter at ~0 for its whole duration, so a test of
    a multi-threaded Rust call with the GIL released asserts a healthy tick count.
    """

    def run(fn: Callable[[], object]) -> tuple[int, float, object]:
        import threading
        import time

        ticks = 0
        done = threading.Event()

        def count() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                time.sleep(0.001)

        t = threading.Thread(target=count)
        t.start()
        start = time.perf_counter()
        try:
            result = fn()
        finally:
            elapsed = time.perf_counter() - start
            done.set()
            t.join()
        return ticks, elapsed, result

    return run
