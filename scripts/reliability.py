"""Run every fault and bad-input case through the real CLI and write docs/reliability.md.

Each case writes its inputs into a folder of its own, runs the installed `nncift` console
script as a user would (a subprocess, `-q`), and records what the tool did (the exit code and
the first line of the error, or "loaded/selected correctly") and what was lost (target:
nothing: no output file, no temporary left beside it). Then the scale cases (a 1,000,000-line
pool, a 50 MB line), then the kill / concurrency / disk scenarios of tests/faults.py when that
file exists (`SCENARIOS`: `Scenario(name, category, run)`, `run(workdir) -> {what_the_tool_did,
lost, ok}`).

Usage:
    .venv/bin/python scripts/reliability.py [--quick] [--out docs/reliability.md]

--quick skips the 1M-line pool, the cases that import torch or load a model, and the slow
scenarios (kill and concurrency, unless a scenario says otherwise with `slow`). The exit
status is 1 when any case did not behave (a refused input without its one-line error, an
accepted input not written back intact, something left behind).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

#: One good record per line; the pools of the cases are built from these.
GOOD = [{"prompt": f"Question {i}: what is {i} + {i}?", "response": f"{2 * i}."} for i in range(12)]


# ---------------------------------------------------------------- running the CLI


def nncift_command() -> list[str]:
    """The console script installed next to this interpreter (what a user runs)."""
    exe = Path(sys.executable).parent / "nncift"
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-c", "from nncift.cli.main import main; main()"]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    seconds: float


def run_cli(
    args: list[str], workdir: Path, timeout: float = 600, *, in_process: bool = False
) -> CliResult:
    """`nncift -q ARGS` in a subprocess (what a user sees), or in this process through Click's
    test runner (`in_process`: the same command code without ~0.5 s of interpreter start,
    for the pytest subset; an uncaught exception is reported as the traceback it would be)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["NNCIFT_CACHE"] = str(workdir / "cache")
    start = time.perf_counter()
    if in_process:
        from click.testing import CliRunner
        from nncift.cli.main import cli

        r = CliRunner().invoke(cli, ["-q", *args], env=env)
        stderr = r.stderr
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            stderr += f"Traceback (most recent call last):\n{type(r.exception).__name__}: "
            stderr += str(r.exception)
        return CliResult(r.exit_code, r.stdout, stderr, time.perf_counter() - start)
    proc = subprocess.run(
        [*nncift_command(), "-q", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=workdir,
        env=env,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)


# ---------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One input a user might hand in.

    `make(inp, out)` writes the inputs under `inp` and returns the CLI arguments, which name
    outputs under `out` only. `message` is a piece of the expected one-line error (refused
    cases); `check(out)` verifies an accepted case's output and returns a problem or "".
    `fast`: needs no model, so the pytest subset runs it.
    """

    name: str
    category: str
    make: Callable[[Path, Path], list[str]]
    message: str | None = None
    check: Callable[[Path], str] | None = None
    fast: bool = True

    @property
    def refused(self) -> bool:
        return self.check is None


def _jsonl(path: Path, rows: list[Any], *, ensure_ascii: bool = True) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _select(pool: Path, out: Path, *extra: str) -> list[str]:
    return [
        "select",
        "--pool",
        str(pool),
        "--method",
        "random",
        "--budget",
        "3",
        "--out",
        str(out / "subset.jsonl"),
        *extra,
    ]


def _pool_case(
    name: str, write: Callable[[Path], Path], message: str, *extra: str, category: str = "pool file"
) -> Case:
    return Case(name, category, lambda i, o: _select(write(i), o, *extra), message)


def _selected_ok(
    n: int, want: Callable[[list[dict[str, Any]]], bool] | None = None
) -> Callable[[Path], str]:
    def check(out: Path) -> str:
        path = out / "subset.jsonl"
        if not path.is_file():
            return "no output written"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
        if len(rows) != n:
            return f"{len(rows)} records written, expected {n}"
        if want is not None and not want(rows):
            return "records not written back intact"
        return ""

    return check


def _npy(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path


def _emb(n: int = len(GOOD), d: int = 4) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)


def _select_emb(make_emb: Callable[[Path], Path], *extra: str) -> Callable[[Path, Path], list[str]]:
    def make(i: Path, o: Path) -> list[str]:
        pool = _jsonl(i / "pool.jsonl", [dict(r, id=f"r{k}") for k, r in enumerate(GOOD)])
        return [
            "select",
            "--pool",
            str(pool),
            "--budget",
            "3",
            "--embeddings",
            str(make_emb(i)),
            *(e.replace("{in}", str(i)) for e in extra),
            "--out",
            str(o / "subset.jsonl"),
        ]

    return make


def _net(path: Path, d: int = 4, **meta: Any) -> Path:
    from nncift.weights import NetworkWeights, write_network

    rng = np.random.default_rng(0)
    layers = [
        (rng.standard_normal((5, 2 * d + 1)).astype(np.float32), np.zeros(5, np.float32)),
        (rng.standard_normal((1, 5)).astype(np.float32), np.zeros(1, np.float32)),
    ]
    args: dict[str, Any] = dict(
        kind="pairwise", input_layout="paper", embedding_dim=d, embedding_model="test-model"
    )
    args.update(meta)
    write_network(path, NetworkWeights(layers, **args))
    return path


def _rewrite_net(
    path: Path, *, tensors: dict[str, np.ndarray] | None = None, meta: dict[str, str] | None = None
) -> Path:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    good = _net(path.with_name("good.safetensors"))
    with safe_open(str(good), framework="numpy") as fh:
        m = dict(fh.metadata())
    t = load_file(str(good))
    t.update(tensors or {})
    m.update(meta or {})
    save_file(t, str(path), metadata=m)
    return path


def _claiming_net(path: Path) -> Path:
    """A safetensors file whose header claims a 10^16-element tensor in 8 bytes of data."""
    header = json.dumps(
        {
            "__metadata__": {"format": "nncift-influence-network", "format_version": "1"},
            "layers.0.weight": {
                "dtype": "F32",
                "shape": [10**8, 10**8],
                "data_offsets": [0, 4 * 10**16],
            },
        }
    ).encode()
    return _raw(path, struct.pack("<Q", len(header)) + header + b"\0" * 8)


def _estimate(
    net: Callable[[Path], Path], pool: Callable[[Path], Path] | None = None, *extra: str
) -> Callable[[Path, Path], list[str]]:
    def make(i: Path, o: Path) -> list[str]:
        p = pool(i) if pool is not None else _npy(i / "pool.npy", _emb())
        return [
            "estimate",
            "--net",
            str(net(i)),
            "--pool",
            str(p),
            *extra,
            "--out",
            str(o / "scores.npy"),
        ]

    return make


def _train(
    labels: Callable[[Path], Path], rows: int = 12, cols: int = 6
) -> Callable[[Path, Path], list[str]]:
    def make(i: Path, o: Path) -> list[str]:
        pool, target = _npy(i / "pool.npy", _emb(rows)), _npy(i / "target.npy", _emb(cols))
        return [
            "train",
            "--labels",
            str(labels(i)),
            "--pool",
            str(pool),
            "--target",
            str(target),
            "--epochs",
            "2",
            "--out",
            str(o / "net.safetensors"),
        ]

    return make


def _label(*extra: str) -> Callable[[Path, Path], list[str]]:
    def make(i: Path, o: Path) -> list[str]:
        pool = _jsonl(i / "pool.jsonl", GOOD)
        return ["label", "--pool", str(pool), *extra, "--out", str(o / "labels")]

    return make


def _huge_claim_npy(i: Path) -> bytes:
    """A valid .npy of 12 x 4 float32 whose header claims (10^8, 10^8): 40 PB."""
    good = _npy(i / "full.npy", _emb()).read_bytes()
    claim = good.replace(b"(12, 4), }" + b" " * 15, b"(100000000, 100000000), }")
    assert len(claim) == len(good)  # the same header length, only the shape changed
    return claim


def _nan_block() -> np.ndarray:
    block = np.ones((12, 6), np.float32)
    block[3, 2] = np.nan
    return block


def _dir_pool(i: Path) -> Path:
    (i / "folder.jsonl").mkdir()
    return i / "folder.jsonl"


def cases() -> list[Case]:
    """Every bad (and odd but valid) input the test suite refuses or accepts, as a user sees it."""
    good = GOOD
    return [
        # -- the pool file
        _pool_case(
            "jsonl: a malformed line",
            lambda i: _raw(i / "p.jsonl", (json.dumps(good[0]) + "\n{oops\n").encode()),
            "line 2: malformed JSON",
        ),
        _pool_case(
            "jsonl: a line that is not an object",
            lambda i: _raw(i / "p.jsonl", (json.dumps(good[0]) + "\n[1, 2]\n").encode()),
            "line 2: expected a JSON object",
        ),
        _pool_case(
            "jsonl: a byte that is not UTF-8",
            lambda i: _raw(i / "p.jsonl", b'{"prompt": "caf\xe9", "response": "x"}\n'),
            "line 1: not valid UTF-8",
        ),
        _pool_case("empty file", lambda i: _raw(i / "p.jsonl", b""), "the file is empty"),
        _pool_case("only blank lines", lambda i: _raw(i / "p.jsonl", b"\n\n \n"), "no records"),
        _pool_case("missing file", lambda i: i / "missing.jsonl", "no such file"),
        _pool_case("a folder named like a pool", _dir_pool, "is a directory"),
        _pool_case(
            "unknown file type (.txt)", lambda i: _raw(i / "p.txt", b"hello"), "unknown file type"
        ),
        _pool_case(
            "unknown schema",
            lambda i: _jsonl(i / "p.jsonl", [{"q": "a", "a": "b"}]),
            "unknown schema",
        ),
        _pool_case(
            "a later record misses a field",
            lambda i: _jsonl(i / "p.jsonl", [good[0], {"prompt": "only"}]),
            "record 2: missing field(s)",
        ),
        _pool_case(
            "null fields",
            lambda i: _jsonl(i / "p.jsonl", [good[0], {"prompt": None, "response": None}]),
            "are null",
        ),
        _pool_case(
            "wrong type: prompt is a list",
            lambda i: _jsonl(i / "p.jsonl", [good[0], {"prompt": ["a"], "response": "b"}]),
            "expected text, got list",
        ),
        _pool_case(
            "wrong type: response is an object",
            lambda i: _jsonl(i / "p.jsonl", [{"prompt": "a", "response": {"x": 1}}]),
            "expected text, got dict",
        ),
        _pool_case(
            "empty prompt",
            lambda i: _jsonl(i / "p.jsonl", [good[0], {"prompt": "  ", "response": "b"}]),
            "empty prompt",
        ),
        _pool_case(
            "duplicate ids",
            lambda i: _jsonl(i / "p.jsonl", [dict(good[0], id="a"), dict(good[1], id="a")]),
            "duplicate id 'a'",
        ),
        _pool_case(
            "null id",
            lambda i: _jsonl(i / "p.jsonl", [dict(good[0], id=None)]),
            "id field 'id' is null",
        ),
        _pool_case(
            "duplicate items without --dedupe",
            lambda i: _jsonl(i / "p.jsonl", [good[0], good[1], good[0]]),
            "pass --dedupe",
        ),
        _pool_case(
            "--prompt-field without --response-field",
            lambda i: _jsonl(i / "p.jsonl", good),
            "--response-field",
            "--prompt-field",
            "prompt",
        ),
        _pool_case(
            "json: malformed", lambda i: _raw(i / "p.json", b'[{"prompt": "a",'), "malformed JSON"
        ),
        _pool_case(
            "json: not a list of records",
            lambda i: _raw(i / "p.json", b"42"),
            "expected a list of records",
        ),
        _pool_case(
            "json: a record that is not an object",
            lambda i: _raw(i / "p.json", json.dumps([good[0], "x"]).encode()),
            "record 1: expected a JSON object",
        ),
        _pool_case(
            "csv: unbalanced quote",
            lambda i: _raw(i / "p.csv", b'prompt,response\n"a,b\nc,d\n'),
            "CSV",
        ),
        _pool_case(
            "parquet: not a parquet file",
            lambda i: _raw(i / "p.parquet", b"PAR1junk"),
            "not a readable parquet file",
        ),
        _pool_case(
            "openai-chat: no assistant reply",
            lambda i: _jsonl(i / "p.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}]),
            "no user turn followed by an assistant reply",
        ),
        _pool_case(
            "sharegpt: turns not a list",
            lambda i: _jsonl(i / "p.jsonl", [{"conversations": "human: hi"}]),
            "expected a list of turns",
        ),
        Case(
            "unknown built-in data set",
            "pool file",
            lambda i, o: _select(Path("builtin:nope"), o),
            "unknown built-in data set",
        ),
        # -- odd but valid pools: loaded and written back intact
        Case(
            "U+2028 / U+0085 raw inside strings",
            "valid pool",
            lambda i, o: _select(
                _jsonl(
                    i / "p.jsonl",
                    [{"prompt": f"a\u2028{k}", "response": "b\x85c"} for k in range(3)],
                    ensure_ascii=False,
                ),
                o,
            ),
            check=_selected_ok(3, lambda rows: all("\u2028" in r["prompt"] for r in rows)),
        ),
        Case(
            "CRLF and lone-CR line ends, a BOM",
            "valid pool",
            lambda i, o: _select(
                _raw(
                    i / "p.jsonl",
                    b"\xef\xbb\xbf"
                    + b"\r\n".join(json.dumps(r).encode() for r in good[:2])
                    + b"\r"
                    + json.dumps(good[2]).encode()
                    + b"\r\n",
                ),
                o,
            ),
            check=_selected_ok(3),
        ),
        Case(
            'json: {"data": [...]}',
            "valid pool",
            lambda i, o: _select(_raw(i / "p.json", json.dumps({"data": good}).encode()), o),
            check=_selected_ok(3),
        ),
        # -- selection options
        Case(
            "budget 0",
            "options",
            lambda i, o: _select(_jsonl(i / "p.jsonl", good), o, "--budget", "0"),
            "budget must be > 0",
        ),
        Case(
            "budget larger than the pool",
            "options",
            lambda i, o: _select(_jsonl(i / "p.jsonl", good), o, "--budget", "500"),
            "larger than the pool",
        ),
        Case(
            "fractional budget above 1",
            "options",
            lambda i, o: _select(_jsonl(i / "p.jsonl", good), o, "--budget", "2.5"),
            "must be whole",
        ),
        Case(
            "unknown output type (.txt)",
            "options",
            lambda i, o: _select(_jsonl(i / "p.jsonl", good), o, "--out", str(o / "s.txt")),
            "unknown output type",
        ),
        Case(
            "--knn 0",
            "options",
            lambda i, o: _select(_jsonl(i / "p.jsonl", good), o, "--knn", "0"),
            "--knn",
        ),
        Case(
            "--n-jobs -2",
            "options",
            lambda i, o: _select(_jsonl(i / "p.jsonl", good), o, "--n-jobs", "-2"),
            "--n-jobs",
        ),
        # -- embeddings the user brings (select --embeddings)
        Case(
            "embeddings: one row short",
            "provided embeddings",
            _select_emb(lambda i: _npy(i / "e.npy", _emb(11))),
            "11 rows, but the pool has 12",
        ),
        Case(
            "embeddings: NaN",
            "provided embeddings",
            _select_emb(lambda i: _npy(i / "e.npy", np.where(np.eye(12, 4) > 0, np.nan, 1.0))),
            "NaN or infinite",
        ),
        Case(
            "embeddings: inf",
            "provided embeddings",
            _select_emb(lambda i: _npy(i / "e.npy", np.where(np.eye(12, 4) > 0, np.inf, 1.0))),
            "NaN or infinite",
        ),
        Case(
            "embeddings: beyond float32",
            "provided embeddings",
            _select_emb(lambda i: _npy(i / "e.npy", np.full((12, 4), 1e300))),
            "beyond float32",
        ),
        Case(
            "embeddings: 1-D array",
            "provided embeddings",
            _select_emb(lambda i: _npy(i / "e.npy", np.ones(12))),
            "2-D",
        ),
        Case(
            "embeddings: zero columns",
            "provided embeddings",
            _select_emb(lambda i: _npy(i / "e.npy", np.ones((12, 0)))),
            "d >= 1",
        ),
        Case(
            "embeddings: strings",
            "provided embeddings",
            _select_emb(lambda i: _npy(i / "e.npy", np.array([["x"] * 4] * 12))),
            "must be numbers",
        ),
        Case(
            "embeddings: pickled objects",
            "provided embeddings",
            _select_emb(lambda i: _npy(i / "e.npy", np.array([[1, None]] * 12, dtype=object))),
            "not a plain numeric .npy",
        ),
        Case(
            "embeddings: truncated .npy",
            "provided embeddings",
            _select_emb(
                lambda i: _raw(i / "e.npy", _npy(i / "full.npy", _emb()).read_bytes()[:150])
            ),
            "e.npy",
        ),
        Case(
            "embeddings: .npy header claims 10^16 values",
            "provided embeddings",
            _select_emb(lambda i: _raw(i / "e.npy", _huge_claim_npy(i))),
            "header claims shape",
        ),
        Case(
            "embeddings: missing file",
            "provided embeddings",
            _select_emb(lambda i: i / "nope.npy"),
            "no such embeddings file",
        ),
        Case(
            "embeddings: unknown type",
            "provided embeddings",
            _select_emb(lambda i: _raw(i / "e.txt", b"1 2 3")),
            "must be .npy",
        ),
        Case(
            "embeddings: .npy with --dedupe",
            "provided embeddings",
            _select_emb(lambda i: _npy(i / "e.npy", _emb()), "--dedupe"),
            "--dedupe",
        ),
        Case(
            "embeddings table: an id missing",
            "provided embeddings",
            _select_emb(
                lambda i: _jsonl(
                    i / "e.jsonl", [{"id": f"r{k}", "embedding": [1.0, 2.0]} for k in range(11)]
                )
            ),
            "not in column 'id'",
        ),
        Case(
            "embeddings table: a repeated id",
            "provided embeddings",
            _select_emb(
                lambda i: _jsonl(
                    i / "e.jsonl",
                    [{"id": f"r{k % 12}", "embedding": [1.0, 2.0]} for k in range(13)],
                )
            ),
            "appears more than once",
        ),
        Case(
            "embeddings table: ragged vectors",
            "provided embeddings",
            _select_emb(
                lambda i: _jsonl(
                    i / "e.jsonl",
                    [{"id": f"r{k}", "embedding": [1.0] * (2 + (k == 3))} for k in range(12)],
                )
            ),
            "differ in length",
        ),
        Case(
            "embeddings table: no vector column",
            "provided embeddings",
            _select_emb(
                lambda i: _jsonl(i / "e.jsonl", [{"id": f"r{k}", "vec": [1.0]} for k in range(12)]),
            ),
            "no vector column",
        ),
        Case(
            "embeddings table: null vector",
            "provided embeddings",
            _select_emb(
                lambda i: _jsonl(
                    i / "e.jsonl",
                    [{"id": f"r{k}", "embedding": None if k == 1 else [1.0]} for k in range(12)],
                )
            ),
            "is not a vector",
        ),
        Case(
            "embeddings table: corrupt parquet",
            "provided embeddings",
            _select_emb(lambda i: _raw(i / "e.parquet", b"not parquet")),
            "cannot read",
        ),
        Case(
            "target embeddings without a target",
            "provided embeddings",
            _select_emb(lambda i: _npy(i / "e.npy", _emb()), "--target-embeddings", "{in}/e.npy"),
            "without a target set",
        ),
        # -- weight files (estimate --net)
        Case(
            "weights: not safetensors",
            "weight file",
            _estimate(lambda i: _raw(i / "n.safetensors", b"garbage")),
            "safetensors",
        ),
        Case(
            "weights: empty file",
            "weight file",
            _estimate(lambda i: _raw(i / "n.safetensors", b"")),
            "n.safetensors",
        ),
        Case(
            "weights: truncated",
            "weight file",
            _estimate(
                lambda i: _raw(i / "n.safetensors", _net(i / "g.safetensors").read_bytes()[:-3])
            ),
            "n.safetensors",
        ),
        Case(
            "weights: header claims a 10^16-element tensor",
            "weight file",
            _estimate(lambda i: _claiming_net(i / "n.safetensors")),
            "n.safetensors",
        ),
        Case(
            "weights: unknown format_version",
            "weight file",
            _estimate(lambda i: _rewrite_net(i / "n.safetensors", meta={"format_version": "2"})),
            "unknown format_version",
        ),
        Case(
            "weights: infinite bias",
            "weight file",
            _estimate(
                lambda i: _rewrite_net(
                    i / "n.safetensors", tensors={"layers.0.bias": np.full(5, np.inf, np.float32)}
                )
            ),
            "non-finite",
        ),
        Case(
            "weights: missing file",
            "weight file",
            _estimate(lambda i: i / "missing.safetensors"),
            "missing.safetensors",
        ),
        Case(
            "estimate: pool dimension differs from the network's",
            "weight file",
            _estimate(lambda i: _net(i / "n.safetensors"), lambda i: _npy(i / "p.npy", _emb(d=5))),
            "4-dimensional",
        ),
        Case(
            "estimate: NaN in pool embeddings",
            "weight file",
            _estimate(
                lambda i: _net(i / "n.safetensors"),
                lambda i: _npy(i / "p.npy", np.where(np.eye(12, 4) > 0, np.nan, 1.0)),
            ),
            "NaN",
        ),
        Case(
            "estimate: pool .npy header claims 10^16 values",
            "weight file",
            _estimate(
                lambda i: _net(i / "n.safetensors"),
                lambda i: _raw(i / "p.npy", _huge_claim_npy(i)),
            ),
            "header claims shape",
        ),
        Case(
            "estimate: --top-k 0",
            "options",
            _estimate(lambda i: _net(i / "n.safetensors"), None, "--top-k", "0"),
            "--top-k must be >= 1",
        ),
        # -- labels (train --labels)
        Case(
            "labels: NaN",
            "labels",
            _train(lambda i: _npy(i / "l.npy", _nan_block())),
            "NaN",
            fast=False,
        ),
        Case(
            "labels: inf",
            "labels",
            _train(lambda i: _npy(i / "l.npy", np.where(np.isnan(_nan_block()), np.inf, 1.0))),
            "inf",
            fast=False,
        ),
        Case(
            "labels: more rows than pool embeddings",
            "labels",
            _train(lambda i: _npy(i / "l.npy", _emb(15, 5))),
            "row indices must be in [0, 12)",
            fast=False,
        ),
        Case(
            "labels: an empty file",
            "labels",
            _train(lambda i: _raw(i / "l.npy", b"")),
            "l.npy",
            fast=False,
        ),
        Case(
            "labels: .npy header claims 10^16 values",
            "labels",
            _train(lambda i: _raw(i / "l.npy", _huge_claim_npy(i))),
            "header claims shape",
            fast=False,
        ),
        Case(
            "train --rows: an empty .npy",
            "labels",
            lambda i, o: (
                _train(lambda j: _npy(j / "l.npy", _emb(12, 6)))(i, o)
                + ["--rows", str(_raw(i / "rows.npy", b""))]
            ),
            "rows.npy",
            fast=False,
        ),
        Case(
            "evaluate --labels: an empty .npy",
            "labels",
            lambda i, o: [
                "evaluate",
                "--labels",
                str(_raw(i / "l.npy", b"")),
                "--pool",
                str(_npy(i / "pool.npy", _emb())),
                "--out",
                str(o / "eval"),
            ],
            "l.npy",
            fast=False,
        ),
        # -- label options
        Case(
            "label: --fraction 0",
            "options",
            _label("--method", "delift-se", "--fraction", "0"),
            "(0, 1]",
        ),
        Case(
            "label: --set without '='",
            "options",
            _label("--method", "delift-se", "--set", "oops"),
            "KEY=VALUE",
        ),
        Case(
            "label: selectit with a target",
            "options",
            lambda i, o: _label(
                "--method", "selectit", "--target", str(_jsonl(i / "t.jsonl", GOOD))
            )(i, o),
            "takes no --target",
        ),
        Case(
            "label: a language model folder that does not exist",
            "options",
            _label("--method", "delift", "--lm", "nope-lm-folder"),
            "cannot load language model",
            fast=False,
        ),
    ]


@dataclass
class Outcome:
    name: str
    category: str
    did: str
    lost: str
    ok: bool
    seconds: float


def _left_behind(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def run_case(case: Case, workdir: Path, *, in_process: bool = False) -> Outcome:
    inp, out = workdir / "in", workdir / "out"
    inp.mkdir(parents=True)
    out.mkdir()
    args = case.make(inp, out)
    res = run_cli(args, workdir, in_process=in_process)
    err_lines = [line for line in res.stderr.splitlines() if line.strip()]
    errors = [line for line in err_lines if line.startswith("Error:")]
    first = errors[0] if errors else (err_lines[0] if err_lines else "")
    first = first.replace(str(workdir) + os.sep, "")  # paths relative to the case's folder
    problems: list[str] = []
    if case.refused:
        did = f"exit {res.code}: {first}"
        if res.code == 0:
            problems.append("accepted")
        if "Traceback" in res.stderr:
            problems.append("traceback")
        if len(errors) != 1:
            problems.append(f"{len(errors)} 'Error:' lines")
        if case.message and case.message not in res.stderr:
            problems.append(f"message lacks {case.message!r}")
        left = _left_behind(out)
        lost = "nothing (no output written)" if not left else "left behind: " + ", ".join(left)
        if left:
            problems.append("output left behind")
    else:
        assert case.check is not None
        problem = case.check(out) if res.code == 0 else f"exit {res.code}: {first}"
        did = problem or "loaded/selected correctly"
        lost = "nothing" if not problem else "the output"
        if problem:
            problems.append(problem)
    if problems:
        did += f" [NOT OK: {'; '.join(problems)}]"
    return Outcome(case.name, case.category, did, lost, not problems, res.seconds)


# ---------------------------------------------------------------- scale


def scale_outcomes(workdir: Path, quick: bool) -> list[Outcome]:
    sys.path.insert(0, str(TESTS))
    from test_scale import measure_load, write_pool

    outcomes = []
    sizes = [100_000] if quick else [100_000, 1_000_000]
    for n in sizes:
        pool = write_pool(workdir / f"pool{n}.jsonl", n)
        start = time.perf_counter()
        m = measure_load(pool)
        secs = time.perf_counter() - start
        grow = (int(m["peak_kib"]) - int(m["base_kib"])) / 1024
        size = pool.stat().st_size / 2**20
        ok = m["n"] == n and m["last"] == f"r{n - 1}"
        did = (
            f"loaded {int(m['n']):,} items in {secs:.1f} s; peak RSS +{grow:.0f} MiB over the "
            f"import baseline ({grow / size:.1f}x the {size:.0f} MiB file)"
        )
        outcomes.append(
            Outcome(f"{n:,}-line jsonl pool", "scale", did, "nothing" if ok else "items", ok, secs)
        )
        out = workdir / f"out{n}"
        out.mkdir()
        res = run_cli(
            [
                "select",
                "--pool",
                str(pool),
                "--method",
                "random",
                "--budget",
                "100",
                "--out",
                str(out / "s.jsonl"),
            ],
            workdir,
        )
        rows = (out / "s.jsonl").read_text().splitlines() if res.code == 0 else []
        ok = res.code == 0 and len(rows) == 100
        did = f"select --method random --budget 100: exit {res.code}, {len(rows)} records"
        did += f" in {res.seconds:.1f} s" + (
            "" if ok else f" [NOT OK: {res.stderr.strip()[-200:]}]"
        )
        outcomes.append(
            Outcome(
                f"{n:,}-line jsonl pool, selected",
                "scale",
                did,
                "nothing" if ok else "the output",
                ok,
                res.seconds,
            )
        )
        pool.unlink()
    # One 50 MB line among ordinary ones: loaded and written back intact, memory bounded.
    huge = "0123456789abcdef" * (50 * 2**20 // 16)
    pool = _jsonl(
        workdir / "huge.jsonl", [GOOD[0], {"prompt": "50 MB please", "response": huge}, GOOD[1]]
    )
    m = measure_load(pool)
    grow = (int(m["peak_kib"]) - int(m["base_kib"])) / 1024
    out = workdir / "outhuge"
    out.mkdir()
    res = run_cli(
        [
            "select",
            "--pool",
            str(pool),
            "--method",
            "random",
            "--budget",
            "3",
            "--out",
            str(out / "s.jsonl"),
        ],
        workdir,
    )
    written = (
        [json.loads(x) for x in (out / "s.jsonl").read_text().splitlines()]
        if (res.code == 0)
        else []
    )
    ok = m["n"] == 3 and any(r.get("response") == huge for r in written)
    did = (
        f"loaded intact (peak RSS +{grow:.0f} MiB for a 50 MiB line); select wrote it back "
        f"byte for byte: exit {res.code} in {res.seconds:.1f} s"
    )
    if not ok:
        did += f" [NOT OK: {res.stderr.strip()[-200:]}]"
    outcomes.append(
        Outcome(
            "a single 50 MB line (one huge response)",
            "scale",
            did,
            "nothing" if ok else "the record",
            ok,
            res.seconds,
        )
    )
    if not quick:
        outcomes.append(huge_line_embedded(workdir))
    return outcomes


def run_cli_peak(args: list[str], workdir: Path, timeout: float = 900) -> tuple[CliResult, int]:
    """`run_cli` in a subprocess, plus that process's peak RSS in KiB (its own rusage)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["NNCIFT_CACHE"] = str(workdir / "cache")
    start = time.perf_counter()
    with (workdir / "stdout").open("w+") as out, (workdir / "stderr").open("w+") as err:
        proc = subprocess.Popen([*nncift_command(), "-q", *args], stdout=out, stderr=err, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        res = CliResult(proc.returncode, out.read(), err.read(), time.perf_counter() - start)
    return res, int(usage.ru_maxrss)


def huge_line_embedded(workdir: Path) -> Outcome:
    """A 45 MB response of words through the default method (the embedder tokenizes it)."""
    rng = np.random.default_rng(0)
    words = np.array(["alpha", "beta", "gamma", "delta", "the", "of", "and", "data", "model"])
    huge = " ".join(words[rng.integers(0, len(words), 50 * 2**20 // 6)])[: 45 * 2**20]
    pool = _jsonl(
        workdir / "huge_words.jsonl",
        [*GOOD[:3], {"prompt": "45 MB of words", "response": huge}],
    )
    out = workdir / "out_words"
    out.mkdir()
    res, peak_kib = run_cli_peak(
        ["select", "--pool", str(pool), "--budget", "4", "--out", str(out / "s.jsonl")], workdir
    )
    written = (
        [json.loads(x) for x in (out / "s.jsonl").read_text().splitlines()] if res.code == 0 else []
    )
    ok = any(r.get("response") == huge for r in written)
    did = (
        f"embedded (default method), selected and written back intact: exit {res.code} in "
        f"{res.seconds:.0f} s, peak RSS {peak_kib / 2**20:.1f} GiB (texts are cut to 256 characters "
        "per token of the embedder's context before tokenizing)"
    )
    if not ok:
        did += f" [NOT OK: {res.stderr.strip()[-200:]}]"
    return Outcome(
        "a single 45 MB line of words, default embedding method",
        "scale",
        did,
        "nothing" if ok else "the record",
        ok,
        res.seconds,
    )


# ---------------------------------------------------------------- faults (tests/faults.py)


def _show(o: Outcome) -> None:
    print(f"{'ok ' if o.ok else 'BAD'} {o.seconds:5.1f}s  {o.name}: {o.did}", flush=True)


def fault_outcomes(workdir: Path, quick: bool) -> tuple[list[Outcome], str]:
    """The scenarios of tests/faults.py, all given one `workdir` (they build their shared
    inputs, the tiny LM and the reference runs, once in it). --quick keeps the fast ones: a
    scenario's own `slow` flag when it has one, else the disk scenarios only."""
    if not (TESTS / "faults.py").is_file():
        return [], "tests/faults.py does not exist: no kill / concurrency / disk rows."
    sys.path.insert(0, str(TESTS))
    import faults  # type: ignore[import-not-found]

    outcomes = []
    skipped = 0
    for sc in faults.SCENARIOS:
        if quick and getattr(sc, "slow", sc.category in ("kill", "concurrency")):
            skipped += 1
            continue
        start = time.perf_counter()
        try:
            r = sc.run(workdir)
            did, lost, ok = str(r["what_the_tool_did"]), str(r["lost"]), bool(r["ok"])
            did = did.replace(str(workdir) + os.sep, "")  # paths relative to the scenario folder
        except Exception as exc:  # a scenario that breaks is a row, not the end of the report
            did, lost, ok = f"scenario raised {type(exc).__name__}: {exc}", "unknown", False
        outcomes.append(Outcome(sc.name, sc.category, did, lost, ok, time.perf_counter() - start))
        _show(outcomes[-1])
    note = "Kill / concurrency / disk rows come from tests/faults.py (`SCENARIOS`)."
    if skipped:
        note += f" {skipped} slow scenario(s) skipped (--quick)."
    return outcomes, note


# ---------------------------------------------------------------- the document


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_doc(
    path: Path, outcomes: list[Outcome], notes: list[str], seconds: float, quick: bool
) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    n_ok = sum(o.ok for o in outcomes)
    lines = [
        "# Reliability: every fault and bad input tried, and what happened",
        "",
        "Regenerated by `scripts/reliability.py` (`.venv/bin/python scripts/reliability.py"
        + (" --quick" if quick else "")
        + "`); every case runs the installed `nncift` console "
        "script in a subprocess, as a user would, in a fresh folder. *What the tool did* is the "
        "exit code and the first line of the error, or what was checked when the input is "
        "valid; *what was lost* is what a refused run left behind (target: nothing: no output, "
        "no temporary beside it) or what an accepted run failed to write back.",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        f"- load average (1/5/15 min) at the end: {load}",
        f"- {len(outcomes)} cases, {n_ok} behaved as intended, in {seconds:.0f} s"
        + (" (--quick: no 1M-line pool, no model-loading cases)" if quick else ""),
        *(f"- {n}" for n in notes),
        "",
        "| case | category | what the tool did | what was lost |",
        "|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(f"| {_cell(o.name)} | {o.category} | {_cell(o.did)} | {_cell(o.lost)} |")
    lines += [
        "",
        "Exit code 1 is nncift's own one-line error (`Error: ...`); exit code 2 is a Click "
        "usage error (an option value outside its range), also one `Error:` line after the "
        "usage line. "
        + (
            "No case prints a traceback."
            if n_ok == len(outcomes)
            else f"{len(outcomes) - n_ok} case(s) marked NOT OK did not behave as intended."
        ),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 1M-line pool and slow cases")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="nncift-reliability-") as tmp:
        work = Path(tmp)
        for k, case in enumerate(cases()):
            if args.quick and not case.fast:
                continue
            outcomes.append(run_case(case, work / f"case{k}"))
            _show(outcomes[-1])
        scale_dir = work / "scale"
        scale_dir.mkdir()
        for o in scale_outcomes(scale_dir, args.quick):
            outcomes.append(o)
            _show(o)
        fault_dir = work / "faults"
        fault_dir.mkdir()
        faults, note = fault_outcomes(fault_dir, args.quick)
        outcomes += faults
    write_doc(args.out, outcomes, [note], time.perf_counter() - start, args.quick)
    bad = [o for o in outcomes if not o.ok]
    print(f"{len(outcomes) - len(bad)}/{len(outcomes)} cases ok; wrote {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
