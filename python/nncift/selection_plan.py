"""Planning a selection before running it: :func:`estimate_selection` and its
:class:`SelectionPlan` (memory, time, and the kernel mode ``mode="auto"`` would pick).

Used by ``nncift select --dry-run`` (:func:`nncift.pipeline.plan_select`); the mode rule
itself lives with the engine (:func:`nncift.selection.auto_mode`), so the plan and the run
agree on it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from nncift.errors import InputError
from nncift.objectives import OBJECTIVE_CLASSES
from nncift.selection import (
    GREEDI_PART_SIZE,
    MODES,
    OPTIMIZERS,
    auto_mode,
    check_choice,
    fmt_bytes,
    resolve_budget,
    resolve_n_jobs,
)

#: Rough sustained single-thread rates on a laptop core, used only for estimates (measured
#: here: sgemm ~7e10 flop/s per AVX2 core, the FL gain loop ~2.5e9 entries/s, memory-bound).
_GEMM_FLOPS_PER_THREAD = 5e10
_SCAN_PER_THREAD = 2e9


@dataclass(frozen=True)
class SelectionPlan:
    """What a selection will cost, before running it (:func:`estimate_selection`)."""

    n: int
    budget: int
    objective: str
    mode: str
    memory_bytes: int
    seconds: float
    reason: str
    details: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"selection plan: {self.objective} on {self.n:,} items, budget {self.budget:,}, "
            f"mode {self.mode} ({self.reason}); about {fmt_bytes(self.memory_bytes)} memory "
            f"and {_fmt_seconds(self.seconds)}"
        )


def _fmt_seconds(s: float) -> str:
    if s < 1:
        return "under a second"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min"


def _threads(n_jobs: int) -> int:
    t = resolve_n_jobs(n_jobs)
    return t if t > 0 else (os.cpu_count() or 1)


def estimate_selection(
    n: int,
    *,
    budget: float,
    d: int | None = None,
    objective: str = "fl",
    mode: str = "auto",
    optimizer: str = "lazy",
    knn: int = 10,
    n_queries: int = 0,
    kernel_given: bool = False,
    n_jobs: int = 0,
    memory_limit: int | None = None,
) -> SelectionPlan:
    """Estimate memory and time of :func:`nncift.select` on ``n`` items, and the mode
    ``auto`` picks.

    Args:
        n: pool size.
        budget: count or fraction, as for :func:`nncift.select`.
        objective: a shorthand name (``fl``, ``flmi``, ...; see :mod:`nncift.objectives`).
        d: embedding width (default 384) when the kernel is built from embeddings.
        kernel_given: a dense kernel is passed in (no build cost, its memory is the caller's).
        n_jobs: threads the run will use (0 or -1: all cores).
        memory_limit: bytes the run may use (default: the machine's available memory).

    The time is a rough figure for a laptop-class CPU; the memory is what nncift allocates.
    """
    if n <= 0:
        raise InputError("the pool is empty")
    check_choice("objective", objective, tuple(OBJECTIVE_CLASSES))
    check_choice("mode", mode, MODES)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    k = resolve_budget(budget, n)
    d = d or 384
    t = _threads(n_jobs)
    gemm = _GEMM_FLOPS_PER_THREAD * t
    scan = _SCAN_PER_THREAD * t
    emb_bytes = 0 if kernel_given else 4 * n * d * 2
    if objective == "topk":
        return SelectionPlan(n, k, objective, "none", 16 * n, n * 1e-8, "scores only")
    reason = f"mode {mode} requested"
    if kernel_given:
        chosen = "dense"
        reason = "a dense kernel was given"
    elif mode == "auto" or optimizer == "greedi":
        chosen, reason = auto_mode(n, memory_limit)
        if optimizer == "greedi":
            reason = "partition and merge requested"
    else:
        chosen = mode
    details: dict[str, float] = {}
    side = 2 * n * max(n_queries, 1) * d / gemm if n_queries else 0.0
    # Lazy greedy re-evaluates a few dozen stale candidates per pick in practice.
    reevals = {"naive": float(n), "stochastic": n / max(k, 1) * math.log(100)}.get(optimizer, 30.0)
    if chosen == "dense":
        mem = (0 if kernel_given else 4 * n * n) + emb_bytes + 24 * n
        # Square kernels are built from tiles I <= J only: n^2 d flops, not 2 n^2 d.
        build = 0.0 if kernel_given else n * n * d / gemm
        sel = (n * n + k * reevals * n) / scan
    elif chosen == "sparse":
        nnz = knn * n
        # Per worker: flat top-k lists over all columns plus one 1024 x 1024 tile.
        mem = 16 * nnz + emb_bytes + 24 * n + t * (8 * nnz + 4 * 1024 * 1024)
        build = n * n * d / gemm + n * n / scan
        sel = (nnz + k * reevals * nnz / n) / scan * 4
    else:
        parts = max(1, math.ceil(n / GREEDI_PART_SIZE))
        if optimizer == "greedi" or chosen == "onthefly" and mode == "auto":
            part = math.ceil(n / parts)
            nnz = knn * part
            union = min(n, 2 * k)  # local factor 2: each part keeps 2 k / parts items
            mem = emb_bytes + 16 * nnz * 2 + t * (8 * knn * max(part, union) + (4 << 20)) + 24 * n
            build = (parts * part * part + union * union) * d / gemm
            sel = parts * (nnz * 8) / scan
            chosen = "greedi-sparse"
            details["parts"] = parts
        else:
            mem = emb_bytes + 24 * n + 4 * 256 * n * t
            build = 0.0
            sel = (n * n * d * 2 / gemm) + k * reevals * n * d * 2 / gemm
    details.update(build_seconds=build, select_seconds=sel)
    return SelectionPlan(n, k, objective, chosen, int(mem), build + sel + side, reason, details)


__all__ = ["SelectionPlan", "estimate_selection"]
