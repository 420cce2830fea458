"""Scoring and selection over pool shards, one Ray task per shard, Rust inside each task.

* `score_sharded`: the pool's rows cut into contiguous shards; each task loads the weight
  file (shipped as bytes through Ray's object store, so workers need no shared disk) and
  scores its rows against every column with the Rust `PairwiseScorer`: the dense block, the
  top-k per row or one aggregate per row. Rows are scored independently, so the result is the
  local one (tested bit for bit).
* `select_partitioned`: GreeDi partition-and-merge (Mirzasoleiman et al. 2013) with the
  parts cut by the Rust engine's own `greedi_plan` (seeded shuffle, contiguous chunks,
  sorted), a lazy greedy per part in its own Ray task, the union merged by one more greedy.
  Same parts, same per-part budget and the same tie-breaking as
  ``select(optimizer="greedi", greedi_parts=P)`` (each part and the merge get the global
  tie ranks of their items, ``_core.tie_ranks(n, seed)``), so for a given seed and part
  count the answer equals the local partition-and-merge run (tested), ties included.

Tasks are stateless and idempotent: Ray's own retry (``max_retries``) reruns a task whose
worker died.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nncift.distributed.cluster import RaySettings, require_ray
from nncift.errors import InputError
from nncift.selection import SelectionResult, resolve_budget, select

log = logging.getLogger(__name__)

#: Objectives partition-and-merge supports (the Rust engine's GreeDi rule).
PARTITIONABLE = ("fl", "graph-cut", "disparity-sum", "disparity-min")
#: Retries of a shard task whose worker died.
TASK_RETRIES = 3


def default_shards(settings: RaySettings, cluster_cpus: int) -> int:
    """--ray-shards, or one shard per task slot of the cluster (at least 2)."""
    if settings.shards is not None:
        return settings.shards
    return max(2, cluster_cpus // max(1, settings.cpus_per_worker))


def row_shards(n: int, shards: int) -> list[slice]:
    """`shards` contiguous, nearly equal row ranges covering 0..n (fewer if n is small)."""
    shards = max(1, min(shards, n))
    step = math.ceil(n / shards)
    return [slice(a, min(n, a + step)) for a in range(0, n, step)]


# ---------------------------------------------------------------------------- scoring


def _score_shard(
    weights: bytes, rows: np.ndarray, cols: np.ndarray | None, how: str, k: int, threads: int
) -> Any:
    """One shard, inside a Ray task: load the network from bytes and score in Rust."""
    from nncift.scorer import PairwiseScorer

    with tempfile.TemporaryDirectory(prefix="nncift-shard-") as d:
        path = os.path.join(d, "net.safetensors")
        with open(path, "wb") as fh:
            fh.write(weights)
        scorer = PairwiseScorer.load(path)
    if how == "pointwise":
        return scorer.pointwise(rows, n_jobs=threads)
    assert cols is not None
    if how == "dense":
        return scorer.score(rows, cols, n_jobs=threads)
    if how == "topk":
        return scorer.topk(rows, cols, k, n_jobs=threads)
    return scorer.aggregate(rows, cols, how, n_jobs=threads)


@dataclass
class ShardStats:
    """How a sharded job ran (goes into the manifest)."""

    shards: int = 0
    seconds: float = 0.0
    task_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"shards": self.shards, "seconds": round(self.seconds, 4)}


def score_sharded(
    settings: RaySettings,
    weights_path: str | os.PathLike[str],
    rows: np.ndarray,
    cols: np.ndarray | None = None,
    *,
    how: str = "dense",
    k: int = 0,
    out: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    stats: ShardStats | None = None,
) -> Any:
    """Score `rows` x `cols` with the network in `weights_path`, one Ray task per row shard.

    how: ``dense`` -> (M, N) float32 (written into `out` when given, e.g. a memmap),
    ``topk`` -> (indices (M, k), values (M, k)), ``mean`` / ``max`` -> (M,),
    ``pointwise`` -> (M,) (cols ignored).
    """
    from nncift.scorer import PairwiseScorer

    ray = require_ray()
    if how not in ("dense", "topk", "mean", "max", "pointwise"):
        raise InputError(f"unknown sharded scoring {how!r}")
    scorer = PairwiseScorer.load(weights_path)  # validates the file here, before any task
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if how != "pointwise":
        if cols is None:
            raise InputError("pairwise scoring needs column embeddings")
        cols = np.ascontiguousarray(cols, dtype=np.float32)
    for name, arr in (("pool", rows), ("target", cols)):
        if arr is not None and (arr.ndim != 2 or arr.shape[1] != scorer.embedding_dim):
            raise InputError(
                f"{name} embeddings have shape {arr.shape}; the network expects "
                f"(n, {scorer.embedding_dim})"
            )
    m = rows.shape[0]
    cluster = settings.connect()
    parts = row_shards(m, default_shards(settings, cluster.cpus))
    st = stats if stats is not None else ShardStats()
    st.shards = len(parts)
    t0 = time.perf_counter()
    task = ray.remote(_score_shard).options(
        num_cpus=settings.cpus_per_worker, max_retries=TASK_RETRIES
    )
    w_ref = ray.put(_read_bytes(weights_path))
    c_ref = ray.put(cols)
    refs = {task.remote(w_ref, rows[s], c_ref, how, k, settings.cpus_per_worker): s for s in parts}
    n_cols = cols.shape[0] if cols is not None else 0
    if how == "dense":
        result: Any = out if out is not None else np.empty((m, n_cols), dtype=np.float32)
        if result.shape != (m, n_cols):
            raise InputError(f"out has shape {result.shape}, expected {(m, n_cols)}")
    elif how == "topk":
        result = (np.empty((m, k), dtype=np.int64), np.empty((m, k), dtype=np.float32))
    else:
        result = np.empty(m, dtype=np.float32)
    done = 0
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            s = refs.pop(ready[0])
            try:
                block = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                raise InputError(
                    f"scoring shard rows {s.start}-{s.stop} failed: {exc.cause}"
                ) from exc
            if how == "topk":
                result[0][s], result[1][s] = block
            else:
                result[s] = block
            done += 1
            if progress is not None:
                progress(done, len(parts))
    finally:
        for ref in refs:
            ray.cancel(ref)
    st.seconds = time.perf_counter() - t0
    return result


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


# ---------------------------------------------------------------------------- selection


def _select_part(
    objective: str,
    idx: np.ndarray,
    budget: int,
    kernel: np.ndarray | None,
    embeddings: np.ndarray | None,
    options: dict[str, Any],
    ranks: np.ndarray,
) -> tuple[np.ndarray, str | None]:
    """One part's lazy greedy, inside a Ray task -> (chosen global indices in pick order,
    why it stopped short or None). `ranks`: the global tie ranks of the part's items."""
    res = select(
        objective,
        budget=min(budget, len(idx)),
        kernel=kernel,
        embeddings=embeddings,
        optimizer="lazy",
        tie_ranks=ranks,
        **options,
    )
    return idx[res.indices], res.stopped_early


@dataclass
class PartitionInfo:
    """What `select_partitioned` did: recorded in the manifest (seed and parts reproduce it)."""

    parts: int
    seed: int
    local_budget: int
    union: int
    part_sizes: list[int]
    seconds_parts: float
    seconds_merge: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "parts": self.parts,
            "seed": self.seed,
            "local_budget": self.local_budget,
            "union": self.union,
            "part_sizes": self.part_sizes,
            "seconds_parts": round(self.seconds_parts, 4),
            "seconds_merge": round(self.seconds_merge, 4),
        }


def select_partitioned(
    settings: RaySettings,
    objective: str,
    *,
    budget: float,
    kernel: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    parts: int | None = None,
    seed: int = 0,
    mode: str = "auto",
    knn: int = 10,
    local_factor: float = 2.0,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> tuple[SelectionResult, PartitionInfo]:
    """Partition-and-merge selection with one Ray task per part (see the module docstring).

    kernel: (n, n) square kernel held by the driver (each task gets its diagonal block), or
    embeddings: (n, d), whose cosine kernel each task builds for its own items (``mode``:
    ``dense`` or ``sparse`` kNN with ``knn`` neighbours; ``auto`` = what the local
    partition-and-merge uses: the given kernel, else sparse kNN).
    options: further `nncift.selection.select` arguments (eta, lambda_, cosine,
    stop_if_zero_gain, ...), passed to every part and to the merge.
    """
    from nncift import _core

    ray = require_ray()
    if objective not in PARTITIONABLE:
        raise InputError(
            f"partition-and-merge supports {', '.join(PARTITIONABLE)}, not {objective}; "
            "run it without --ray shards"
        )
    if (kernel is None) == (embeddings is None):
        raise InputError("give a square kernel or embeddings (one of them)")
    data = np.ascontiguousarray(kernel if kernel is not None else embeddings, dtype=np.float32)
    if data.ndim != 2 or data.shape[0] == 0:
        raise InputError(f"expected a non-empty 2-D array, got shape {data.shape}")
    n = data.shape[0]
    if kernel is not None and data.shape[1] != n:
        raise InputError(f"partition-and-merge needs a square kernel, got shape {data.shape}")
    if kernel is not None and not np.isfinite(data).all():
        raise InputError("the kernel contains NaN or inf")
    count = resolve_budget(budget, n)  # InputError on a bad budget
    if count > n:
        raise InputError(f"budget {count} is larger than the pool ({n} items)")
    part_mode = mode
    if kernel is not None:
        part_mode = "dense"
    elif mode == "auto" or mode == "dense":
        part_mode = "sparse"  # what the local partition-and-merge does with embeddings
    opts = dict(options, random_state=seed, knn=knn, mode=part_mode)
    cluster = settings.connect()
    n_parts = parts if parts is not None else default_shards(settings, cluster.cpus)
    cut, local_budget = _core.greedi_plan(n, n_parts, seed, count, local_factor)
    ranks = _core.tie_ranks(n, seed)  # the tie order of the whole pool, as a local run
    task = ray.remote(_select_part).options(
        num_cpus=settings.cpus_per_worker, max_retries=TASK_RETRIES
    )
    t0 = time.perf_counter()
    refs = {}
    for part, idx in enumerate(cut):
        block = data[np.ix_(idx, idx)] if kernel is not None else data[idx]
        args = (block, None) if kernel is not None else (None, block)
        refs[task.remote(objective, idx, local_budget, *args, opts, ranks[idx])] = (part, idx)
    chosen: list[np.ndarray] = []
    part_stops: dict[int, str] = {}  # part number -> why it stopped short
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            part, idx = refs.pop(ready[0])
            try:
                picked, stop = ray.get(ready[0])
                chosen.append(picked)
                if stop is not None:
                    part_stops[part] = stop
            except ray.exceptions.RayTaskError as exc:
                raise InputError(
                    f"selection on a part of {len(idx)} items failed: {exc.cause}"
                ) from exc
            if progress is not None:
                progress(len(chosen), len(cut))
    finally:
        for ref in refs:
            ray.cancel(ref)
    t1 = time.perf_counter()
    union = np.unique(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    if kernel is not None:
        merged = select(
            objective, budget=min(count, union.size), kernel=data[np.ix_(union, union)],
            optimizer="lazy", tie_ranks=ranks[union], **opts,
        )  # fmt: skip
    else:
        merged = select(
            objective, budget=min(count, union.size), embeddings=data[union], optimizer="lazy",
            tie_ranks=ranks[union], **opts,
        )  # fmt: skip
    t2 = time.perf_counter()
    # As the Rust GreeDi reports it: the merge's own stop, else the first part's (in part
    # order), else the union was too small.
    stopped = None
    if merged.indices.size < count:
        first_part = part_stops[min(part_stops)] if part_stops else None
        stopped = merged.stopped_early or first_part or "exhausted"
    result = SelectionResult(
        indices=union[merged.indices],
        gains=merged.gains,
        objective=merged.objective,
        timings={"select_parts": t1 - t0, "select_merge": t2 - t1, "total": t2 - t0},
        mode=f"ray-greedi-{part_mode}",
        optimizer="greedi",
        evaluations=merged.evaluations,
        budget=count,
        stopped_early=stopped,
    )
    info = PartitionInfo(
        parts=len(cut), seed=seed, local_budget=int(local_budget), union=int(union.size),
        part_sizes=[int(len(c)) for c in cut], seconds_parts=t1 - t0, seconds_merge=t2 - t1,
    )  # fmt: skip
    return result, info


__all__ = [
    "PARTITIONABLE",
    "PartitionInfo",
    "ShardStats",
    "default_shards",
    "row_shards",
    "score_sharded",
    "select_partitioned",
]
