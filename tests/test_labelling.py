"""`nncift.labelling`: the one labelling API behind `nncift label` and the valuer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nncift.errors import InputError
from nncift.influence import TextItems, make
from nncift.labelling import function_spec, label, labelled_block
from nncift.split import u_split

POOL = TextItems([f"prompt {i}" for i in range(12)], [f"response {i}" for i in range(12)])
EMB = np.random.default_rng(0).standard_normal((12, 8)).astype(np.float32)


def test_function_spec_gives_less_the_run_seed() -> None:
    assert function_spec("less", seed=3).settings["seed"] == 3
    assert function_spec("less", {"seed": 1}, seed=3).settings["seed"] == 1
    assert "seed" not in function_spec("delift", seed=3).settings
    assert not function_spec("delift-se").needs_lm and function_spec("selectit").needs_lm
    with pytest.raises(InputError, match="unknown influence method"):
        function_spec("nope")


def test_labelled_block_is_the_u_split_or_everything() -> None:
    split = u_split(12, 6, u=0.5, seed=2)
    rows, cols = labelled_block(12, 6, u=0.5, seed=2)
    assert cols is not None
    np.testing.assert_array_equal(rows, split.rows_in)
    np.testing.assert_array_equal(cols, split.cols_in)
    rows, cols = labelled_block(12, 12, u=0.5, seed=2, square=True)  # one shuffle, both sides
    np.testing.assert_array_equal(rows, cols)  # type: ignore[arg-type]
    rows, cols = labelled_block(12, None, u=0.5, seed=2)
    assert cols is None and rows.size == 6
    rows, cols = labelled_block(12, 6, exact=True)
    assert rows.tolist() == list(range(12)) and cols is not None and cols.tolist() == list(range(6))


def test_label_equals_the_function_and_resumes(tmp_path: Path) -> None:
    spec = function_spec("delift-se")
    rows, cols = labelled_block(12, 12, u=0.5, seed=0, square=True)
    done = label(
        spec, POOL, out=tmp_path, rows=rows, cols=cols, pool_embeddings=EMB, progress=False
    )
    assert done.run.complete and done.kind == "pairwise" and done.ray is None
    want = make("delift-se", POOL, None, pool_embeddings=EMB).block(rows, cols).values
    np.testing.assert_array_equal(done.run.values, want)
    again = label(
        spec, POOL, out=tmp_path, rows=rows, cols=cols, pool_embeddings=EMB, progress=False
    )
    assert again.run.computed == 0 and again.run.reused == again.run.tiles_total > 0
    np.testing.assert_array_equal(again.run.values, want)
