"""Atomic file output, inter-process locks and content hashing.

Every file nncift writes goes through `atomic_path`: data is written to a temporary
file in the destination folder and renamed over the target only when complete, so an
interrupted or failed run never leaves a half-written output behind. The finished file
gets the permissions `open()` would have given it (0666 less the umask, so 0644 under the
usual 0022), not `mkstemp`'s private 0600: a subset written for a training job that runs
under another account must be readable there.

A temporary file names its host and process (`.NAME.tmp-HOST-PID-XXXX.part`); one left
behind by a killed process is never read as data (readers look for final names only) and
is removed by the next process that writes into that folder on the same host
(`remove_stale_temp_files`). A write that fails (a full disk, a file-size limit, a
read-only folder) raises an `OSError` naming the file it was writing.

`file_lock` serialises processes that share a cache (the label store, the embedding
cache, trained networks) with `flock`: the kernel releases it when its holder dies, so a
killed run never leaves a lock behind.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Test-only fault injection (tests/faults.py, the kill tests): when this variable holds a
#: glob pattern, the first named point (`fault_point`) that matches it prints
#: ``nncift-fault-pause NAME`` to stderr and sleeps until the process is killed, so a test
#: can SIGKILL it at that exact point. Points: ``stage:NAME`` on entering a manifest stage,
#: ``write:FILE`` with FILE's content complete in its temporary file, ``wrote:FILE`` just
#: after FILE was renamed into place. Unset (always, outside tests) a point costs one
#: environment lookup.
FAULT_PAUSE_ENV = "NNCIFT_FAULT_PAUSE_AT"


def fault_point(name: str) -> None:
    """Pause here forever if `NNCIFT_FAULT_PAUSE_AT` matches `name` (test-only)."""
    pattern = os.environ.get(FAULT_PAUSE_ENV)
    if pattern and fnmatch.fnmatchcase(name, pattern):
        sys.stderr.write(f"nncift-fault-pause {name}\n")
        sys.stderr.flush()
        while True:
            time.sleep(3600)


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"


_TEMP_RE = re.compile(r"^\..*\.tmp-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[^/]*\.part$")
#: Folders this process has already swept for stale temporary files (once each).
_swept: set[str] = set()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files in `folder` left by dead processes of this host.

    Another host's files (a cache on a network file system) and live processes' files are
    kept. Returns what was removed.
    """
    removed: list[Path] = []
    host, me = _host_tag(), os.getpid()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or m["host"] != host:
            continue
        pid = int(m["pid"])
        if pid == me or _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    if removed:
        log.info("removed %d temporary file(s) of killed runs in %s", len(removed), folder)
    return removed


@contextlib.contextmanager
def file_lock(
    path: str | os.PathLike[str],
    *,
    shared: bool = False,
    blocking: bool = True,
    waiting: str | None = None,
) -> Iterator[bool]:
    """Hold an inter-process `flock` on `path` (created if missing) for the block.

    shared: a shared (reader) lock instead of an exclusive one. blocking=False yields
    False at once when another process holds the lock (the block then runs unlocked: the
    caller checks). waiting: logged (info) when the lock is busy and this call waits.
    Released when the block ends, or by the kernel when the process dies.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking (one process per cache there)
        yield True
        return
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, default_mode())
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the lock file {path}: {exc.strerror}") from exc
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            got = True
        except BlockingIOError:
            got = False
            if blocking:
                if waiting:
                    log.info("%s", waiting)
                fcntl.flock(fd, mode)
                got = True
        yield got
    finally:
        os.close(fd)  # releases the lock


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
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if str(parent) not in _swept:
            _swept.add(str(parent))
            remove_stale_temp_files(parent)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.tmp-{_host_tag()}-{os.getpid()}-",
            suffix=suffix + ".part",
            dir=parent,
        )
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {target}: {exc.strerror}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fault_point(f"write:{target.name}")
        # mkstemp made it 0600; give the output the mode open() would have. Set after the
        # writer ran, since a writer may recreate the file by name.
        tmp_path.chmod(default_mode())
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.errno is not None:
            # A bare "[Errno 27] File too large" from a write does not say which file.
            raise OSError(exc.errno, f"cannot write {target}: {exc.strerror}") from exc
        raise
    fault_point(f"wrote:{target.name}")


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


def check_npy_fits(path: str | os.PathLike[str]) -> None:
    """Refuse a .npy whose header claims more data than the file holds, before numpy reads it.

    np.load allocates what the header claims before reading: a 128-byte file claiming
    (10^8, 10^8) float32 raised MemoryError ("Unable to allocate 35.5 PiB"), a traceback
    through the CLI, and a smaller false claim allocated gigabytes before failing.
    """
    from numpy.lib import format as npy_format

    from nncift.errors import InputError

    readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        try:
            reader = readers.get(npy_format.read_magic(fh))
            if reader is None:
                return  # a newer format version: np.load's own checks apply
            shape, _, dtype = reader(fh)
        except ValueError as exc:
            raise InputError(f"{path}: not a plain numeric .npy file ({exc})") from exc
        if dtype.hasobject:
            return  # refused by np.load(allow_pickle=False) with its own message
        claimed = dtype.itemsize * int(np.prod(shape, dtype=object))  # Python int: no overflow
        held = size - fh.tell()
    if claimed > held:
        raise InputError(
            f"{path}: the header claims shape {tuple(shape)} of {dtype} ({claimed:,} bytes) but "
            f"the file holds {held:,} bytes of data: truncated or corrupt"
        )


def load_npy(path: str | os.PathLike[str], mmap: bool = False) -> np.ndarray:
    """Load a user's .npy file without ever unpickling (object arrays are refused)."""
    from nncift.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    check_npy_fits(path)
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
