"""Influence labels on a Ray cluster: one actor per GPU (or CPU group) holds the LM.

`RayInfluence` stands in for an influence function inside
`nncift.influence.store.compute_labels`: it has the same ``kind`` / ``name`` / ``pool`` /
``targets`` / ``config()``, and a ``run_tiles`` that the store calls instead of computing
tiles one by one. The store stays the only writer of the label folder, so the on-disk layout,
the fingerprint, the resume rules and the hash checks are exactly those of a local run, and a
run may be started on Ray and finished locally (or the other way round).

Scheduling is Ray's (actors placed by its scheduler with the SPREAD strategy); what this
module adds is what a labelling job needs on top:

* each worker builds the influence function once (LM loaded once per actor), reports its pid,
  node, package versions and the function's config; a version or config mismatch is an error
  before any tile runs;
* at most two tiles in flight per worker, handed out in order; results stream back to the
  store as they finish (completion order; the store records tiles by name);
* a worker that dies (node lost, process killed, OOM) loses only its in-flight tiles: they
  are put back at the front of the queue for the other workers, a replacement worker is
  started, and a tile that kills ``max_attempts`` workers stops the run with an error;
* an exception inside the influence function (bad input, LM error) is not retried: it stops
  the run with the worker's message;
* stopping early (``max_seconds`` in the store, Ctrl-C) cancels what is still queued.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nncift.distributed.cluster import Cluster, check_gpu, check_versions, require_ray
from nncift.errors import InputError
from nncift.influence import Cost, Result, TextItems
from nncift.influence.spec import FunctionSpec

log = logging.getLogger(__name__)

#: Tiles queued on one worker beyond the one it is computing (hides the round trip).
IN_FLIGHT_PER_WORKER = 2


class LabelWorker:
    """A Ray actor (wrapped with ``ray.remote`` at run time) holding one influence function."""

    def __init__(
        self, spec: FunctionSpec, pool: TextItems, targets: TextItems | None, device: str,
        threads: int,
    ) -> None:  # fmt: skip
        import torch

        torch.set_num_threads(max(1, threads))
        self.fn = spec.build(pool, targets, device)

    def hello(self) -> dict[str, Any]:
        import ray

        from nncift.distributed.cluster import package_versions

        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "versions": package_versions(),
            "config": self.fn.config(),
        }

    def tile(
        self, name: str, rows: np.ndarray, cols: np.ndarray | None, pairs: bool = False
    ) -> tuple[str, Any]:
        """A block, points, or (pairs=True) the pairs (rows[k], cols[k]) of a sparse design."""
        if pairs:
            res = self.fn.pairs(rows, cols)
        else:
            res = self.fn.block(rows, cols) if cols is not None else self.fn.points(rows)
        return name, (np.asarray(res.values, dtype=np.float32), asdict(res.cost), res.info)


@dataclass
class _Worker:
    handle: Any
    hello: dict[str, Any] | None = None
    busy: int = 0


@dataclass
class RayStats:
    """What the distributed run did (goes into the manifest)."""

    workers: int = 0
    workers_lost: int = 0
    tiles_retried: int = 0
    tiles_done: int = 0
    nodes: list[str] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)
    startup_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RayInfluence:
    """An influence function whose tiles run on Ray workers (see the module docstring).

    Use as a context manager (workers are stopped on exit)::

        with RayInfluence(spec, pool, targets, cluster) as fn:
            run = compute_labels(fn, out, rows=rows, cols=cols)
    """

    def __init__(
        self,
        spec: FunctionSpec,
        pool: Any,
        targets: Any | None,
        cluster: Cluster,
        *,
        workers: int | None = None,
        cpus_per_worker: int = 1,
        device: str | None = "auto",
        ready_timeout: float = 900.0,
        max_attempts: int = 3,
    ) -> None:
        from nncift.influence import METHODS

        if spec.method not in METHODS:
            raise InputError(f"unknown influence method {spec.method!r}")
        if cpus_per_worker < 1:
            raise InputError(f"cpus per worker must be >= 1, got {cpus_per_worker}")
        if workers is not None and workers < 1:
            raise InputError(f"--ray-workers must be >= 1, got {workers}")
        self.spec = spec
        self.name = spec.method
        self.kind = "pointwise" if spec.method == "selectit" else "pairwise"
        # Plain lists travel to the workers; the store fingerprints the same texts here.
        self.pool = TextItems(list(pool.prompts), list(pool.responses))
        # Without targets a pairwise function labels pool x pool; workers get None, as
        # `make` does locally, and the store fingerprints the pool on both sides.
        self._targets_given = (
            TextItems(list(targets.prompts), list(targets.responses))
            if targets is not None
            else None
        )
        self.targets = self._targets_given if self._targets_given is not None else self.pool
        self.cluster = cluster
        self.use_gpu = check_gpu(cluster, device)
        self.device = "cuda" if self.use_gpu else "cpu"
        self.cpus_per_worker = cpus_per_worker
        biggest = cluster.max_node_cpus()
        if not self.use_gpu and cpus_per_worker > biggest:
            raise InputError(
                f"each worker asks for {cpus_per_worker} CPUs but the largest node of the Ray "
                f"cluster has {biggest}; lower --ray-cpus-per-worker"
            )
        capacity = cluster.gpus if self.use_gpu else cluster.cpus // cpus_per_worker
        self.n_workers = max(1, min(workers or capacity, capacity))
        self.ready_timeout = ready_timeout
        self.max_attempts = max_attempts
        self.stats = RayStats()
        self._workers: list[_Worker] = []
        self._config: dict[str, Any] | None = None
        self._refs: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> RayInfluence:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _actor_class(self) -> Any:
        ray = require_ray()
        return ray.remote(LabelWorker).options(
            num_cpus=self.cpus_per_worker,
            num_gpus=1 if self.use_gpu else 0,
            scheduling_strategy="SPREAD",
            max_restarts=0,
            max_task_retries=0,
        )

    def _spawn(self, n: int) -> list[_Worker]:
        ray = require_ray()
        if "pool" not in self._refs:
            self._refs["pool"] = ray.put(self.pool)
            self._refs["targets"] = ray.put(
                self._targets_given if self.kind == "pairwise" else None
            )
        cls = self._actor_class()
        return [
            _Worker(
                cls.remote(
                    self.spec,
                    self._refs["pool"],
                    self._refs["targets"],
                    self.device,
                    self.cpus_per_worker,
                )
            )  # fmt: skip
            for _ in range(n)
        ]

    def _greet(self, workers: list[_Worker]) -> None:
        """Wait until the workers have built their function; check versions and config."""
        ray = require_ray()
        refs = {w.handle.hello.remote(): w for w in workers}
        t0 = time.perf_counter()
        try:
            ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=self.ready_timeout)
        except KeyboardInterrupt:
            self.close()
            raise
        if pending:
            raise InputError(
                f"{len(pending)} of {len(refs)} Ray workers did not start within "
                f"{self.ready_timeout:.0f} s (not enough free CPUs/GPUs on the cluster, or the "
                "model is slow to load); see `ray status`"
            )
        for ref in ready:
            w = refs[ref]
            try:
                w.hello = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                raise InputError(
                    f"a Ray worker could not build {self.spec.method}: {exc.cause or exc}"
                ) from exc
            except ray.exceptions.RayActorError as exc:
                raise InputError(f"a Ray worker died while starting: {exc}") from exc
            self._accept(w)
        self.stats.startup_seconds += time.perf_counter() - t0

    def start(self) -> None:
        if self._workers:
            return
        workers = self._spawn(self.n_workers)
        self._workers = workers
        self._greet(workers)
        self.stats.workers = len(workers)
        log.info(
            "Ray labelling: %d workers on %d nodes (%s)",
            len(workers), len(self.stats.nodes), self.device,
        )  # fmt: skip

    def close(self) -> None:
        ray = require_ray()
        for w in self._workers:
            with contextlib.suppress(Exception):  # already dead
                ray.kill(w.handle, no_restart=True)
        self._workers = []
        self._refs.clear()

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the live workers (tests kill one of them)."""
        return [int(w.hello["pid"]) for w in self._workers if w.hello]

    # ------------------------------------------------------------------ the store's hooks

    def config(self) -> dict[str, Any]:
        if self._config is None:
            self.start()
        assert self._config is not None
        return self._config

    def block(self, rows: np.ndarray, cols: np.ndarray) -> Result:
        """One block, computed remotely (for callers that do not use `run_tiles`)."""
        for _, res in self.run_tiles([("block", np.asarray(rows), np.asarray(cols))]):
            return res
        raise InputError("no result")  # pragma: no cover

    def points(self, rows: np.ndarray) -> Result:
        for _, res in self.run_tiles([("points", np.asarray(rows), None)]):
            return res
        raise InputError("no result")  # pragma: no cover

    def run_tiles(self, tiles: Sequence[tuple[Any, ...]]) -> Iterator[tuple[str, Result]]:
        """Compute the tiles on the workers; yield (name, Result) as each finishes.

        A tile is (name, rows, cols) of a block (cols None: points) or (name, rows, cols,
        True), the pairs (rows[k], cols[k]) of a sparse design.

        Closing the generator early (the store's time budget, Ctrl-C) cancels what is queued.
        """
        ray = require_ray()
        if not self._workers:
            self.start()
        queue = deque(tiles)
        attempts: dict[str, int] = {}
        pending: dict[Any, tuple[tuple[Any, ...], _Worker]] = {}
        starting: dict[Any, _Worker] = {}
        try:
            while queue or pending:
                for w in self._workers:
                    while queue and w.busy < IN_FLIGHT_PER_WORKER and w.hello is not None:
                        t = queue.popleft()
                        pending[w.handle.tile.remote(*t)] = (t, w)
                        w.busy += 1
                if not pending and not starting:
                    raise InputError("every Ray worker is gone and none could be restarted")
                # Only a worker start is awaited with a timeout: a tile may legitimately run long.
                ready, _ = ray.wait(
                    list(pending) + list(starting),
                    num_returns=1,
                    timeout=None if pending else self.ready_timeout,
                )
                if not ready:
                    raise InputError(
                        f"no Ray worker could be (re)started within {self.ready_timeout:.0f} s; "
                        "the finished tiles are kept: rerun to resume"
                    )
                ref = ready[0]
                if ref in starting:
                    w = starting.pop(ref)
                    self._greet_one(w, ref)
                    continue
                t, w = pending.pop(ref)
                w.busy -= 1
                try:
                    name, (values, cost, info) = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    # The worker is gone (killed, node lost): requeue its tile first in line.
                    if w in self._workers:
                        self._workers.remove(w)
                        self.stats.workers_lost += 1
                        log.warning("Ray worker lost (%s); its tiles go to the others", exc)
                        new = self._spawn(1)[0]
                        starting[new.handle.hello.remote()] = new
                        self._workers.append(new)
                    attempts[t[0]] = attempts.get(t[0], 0) + 1
                    if attempts[t[0]] >= self.max_attempts:
                        raise InputError(
                            f"label tile {t[0]} was lost with {attempts[t[0]]} Ray workers; "
                            "giving up (the finished tiles are kept: rerun to resume)"
                        ) from exc
                    self.stats.tiles_retried += 1
                    queue.appendleft(t)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if exc.cause is not None else exc
                    raise InputError(f"label tile {t[0]} failed on a Ray worker: {cause}") from exc
                self.stats.tiles_done += 1
                yield name, Result(values=values, cost=Cost(**cost), info=info)
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):  # best effort
                    ray.cancel(ref)

    def _greet_one(self, w: _Worker, ref: Any) -> None:
        ray = require_ray()
        try:
            w.hello = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            log.warning("a replacement Ray worker failed to start: %s", exc)
            self._workers.remove(w)
            return
        self._accept(w)
        self.stats.workers += 1

    def _accept(self, w: _Worker) -> None:
        """Check a started worker's versions and config against the driver and the others;
        record its pid and node."""
        assert w.hello is not None
        check_versions(self.cluster.versions, w.hello["versions"], f"node {w.hello['node']}")
        if self._config is None:
            self._config = w.hello["config"]
        elif w.hello["config"] != self._config:
            raise InputError(
                "Ray workers built different influence-function configs "
                f"({w.hello['config']} vs {self._config}); check the model on each node"
            )
        self.stats.worker_pids.append(int(w.hello["pid"]))
        if w.hello["node"] not in self.stats.nodes:
            self.stats.nodes.append(w.hello["node"])


__all__ = ["FunctionSpec", "LabelWorker", "RayInfluence", "RayStats"]
