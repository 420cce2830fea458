"""Resumable label storage: resume without recomputation, corrupt tiles, mismatched runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from nncift.errors import InputError
from nncift.influence import PointwiseInfluence, TextItems
from nncift.influence.delift_se import DeliftSE
from nncift.influence.store import MANIFEST, compute_labels, load_labels

RNG = np.random.default_rng(0)
EP, ET = RNG.normal(size=(23, 16)).astype(np.float32), RNG.normal(size=(9, 16)).astype(np.float32)


def _items(n: int, tag: str) -> TextItems:
    return TextItems(
        [f"{tag} prompt {i}" for i in range(n)], [f"{tag} answer {i}" for i in range(n)]
    )


class Counting(DeliftSE):
    """DELIFT (SE) that counts block calls and can fail on demand (an interrupted run)."""

    calls = 0
    fail_at: int | None = None

    def block(self, rows=None, cols=None):  # type: ignore[no-untyped-def]
        if self.fail_at is not None and Counting.calls == self.fail_at:
            raise KeyboardInterrupt
        Counting.calls += 1
        return super().block(rows, cols)


def _fn(fail_at: int | None = None) -> Counting:
    fn = Counting(_items(23, "p"), _items(9, "t"), pool_embeddings=EP, target_embeddings=ET)
    fn.fail_at = fail_at
    return fn


def test_interrupted_run_resumes_without_recomputing(tmp_path: Path) -> None:
    rows, cols = np.arange(0, 23, 2), np.array([8, 1, 3])
    Counting.calls = 0
    with pytest.raises(KeyboardInterrupt):
        compute_labels(_fn(fail_at=2), tmp_path, rows=rows, cols=cols, tile_rows=5)
    assert Counting.calls == 2  # two of three tiles finished before the interruption
    Counting.calls = 0
    run = compute_labels(_fn(), tmp_path, rows=rows, cols=cols, tile_rows=5)
    assert Counting.calls == 1 and run.computed == 1 and run.reused == 2 and run.complete
    want = _fn().block(rows, cols).values
    np.testing.assert_allclose(run.values, want, atol=1e-6)
    labels, r, c, manifest = load_labels(tmp_path)
    np.testing.assert_array_equal(r, rows)
    np.testing.assert_array_equal(c, cols)
    np.testing.assert_allclose(labels, want, atol=1e-6)
    assert manifest["cost_total"]["seconds"] > 0
    Counting.calls = 0
    again = compute_labels(_fn(), tmp_path, rows=rows, cols=cols, tile_rows=5)
    assert Counting.calls == 0 and again.reused == 3


def test_corrupt_tile_is_detected_and_recomputed(tmp_path: Path) -> None:
    compute_labels(_fn(), tmp_path, rows=range(10), cols=range(9), tile_rows=4)
    tile = sorted((tmp_path / "tiles").glob("*.npy"))[1]
    np.save(tile, np.zeros((4, 9), dtype=np.float32))  # silently changed content
    Counting.calls = 0
    run = compute_labels(_fn(), tmp_path, rows=range(10), cols=range(9), tile_rows=4)
    assert run.recomputed == [tile.stem] and Counting.calls == 1
    np.testing.assert_allclose(run.values, _fn().block(range(10), range(9)).values, atol=1e-6)
    (tmp_path / "labels.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="hash differs"):
        load_labels(tmp_path)


def test_mismatched_run_is_refused(tmp_path: Path) -> None:
    compute_labels(_fn(), tmp_path, rows=range(5), cols=range(3))
    with pytest.raises(InputError, match="different run.*rows"):
        compute_labels(_fn(), tmp_path, rows=range(6), cols=range(3))
    other = Counting(_items(23, "x"), _items(9, "t"), pool_embeddings=EP, target_embeddings=ET)
    with pytest.raises(InputError, match="different run.*pool"):
        compute_labels(other, tmp_path, rows=range(5), cols=range(3))
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match="unreadable label manifest"):
        compute_labels(_fn(), tmp_path, rows=range(5), cols=range(3))


def test_time_budget_stops_and_resumes(tmp_path: Path) -> None:
    first = compute_labels(
        _fn(), tmp_path, rows=range(23), cols=range(9), tile_rows=1, max_seconds=1e-9
    )
    assert not first.complete and first.values is None and first.computed == 1
    assert not json.loads((tmp_path / MANIFEST).read_text())["complete"]
    with pytest.raises(InputError, match="not finished"):
        load_labels(tmp_path)
    seen = []
    rest = compute_labels(
        _fn(),
        tmp_path,
        rows=range(23),
        cols=range(9),
        tile_rows=1,
        progress=lambda d, t, eta: seen.append((d, t, eta)),
    )
    assert rest.complete and rest.computed == 22 and rest.reused == 1
    assert seen[0] == (1, 23, None) and seen[-1][:2] == (23, 23) and seen[-1][2] == 0


class Lengths(PointwiseInfluence):
    name = "lengths"

    def _points(self, rows, meter):  # type: ignore[no-untyped-def]
        return np.array([len(self.pool.responses[i]) for i in rows], dtype=np.float32), {}


def test_pointwise_tiles(tmp_path: Path) -> None:
    pool = TextItems(["a"] * 7, ["x" * i for i in range(7)])
    run = compute_labels(Lengths(pool), tmp_path, rows=[6, 0, 3], tile_rows=2)
    np.testing.assert_array_equal(run.values, [6, 0, 3])
    assert run.tiles_total == 2 and not (tmp_path / "cols.npy").exists()


def test_delift_se_blocks_and_full(tmp_path: Path) -> None:
    fn = DeliftSE(pool_embeddings=EP * 3.0, target_embeddings=ET)  # unnormalised input is fine
    full = fn.full()
    en = EP / np.linalg.norm(EP, axis=1, keepdims=True)
    et = ET / np.linalg.norm(ET, axis=1, keepdims=True)
    np.testing.assert_allclose(full, en @ et.T, atol=1e-6)
    np.testing.assert_allclose(fn.block([4, 2], [8]).values, full[[4, 2]][:, [8]], atol=1e-7)
    square = DeliftSE(pool_embeddings=EP)
    np.testing.assert_allclose(np.diag(square.full()), 1.0, atol=1e-6)
    with pytest.raises(InputError, match="all-zero row"):
        DeliftSE(pool_embeddings=np.zeros((2, 3), np.float32))
    with pytest.raises(InputError, match="16-d"):
        DeliftSE(pool_embeddings=EP, target_embeddings=np.ones((2, 8), np.float32)).block()


def test_delift_se_with_the_real_embedder() -> None:
    pool = TextItems(
        ["What is the capital of France?", "How do I bake bread?"], ["Paris.", "Knead and bake."]
    )
    target = TextItems(["Which city is France's capital?"], ["Paris."])
    res = DeliftSE(pool, target).block()
    assert res.cost.embed_texts == 3
    assert res.values[0, 0] > res.values[1, 0] + 0.2  # the related example is much closer


def test_sparse_pairs_are_tiled_by_row_resumed_and_equal_the_full_matrix(tmp_path: Path) -> None:
    """A sparse design's pairs: one block per pool row (its targets together), `tile_rows`
    rows per tile, (n,) labels in the pairs' order; an interrupted run resumes."""
    rows = np.array([3, 5, 3, 7, 0, 5, 22, 3, 11])
    cols = np.array([1, 2, 4, 0, 8, 7, 3, 0, 5])
    Counting.calls = 0
    with pytest.raises(KeyboardInterrupt):
        compute_labels(_fn(fail_at=4), tmp_path, rows=rows, cols=cols, pairs=True, tile_rows=2)
    assert Counting.calls == 4  # rows 3, 5 (tile 0), 7, 0 (tile 1): one block per row
    Counting.calls = 0
    run = compute_labels(_fn(), tmp_path, rows=rows, cols=cols, pairs=True, tile_rows=2)
    assert run.tiles_total == 3 and run.reused == 2 and run.computed == 1
    assert Counting.calls == 2  # rows 22 and 11
    full = _fn().block(range(23), range(9)).values
    np.testing.assert_allclose(run.values, full[rows, cols], atol=1e-6)
    labels, r, c, manifest = load_labels(tmp_path)
    assert labels.shape == (9,) and manifest["pairs"] is True
    np.testing.assert_array_equal(r, rows)
    np.testing.assert_array_equal(c, cols)
    with pytest.raises(InputError, match="different run.*cols"):
        compute_labels(_fn(), tmp_path, rows=rows, cols=(cols + 1) % 9, pairs=True, tile_rows=2)
    with pytest.raises(InputError, match="duplicates"):
        compute_labels(_fn(), tmp_path / "d", rows=[1, 1], cols=[2, 2], pairs=True)
