"""Embeddings the user brings: .npy by row, tables by id, every bad file refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from nncift.errors import InputError
from nncift.provided_embeddings import check_pair, load_provided_embeddings

IDS = ["a", "b", "c", "d"]


def vectors(n: int = 4, d: int = 3) -> np.ndarray:
    return np.arange(n * d, dtype=np.float64).reshape(n, d) / 10


def test_npy_rows_follow_the_pool(tmp_path: Path) -> None:
    f = tmp_path / "e.npy"
    np.save(f, vectors())
    got = load_provided_embeddings(f, IDS)
    assert got.vectors.dtype == np.float32 and got.vectors.flags.c_contiguous
    np.testing.assert_array_equal(got.vectors, vectors().astype(np.float32))
    assert got.matched_by == "row order"
    assert got.model_id.startswith("provided:") and len(got.sha256) == 64


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".json"])
def test_tables_are_matched_by_id_in_pool_order(tmp_path: Path, suffix: str) -> None:
    # The file holds the pool's ids in another order, plus one the pool does not have.
    order = [2, 0, 3, 1]
    rows = [{"id": IDS[i], "embedding": vectors()[i].tolist()} for i in order]
    rows.append({"id": "extra", "embedding": [9.0, 9.0, 9.0]})
    f = tmp_path / f"e{suffix}"
    if suffix == ".parquet":
        pl.DataFrame(rows).write_parquet(f)
    elif suffix == ".jsonl":
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        f.write_text(json.dumps(rows))
    got = load_provided_embeddings(f, IDS)
    np.testing.assert_array_equal(got.vectors, vectors().astype(np.float32))
    assert got.matched_by == "id column 'id'"


def _jsonl(tmp_path: Path, rows: list[dict]) -> Path:
    f = tmp_path / "e.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.save(p / "e.npy", vectors(3)) or p / "e.npy", "3 rows, but the pool has 4"),
        (lambda p: np.save(p / "e.npy", vectors()[0]) or p / "e.npy", "2-D"),
        (lambda p: np.save(p / "e.npy", np.zeros((4, 0))) or p / "e.npy", "d >= 1"),
        (
            lambda p: np.save(p / "e.npy", np.where(np.eye(4, 3) > 0, np.nan, 1.0)) or p / "e.npy",
            "NaN or infinite values, or values beyond float32 (first: row 0)",
        ),
        (
            lambda p: np.save(p / "e.npy", np.array([["x"] * 3] * 4)) or p / "e.npy",
            "must be numbers",
        ),
        (
            lambda p: (
                np.save(p / "e.npy", np.array([[1, None, 2]] * 4, dtype=object)) or p / "e.npy"
            ),
            "not a plain numeric .npy",
        ),
        (lambda p: p / "missing.npy", "no such embeddings file"),
        (lambda p: (p / "e.txt").write_text("1 2 3") and p / "e.txt", "must be .npy"),
        (
            lambda p: _jsonl(p, [{"id": i, "embedding": [1.0, 2.0]} for i in IDS[:3]]),
            "1 of 4 pool ids are not in column 'id' (first: 'd')",
        ),
        (
            lambda p: _jsonl(p, [{"id": i, "embedding": [1.0, 2.0]} for i in IDS + ["a"]]),
            "id 'a' appears more than once",
        ),
        (
            lambda p: _jsonl(p, [{"id": i, "embedding": [1.0] * (2 + (i == "c"))} for i in IDS]),
            "differ in length",
        ),
        (lambda p: _jsonl(p, [{"id": i, "vec": [1.0]} for i in IDS]), "no vector column"),
        (lambda p: _jsonl(p, [{"key": i, "embedding": [1.0]} for i in IDS]), "no id column"),
        (
            lambda p: _jsonl(p, [{"id": i, "embedding": None if i == "b" else [1.0]} for i in IDS]),
            "'embedding' is not a vector",
        ),
        (
            lambda p: (p / "e.parquet").write_bytes(b"not parquet") and p / "e.parquet",
            "cannot read",
        ),
    ],
)
def test_bad_files_are_refused_by_name(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    f = make(tmp_path)
    with pytest.raises(InputError) as err:
        load_provided_embeddings(f, IDS)
    assert message in str(err.value)
    assert str(f) in str(err.value)


def test_npy_refuses_dedupe_which_would_shift_rows(tmp_path: Path) -> None:
    f = tmp_path / "e.npy"
    np.save(f, vectors())
    with pytest.raises(InputError, match="--dedupe"):
        load_provided_embeddings(f, IDS, dedupe=True)


def test_pool_and_target_must_share_a_dimension(tmp_path: Path) -> None:
    np.save(tmp_path / "p.npy", vectors(4, 3))
    np.save(tmp_path / "t.npy", vectors(2, 5))
    pool = load_provided_embeddings(tmp_path / "p.npy", IDS)
    target = load_provided_embeddings(tmp_path / "t.npy", ["x", "y"])
    with pytest.raises(InputError, match="5-d target embeddings, but the pool's"):
        check_pair(pool, target)
    check_pair(pool, None)
