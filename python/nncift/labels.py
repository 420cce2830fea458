"""Labelled pairs (or points) as the estimator takes them: `PairLabels`, `read_labels` for
label files computed elsewhere (.npy / .npz / .parquet / .csv, never unpickled), and the
input checks of `fit` (embeddings shape / dtype / finiteness, labels against embeddings).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nncift.errors import InputError


@dataclass(frozen=True)
class PairLabels:
    """Labelled pairs as triples.

    rows (n,) int64; cols (n,) int64, all -1 for pointwise labels; values (n,) float64.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def pointwise(self) -> bool:
        return bool(len(self.cols) and np.all(self.cols < 0))

    @classmethod
    def from_block(
        cls, block: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None
    ) -> PairLabels:
        """A dense labelled block (m, n) whose entry [a, b] labels pair (rows[a], cols[b]).

        rows / cols default to 0..m-1 / 0..n-1. A 1-D block (m,) is pointwise labels of rows,
        or, given `cols` too, the labels of the pairs (rows[k], cols[k]) of a sparse design
        (`nncift label --design`: labels.npy, rows.npy and cols.npy all (n,)).
        """
        block = np.asarray(block)
        if not np.issubdtype(block.dtype, np.number):
            raise InputError(f"labels must be numeric, got dtype {block.dtype}")
        block = block.astype(np.float64)
        if block.ndim == 1:
            r = (
                np.arange(len(block), dtype=np.int64)
                if rows is None
                else _index_array(rows, "rows")
            )
            if len(r) != len(block):
                raise InputError(f"{len(block)} pointwise labels but {len(r)} row indices")
            if cols is not None:  # the pairs of a sparse design
                c = _index_array(cols, "cols")
                if len(c) != len(block):
                    raise InputError(
                        f"{len(block)} labels of pairs but {len(c)} column indices (a sparse "
                        "design's rows, cols and labels are all (n,))"
                    )
                return cls(r, c, block)
            return cls(r, np.full(len(r), -1, np.int64), block)
        if block.ndim != 2:
            raise InputError(f"a labelled block must be 1-D or 2-D, got shape {block.shape}")
        m, n = block.shape
        r = np.arange(m, dtype=np.int64) if rows is None else _index_array(rows, "rows")
        c = np.arange(n, dtype=np.int64) if cols is None else _index_array(cols, "cols")
        if len(r) != m or len(c) != n:
            raise InputError(
                f"labelled block has shape {block.shape} but {len(r)} row and {len(c)} "
                "column indices were given"
            )
        return cls(np.repeat(r, n), np.tile(c, m), block.reshape(-1))

    @classmethod
    def from_triples(cls, rows: Any, cols: Any, values: Any) -> PairLabels:
        r, c = _index_array(rows, "rows"), _index_array(cols, "cols")
        v = np.asarray(values)
        if not np.issubdtype(v.dtype, np.number):
            raise InputError(f"label values must be numeric, got dtype {v.dtype}")
        v = v.astype(np.float64).reshape(-1)
        if not (len(r) == len(c) == len(v)):
            raise InputError(f"triples have {len(r)} rows, {len(c)} cols and {len(v)} values")
        return cls(r, c, v)


def _index_array(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise InputError(f"{name} indices must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise InputError(f"{name} indices must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def read_labels(path: str | os.PathLike[str], rows: Any = None, cols: Any = None) -> PairLabels:
    """Read labels a user computed elsewhere; never unpickles.

    - `.npy`: a dense block (m, n) (with optional `rows`/`cols` index arrays), pointwise
      labels (m,), or triples (n, 3) when the file has exactly 3 columns and `rows`/`cols`
      are not given... ambiguous shapes are resolved by the index arguments.
    - `.npz`: keys `labels` (block) with optional `rows`, `cols`; or `row`, `col`, `value` triples.
    - `.parquet` / `.csv`: triples in columns (`row`|`i`, `col`|`j`, `value`|`label`|`score`);
      pointwise if there is no column column.
    """
    from nncift.io import load_npy

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such labels file")
    suf = p.suffix.lower()
    if suf == ".npy":
        arr = load_npy(p)
        return PairLabels.from_block(arr, rows, cols)
    if suf == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (ValueError, OSError) as exc:
            raise InputError(f"{p}: not a plain numeric .npz file ({exc})") from exc
        if "labels" in data:
            return PairLabels.from_block(
                data["labels"], data.get("rows", rows), data.get("cols", cols)
            )
        if {"row", "value"} <= data.keys():
            col = data.get("col", np.full(len(data["row"]), -1))
            return PairLabels.from_triples(data["row"], col, data["value"])
        raise InputError(
            f"{p}: .npz needs 'labels' (+ 'rows', 'cols') or 'row', 'col', 'value'; "
            f"has {sorted(data)}"
        )
    if suf in (".parquet", ".csv"):
        import polars as pl

        try:
            df = pl.read_parquet(p) if suf == ".parquet" else pl.read_csv(p)
        except Exception as exc:  # polars raises several error types for unreadable files
            raise InputError(f"{p}: cannot read ({exc})") from exc

        def pick(names: tuple[str, ...], required: bool) -> np.ndarray | None:
            for nm in names:
                if nm in df.columns:
                    return df[nm].to_numpy()
            if required:
                raise InputError(f"{p}: needs one of the columns {names}; has {df.columns}")
            return None

        r = pick(("row", "i", "pool"), True)
        v = pick(("value", "label", "score"), True)
        c = pick(("col", "j", "target"), False)
        assert r is not None and v is not None
        return PairLabels.from_triples(r, np.full(len(r), -1) if c is None else c, v)
    raise InputError(
        f"{p}: unsupported labels file type {suf!r} (use .npy, .npz, .parquet or .csv)"
    )


def _check_embeddings(e: Any, name: str) -> np.ndarray:
    a = np.asarray(e)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"{name} must be a non-empty (n, d) array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{name} must be floating point, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} contain NaN or infinite values")
    return a


def _check_labels(lab: PairLabels, n_rows: int, n_cols: int | None) -> None:
    if len(lab) == 0:
        raise InputError("no labelled pairs given")
    bad = ~np.isfinite(lab.values)
    if bad.any():
        k = int(np.argmax(bad))
        raise InputError(
            f"labels contain {int(bad.sum())} NaN or infinite values (first at pair "
            f"({int(lab.rows[k])}, {int(lab.cols[k])}))"
        )
    if lab.rows.min() < 0 or lab.rows.max() >= n_rows:
        raise InputError(
            f"row indices must be in [0, {n_rows}) to match the {n_rows} row embeddings; "
            f"got range [{lab.rows.min()}, {lab.rows.max()}]"
        )
    if n_cols is not None and (lab.cols.min() < 0 or lab.cols.max() >= n_cols):
        raise InputError(
            f"column indices must be in [0, {n_cols}) to match the {n_cols} column embeddings; "
            f"got range [{lab.cols.min()}, {lab.cols.max()}]"
        )
    if np.ptp(lab.values) == 0:
        raise InputError(
            f"labels have a single distinct value ({lab.values[0]!r}); there is nothing to learn"
        )


__all__ = ["PairLabels", "read_labels"]
