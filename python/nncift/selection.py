"""Subset selection: submodular objectives over dense, sparse kNN or on-the-fly kernels.

One entry point, :func:`select`, runs in Rust with the GIL released. The objective is an
object from :mod:`nncift.objectives` (``FacilityLocation()``, ``FacilityLocationMI(eta=2.0)``,
...) or its shorthand name (``"fl"``, ``"flmi"``, ...); :mod:`nncift.selection_plan`
estimates a run's memory and time before it starts; docs/selection.md has one example per
objective. Kernels are oriented ``K[j, t]``: rows ``j`` are the pool items that can be
chosen, columns ``t`` the items to be represented (the pool itself for a square kernel). For
a symmetric kernel this is the same as submodlib's; for submodlib's ``separate_rep`` kernel
(``n_rep x n``) pass its transpose.

Objectives (``s = K``; all need ``s >= 0``; the disparity ones need ``s`` in ``[0, 1]``;
the class in :mod:`nncift.objectives` in brackets):

* ``fl`` (``FacilityLocation``): ``f(A) = sum_t max_{j in A} s_jt``
  (``represented_embeddings`` give a separate represented set).
* ``flmi`` (``FacilityLocationMI``): ``sum_t min(max_{j in A} s_jt, eta * max_q s_tq)``
  with a query set.
* ``flcg`` (``FacilityLocationCG``): ``sum_t max(max_{j in A} s_jt - nu * max_p s_tp, 0)``
  with a private set.
* ``graph-cut`` (``GraphCut``): ``sum_{j in A} sum_t s_jt - lambda * sum_{i, j in A} s_ij``.
* ``disparity-sum`` (``DisparitySum``): ``sum_{i < j in A} (1 - s_ij)``;
  ``disparity-min`` (``DisparityMin``): ``min_{i != j} (1 - s_ij)`` (greedy =
  farthest-first: the reported gain is the distance to the nearest chosen item).
* ``topk`` (``TopK``): ``sum_{j in A} scores_j``; ``mix`` (``Mix``):
  ``fl + quality_weight * sum_{j in A} scores_j``.

Cosine kernels built from embeddings are made non-negative by ``cosine="clip"``
(``max(cos, 0)``, the default: FL ignores negative similarities anyway, so FL values equal
submodlib's on the raw cosine kernel) or ``cosine="shift"`` (``(1 + cos) / 2``).

Ties. When several items have exactly the same gain (a saturated facility-location kernel,
a constant network, equal scores), the one chosen is decided by a seeded permutation of the
pool drawn from ``random_state`` (``--seed`` on the command line), in Rust, for every
objective and optimizer (and, in ``sparse`` mode, for which of equally similar items a kNN
kernel keeps as neighbours); never by the position in the input file. The same
``random_state`` gives the same subset for any ``n_jobs``, and ``lazy`` still returns exactly
what ``naive`` returns.

Stopping early. The budget is filled by default (``stop_if_zero_gain`` defaults to
:data:`STOP_IF_ZERO_GAIN_DEFAULT` = False, as in submodlib's ``maximize`` and apricot; the
CLI's ``--stop-at-zero/--no-stop-at-zero`` has the same default). With
``stop_if_zero_gain=True`` greedy stops once the best remaining gain is below 1e-5 in
magnitude (submodlib's rule), with ``stop_if_negative_gain=True`` once it is negative.
``topk`` never stops on either rule: a score of 0 or -0.1 is still a value to rank by.
Whenever fewer items than the budget come back (a stop rule, the cost budget, or too few
items), :attr:`SelectionResult.stopped_early` says why and :attr:`SelectionResult.short`
is True.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from nncift import _core
from nncift.errors import InputError
from nncift.objectives import OBJECTIVE_CLASSES, PARAMETER_DEFAULTS, Objective, from_name
from nncift.scorer import ScorerKernel

#: The objectives' shorthand names (classes in :mod:`nncift.objectives`).
OBJECTIVES = tuple(OBJECTIVE_CLASSES)
OPTIMIZERS = ("naive", "lazy", "stochastic", "lazier-than-lazy", "greedi")
MODES = ("auto", "dense", "sparse", "onthefly")

#: Default of ``stop_if_zero_gain`` in :func:`select`, the binding and the CLI: fill the
#: budget (see the module docstring, "Stopping early").
STOP_IF_ZERO_GAIN_DEFAULT = False
#: Why a selection returned fewer items than its budget (`SelectionResult.stopped_early`).
STOP_REASONS = {
    "zero_gain": "no remaining item adds value (gain below 1e-5; stop_if_zero_gain)",
    "negative_gain": "every remaining item lowers the objective (stop_if_negative_gain)",
    "cost_budget": "no remaining item fits the cost budget",
    "exhausted": "no items were left to choose from",
}
#: Pool size per part when ``optimizer="greedi"`` chooses the number of parts itself.
GREEDI_PART_SIZE = 50_000


@dataclass(frozen=True)
class SelectionResult:
    """The outcome of :func:`select`.

    Attributes:
        indices: (k,) int64, chosen pool indices in selection order (``initial`` excluded).
        gains: (k,) float64, marginal gain of each when chosen (not divided by cost).
        objective: ``f(initial + chosen)``. With ``optimizer="greedi"`` the merge's value:
            ``f`` over the union of the parts' picks as its ground set (facility location,
            mix and graph cut then cover / sum rows over the union's items only, a lower
            bound of ``f`` over the pool; exact for the disparity functions), and ``gains``
            are the merge's marginal gains on that ground set.
        timings: seconds per stage (``kernel``, ``select``, ...; ``total``).
        mode: how the kernel was held (``dense``, ``sparse``, ``onthefly``, ``greedi-...``).
        optimizer: the optimizer that ran.
        evaluations: number of marginal-gain evaluations (a work measure).
        budget: the number of items asked for (``None`` when not known).
        stopped_early: ``None`` when the budget was filled, else why not: a key of
            :data:`STOP_REASONS` (``zero_gain``, ``negative_gain``, ``cost_budget``,
            ``exhausted``).
    """

    indices: npt.NDArray[np.int64]
    gains: npt.NDArray[np.float64]
    objective: float
    timings: dict[str, float]
    mode: str
    optimizer: str
    evaluations: int = 0
    budget: int | None = None
    stopped_early: str | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def short(self) -> bool:
        """True when fewer items than the budget were chosen (see ``stopped_early``)."""
        return self.budget is not None and len(self) < self.budget

    def shortfall(self) -> str | None:
        """A one-line explanation when the result is short of its budget, else None."""
        if not self.short:
            return None
        reason = STOP_REASONS.get(self.stopped_early or "", self.stopped_early or "unknown")
        return f"selected {len(self)} of the budget {self.budget}: {reason}"


def fmt_bytes(b: float) -> str:
    """A byte count for people (``1.5 GB``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if b < 1024 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} TB"


def _available_memory() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def resolve_budget(budget: float, n: int) -> int:
    """Turn a count (>= 1) or a fraction of the pool (0 < b < 1) into a count.

    Raises:
        InputError: not a number, not > 0, or a count that is not whole.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise InputError(f"budget must be a number, got {budget!r}")
    b = float(budget)
    if not math.isfinite(b) or b <= 0:
        raise InputError(f"budget must be > 0 (a count or a fraction of the pool), got {budget}")
    if b < 1:
        return max(1, int(round(b * n)))
    if b != int(b):
        raise InputError(f"a budget >= 1 is a count and must be whole, got {budget}")
    return int(b)


def resolve_n_jobs(n_jobs: int) -> int:
    """``n_jobs`` as the core takes it: ``-1`` (scikit-learn's "all cores") and ``0`` both
    mean every core (returned as 0); a positive count is kept."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)):
        raise InputError(f"n_jobs must be an integer, got {n_jobs!r}")
    if n_jobs < -1:
        raise InputError(f"n_jobs must be >= -1 (-1 or 0 = all cores), got {n_jobs}")
    return max(0, int(n_jobs))


def auto_mode(n: int, memory_limit: int | None) -> tuple[str, str]:
    """The kernel storage ``mode="auto"`` picks for ``n`` items, and why."""
    limit = memory_limit if memory_limit is not None else _available_memory()
    dense_bytes = 4 * n * n
    if dense_bytes <= limit // 4:
        return "dense", f"the {n:,} x {n:,} float32 kernel ({fmt_bytes(dense_bytes)}) fits"
    if n <= 400_000:
        return "sparse", f"a dense kernel ({fmt_bytes(dense_bytes)}) would not fit; kNN instead"
    return "onthefly", "pool too large for a kNN build in one piece; partition and merge"


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """InputError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")


def _matrix(x: Any, name: str, check_finite: bool = True) -> np.ndarray:
    """`x` as a C-contiguous float32 (n, m) array (no copy when it already is one).

    `check_finite=False` leaves the NaN / inf scan to the Rust core (done for the
    main kernel, which the core scans once in a fused, parallel pass anyway).
    """
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if check_finite and not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{name}[{bad[0]}, {bad[1]}] is NaN or inf; values must be finite")
    return a


def _check_kernel(k: np.ndarray, name: str, unit: bool) -> None:
    lo = float(k.min()) if k.size else 0.0
    if lo < 0:
        bad = np.argwhere(k < 0)[0]
        raise ValueError(
            f"{name}[{bad[0]}, {bad[1]}] = {k[bad[0], bad[1]]:.4g} is negative; "
            "submodular coverage "
            "functions need non-negative similarities (shift or clip them, e.g. (1 + cos) / 2)"
        )
    if unit and float(k.max()) > 1.0:
        raise ValueError(f"{name} has values > 1; disparity functions need similarities in [0, 1]")


def _objective(objective: Objective | str, flat: dict[str, float | None]) -> Objective:
    """The objective object of a :func:`select` call: given, or built from its shorthand
    name and the flat keyword parameters (``eta``, ``nu``, ``lambda_``, ``quality_weight``)."""
    if isinstance(objective, Objective):
        clash = [k for k, v in flat.items() if v is not None]
        if clash:
            raise InputError(
                f"{', '.join(clash)} given next to the objective object "
                f"{type(objective).__name__}; set parameters on the object, e.g. "
                "FacilityLocationMI(eta=2.0)"
            )
        return objective
    if not isinstance(objective, str):
        raise InputError(
            "objective must be an nncift.objectives object or one of "
            f"{', '.join(OBJECTIVES)}; got {type(objective).__name__}"
        )
    return from_name(objective, **flat)


def _random_state(random_state: int, seed: int | None) -> int:
    """The run's seed from ``random_state`` and the deprecated ``seed`` alias."""
    if seed is not None:
        warnings.warn(
            "select(seed=...) is deprecated; use random_state=...", DeprecationWarning, stacklevel=3
        )
        if random_state not in (0, seed):
            raise InputError(f"seed={seed} and random_state={random_state} disagree; give one")
        random_state = seed
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise InputError(f"random_state must be an integer >= 0, got {random_state!r}")
    if random_state < 0:
        raise InputError(f"random_state must be >= 0, got {random_state}")
    return int(random_state)


def select(
    objective: Objective | str = "fl",
    *,
    budget: float,
    kernel: npt.ArrayLike | None = None,
    embeddings: npt.ArrayLike | None = None,
    represented_embeddings: npt.ArrayLike | None = None,
    query_kernel: npt.ArrayLike | None = None,
    query_embeddings: npt.ArrayLike | None = None,
    private_kernel: npt.ArrayLike | None = None,
    private_embeddings: npt.ArrayLike | None = None,
    scores: npt.ArrayLike | None = None,
    quality_weight: float | None = None,
    mode: str = "auto",
    optimizer: str = "lazy",
    epsilon: float = 0.01,
    eta: float | None = None,
    nu: float | None = None,
    lambda_: float | None = None,
    knn: int = 10,
    cosine: str = "clip",
    costs: npt.ArrayLike | None = None,
    cost_budget: float | None = None,
    initial: npt.ArrayLike | None = None,
    stop_if_zero_gain: bool = STOP_IF_ZERO_GAIN_DEFAULT,
    stop_if_negative_gain: bool = False,
    random_state: int = 0,
    n_jobs: int = 0,
    kernel_source: ScorerKernel | None = None,
    greedi_parts: int | None = None,
    memory_limit: int | None = None,
    tie_ranks: npt.ArrayLike | None = None,
    seed: int | None = None,
) -> SelectionResult:
    """Choose ``budget`` pool items greedily maximising a submodular objective.

    Array inputs may be any array-like; C-contiguous float32 arrays (int64 for index
    arrays) reach Rust without a copy, anything else is converted once.

    Args:
        objective: an object from :mod:`nncift.objectives` (``FacilityLocation()``,
            ``FacilityLocationMI(eta=2.0)``, ...) or its shorthand name, one of ``fl, flmi,
            flcg, graph-cut, disparity-sum, disparity-min, topk, mix``.
        budget: a count (>= 1) or a fraction of the pool (0 < b < 1), not counting ``initial``.
        kernel: (n, m) similarities ``K[pool item, represented item]``, float32 (other numeric
            dtypes are converted); square (n, n) for every objective except ``fl``.
        embeddings: (n, d) pool embeddings; the kernel is their cosine (see ``cosine``).
        represented_embeddings: (m, d) embeddings of a separate represented set (``fl`` only).
        query_kernel / query_embeddings: (n, q) kernel or (q, d) embeddings of the query set (flmi).
        private_kernel / private_embeddings: (n, p) kernel or (p, d) embeddings (flcg).
        scores: (n,) per-item quality for ``topk`` and ``mix``.
        quality_weight: weight of the scores in ``mix`` (default 1.0; with a name only, as
            are ``eta``, ``nu`` and ``lambda_``: an objective object carries its own).
        mode: ``dense`` (full kernel in memory), ``sparse`` (kNN with ``knn`` neighbours per
            represented item), ``onthefly`` (entries computed when needed) or ``auto``.
        optimizer: ``naive``, ``lazy``, ``stochastic``, ``lazier-than-lazy`` or ``greedi``
            (partition and merge, lazy inside; ``greedi_parts`` parts, default n / 50,000).
        epsilon: sample-size parameter of the stochastic optimizers.
        eta, nu, lambda_: FLMI query weight (1.0), FLCG privacy hardness (1.0), graph-cut
            weight (0.5), used by the named objective only and checked as its class checks
            them (see :mod:`nncift.objectives`).
        costs: (n,) per-item costs > 0 (e.g. token counts): ranks by gain / cost and stops at
            ``cost_budget`` total cost.
        initial: indices already chosen; counted in the objective, never returned.
        stop_if_zero_gain: stop early once the best gain is below 1e-5 in magnitude (submodlib's
            rule); the first pick of disparity-sum is exempt, ``topk`` never stops. Default
            :data:`STOP_IF_ZERO_GAIN_DEFAULT` (False: fill the budget).
        stop_if_negative_gain: stop early once the best gain is negative (never for ``topk``).
        random_state: seed (an integer >= 0) of the tie order (equal gains go to the item
            ranked first in a seeded permutation of the pool), of the stochastic optimizers
            and of greedi's partition.
        n_jobs: threads (0 or -1 = all cores); the result does not depend on it.
        kernel_source: a :class:`nncift.scorer.ScorerKernel` (``PairwiseScorer.bind(rows,
            cols)``) computing the kernel on the fly.
        memory_limit: bytes ``mode="auto"`` may plan for (default: available memory).
        tie_ranks: (n,) non-negative ints, the tie order to use instead of the one drawn from
            ``random_state`` (lower wins an exact tie). For drivers that select on parts of a
            pool: pass each part ``nncift._core.tie_ranks(n, random_state)[part]`` to reproduce
            a run on the pool.
        seed: deprecated alias of ``random_state`` (a DeprecationWarning).

    Returns:
        A :class:`SelectionResult`; ``result.short`` / ``result.stopped_early`` tell when
        and why fewer than ``budget`` items came back.

    Raises:
        InputError: a bad objective parameter, budget, option or random_state (a
            ValueError).
        ValueError: bad shapes, NaN/inf or negative similarities, empty pool.
    """
    t0 = time.perf_counter()
    flat = {"eta": eta, "nu": nu, "lambda_": lambda_, "quality_weight": quality_weight}
    obj = _objective(objective, flat)
    objective = obj.name
    params = {**PARAMETER_DEFAULTS, **obj.params()}
    quality_weight = params["quality_weight"]
    random_state = _random_state(random_state, seed)
    n_jobs = resolve_n_jobs(n_jobs)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("mode", mode, MODES)
    if cosine not in ("clip", "shift", "raw"):
        raise ValueError(f"unknown cosine transform {cosine!r}; choose clip or shift")
    if knn is None or int(knn) < 1:
        raise ValueError(f"knn must be >= 1, got {knn}")
    if not (0 < epsilon < 1):
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")

    k_arr = _matrix(kernel, "kernel", check_finite=False) if kernel is not None else None
    e_arr = _matrix(embeddings, "embeddings") if embeddings is not None else None
    r_arr = (
        _matrix(represented_embeddings, "represented_embeddings")
        if represented_embeddings is not None
        else None
    )
    sc = None
    if scores is not None:
        sc = np.ascontiguousarray(np.asarray(scores, dtype=np.float32).ravel())
        if not np.isfinite(sc).all():
            raise ValueError("scores contain NaN or inf")

    if k_arr is not None:
        n = k_arr.shape[0]
    elif e_arr is not None:
        n = e_arr.shape[0]
    elif kernel_source is not None:
        if not isinstance(kernel_source, ScorerKernel):
            raise ValueError(
                "kernel_source must be an nncift ScorerKernel (from PairwiseScorer.bind(rows, "
                f"cols)); got {type(kernel_source).__name__}"
            )
        n = int(kernel_source.n_rows)
    elif sc is not None:
        n = sc.shape[0]
    else:
        raise ValueError("give a kernel, embeddings, a kernel_source or (for topk) scores")
    if n == 0:
        raise ValueError("the pool is empty")
    if e_arr is not None and e_arr.shape[1] == 0:
        raise ValueError("embeddings have width 0")

    rust_obj = objective
    if objective in ("topk", "mix"):
        if sc is None:
            raise ValueError(f"{objective} needs scores (one per pool item)")
        if sc.shape[0] != n:
            raise ValueError(f"scores have {sc.shape[0]} entries, the pool has {n} items")
        rust_obj = "topk" if objective == "topk" else "fl"
    elif sc is not None:
        raise ValueError(f"scores are only used by topk and mix, not {objective}")
    if objective == "topk":
        k_arr = e_arr = r_arr = None
        quality_weight = 1.0
    elif k_arr is None and e_arr is None and kernel_source is None:
        raise ValueError(f"{objective} needs a kernel, embeddings or a kernel_source")

    square = objective not in ("fl", "mix", "topk")
    if k_arr is not None:
        if square and k_arr.shape[1] != n:
            raise ValueError(f"{objective} needs a square (n, n) kernel, got shape {k_arr.shape}")
        if k_arr.shape[1] == 0:
            raise ValueError("the kernel has no columns (empty represented set)")
        # Values (finite, >= 0, <= 1 for disparity) are checked by the core.
    if r_arr is not None:
        if objective not in ("fl", "mix"):
            raise ValueError("represented_embeddings are only used by fl / mix")
        if e_arr is None:
            raise ValueError("represented_embeddings need embeddings for the pool")
        if r_arr.shape[1] != e_arr.shape[1]:
            raise ValueError(
                f"represented_embeddings have d={r_arr.shape[1]}, embeddings d={e_arr.shape[1]}"
            )

    side: dict[str, np.ndarray | None] = {}
    for role, kern, emb, used in (
        ("query", query_kernel, query_embeddings, objective == "flmi"),
        ("private", private_kernel, private_embeddings, objective == "flcg"),
    ):
        if not used:
            if kern is not None or emb is not None:
                raise ValueError(
                    f"{role} kernel / embeddings are only used by "
                    f"{'flmi' if role == 'query' else 'flcg'}"
                )
            side[f"{role}_kernel"] = side[f"{role}_embeddings"] = None
            continue
        if kern is None and emb is None:
            raise ValueError(f"{objective} needs {role}_kernel (n, q) or {role}_embeddings (q, d)")
        ka = _matrix(kern, f"{role}_kernel") if kern is not None else None
        ea = _matrix(emb, f"{role}_embeddings") if emb is not None else None
        if ka is not None:
            if ka.shape[0] != n:
                raise ValueError(f"{role}_kernel has {ka.shape[0]} rows, the pool has {n} items")
            if ka.shape[1] == 0:
                raise ValueError(f"the {role} set is empty")
            _check_kernel(ka, f"{role}_kernel", False)
        if ea is not None and ka is None:
            if ea.shape[0] == 0:
                raise ValueError(f"the {role} set is empty")
            if e_arr is None:
                raise ValueError(
                    f"{role}_embeddings need pool embeddings (the kernel is their cosine)"
                )
            if ea.shape[1] != e_arr.shape[1]:
                raise ValueError(
                    f"{role}_embeddings have d={ea.shape[1]}, embeddings d={e_arr.shape[1]}"
                )
        side[f"{role}_kernel"] = ka
        side[f"{role}_embeddings"] = ea if ka is None else None

    init = None
    if initial is not None:
        init = np.ascontiguousarray(np.asarray(initial, dtype=np.int64).ravel())
        if init.size and (init.min() < 0 or init.max() >= n):
            raise ValueError(f"initial indices must be in [0, {n})")
        if np.unique(init).size != init.size:
            raise ValueError("initial indices contain duplicates")
    n_free = n - (0 if init is None else init.size)
    count = resolve_budget(budget, n)
    if count > n_free:
        raise ValueError(f"budget {count} is larger than the {n_free} selectable items of the pool")

    ranks = None
    if tie_ranks is not None:
        ranks = np.ascontiguousarray(np.asarray(tie_ranks).ravel())
        if ranks.dtype.kind not in "iu" or ranks.shape[0] != n:
            raise ValueError(f"tie_ranks must be {n} integers (one per pool item)")
        ranks = ranks.astype(np.int64)
        if ranks.size and ranks.min() < 0:
            raise ValueError("tie_ranks must be >= 0")

    cost_arr = None
    if costs is not None:
        cost_arr = np.ascontiguousarray(np.asarray(costs, dtype=np.float64).ravel())
        if cost_arr.shape[0] != n:
            raise ValueError(f"costs have {cost_arr.shape[0]} entries, the pool has {n} items")
        if not np.isfinite(cost_arr).all() or (cost_arr <= 0).any():
            raise ValueError("costs must be finite and > 0")
        if cost_budget is None or not (cost_budget > 0):
            raise ValueError("costs need a positive cost_budget (total cost allowed)")

    greedi = 0
    inner = optimizer
    if optimizer == "greedi":
        inner = "lazy"
        greedi = int(greedi_parts) if greedi_parts else max(1, math.ceil(n / GREEDI_PART_SIZE))
    if objective == "topk" or k_arr is not None:
        run_mode = "dense"
    elif mode == "auto":
        run_mode, _ = auto_mode(n, memory_limit)
        if run_mode == "onthefly" and kernel_source is None and objective not in ("flmi", "flcg"):
            # Too big for one kNN build: partition and merge with a kNN kernel per part.
            run_mode = "sparse"
            greedi = greedi or max(1, math.ceil(n / GREEDI_PART_SIZE))
            inner = "lazy" if optimizer == "greedi" else optimizer
    else:
        run_mode = mode
    if greedi and run_mode == "dense" and k_arr is None:
        run_mode = "sparse"

    t1 = time.perf_counter()
    idx, gains, value, timings, used_mode, used_opt, evals, stop = _core.select_core(
        rust_obj,
        count,
        kernel=k_arr,
        embeddings=e_arr,
        represented_embeddings=r_arr,
        scores=sc,
        quality_weight=float(quality_weight),
        mode=run_mode,
        knn=int(knn),
        optimizer=inner,
        epsilon=float(epsilon),
        eta=params["eta"],
        nu=params["nu"],
        lambda_=params["lambda_"],
        costs=cost_arr,
        cost_budget=None if cost_budget is None else float(cost_budget),
        initial=init,
        stop_if_zero_gain=bool(stop_if_zero_gain),
        stop_if_negative_gain=bool(stop_if_negative_gain),
        seed=random_state,
        n_jobs=n_jobs,
        cosine=cosine,
        greedi_parts=greedi,
        kernel_source=kernel_source,
        query_kernel=side["query_kernel"],
        query_embeddings=side["query_embeddings"],
        private_kernel=side["private_kernel"],
        private_embeddings=side["private_embeddings"],
        tie_ranks=ranks,
    )
    t2 = time.perf_counter()
    times = {"validate": t1 - t0, **dict(timings), "total": t2 - t0}
    return SelectionResult(
        indices=idx,
        gains=gains,
        objective=float(value),
        timings=times,
        mode="none" if objective == "topk" else used_mode,
        optimizer="greedi" if greedi else used_opt,
        evaluations=int(evals),
        budget=count,
        stopped_early=stop,
    )


__all__ = [
    "MODES",
    "OBJECTIVES",
    "OPTIMIZERS",
    "STOP_IF_ZERO_GAIN_DEFAULT",
    "STOP_REASONS",
    "SelectionResult",
    "auto_mode",
    "check_choice",
    "fmt_bytes",
    "resolve_budget",
    "resolve_n_jobs",
    "select",
]
