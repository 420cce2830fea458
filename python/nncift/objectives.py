"""The set functions :func:`nncift.select` maximises, one class per function.

Each objective is a frozen dataclass whose parameters are checked when it is built
(:class:`~nncift.errors.InputError` names the parameter), as in submodlib's one class per
function::

    import nncift
    from nncift.objectives import FacilityLocationMI

    res = nncift.select(FacilityLocationMI(eta=2.0), budget=10,
                        embeddings=pool_emb, query_embeddings=dev_emb)

The string names stay as shorthand: ``nncift.select("flmi", eta=2.0, ...)`` runs
``FacilityLocationMI(eta=2.0)`` (:func:`from_name`). The data an objective reads (kernels,
embeddings, query / private sets, scores) is passed to :func:`~nncift.select` itself; the
objective holds only its own parameters. ``s`` below is the similarity kernel
``K[pool item j, represented item t]`` (see :mod:`nncift.selection`), always ``>= 0``.

============================  ==================  =====================================
class                         shorthand           data it needs
============================  ==================  =====================================
:class:`FacilityLocation`     ``fl``              kernel (n, m) or embeddings
                                                  (+ ``represented_embeddings``)
:class:`FacilityLocationMI`   ``flmi``            + ``query_kernel`` / ``query_embeddings``
:class:`FacilityLocationCG`   ``flcg``            + ``private_kernel`` / ``private_embeddings``
:class:`GraphCut`             ``graph-cut``       square kernel or embeddings
:class:`DisparitySum`         ``disparity-sum``   square kernel in [0, 1] or embeddings
:class:`DisparityMin`         ``disparity-min``   square kernel in [0, 1] or embeddings
:class:`TopK`                 ``topk``            ``scores`` (n,)
:class:`Mix`                  ``mix``             as ``fl``, + ``scores`` (n,)
============================  ==================  =====================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from nncift.errors import InputError


def _number(owner: str, name: str, value: Any, *, non_negative: bool) -> float:
    """`value` as a finite float (>= 0 when `non_negative`), else InputError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{owner}: {name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{owner}: {name} must be finite, got {value}")
    if non_negative and v < 0:
        raise InputError(f"{owner}: {name} must be >= 0, got {value}")
    return v


@dataclass(frozen=True)
class Objective:
    """A set function for :func:`nncift.select`. ``name`` is its string shorthand."""

    name: ClassVar[str] = ""

    def params(self) -> dict[str, float]:
        """This objective's parameters by keyword (``{"eta": 1.0}``; ``{}`` for none)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def _check(self, name: str, *, non_negative: bool) -> None:
        value = _number(type(self).__name__, name, getattr(self, name), non_negative=non_negative)
        object.__setattr__(self, name, value)


@dataclass(frozen=True)
class FacilityLocation(Objective):
    """Facility location, ``f(A) = sum_t max_{j in A} s_jt``: every represented item ``t``
    is covered by its most similar chosen item. ``represented_embeddings`` (or a
    rectangular (n, m) kernel) give a represented set other than the pool."""

    name: ClassVar[str] = "fl"

    def value(self, kernel: npt.ArrayLike, chosen: npt.ArrayLike) -> float:
        """``f(A)`` in float64 for the rows ``chosen`` of ``kernel`` (n, m), ``s >= 0``;
        0.0 for an empty set. What :func:`nncift.select` reports as ``objective``."""
        k, a = np.asarray(kernel), np.asarray(chosen, dtype=np.int64)
        if a.size == 0:
            return 0.0
        return float(k[a].max(axis=0).astype(np.float64).sum())


@dataclass(frozen=True)
class FacilityLocationMI(Objective):
    """Facility-location mutual information with a query set ``Q`` (submodlib's FLVMI):
    ``f(A) = sum_t min(max_{j in A} s_jt, eta * max_{q in Q} s_tq)``.

    Args:
        eta: query weight (submodlib's ``magnificationEta``), finite and ``>= 0``; a larger
            ``eta`` lets the query set's coverage count for more before it saturates.
    """

    name: ClassVar[str] = "flmi"
    eta: float = 1.0

    def __post_init__(self) -> None:
        self._check("eta", non_negative=True)

    def value(
        self, kernel: npt.ArrayLike, query_kernel: npt.ArrayLike, chosen: npt.ArrayLike
    ) -> float:
        """``f(A)`` in float64: ``kernel`` (n, n) square, ``query_kernel`` (n, q), rows
        ``chosen``; 0.0 for an empty set."""
        k, a = np.asarray(kernel), np.asarray(chosen, dtype=np.int64)
        if a.size == 0:
            return 0.0
        cover = k[a].max(axis=0).astype(np.float64)
        cap = self.eta * np.asarray(query_kernel).max(axis=1).astype(np.float64)
        return float(np.minimum(cover, cap).sum())


@dataclass(frozen=True)
class FacilityLocationCG(Objective):
    """Facility-location conditional gain given a private set ``P``:
    ``f(A) = sum_t max(max_{j in A} s_jt - nu * max_{p in P} s_tp, 0)``; items close to
    ``P`` are worth less.

    Args:
        nu: privacy hardness (submodlib's ``privacyHardness``), finite and ``>= 0``.
    """

    name: ClassVar[str] = "flcg"
    nu: float = 1.0

    def __post_init__(self) -> None:
        self._check("nu", non_negative=True)


@dataclass(frozen=True)
class GraphCut(Objective):
    """Graph cut, ``f(A) = sum_{j in A} sum_t s_jt - lambda_ * sum_{i, j in A} s_ij`` (square
    kernel).

    Args:
        lambda_: weight of the redundancy term (submodlib's ``lambdaVal``), finite and
            ``>= 0`` (a negative weight makes the function supermodular).
    """

    name: ClassVar[str] = "graph-cut"
    lambda_: float = 0.5

    def __post_init__(self) -> None:
        self._check("lambda_", non_negative=True)


@dataclass(frozen=True)
class DisparitySum(Objective):
    """Disparity sum, ``f(A) = sum_{i < j in A} (1 - s_ij)`` (square kernel in [0, 1])."""

    name: ClassVar[str] = "disparity-sum"


@dataclass(frozen=True)
class DisparityMin(Objective):
    """Disparity min, ``f(A) = min_{i != j in A} (1 - s_ij)`` (square kernel in [0, 1]);
    greedy is farthest-first, and the reported gain is the distance to the nearest chosen
    item."""

    name: ClassVar[str] = "disparity-min"


@dataclass(frozen=True)
class TopK(Objective):
    """Top-k by score, ``f(A) = sum_{j in A} scores_j`` (modular; needs ``scores``, no
    kernel). Never stops early: a score of 0 or below is still a value to rank by."""

    name: ClassVar[str] = "topk"


@dataclass(frozen=True)
class Mix(Objective):
    """Facility location plus quality, ``f(A) = fl(A) + quality_weight * sum_{j in A}
    scores_j`` (needs ``scores``).

    Args:
        quality_weight: weight of the scores, finite.
    """

    name: ClassVar[str] = "mix"
    quality_weight: float = 1.0

    def __post_init__(self) -> None:
        self._check("quality_weight", non_negative=False)


#: Shorthand name -> class, in the order of :data:`nncift.selection.OBJECTIVES`.
OBJECTIVE_CLASSES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (
        FacilityLocation,
        FacilityLocationMI,
        FacilityLocationCG,
        GraphCut,
        DisparitySum,
        DisparityMin,
        TopK,
        Mix,
    )
}
#: Every objective parameter the Rust core takes, at its default.
PARAMETER_DEFAULTS: dict[str, float] = {
    k: v for cls in OBJECTIVE_CLASSES.values() for k, v in cls().params().items()
}


def from_name(name: str, **params: float | None) -> Objective:
    """The objective behind a shorthand name, with those of ``params`` it takes
    (``from_name("flmi", eta=2.0, nu=0.5) == FacilityLocationMI(eta=2.0)``).

    Parameters the objective does not take, and those given as ``None``, are ignored, so a
    caller can pass every parameter it has (as the CLI does).
    """
    if name not in OBJECTIVE_CLASSES:
        raise InputError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVE_CLASSES)}")
    cls = OBJECTIVE_CLASSES[name]
    own = {f.name for f in fields(cls)}
    unknown = set(params) - set(PARAMETER_DEFAULTS)
    if unknown:
        raise InputError(f"unknown objective parameter(s): {', '.join(sorted(unknown))}")
    return cls(**{k: v for k, v in params.items() if k in own and v is not None})


__all__ = [
    "OBJECTIVE_CLASSES",
    "PARAMETER_DEFAULTS",
    "DisparityMin",
    "DisparitySum",
    "FacilityLocation",
    "FacilityLocationCG",
    "FacilityLocationMI",
    "GraphCut",
    "Mix",
    "Objective",
    "TopK",
    "from_name",
]
