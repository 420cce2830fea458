"""Fault scenarios for `nncift select` run as a real process: SIGKILL at named points and
rerun, two processes on one cache, a read-only cache folder and a full disk.

Each `Scenario.run(workdir)` performs its scenario in `workdir/<name>/` from scratch and
returns ``{"what_the_tool_did": str, "lost": str, "ok": bool}``. Inputs every scenario
shares (the tiny test LM, a 36-item chatterbot pool and the outputs of uninterrupted
single-process runs, the references) are built once in `workdir/shared/` and reused by the
next scenario given the same `workdir`. tests/test_kill.py and tests/test_concurrency.py
assert ``ok``; scripts/reliability.py turns the same results into docs/reliability.md.

Kill points are reached with the test-only checkpoint `NNCIFT_FAULT_PAUSE_AT`
(`nncift.io.fault_point`): the process prints ``nncift-fault-pause NAME`` and sleeps there,
and the scenario SIGKILLs it. Points: ``stage:NAME`` (a manifest stage begins),
``write:FILE`` (FILE's content complete in its temporary file, not yet renamed) and
``wrote:FILE`` (FILE just renamed into place, nothing after it done).
"""

from __future__ import annotations

import json
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Every process gets at most this long (a hang is a failure, not a stuck test run).
TIMEOUT = 300
POOL_SIZE = 36
#: delift: u = 0.12 labels 4 x 4 pool items with the tiny LM (one tile, ~20 LM passes);
#: delift-se: u = 0.5 labels 18 x 18 (two tiles of 16 rows: a kill can fall between them).
METHOD_ARGS = {
    "delift": ["--method", "delift", "--u", "0.12", "--epochs", "2"],
    "delift-se": ["--method", "delift-se", "--u", "0.5", "--epochs", "2"],
}


@dataclass
class Scenario:
    name: str
    category: str  # "kill" | "concurrency" | "disk"
    run: Callable[[Path], dict[str, Any]]


# ----------------------------------------------------------------------------- shared inputs


def tiny_lm_folder(workdir: Path) -> Path:
    """The seeded tiny random Llama of tests/conftest.py saved as a folder (for `--lm`)."""
    d = Path(workdir) / "shared" / "tiny-lm"
    if (d / "config.json").is_file():
        return d
    from nncift.lm import tiny_random_lm

    cache = Path(__file__).resolve().parents[1] / ".nncift-cache"  # as conftest.LM_CACHE
    tiny = tiny_random_lm(cache=cache)
    tmp = d.with_name("tiny-lm.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tiny.model.save_pretrained(tmp)
    tiny.tokenizer.save_pretrained(tmp)
    tmp.rename(d)
    return d


def pool_file(workdir: Path) -> Path:
    path = Path(workdir) / "shared" / "pool.jsonl"
    if not path.is_file():
        from nncift.data import load_named

        pool = load_named("chatterbot").split([POOL_SIZE, 1], seed=1)[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in pool.records), encoding="utf-8")
    return path


def select_args(workdir: Path, method: str, out: Path, budget: int = 5) -> list[str]:
    args = ["select", "--pool", str(pool_file(workdir)), *METHOD_ARGS[method]]
    if method == "delift":
        args += ["--lm", str(tiny_lm_folder(workdir))]
    return [*args, "--budget", str(budget), "--no-stop-at-zero", "--out", str(out)]


def reference(workdir: Path, method: str, budget: int = 5) -> list[tuple[str, float]]:
    """(id, gain) of an uninterrupted single-process run (run once per `workdir`)."""
    shared = Path(workdir) / "shared"
    out = shared / "ref" / f"{method}-{budget}.jsonl"
    if not out.is_file():
        proc = start(select_args(workdir, method, out, budget), shared / "ref-cache")
        rc, err = finish(proc)
        if rc != 0:
            raise RuntimeError(f"reference run {method} failed: {err[-2000:]}")
    return picks(out)


def picks(out: Path) -> list[tuple[str, float]]:
    recs = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    return [(r["nncift_id"], r["nncift_gain"]) for r in recs]


# ----------------------------------------------------------------------------- processes


def _env(cache: Path, pause_at: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(NNCIFT_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("NNCIFT_FAULT_PAUSE_AT", None)
    if pause_at is not None:
        env["NNCIFT_FAULT_PAUSE_AT"] = pause_at
    return env


class Proc:
    """A running `nncift -q ARGS` whose stderr is read line by line in a thread."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            line = raw.decode("utf-8", "replace")
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_pause(self, timeout: float = TIMEOUT) -> str | None:
        """The paused point's name, or None if the process ended without pausing."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                return None
            if line is None:
                return None
            if line.startswith("nncift-fault-pause "):
                return line.split(" ", 1)[1].strip()


def start(
    args: list[str],
    cache: Path,
    *,
    pause_at: str | None = None,
    file_size_limit: int | None = None,
) -> Proc:
    def limits() -> None:  # in the child: a "full disk" as a small file-size limit
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    popen = subprocess.Popen(
        [sys.executable, "-c", "from nncift.cli.main import main; main()", "-q", *args],
        env=_env(cache, pause_at),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=limits if file_size_limit is not None else None,
    )
    return Proc(popen)


def finish(proc: Proc) -> tuple[int, str]:
    try:
        rc = proc.popen.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        rc = proc.popen.wait()
        proc.stderr.append(f"[hung: killed after {TIMEOUT} s]\n")
    proc.popen.stderr and proc.popen.stderr.close()
    return rc, "".join(proc.stderr)


def kill_at(args: list[str], cache: Path, point: str) -> str | None:
    """Run until the fault point `point`, SIGKILL there; the point reached (None: never)."""
    proc = start(args, cache, pause_at=point)
    reached = proc.wait_for_pause()
    if proc.popen.poll() is None:
        os.kill(proc.popen.pid, signal.SIGKILL)
    finish(proc)  # reaps it: its pid is then free, so its temp files count as stale
    return reached


# ----------------------------------------------------------------------------- checks


def temp_files(*roots: Path) -> list[Path]:
    return sorted(p for r in roots if r.exists() for p in r.rglob("*.part"))


def unreadable(cache: Path) -> list[str]:
    """Cache files that do not read back (every .npy, .json and .safetensors under `cache`)."""
    from nncift.weights import read_network

    bad = []
    for p in sorted(cache.rglob("*")):
        if not p.is_file() or p.name.endswith(".part"):
            continue
        try:
            if p.suffix == ".npy":
                np.load(p, allow_pickle=False)
            elif p.suffix == ".json":
                json.loads(p.read_text(encoding="utf-8"))
            elif p.suffix == ".safetensors":
                read_network(p)
        except Exception as exc:
            bad.append(f"{p.relative_to(cache)}: {exc}")
    return bad


def partial_outputs(out: Path, want: list[tuple[str, float]]) -> list[str]:
    """Problems with what is at `out` and its manifest: each is absent or complete."""
    problems = []
    if out.exists() and picks(out) != want:
        problems.append(f"{out.name} exists but differs from an uninterrupted run's")
    manifest = out.with_name(out.stem + ".manifest.json")
    if manifest.exists():
        try:
            json.loads(manifest.read_text(encoding="utf-8"))["results"]["output"]
        except (ValueError, KeyError) as exc:
            problems.append(f"{manifest.name} is incomplete ({exc})")
    return problems


def _result(did: list[str], lost: list[str]) -> dict[str, Any]:
    return {
        "what_the_tool_did": "; ".join(did),
        "lost": "; ".join(lost) if lost else "nothing",
        "ok": not lost,
    }


# ----------------------------------------------------------------------------- kill


def _kill_chain(workdir: Path, name: str, method: str, points: list[tuple[str, str]]) -> dict:
    """Kill a select run at each point in turn (each run resumes what the killed ones left),
    check the cache and the output after every kill, then rerun it to the end."""
    want = reference(workdir, method)
    d = Path(workdir) / name
    shutil.rmtree(d, ignore_errors=True)
    cache, out = d / "cache", d / "out" / "subset.jsonl"
    if method == "delift-se":
        # Start with the pool embedded (copied from the reference run): the LM chain
        # covers the kill during embedding; this one is about what follows.
        shutil.copytree(Path(workdir) / "shared" / "ref-cache" / "embeddings", cache / "embeddings")
    args = select_args(workdir, method, out)
    did, lost = [], []
    for stage, point in points:
        reached = kill_at(args, cache, point)
        if reached is None:
            lost.append(f"never reached the kill point {point} ({stage})")
            continue
        left = len(temp_files(cache, out.parent))
        did.append(
            f"killed during {stage} (at {reached}; {left} temporary file(s) left, "
            "none read as data)"
        )
        lost += [f"after the kill during {stage}: {p}" for p in unreadable(cache)]
        lost += [f"after the kill during {stage}: {p}" for p in partial_outputs(out, want)]
    rc, err = finish(start(args, cache))
    if rc != 0:
        lost.append(f"the rerun failed (exit {rc}): {err.strip()[-500:]}")
        return _result(did, lost)
    got = picks(out)
    if got != want:
        lost.append(f"the rerun chose {got}, an uninterrupted run {want}")
    else:
        did.append(f"the rerun finished with the uninterrupted run's {len(want)} ids and gains")
    lost += [f"after the rerun: {p}" for p in unreadable(cache)]
    stale = temp_files(cache, out.parent)
    if stale:
        lost.append(f"temporary files left after the rerun: {[str(p) for p in stale]}")
    else:
        did.append("the killed runs' temporary files were removed")
    manifest = json.loads(out.with_name("subset.manifest.json").read_text(encoding="utf-8"))
    if manifest["results"].get("output") != str(out):
        lost.append("the manifest does not describe the output")
    return _result(did, lost)


def kill_lm_method(workdir: Path) -> dict[str, Any]:
    return _kill_chain(
        workdir,
        "kill-delift",
        "delift",
        [
            ("embedding (vectors stored, their keys not yet)", "write:*.keys.npy"),
            ("labelling (a tile stored, not yet in the label manifest)", "wrote:r00000_c00000.npy"),
            ("training (network written to its temporary file)", "write:net-*.safetensors"),
        ],
    )


def kill_delift_se(workdir: Path) -> dict[str, Any]:
    return _kill_chain(
        workdir,
        "kill-delift-se",
        "delift-se",
        [
            ("labelling (first of two tiles stored, not yet listed)", "wrote:r00000_c00000.npy"),
            ("selection", "stage:select"),
            ("writing the subset (complete in its temporary file)", "write:subset.jsonl"),
            ("writing (subset in place, manifest not yet)", "wrote:subset.jsonl"),
        ],
    )


# ----------------------------------------------------------------------------- concurrency


def _stages(out: Path) -> dict[str, Any]:
    m = json.loads(out.with_name(out.stem + ".manifest.json").read_text(encoding="utf-8"))
    return m["stages"]


def _concurrent(
    workdir: Path, name: str, method: str, budgets: tuple[int, int], seed_embeddings: bool
) -> dict:
    wants = [reference(workdir, method, b) for b in budgets]
    d = Path(workdir) / name
    shutil.rmtree(d, ignore_errors=True)
    cache = d / "cache"
    if seed_embeddings:
        # The pool already embedded: the LM run is about labels and networks (the
        # delift-se pair starts empty and shares the embedding step too).
        shutil.copytree(Path(workdir) / "shared" / "ref-cache" / "embeddings", cache / "embeddings")
    outs = [d / f"out-{i}" / "subset.jsonl" for i in range(2)]
    procs = [
        start(select_args(workdir, method, o, b), cache) for o, b in zip(outs, budgets, strict=True)
    ]
    results = [finish(p) for p in procs]
    did, lost = [], []
    for (rc, err), out, want, b in zip(results, outs, wants, budgets, strict=True):
        if rc != 0:
            lost.append(f"the run with budget {b} failed (exit {rc}): {err.strip()[-500:]}")
        elif picks(out) != want:
            lost.append(f"the run with budget {b} differs from a single-process run")
    if lost:
        return _result(did, lost)
    stages = [_stages(o) for o in outs]
    tiles = sum(s["label_data"]["computed_tiles"] for s in stages)
    total = stages[0]["label_data"]["computed_tiles"] + stages[0]["label_data"]["reused_tiles"]
    embedded = sum(s["embed"]["pool"]["embedded"] for s in stages)
    want_embedded = 0 if seed_embeddings else POOL_SIZE
    trained = sum(not s["train_data"]["reused"] for s in stages)
    did.append(
        f"both runs (budgets {budgets[0]} and {budgets[1]}) finished with a single-process "
        f"run's ids and gains; label tiles computed {tiles} times for {total} tiles, "
        f"{embedded} texts embedded ({want_embedded} not yet cached), network trained "
        f"{trained} time(s)"
    )
    if tiles != total:
        lost.append(f"label tiles computed {tiles} times for {total} tiles")
    if embedded != want_embedded:
        lost.append(f"{embedded} texts embedded, {want_embedded} were not yet cached")
    if trained != 1:
        lost.append(f"the network was trained {trained} times")
    lost += unreadable(cache)
    stale = temp_files(cache, *(o.parent for o in outs))
    if stale:
        lost.append(f"temporary files left: {[str(p) for p in stale]}")
    return _result(did, lost)


def concurrent_same_options(workdir: Path) -> dict[str, Any]:
    return _concurrent(workdir, "concurrent-same", "delift", (5, 5), seed_embeddings=True)


def concurrent_budgets(workdir: Path) -> dict[str, Any]:
    return _concurrent(workdir, "concurrent-budgets", "delift-se", (5, 10), seed_embeddings=False)


# ----------------------------------------------------------------------------- disk


def _one_line_error(rc: int, err: str, names: str) -> list[str]:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    problems = []
    if rc == 0:
        problems.append("exit code 0")
    if "Traceback" in err or len(lines) != 1:
        problems.append(f"not a one-line error: {err.strip()[-800:]!r}")
    elif names not in lines[0]:
        problems.append(f"the error does not name {names}: {lines[0]!r}")
    return problems


def read_only_cache(workdir: Path) -> dict[str, Any]:
    reference(workdir, "delift-se")  # the shared inputs, as the other scenarios
    d = Path(workdir) / "read-only-cache"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    cache = d / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        (cache / "probe").touch()
        writable = True  # root: a 0555 mode does not stop writes
        (cache / "probe").unlink()
    except OSError:
        writable = False
    how = "a folder with mode 0555"
    if writable:
        cache.chmod(0o755)
        blocker = d / "a-file"
        blocker.write_text("not a folder\n")
        cache, how = blocker / "cache", "a cache path under a regular file (running as root)"
    out = d / "out" / "subset.jsonl"
    rc, err = finish(start(select_args(workdir, "delift-se", out), cache))
    lost = _one_line_error(rc, err, str(cache))
    if out.exists() or out.with_name("subset.manifest.json").exists():
        lost.append("an output was written")
    line = err.strip().splitlines()[-1] if err.strip() else ""
    return _result([f"unwritable cache ({how}): exit {rc}, {line!r}"], lost)


def full_disk(workdir: Path) -> dict[str, Any]:
    """A file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) that the label files fit in and the
    trained network does not: the run stops at that write, and a rerun without the limit
    equals an uninterrupted run."""
    want = reference(workdir, "delift-se")
    d = Path(workdir) / "full-disk"
    shutil.rmtree(d, ignore_errors=True)
    cache = d / "cache"
    shutil.copytree(Path(workdir) / "shared" / "ref-cache" / "embeddings", cache / "embeddings")
    out = d / "out" / "subset.jsonl"
    args = select_args(workdir, "delift-se", out)
    limit = 3000  # bytes: the label files fit (< 2 KB each), the network (~4 KB) does not
    rc, err = finish(start(args, cache, file_size_limit=limit))
    lost = _one_line_error(rc, err, str(d))
    line = err.strip().splitlines()[-1] if err.strip() else ""
    did = [f"file-size limit {limit} bytes: exit {rc}, {line!r}"]
    if out.exists() or out.with_name("subset.manifest.json").exists():
        lost.append("an output was written")
    lost += unreadable(cache)
    if temp_files(cache, out.parent):
        lost.append(f"temporary files left: {temp_files(cache, out.parent)}")
    rc, err = finish(start(args, cache))
    if rc != 0 or picks(out) != want:
        lost.append(f"the rerun without the limit failed or differs (exit {rc}): {err[-300:]}")
    else:
        did.append("a rerun without the limit equals an uninterrupted run")
    return _result(did, lost)


SCENARIOS: list[Scenario] = [
    Scenario("SIGKILL an LM method (delift, tiny LM) during embedding, labelling, training; rerun",
             "kill", kill_lm_method),
    Scenario("SIGKILL delift-se during labelling, selection, writing; rerun", "kill",
             kill_delift_se),
    Scenario("two processes, one cache and run folder, same options (delift, tiny LM)",
             "concurrency", concurrent_same_options),
    Scenario("two processes, one cache and run folder, budgets 5 and 10 (delift-se)",
             "concurrency", concurrent_budgets),
    Scenario("unwritable cache folder", "disk", read_only_cache),
    Scenario("full disk (file-size limit) while writing the network", "disk", full_disk),
]  # fmt: skip


_SESSION_WORKDIR: list[Path] = []


def session_workdir(factory: Any, tiny_lm: Path | None = None) -> Path:
    """One work folder per pytest session (so the references are built once), with the
    session's tiny LM folder (`tiny_lm_dir`) in place of building another."""
    if not _SESSION_WORKDIR:
        wd = Path(factory.mktemp("faults"))
        if tiny_lm is not None:
            (wd / "shared").mkdir(parents=True, exist_ok=True)
            (wd / "shared" / "tiny-lm").symlink_to(Path(tiny_lm).resolve())
        _SESSION_WORKDIR.append(wd)
    return _SESSION_WORKDIR[0]
