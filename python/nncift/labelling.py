"""Labelling: an influence function's labels for a block of pool (x target) items, stored
resumably.

The one way labels are made. `nncift label` parses its options and calls `label`; the
valuer of `nncift select` (`nncift.valuation.Valuer`) calls it for each block it needs.
`label` builds the function from a `FunctionSpec` (locally, or on Ray workers that each
build their own copy), runs it tile by tile into a folder through
`nncift.influence.store.compute_labels` (an interrupted run resumes; tiles already there are
reused) and returns the run.

    spec = function_spec("delift", seed=0)
    rows, cols = labelled_block(len(pool), len(targets), u=0.05, seed=0)
    result = label(spec, pool, targets, out="labels/", rows=rows, cols=cols)
    result.run.values  # (len(rows), len(cols)) float32 once complete
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nncift.errors import InputError
from nncift.influence import METHODS
from nncift.influence.spec import FunctionSpec
from nncift.influence.store import LabelRun, compute_labels_with_progress
from nncift.manifest import Manifest


def function_spec(
    method: str,
    settings: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    lm: str = "default",
    dtype: str = "auto",
    max_length: int = 2048,
    embedder: str = "default",
) -> FunctionSpec:
    """A `FunctionSpec` with the run's seed as LESS's projection seed (unless `settings`
    give one)."""
    if method not in METHODS:
        raise InputError(f"unknown influence method {method!r}; choose from {', '.join(METHODS)}")
    kw = dict(settings or {})
    if method == "less":
        kw.setdefault("seed", seed)
    return FunctionSpec(method, kw, lm=lm, dtype=dtype, max_length=max_length, embedder=embedder)


def labelled_block(
    n_rows: int,
    n_cols: int | None,
    *,
    u: float = 0.05,
    seed: int = 0,
    exact: bool = False,
    square: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows and columns to label: all of them with `exact`, else the first-u block of the
    seeded shuffle (`nncift.split.u_split`), as in the paper.

    n_cols: number of targets, or None for pointwise labels (columns None). square: a
    pool x pool kernel (n_cols == n_rows), whose labelled block is the same first-u pool
    items on both sides (one shuffle). Returns (rows (r,) int64, cols (c,) int64 or None).
    """
    from nncift.split import u_split

    if exact:
        rows = np.arange(n_rows, dtype=np.int64)
        return rows, None if n_cols is None else np.arange(n_cols, dtype=np.int64)
    split = u_split(n_rows, None if square else n_cols, u=u, seed=seed)
    if n_cols is None:
        return split.rows_in, None
    return split.rows_in, split.cols_in


@dataclass
class Labelled:
    """What `label` did: the store's run, and what the function was.

    run: `LabelRun` (values (rows, cols) or (rows,) float32 when complete, tiles computed /
    reused, cost). kind: pairwise or pointwise. config: the function's settings as recorded
    with the labels. ray: what the Ray workers did (`RayStats.to_dict()`), None locally.
    """

    run: LabelRun
    kind: str
    config: dict[str, Any]
    ray: dict[str, Any] | None = None


def label(
    spec: FunctionSpec,
    pool: Any,
    targets: Any | None = None,
    *,
    out: str | Path,
    rows: np.ndarray | None = None,
    cols: np.ndarray | None = None,
    pairs: bool = False,
    device: str = "auto",
    lm: Any = None,
    pool_embeddings: np.ndarray | None = None,
    target_embeddings: np.ndarray | None = None,
    ray: Any = None,
    tile_rows: int | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    description: str | None = None,
    manifest: Manifest | None = None,
    function: Any = None,
) -> Labelled:
    """Compute (or resume, or reuse) the labels K[rows][:, cols] of `spec` into `out`.

    pool / targets: items with ``prompts`` and ``responses`` (`nncift.data.Items`); targets
    None labels pool x pool (pairwise) or the pool's items (pointwise). rows / cols: indices
    to label (None: all; `labelled_block` gives the paper's first-u block); with `pairs` they
    are paired, the (n,) pairs of a sparse design (`nncift.designs`). device: torch
    device of the LM. lm: an LM already loaded (reused across calls); else it is loaded here,
    in the manifest stage ``load_model``. pool_embeddings / target_embeddings: embeddings
    already computed, for DELIFT (SE). ray: `nncift.distributed.RaySettings` to run the tiles
    on Ray workers that each hold the LM (stages ``ray_connect`` and ``ray_start_workers``;
    DELIFT (SE) given its embeddings runs here: its labels are their cosines). tile_rows /
    max_seconds: tile height and a time limit (a stopped run is continued by calling again).
    function: an influence function already built (`spec.build(...)`), run as given here.
    """
    fn = function
    if fn is None:
        if ray is not None and (spec.needs_lm or pool_embeddings is None):
            return _label_on_ray(
                spec, pool, targets, ray, out=out, rows=rows, cols=cols, pairs=pairs,
                device=device, tile_rows=tile_rows, max_seconds=max_seconds, progress=progress,
                description=description or f"label {spec.method} on Ray", manifest=manifest,
            )  # fmt: skip
        if lm is None and spec.needs_lm:
            with _stage(manifest, "load_model") as rec:
                lm = spec.load_lm(device)
                rec.update(lm.describe())
        fn = spec.build(
            pool, targets, device, lm=lm, pool_embeddings=pool_embeddings,
            target_embeddings=target_embeddings,
        )  # fmt: skip
    run = compute_labels_with_progress(
        fn, out, show=progress, description=description, rows=rows, cols=cols, pairs=pairs,
        tile_rows=tile_rows, max_seconds=max_seconds,
    )  # fmt: skip
    return Labelled(run=run, kind=fn.kind, config=fn.config())


def _label_on_ray(
    spec: FunctionSpec, pool: Any, targets: Any | None, ray: Any, *, out: str | Path,
    rows: np.ndarray | None, cols: np.ndarray | None, pairs: bool, device: str,
    tile_rows: int | None,
    max_seconds: float | None, progress: bool, description: str, manifest: Manifest | None,
) -> Labelled:  # fmt: skip
    """The tiles on Ray workers; the store writes the same folder as a local run."""
    from nncift.distributed.labels import RayInfluence

    with _stage(manifest, "ray_connect") as rec:
        cluster = ray.connect()
        rec.update(cluster.describe())
    fn = RayInfluence(
        spec, pool, targets, cluster, workers=ray.workers,
        cpus_per_worker=ray.cpus_per_worker, device=device,
    )  # fmt: skip
    try:
        with _stage(manifest, "ray_start_workers") as rec:
            fn.start()
            rec.update(workers=fn.stats.workers, nodes=len(fn.stats.nodes), device=fn.device)
        run = compute_labels_with_progress(
            fn, out, show=progress, description=description, rows=rows, cols=cols,
            pairs=pairs, tile_rows=tile_rows, max_seconds=max_seconds,
        )  # fmt: skip
        return Labelled(run=run, kind=fn.kind, config=fn.config(), ray=fn.stats.to_dict())
    finally:
        fn.close()


@contextlib.contextmanager
def _stage(manifest: Manifest | None, name: str) -> Iterator[dict[str, Any]]:
    if manifest is None:
        yield {}
        return
    with manifest.stage(name) as rec:
        yield rec


__all__ = ["FunctionSpec", "Labelled", "function_spec", "label", "labelled_block"]
