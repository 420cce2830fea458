"""Output files: atomic writes get the permissions `open()` would give them, under any umask."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from nncift.io import (
    atomic_path,
    current_umask,
    make_temp_dir,
    save_npy_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "nncift"


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=lambda m: f"umask{m:04o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield int(request.param)
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask


def test_atomic_writers_follow_the_umask(tmp_path: Path, umask: int) -> None:
    want = 0o666 & ~umask  # what open(path, "w") gives
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert _mode(plain) == want
    write_text_atomic(tmp_path / "a.txt", "x")
    write_bytes_atomic(tmp_path / "b.bin", b"x")
    write_json_atomic(tmp_path / "sub" / "c.json", {"a": 1})
    save_npy_atomic(tmp_path / "d.npy", np.zeros(3, np.float32))
    with atomic_path(tmp_path / "e.npz", suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, a=np.zeros(2))
    for name in ("a.txt", "b.bin", "sub/c.json", "d.npy", "e.npz"):
        assert _mode(tmp_path / name) == want, name
    # Overwriting an existing output gives the same mode again, and no temporary is left.
    write_text_atomic(tmp_path / "a.txt", "y")
    assert _mode(tmp_path / "a.txt") == want
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_subsets_manifests_weights_and_labels_follow_the_umask(tmp_path: Path, umask: int) -> None:
    from nncift.influence import TextItems
    from nncift.influence.delift_se import DeliftSE
    from nncift.influence.store import compute_labels
    from nncift.manifest import Manifest
    from nncift.pipeline import write_records
    from nncift.weights import NetworkWeights, write_network

    want_file, want_dir = 0o666 & ~umask, 0o777 & ~umask
    recs = [{"prompt": "p", "response": "r", "n": 1}]
    for suffix in (".jsonl", ".json", ".csv", ".parquet"):
        write_records(tmp_path / f"subset{suffix}", recs)
        assert _mode(tmp_path / f"subset{suffix}") == want_file, suffix
    Manifest(command="test").write(tmp_path / "subset.manifest.json")
    assert _mode(tmp_path / "subset.manifest.json") == want_file
    rng = np.random.default_rng(0)
    d = 4
    write_network(
        tmp_path / "net.safetensors",
        NetworkWeights(
            [
                (rng.normal(size=(3, 2 * d + 1)), np.zeros(3)),
                (rng.normal(size=(1, 3)), np.zeros(1)),
            ],
            kind="pairwise",
            input_layout="paper",
            embedding_dim=d,
            embedding_model="test",
        ),
    )
    assert _mode(tmp_path / "net.safetensors") == want_file
    emb = rng.normal(size=(6, 8)).astype(np.float32)
    items = TextItems([f"p{i}" for i in range(6)], [f"r{i}" for i in range(6)])
    fn = DeliftSE(items, items, pool_embeddings=emb, target_embeddings=emb)
    out = tmp_path / "labels"
    compute_labels(fn, out, rows=np.arange(6), cols=np.arange(3), tile_rows=2)
    assert _mode(out) == want_dir
    for p in out.rglob("*"):
        assert _mode(p) == (want_dir if p.is_dir() else want_file), p


def test_temp_dirs_built_aside_follow_the_umask(tmp_path: Path, umask: int) -> None:
    d = make_temp_dir(tmp_path, ".x.")
    assert d.parent == tmp_path and d.name.startswith(".x.")
    assert _mode(d) == 0o777 & ~umask


def test_every_output_goes_through_the_atomic_helper() -> None:
    # mkstemp / mkdtemp / NamedTemporaryFile create private (0600 / 0700) entries; outside
    # io.py they would leak that mode into outputs. TemporaryDirectory is scratch space only.
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "io.py" and path.parent == PACKAGE:
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"\b(mkstemp|mkdtemp|NamedTemporaryFile)\b", text):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []
