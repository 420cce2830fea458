"""The seeded u-split: which items are labelled (Q1) and the four quadrant index sets.

NN-CIFT labels only the first-`u` block of a shuffled pool and target (paper §3): the
expensive influence function runs on `rows_in x cols_in` (Q1) and the network predicts
the rest. Quadrants follow the paper's §4.2 and one orientation everywhere
(rows = pool items, columns = target items, or pool items for the pool x pool kernel):

    Q1 = rows_in  x cols_in    (training block)
    Q2 = rows_out x cols_in    (unseen rows)
    Q3 = rows_in  x cols_out   (unseen columns)
    Q4 = rows_out x cols_out   (both items unseen: the real test)

"First" always means after a seeded shuffle, never file order (the reference scripts
split positionally, which ties the result to whatever order a file happened to be in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nncift.errors import InputError

QUADRANTS = ("Q1", "Q2", "Q3", "Q4")


def n_in(n: int, u: float) -> int:
    """Number of items of `n` in the labelled block: round(u * n), at least 1, at most n."""
    return int(min(n, max(1, math.floor(u * n + 0.5))))


@dataclass(frozen=True)
class USplit:
    """Index sets of a u-split. All arrays are int64, in shuffled order.

    `rows_in` / `rows_out` partition `range(n_rows)`; `cols_in` / `cols_out` partition
    `range(n_cols)`. For a square (pool x pool) split the column sets equal the row sets.
    """

    u: float
    seed: int
    n_rows: int
    n_cols: int
    square: bool
    rows_in: np.ndarray
    rows_out: np.ndarray
    cols_in: np.ndarray
    cols_out: np.ndarray

    def quadrant(self, q: str) -> tuple[np.ndarray, np.ndarray]:
        """Return `(rows, cols)` int64 index arrays whose outer product is quadrant `q`."""
        q = q.upper()
        if q == "Q1":
            return self.rows_in, self.cols_in
        if q == "Q2":
            return self.rows_out, self.cols_in
        if q == "Q3":
            return self.rows_in, self.cols_out
        if q == "Q4":
            return self.rows_out, self.cols_out
        raise ValueError(f"unknown quadrant {q!r}; expected one of {', '.join(QUADRANTS)}")

    def quadrant_pairs(self, q: str) -> tuple[np.ndarray, np.ndarray]:
        """All `(i, j)` pairs of quadrant `q` as two flat int64 arrays of length |rows|*|cols|.

        Row-major over the quadrant block, so `values.reshape(len(rows), len(cols))` is the block.
        """
        r, c = self.quadrant(q)
        return np.repeat(r, len(c)), np.tile(c, len(r))

    def to_metadata(self) -> dict[str, str]:
        """The facts needed to rebuild this split, as strings for weight-file metadata."""
        return {
            "split_u": repr(self.u),
            "split_seed": str(self.seed),
            "split_n_rows": str(self.n_rows),
            "split_n_cols": str(self.n_cols),
            "split_square": "true" if self.square else "false",
        }


def u_split(n_rows: int, n_cols: int | None = None, *, u: float = 0.05, seed: int = 0) -> USplit:
    """Shuffle items with `seed` and put the first `round(u * n)` of each side in Q1.

    n_rows: pool size M. n_cols: target size N, or None for a square pool x pool kernel
    (rows and columns are then the same items and share one shuffle).
    Rows and columns use independent streams of one seeded generator, so the split is a
    pure function of `(n_rows, n_cols, u, seed)`.
    """
    if not (isinstance(u, float | int) and 0.0 < float(u) <= 1.0):
        raise InputError(f"u must be in (0, 1], got {u!r}")
    if n_rows < 1 or (n_cols is not None and n_cols < 1):
        raise InputError(
            f"a u-split needs at least one row and one column, got {n_rows} x {n_cols}"
        )
    if seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed}")
    u = float(u)
    rng_rows, rng_cols = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    rperm = rng_rows.permutation(n_rows).astype(np.int64)
    k = n_in(n_rows, u)
    rows_in, rows_out = rperm[:k], rperm[k:]
    if n_cols is None:
        return USplit(u, seed, n_rows, n_rows, True, rows_in, rows_out, rows_in, rows_out)
    cperm = rng_cols.permutation(n_cols).astype(np.int64)
    kc = n_in(n_cols, u)
    return USplit(u, seed, n_rows, n_cols, False, rows_in, rows_out, cperm[:kc], cperm[kc:])


def split_from_metadata(meta: dict[str, str]) -> USplit | None:
    """Rebuild the split stored by `USplit.to_metadata`, or None if the metadata has none."""
    if "split_u" not in meta:
        return None
    try:
        square = meta.get("split_square", "false") == "true"
        n_rows = int(meta["split_n_rows"])
        return u_split(
            n_rows,
            None if square else int(meta["split_n_cols"]),
            u=float(meta["split_u"]),
            seed=int(meta["split_seed"]),
        )
    except (KeyError, ValueError) as exc:
        raise InputError(f"weight file has an incomplete or invalid split record: {exc}") from exc


__all__ = ["QUADRANTS", "USplit", "n_in", "split_from_metadata", "u_split"]
