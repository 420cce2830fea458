"""Embeddings the user brings (`nncift select --embeddings FILE`): read, align, check.

For users who embedded their pool on a GPU or with their own model. Two layouts:

* a `.npy` array (n, d) whose row i is pool item i, in the order the pool is loaded (after
  `--limit`; with `--dedupe` dropping items the rows no longer line up, so that is refused);
* a `.parquet`, `.jsonl` / `.ndjson` or `.json` table with an id column and a vector column,
  matched to the pool by id (extra ids in the file are ignored; a pool id missing from the file,
  a repeated id, or vectors of different lengths are refused).

Row count, ids, dimension and finiteness are checked with errors that name the file; nothing is
ever unpickled. The file's sha256 goes into the manifest and the embedder id
(``provided:<sha256 prefix>``), so cached labels and exported networks record which vectors they
came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nncift.errors import InputError

#: Column names tried, in order, when the table does not say which holds what.
ID_COLUMNS = ("id",)
VECTOR_COLUMNS = ("embedding", "embeddings", "vector", "emb")
TABLE_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class ProvidedEmbeddings:
    """Vectors aligned with the items they were matched to."""

    vectors: np.ndarray  # (n, d) float32, C-contiguous, finite
    path: str
    sha256: str
    #: How rows were matched: "row order" (.npy) or "id column 'id'".
    matched_by: str

    @property
    def model_id(self) -> str:
        # Stands for the embedder in cache keys and weight metadata: same file, same id.
        return f"provided:{self.sha256[:16]}"

    def manifest_record(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "shape": list(self.vectors.shape),
            "matched_by": self.matched_by,
        }


def finite_rows(vectors: np.ndarray, path: str) -> np.ndarray:
    """`vectors` as (n, d) float32, C-contiguous; InputError naming `path` if any is not finite."""
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise InputError(f"{path}: embeddings must be a 2-D array (n, d) with d >= 1, got shape "
                         f"{tuple(vectors.shape)}")  # fmt: skip
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(vectors, dtype=np.float32)
    # Checked after the cast, so values beyond float32's range are caught too.
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(
            f"{path}: {len(rows)} row(s) hold NaN or infinite values, or values beyond float32 "
            f"(first: row {rows[0]})"
        )
    return out


def _from_npy(path: Path, ids: list[str], dedupe: bool) -> tuple[np.ndarray, str]:
    from nncift.io import load_npy

    arr = load_npy(path)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{path}: embeddings must be numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InputError(f"{path}: embeddings must be a 2-D array (n, d), got shape {arr.shape}")
    if dedupe:
        raise InputError(
            f"{path}: a .npy file is matched to the pool by row, which --dedupe would shift; "
            "drop --dedupe, or give a .parquet / .jsonl table with an id column"
        )
    if arr.shape[0] != len(ids):
        raise InputError(
            f"{path}: {arr.shape[0]:,} rows, but the pool has {len(ids):,} items (after --limit); "
            "row i must be pool item i, or give a .parquet / .jsonl table with an id column"
        )
    return arr, "row order"


def _pick(columns: list[str], wanted: tuple[str, ...], given: str | None, what: str,
          path: Path) -> str:  # fmt: skip
    if given is not None:
        if given not in columns:
            raise InputError(f"{path}: no column {given!r} for the {what}; columns: {columns}")
        return given
    for name in wanted:
        if name in columns:
            return name
    raise InputError(f"{path}: no {what} column (looked for {list(wanted)}); columns: {columns}")


def _from_table(
    path: Path, ids: list[str], id_column: str | None, vector_column: str | None
) -> tuple[np.ndarray, str]:
    import polars as pl

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pl.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            df = pl.read_ndjson(path)
        else:
            df = pl.read_json(path)
    except Exception as exc:  # polars raises many types for malformed files
        raise InputError(f"{path}: cannot read as {suffix} ({type(exc).__name__}: {exc})") from exc
    id_col = _pick(df.columns, ID_COLUMNS, id_column, "id", path)
    vec_col = _pick(df.columns, VECTOR_COLUMNS, vector_column, "vector", path)
    file_ids = [None if x is None else str(x) for x in df[id_col].to_list()]
    if any(x is None for x in file_ids):
        raise InputError(f"{path}: column {id_col!r} has null ids")
    index: dict[str, int] = {}
    for i, x in enumerate(file_ids):
        if x in index:
            raise InputError(f"{path}: id {x!r} appears more than once (rows {index[x]} and {i})")
        index[x] = i  # type: ignore[index]
    missing = [x for x in ids if x not in index]
    if missing:
        raise InputError(
            f"{path}: {len(missing):,} of {len(ids):,} pool ids are not in column {id_col!r} "
            f"(first: {missing[0]!r}); pool ids come from the pool's id field, or a content "
            "hash without one"
        )
    rows = [index[x] for x in ids]
    vectors = df[vec_col].to_list()
    picked = [vectors[r] for r in rows]
    for r, v in zip(rows, picked, strict=True):
        if v is None or not isinstance(v, (list, tuple)):
            raise InputError(f"{path}: row {r} (id {file_ids[r]!r}): {vec_col!r} is not a vector")
    lengths = {len(v) for v in picked}
    if len(lengths) != 1:
        raise InputError(f"{path}: vectors in {vec_col!r} differ in length: {sorted(lengths)}")
    try:
        arr = np.asarray(picked, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: {vec_col!r} holds non-numeric values ({exc})") from exc
    return arr, f"id column {id_col!r}"


def load_provided_embeddings(
    path: str | os.PathLike[str],
    ids: list[str],
    *,
    dedupe: bool = False,
    id_column: str | None = None,
    vector_column: str | None = None,
) -> ProvidedEmbeddings:
    """Vectors for the items with `ids`, in that order, from a user's file (see module doc)."""
    from nncift.io import sha256_file

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such embeddings file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr, matched = _from_npy(p, ids, dedupe)
    elif suffix in TABLE_SUFFIXES:
        arr, matched = _from_table(p, ids, id_column, vector_column)
    else:
        raise InputError(
            f"{p}: embeddings must be .npy (rows aligned with the pool) or a "
            f"{' / '.join(TABLE_SUFFIXES)} table with id and vector columns"
        )
    vectors = finite_rows(arr, str(p))
    return ProvidedEmbeddings(vectors, str(p), sha256_file(p), matched)


def check_pair(pool: ProvidedEmbeddings, target: ProvidedEmbeddings | None) -> None:
    """Pool and target vectors must come from one space: same dimension."""
    if target is not None and target.vectors.shape[1] != pool.vectors.shape[1]:
        raise InputError(
            f"{target.path}: {target.vectors.shape[1]}-d target embeddings, but the pool's "
            f"({pool.path}) are {pool.vectors.shape[1]}-d; both must come from one model"
        )


__all__ = [
    "ProvidedEmbeddings",
    "check_pair",
    "finite_rows",
    "load_provided_embeddings",
]
