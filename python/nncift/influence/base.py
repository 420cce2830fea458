"""What every influence function shares: items, costs, results and the two interfaces.

`PairwiseInfluence` (``block(rows, cols)``) and `PointwiseInfluence` (``points(rows)``), the
`Cost` of a call and the `CostMeter` that counts it, `Result`, index checks and the top-k
rule. The functions themselves live in their own modules; `nncift.influence.make` builds one
by name.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from nncift.errors import InputError

METHODS = ("delift", "delift-se", "less", "selectit")


@runtime_checkable
class ItemsLike(Protocol):
    """What the influence functions read from a data set (`nncift.data.Items` fits)."""

    prompts: list[str]
    responses: list[str]

    def __len__(self) -> int: ...


@dataclass
class TextItems:
    """A minimal `ItemsLike` for hand-made lists (tests, notebooks)."""

    prompts: list[str]
    responses: list[str]

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.responses):
            raise InputError(
                f"{len(self.prompts)} prompts but {len(self.responses)} responses; "
                "they must pair up"
            )
        self.prompts = [str(p) for p in self.prompts]
        self.responses = [str(r) for r in self.responses]

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def texts(self) -> list[str]:
        return [p + "\n##Answer: " + r for p, r in zip(self.prompts, self.responses, strict=False)]


@dataclass
class Cost:
    """What a computation cost. Additive: ``a + b`` sums every field.

    lm_passes: sequences pushed through the LM forward (a batch of 8 counts 8).
    backward_passes: sequences back-propagated (LESS).
    tokens: tokens fed forward (padding excluded; KV-cached prefixes count once).
    seconds: wall-clock seconds.
    embed_texts: texts embedded (DELIFT (SE)).
    """

    lm_passes: int = 0
    backward_passes: int = 0
    tokens: int = 0
    seconds: float = 0.0
    embed_texts: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.lm_passes + other.lm_passes,
            self.backward_passes + other.backward_passes,
            self.tokens + other.tokens,
            self.seconds + other.seconds,
            self.embed_texts + other.embed_texts,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # Six significant digits, not fixed decimals: fast tiles (tens of microseconds) summed
        # over a resumed run must not round to zero.
        d["seconds"] = float(f"{self.seconds:.6g}")
        return d


class CostMeter:
    """Accumulates a `Cost` while a computation runs (``with meter.timed(): ...``)."""

    def __init__(self) -> None:
        self.cost = Cost()

    def forward(self, sequences: int, tokens: int) -> None:
        self.cost.lm_passes += int(sequences)
        self.cost.tokens += int(tokens)

    def backward(self, sequences: int) -> None:
        self.cost.backward_passes += int(sequences)

    def timed(self) -> _Timer:
        return _Timer(self.cost)


class _Timer:
    def __init__(self, cost: Cost) -> None:
        self.cost = cost

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.cost.seconds += time.perf_counter() - self.t0


@dataclass
class Result:
    """Values of a block or of rows, with the cost of computing them.

    values: float32, ``(len(rows), len(cols))`` for a pairwise block, ``(len(rows),)`` for
    pointwise rows. info: function-specific facts (truncations, token ids, ...).
    """

    values: np.ndarray
    cost: Cost
    info: dict[str, Any] = field(default_factory=dict)


def as_index(idx: Sequence[int] | np.ndarray | None, n: int, what: str) -> np.ndarray:
    """Validate an index list against a set of `n` items -> int64 (k,) array.

    None means all items. Negative or out-of-range indices are refused (never wrapped).
    """
    if idx is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(idx)
    if arr.ndim != 1:
        raise InputError(f"{what} indices must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what} indices must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n:
        raise InputError(f"{what} index out of range: got [{lo}, {hi}] for {n} items")
    return arr


def check_items(items: Any, what: str) -> ItemsLike:
    if not isinstance(items, ItemsLike):
        raise InputError(f"{what}: expected items with .prompts and .responses, got {type(items)}")
    if len(items) == 0:
        raise InputError(f"{what}: no items")
    return items


class PairwiseInfluence:
    """Base of pairwise influence functions: ``K[rows, cols]`` over pool x targets.

    Subclasses implement `_block(rows, cols, meter) -> (values, info)`.
    """

    kind: Literal["pairwise"] = "pairwise"
    name: str = "pairwise"

    def __init__(self, pool: Any, targets: Any | None = None) -> None:
        self.pool = check_items(pool, "pool")
        self.targets = check_items(targets, "targets") if targets is not None else self.pool
        self.square = targets is None or targets is pool

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.pool), len(self.targets)

    def block(
        self,
        rows: Sequence[int] | np.ndarray | None = None,
        cols: Sequence[int] | np.ndarray | None = None,
    ) -> Result:
        """Compute ``K[rows][:, cols]`` -> `Result`, float32 values ``(len(rows), len(cols))``."""
        r = as_index(rows, len(self.pool), "row (pool)")
        c = as_index(cols, len(self.targets), "column (target)")
        meter = CostMeter()
        info: dict[str, Any]
        with meter.timed():
            if r.size == 0 or c.size == 0:
                values, info = np.zeros((r.size, c.size), dtype=np.float32), {}
            else:
                values, info = self._block(r, c, meter)
        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.shape != (r.size, c.size):
            raise RuntimeError(
                f"{self.name}: block has shape {values.shape}, expected {(r.size, c.size)}"
            )
        return Result(values, meter.cost, info)

    def pairs(self, rows: Sequence[int] | np.ndarray, cols: Sequence[int] | np.ndarray) -> Result:
        """Values of the pairs (rows[k], cols[k]) -> `Result` with float32 ``(n,)`` values.

        One `block([row], its cols)` per distinct row, so what a block shares per pool item
        (DELIFT's example prefix) is shared by that item's targets here too."""
        return pairs_by_row(self, np.asarray(rows), np.asarray(cols), Result)

    def _block(
        self, rows: np.ndarray, cols: np.ndarray, meter: CostMeter
    ) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Everything that determines the values (recorded in label manifests)."""
        return {"method": self.name}


class PointwiseInfluence:
    """Base of pointwise influence functions: one value per pool item."""

    kind: Literal["pointwise"] = "pointwise"
    name: str = "pointwise"

    def __init__(self, pool: Any) -> None:
        self.pool = check_items(pool, "pool")

    @property
    def shape(self) -> tuple[int]:
        return (len(self.pool),)

    def points(self, rows: Sequence[int] | np.ndarray | None = None) -> Result:
        """Compute the values of pool items `rows` -> `Result` with float32 ``(len(rows),)``."""
        r = as_index(rows, len(self.pool), "row (pool)")
        meter = CostMeter()
        info: dict[str, Any]
        with meter.timed():
            if r.size == 0:
                values, info = np.zeros(0, dtype=np.float32), {}
            else:
                values, info = self._points(r, meter)
        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.shape != (r.size,):
            raise RuntimeError(f"{self.name}: got shape {values.shape}, expected {(r.size,)}")
        return Result(values, meter.cost, info)

    def _points(self, rows: np.ndarray, meter: CostMeter) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"method": self.name}


def pairs_by_row(fn: Any, rows: np.ndarray, cols: np.ndarray, result: Any) -> Any:
    """`fn.pairs` for any object with ``block(rows, cols)``: one block per distinct row, in
    order of first appearance; values back in the pairs' order, costs summed, infos merged
    (lists joined, dicts merged, else the last value). `result` is the `Result` class to build."""
    r = np.asarray(rows, dtype=np.int64).ravel()
    c = np.asarray(cols, dtype=np.int64).ravel()
    if r.size != c.size:
        raise InputError(f"pairs need as many columns as rows, got {r.size} and {c.size}")
    values = np.zeros(r.size, dtype=np.float32)
    cost = Cost()
    info: dict[str, Any] = {}
    _, first = np.unique(r, return_index=True)
    for i in r[np.sort(first)]:
        at = np.flatnonzero(r == i)
        res = fn.block(np.array([i], dtype=np.int64), c[at])
        values[at] = np.asarray(res.values, dtype=np.float32).reshape(-1)
        cost = cost + res.cost
        for k, v in res.info.items():  # lists (item indices) are unions, dicts merged
            if isinstance(v, list) and isinstance(info.get(k), list):
                info[k] = info[k] + [x for x in v if x not in info[k]]
            elif isinstance(v, dict) and isinstance(info.get(k), dict):
                info[k] = {**info[k], **v}
            else:
                info[k] = v
    return result(values, cost, info)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` highest scores, highest first; ties go to the lowest index.

    LESS and SelectIT select the top-k (the reference scripts sorted ascending and kept the
    bottom-k). NaN scores are refused.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if np.isnan(s).any():
        raise InputError("scores contain NaN; cannot rank")
    if not 0 <= k <= s.size:
        raise InputError(f"k must be in [0, {s.size}], got {k}")
    # Stable sort of the negated scores: equal scores keep index order.
    return np.argsort(-s, kind="stable")[:k].astype(np.int64)
