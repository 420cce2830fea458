"""Processes sharing one cache: `nncift select` twice at once (same options; other budgets)
computes every label tile once and gives single-process outputs (tests/faults.py); the file
locks underneath are released by a killed holder and skip-or-wait as asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults import SCENARIOS, Scenario, session_workdir
from nncift.io import atomic_path, file_lock, remove_stale_temp_files


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> Path:
    return session_workdir(tmp_path_factory, tiny_lm_dir)


@pytest.mark.parametrize(
    "scenario",
    [s for s in SCENARIOS if s.category == "concurrency"],
    ids=lambda s: s.run.__name__,
)
def test_concurrency_scenario(scenario: Scenario, workdir: Path) -> None:
    result = scenario.run(workdir)
    assert result["ok"], f"{scenario.name}: lost {result['lost']} ({result['what_the_tool_did']})"


HOLD = """
import sys, time
from nncift.io import file_lock
with file_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_killed_holder_releases_its_lock(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"held"
        with file_lock(lock, blocking=False) as got:
            assert not got  # held by the child: skipped, not waited for
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    t0 = time.perf_counter()
    with file_lock(lock) as got:  # the kernel released it with the child
        assert got
    assert time.perf_counter() - t0 < 5


def test_stale_temp_files_of_dead_processes_only_are_removed(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that no longer runs
    with atomic_path(tmp_path / "mine.txt") as tmp:
        live = tmp  # this process's own, in flight
        dead = tmp.with_name(tmp.name.replace(f"-{os.getpid()}-", f"-{child.pid}-"))
        dead.write_text("half")
        other_host = tmp_path / f".x.tmp-otherhost-{child.pid}-abc.part"
        other_host.write_text("half")
        assert remove_stale_temp_files(tmp_path) == [dead]
        assert live.exists() and other_host.exists()
        live.write_text("done")
    assert (tmp_path / "mine.txt").read_text() == "done"


def test_two_labellers_on_one_folder_compute_each_tile_once(tmp_path: Path) -> None:
    """Two concurrent `compute_labels` calls on one folder (threads: flock excludes open
    files, not only processes) split the tiles between them, and both return every label."""
    import threading

    import numpy as np
    from nncift.influence import TextItems
    from nncift.influence.delift_se import DeliftSE
    from nncift.influence.store import compute_labels

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 8)).astype(np.float32)
    items = TextItems([f"p{i}" for i in range(12)], [f"r{i}" for i in range(12)])

    class Slow(DeliftSE):
        def block(self, rows=None, cols=None):  # type: ignore[no-untyped-def]
            time.sleep(0.05)  # long enough for the two to meet on every tile
            return super().block(rows, cols)

    runs: list[object] = []

    def label() -> None:
        fn = Slow(items, items, pool_embeddings=emb, target_embeddings=emb)
        runs.append(compute_labels(fn, tmp_path, tile_rows=2))

    threads = [threading.Thread(target=label) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runs) == 2
    assert sum(r.computed for r in runs) == 6  # type: ignore[attr-defined]
    assert all(r.complete and r.tiles_done == 6 for r in runs)  # type: ignore[attr-defined]
    want = DeliftSE(items, items, pool_embeddings=emb, target_embeddings=emb).full()
    for r in runs:
        np.testing.assert_allclose(r.values, want, atol=1e-6)  # type: ignore[attr-defined]
