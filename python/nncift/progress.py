"""The one progress display: nncift's own rich bars and spinners on stderr; nothing else.

Third-party libraries draw their own tqdm bars while nncift loads models ("Loading weights"
from transformers, GGUF "Converting and de-quantizing", "Writing model shards", hub
downloads); drawn over a rich display they garble it, and `-q` could not silence them. Every
model load and save therefore runs inside `third_party_bars_off()`, and nncift shows its own
spinner for the step instead (`status`), unless quiet.

Quiet is one process-wide switch (`set_quiet`, or the `quiet()` context the CLI's ``-q``
enters): it turns off nncift's bars and spinners, third-party bars, transformers' warnings
and Python warnings. Library callers that never touch it keep the usual behaviour.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

_QUIET = False
#: Modules that call plain `tqdm` (not transformers' switchable wrapper) while loading models.
_RAW_TQDM_MODULES = ("transformers.modeling_gguf_pytorch_utils",)


def set_quiet(value: bool) -> None:
    """Silence (True) or restore (False) every progress display and library chatter."""
    global _QUIET
    _QUIET = bool(value)


def is_quiet() -> bool:
    return _QUIET


@functools.lru_cache(maxsize=1)
def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def console() -> Console:
    """The console every nncift progress display draws on: stderr, so stdout keeps only
    results (a summary, a plan) that a script may parse."""
    return _stderr_console()


def shown(enabled: bool = True) -> bool:
    """Whether a display asked for with `enabled` is drawn (never while quiet)."""
    return bool(enabled) and not _QUIET


def bar(*columns: Any, enabled: bool = True, transient: bool = True) -> Progress:
    """A rich `Progress` on the shared console, disabled while quiet or when not `enabled`."""
    from rich.progress import Progress

    return Progress(*columns, console=console(), disable=not shown(enabled), transient=transient)


@contextlib.contextmanager
def third_party_bars_off() -> Iterator[None]:
    """Turn off transformers', huggingface_hub's and GGUF's tqdm bars for the block.

    The previous state is restored afterwards, so a library user's own settings survive.
    """
    undo: list[Callable[[], None]] = []
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            undo.append(hf_logging.enable_progress_bar)
        if _QUIET:
            level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            undo.append(lambda: hf_logging.set_verbosity(level))
    with contextlib.suppress(ImportError):
        from huggingface_hub.utils import (
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )

        if not are_progress_bars_disabled():
            disable_progress_bars()
            undo.append(enable_progress_bars)
    for name in _RAW_TQDM_MODULES:
        module = sys.modules.get(name)
        raw = getattr(module, "tqdm", None)
        if module is not None and raw is not None:
            module.tqdm = functools.partial(raw, disable=True)  # type: ignore[attr-defined]
            undo.append(functools.partial(setattr, module, "tqdm", raw))
    try:
        yield
    finally:
        for fn in reversed(undo):
            fn()


@contextlib.contextmanager
def status(message: str, *, enabled: bool = True) -> Iterator[None]:
    """nncift's own spinner for a step that has no bar of its own (loading a model), with
    every third-party bar off; the spinner is transient and drawn only on a terminal."""
    with third_party_bars_off():
        if not shown(enabled):
            yield
            return
        with console().status(message):
            yield


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Quiet for the block (the CLI's ``-q``): no displays, no library warnings, no bars.

    Environment switches cover libraries imported later in the block (they read them at
    import); all of it is undone on exit.
    """
    env = {
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TQDM_DISABLE": "1",
    }
    saved_env = {k: os.environ.get(k) for k in env}
    was_quiet = _QUIET
    os.environ.update(env)
    set_quiet(True)
    hf_logging = sys.modules.get("transformers.utils.logging")
    level = hf_logging.get_verbosity() if hf_logging is not None else None
    if hf_logging is not None:
        hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        set_quiet(was_quiet)
        if hf_logging is not None and level is not None:
            hf_logging.set_verbosity(level)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


__all__ = [
    "bar",
    "console",
    "is_quiet",
    "quiet",
    "set_quiet",
    "shown",
    "status",
    "third_party_bars_off",
]
