"""The seeded u-split and its quadrant index sets."""

from __future__ import annotations

import numpy as np
import pytest
from nncift.errors import InputError
from nncift.split import n_in, split_from_metadata, u_split


def test_partition_and_sizes() -> None:
    sp = u_split(200, 40, u=0.05, seed=3)
    assert len(sp.rows_in) == 10 and len(sp.cols_in) == 2
    assert sorted(np.concatenate([sp.rows_in, sp.rows_out]).tolist()) == list(range(200))
    assert sorted(np.concatenate([sp.cols_in, sp.cols_out]).tolist()) == list(range(40))
    assert sp.rows_in.dtype == np.int64
    # Shuffled, not file order: the first-u block is not 0..9.
    assert sorted(sp.rows_in.tolist()) != list(range(10))


def test_seeded_and_deterministic() -> None:
    a = u_split(100, 50, u=0.2, seed=7)
    b = u_split(100, 50, u=0.2, seed=7)
    c = u_split(100, 50, u=0.2, seed=8)
    assert np.array_equal(a.rows_in, b.rows_in) and np.array_equal(a.cols_out, b.cols_out)
    assert not np.array_equal(a.rows_in, c.rows_in)


def test_quadrants_cover_matrix_once() -> None:
    sp = u_split(30, 20, u=0.3, seed=0)
    seen = np.zeros((30, 20), int)
    for q in ("Q1", "Q2", "Q3", "Q4"):
        i, j = sp.quadrant_pairs(q)
        np.add.at(seen, (i, j), 1)
    assert (seen == 1).all()
    r, c = sp.quadrant("Q4")
    assert not np.isin(r, sp.rows_in).any() and not np.isin(c, sp.cols_in).any()
    # quadrant_pairs is row-major over the block.
    i, j = sp.quadrant_pairs("Q2")
    assert np.array_equal(i.reshape(len(sp.rows_out), -1)[:, 0], sp.rows_out)


def test_square_split_shares_items() -> None:
    sp = u_split(50, u=0.1, seed=1)
    assert sp.square and np.array_equal(sp.rows_in, sp.cols_in)


def test_metadata_round_trip() -> None:
    sp = u_split(64, 32, u=0.25, seed=9)
    back = split_from_metadata(sp.to_metadata())
    assert back is not None and np.array_equal(back.rows_in, sp.rows_in)
    assert np.array_equal(back.cols_out, sp.cols_out)
    assert split_from_metadata({}) is None


@pytest.mark.parametrize("u", [0.0, -0.1, 1.5])
def test_bad_u(u: float) -> None:
    with pytest.raises(InputError, match="u must be"):
        u_split(10, 10, u=u)


def test_n_in_bounds() -> None:
    assert n_in(10, 0.001) == 1 and n_in(10, 1.0) == 10 and n_in(2000, 0.05) == 100
