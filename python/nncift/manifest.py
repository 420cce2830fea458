"""The run manifest: versions, inputs with hashes, options, seed and per-stage timings.

Written as `manifest.json` next to every output so a result can be traced and reproduced.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nncift.io import fault_point, sha256_file, write_json_atomic


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("nncift", "numpy", "polars", "torch", "transformers", "sentence-transformers"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    from nncift._core import __version__ as core

    out["nncift-core"] = core
    return out


@dataclass
class Manifest:
    command: str
    options: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def add_input(self, name: str, path: str | Path, **extra: Any) -> None:
        p = Path(path)
        entry: dict[str, Any] = {"path": str(p)}
        if p.is_file():
            entry["sha256"] = sha256_file(p)
            entry["bytes"] = p.stat().st_size
        entry.update(extra)
        self.inputs[name] = entry

    @contextlib.contextmanager
    def stage(self, name: str, **info: Any) -> Iterator[dict[str, Any]]:
        """Time a stage; the yielded dict collects facts about it (cache hits, sizes)."""
        record: dict[str, Any] = dict(info)
        fault_point(f"stage:{name}")  # test-only kill point (nncift.io.FAULT_PAUSE_ENV)
        t0 = time.perf_counter()
        try:
            yield record
        finally:
            record["seconds"] = round(time.perf_counter() - t0, 4)
            self.stages[name] = record

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "versions": _versions(),
            "options": self.options,
            "inputs": self.inputs,
            "stages": self.stages,
            "results": self.results,
            "total_seconds": round(time.time() - self.started, 4),
        }

    def write(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())
