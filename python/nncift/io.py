"""Atomic file output and content hashing.

Every file nncift writes goes through `atomic_path`: data is written to a temporary
file in the destination folder and renamed over the target only when complete, so an
interrupted or failed run never leaves a half-written output behind. The finished file
gets the permissions `open()` would have given it (0666 less the umask, so 0644 under the
usual 0022), not `mkstemp`'s private 0600: a subset written for a training job that runs
under another account must be readable there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii", errors="replace") as fh,
    ):
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore at once (the only portable way)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode `open()` (0666) or `mkdir()` (0777) would give a new entry under the umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def make_temp_dir(parent: str | os.PathLike[str], prefix: str) -> Path:
    """`tempfile.mkdtemp` in `parent`, with the mode `mkdir()` would give (not 0700).

    For folders built aside and renamed into place, which then become ordinary outputs.
    """
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    tmp.chmod(default_mode(directory=True))
    return tmp


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` on success.

    The temporary file is removed if the block raises. `suffix` keeps extensions that
    writers insist on (numpy appends `.npy` to names without it).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix + ".part", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp made it 0600; give the output the mode open() would have. Set after the
        # writer ran, since a writer may recreate the file by name.
        tmp_path.chmod(default_mode())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_npy_atomic(target: str | os.PathLike[str], array: np.ndarray) -> None:
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def load_npy(path: str | os.PathLike[str], mmap: bool = False) -> np.ndarray:
    """Load a user's .npy file without ever unpickling (object arrays are refused)."""
    from nncift.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        raise InputError(f"{path}: not a plain numeric .npy file ({exc})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read as .npy ({exc})") from exc


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
