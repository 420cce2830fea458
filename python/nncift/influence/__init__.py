"""The influence functions that produce NN-CIFT's labels, behind one interface.

Orientation everywhere: rows are pool items (`D_F`), columns are target items (`D_T`), or
pool items again for the pool x pool kernel (pass the pool as `targets`).

* A **pairwise** function computes any requested block ``K[rows, cols]``:
  ``fn.block(rows, cols) -> Result`` with ``values`` of shape ``(len(rows), len(cols))``.
* A **pointwise** function computes any requested rows: ``fn.points(rows) -> Result`` with
  ``values`` of shape ``(len(rows),)``.

Values are float32; every result carries a `Cost` (LM forward passes, backward passes,
tokens fed to the LM, wall seconds). A block computed alone equals the same block cut out
of the full matrix: no function normalises over the block it is given (DELIFT's min-max
scaling and similar are left to the consumer, which knows which block is the training set).

Functions (each in its own module, imported lazily):

========== ========== =============================================================
name       kind       module
========== ========== =============================================================
delift     pairwise   `nncift.influence.delift.Delift` (in-context utility, real LM)
delift-se  pairwise   `nncift.influence.delift_se.DeliftSE` (embedding cosine)
less       pairwise   `nncift.influence.less.Less` (+ ``points`` for the pointwise value)
selectit   pointwise  `nncift.influence.selectit.SelectIT` (self-reflection rating)
========== ========== =============================================================
"""

from __future__ import annotations

from typing import Any

from nncift.errors import InputError
from nncift.influence.base import (
    METHODS,
    Cost,
    CostMeter,
    ItemsLike,
    PairwiseInfluence,
    PointwiseInfluence,
    Result,
    TextItems,
    as_index,
    check_items,
    top_k,
)


def make(method: str, pool: Any, targets: Any | None = None, **kwargs: Any) -> Any:
    """Build the influence function `method` (one of `METHODS`) over `pool` (and `targets`).

    DELIFT, LESS and SelectIT take ``lm=`` (an `nncift.lm.LM`); DELIFT (SE) takes
    ``embed_model=`` or precomputed embeddings. Remaining keywords go to the function's config.
    """
    m = method.lower().replace("_", "-")
    if m == "delift":
        from nncift.influence.delift import Delift

        return Delift(pool, targets, **kwargs)
    if m in ("delift-se", "deliftse", "se"):
        from nncift.influence.delift_se import DeliftSE

        return DeliftSE(pool, targets, **kwargs)
    if m == "less":
        from nncift.influence.less import Less

        return Less(pool, targets, **kwargs)
    if m == "selectit":
        if targets is not None:
            raise InputError("selectit is pointwise: it takes no targets")
        from nncift.influence.selectit import SelectIT

        return SelectIT(pool, **kwargs)
    raise InputError(f"unknown influence method {method!r}; expected one of {', '.join(METHODS)}")


__all__ = [
    "METHODS",
    "Cost",
    "CostMeter",
    "ItemsLike",
    "PairwiseInfluence",
    "PointwiseInfluence",
    "Result",
    "TextItems",
    "as_index",
    "check_items",
    "make",
    "top_k",
]
