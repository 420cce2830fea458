"""Resumable, bounded label computation: finished tiles streamed to disk with a manifest.

``compute_labels(fn, out_dir, rows=..., cols=...)`` computes ``K[rows][:, cols]`` (or the
pointwise values of `rows`) tile by tile. Each finished tile is written atomically as
``tiles/r{a}_c{b}.npy`` and recorded, with its sha256, in ``labels-manifest.json``; the
manifest is rewritten (atomically) after every tile. So:

* an interrupted run (crash, Ctrl-C, `max_seconds` reached) continues where it stopped and
  never recomputes a tile the manifest lists;
* a folder holding labels of a *different* run (other method, settings, data, rows or
  columns: everything is in a fingerprint) is refused, never mixed in;
* a listed tile whose file is missing, unreadable, of the wrong shape or whose hash differs
  is reported (a warning, and ``LabelRun.recomputed``) and computed again — never reused;
* a tile file the manifest does not list (written just before an interruption) is ignored
  and recomputed.

Processes may share a folder (two runs on one cache): the manifest is read, changed and
written under the folder's lock (``.lock``), and a tile is computed under its own lock
(``.locks/<tile>.lock``) after checking again that no other process listed it meanwhile, so
every tile is computed once. A process first takes the tiles nobody holds and then waits
for the others' (computing a tile itself only if its holder died: `flock` locks end with
their process, so a killed run blocks nobody). A function that runs the tiles itself
(`run_tiles`, Ray) holds the folder's compute lock (``.compute.lock``) exclusively, local
runs share it.

When every tile is done, ``labels.npy`` (float32, ``(len(rows), len(cols))`` or
``(len(rows),)``) is assembled next to ``rows.npy`` / ``cols.npy`` (int64 indices into the
pool / targets).

Sparse designs (``pairs=True``, `nncift.designs`): rows and cols are paired, (n,) each, the
pairs (rows[k], cols[k]) to label. The pairs are grouped by pool row (in order of first
appearance) and `tile_rows` rows with all their labelled targets make a tile ``p{a}``, so a
DELIFT example's prefix pass is shared by its targets within the tile; a tile is computed by
``fn.pairs`` (one ``block([row], its targets)`` per row) and stored as a 1-D float32 array of
its pairs. ``labels.npy`` is then (n,) in the order of the given pairs. Everything else
(fingerprint, resume, hashes, locks, Ray) is as for a block.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nncift.errors import InputError
from nncift.influence import Cost, as_index
from nncift.io import file_lock, load_npy, save_npy_atomic, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

MANIFEST = "labels-manifest.json"
#: Lock files: the manifest's (held for short read-change-write steps), the compute lock
#: (shared by local runs, exclusive for `run_tiles`), and one per tile in LOCKS.
LOCK, COMPUTE_LOCK, LOCKS = ".lock", ".compute.lock", ".locks"
FORMAT = "nncift-labels"
FORMAT_VERSION = 1

#: progress(done_tiles, total_tiles, eta_seconds or None)
ProgressFn = Callable[[int, int, "float | None"], None]


def items_digest(items: Any) -> str:
    """sha256 over every prompt and response (order matters) — identifies a data set."""
    h = hashlib.sha256()
    for p, r in zip(items.prompts, items.responses, strict=False):
        for s in (p, r):
            b = s.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()


def _array_digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.int64).tobytes()).hexdigest()


@dataclass
class LabelRun:
    """Outcome of `compute_labels`.

    values: the assembled labels (float32) when complete, else None.
    complete: every tile done. tiles_total / tiles_done: progress over the whole job.
    computed / reused: tiles computed in this call / taken from disk.
    recomputed: tiles found corrupt or mismatched and computed again.
    cost: cost of this call; cost_total: summed over every call that contributed tiles.
    """

    out_dir: Path
    values: np.ndarray | None
    complete: bool
    tiles_total: int
    tiles_done: int
    computed: int
    reused: int
    recomputed: list[str] = field(default_factory=list)
    cost: Cost = field(default_factory=Cost)
    cost_total: Cost = field(default_factory=Cost)
    info: dict[str, Any] = field(default_factory=dict)


def _tiles(
    n_rows: int, n_cols: int | None, tr: int, tc: int
) -> list[tuple[str, slice, slice | None]]:
    out: list[tuple[str, slice, slice | None]] = []
    for a in range(math.ceil(n_rows / tr)):
        rs = slice(a * tr, min(n_rows, (a + 1) * tr))
        if n_cols is None:
            out.append((f"r{a:05d}", rs, None))
            continue
        for b in range(math.ceil(n_cols / tc)):
            out.append((f"r{a:05d}_c{b:05d}", rs, slice(b * tc, min(n_cols, (b + 1) * tc))))
    return out


def _pair_tiles(rows: np.ndarray, tr: int) -> list[tuple[str, np.ndarray]]:
    """Sparse tiles: positions into the pairs, `tr` pool rows (with all their pairs) each.

    Rows are taken in order of first appearance; inside a tile the pairs are grouped by row
    (a row's pairs in their given order)."""
    _, first, inv = np.unique(rows, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # unique rows by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    group = rank[inv]  # (n,) the row's rank for each pair
    positions = np.argsort(group, kind="stable")  # pairs grouped by row, order kept
    bounds = np.searchsorted(group[positions], np.arange(0, order.size + tr, tr))
    out = []
    for a in range(math.ceil(order.size / tr)):
        out.append((f"p{a:05d}", positions[bounds[a] : bounds[a + 1]].astype(np.int64)))
    return out


def _check_tile(path: Path, entry: dict[str, Any]) -> str | None:
    """None if the tile file matches its manifest entry, else what is wrong."""
    if not path.is_file():
        return "file missing"
    if sha256_file(path) != entry.get("sha256"):
        return "sha256 differs from the manifest"
    try:
        arr = load_npy(path)
    except InputError as exc:
        return str(exc)
    if list(arr.shape) != list(entry.get("shape", [])) or arr.dtype != np.float32:
        return f"shape/dtype {arr.shape}/{arr.dtype} differs from the manifest"
    return None


def _read_manifest(mpath: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(mpath.read_text())
    except ValueError as exc:
        raise InputError(
            f"{mpath}: unreadable label manifest ({exc}); use a new --out folder"
        ) from exc
    return manifest


def _check_fingerprint(
    manifest: dict[str, Any], mpath: Path, out: Path, spec: dict[str, Any], fingerprint: str
) -> None:
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{mpath}: not an nncift label manifest of version {FORMAT_VERSION}")
    if manifest.get("fingerprint") != fingerprint:
        old = manifest.get("spec", {})
        diff = sorted(
            k
            for k in spec
            if json.dumps(old.get(k), sort_keys=True, default=str)
            != json.dumps(spec[k], sort_keys=True, default=str)
        )
        raise InputError(
            f"{out} holds labels of a different run "
            f"(differs in: {', '.join(diff) or 'format'}); "
            "use another --out folder or delete this one"
        )


def _cost(d: dict[str, Any]) -> Cost:
    return Cost(**{k: v for k, v in d.items() if k in Cost.__dataclass_fields__})


def _merge_info(info: dict[str, Any], new: dict[str, Any]) -> None:
    """Keep a tile's small facts (truncations, ids) for the manifest."""
    for k, v in new.items():
        if isinstance(v, int | float | str | bool):
            info[k] = v
        elif isinstance(v, dict):
            info.setdefault(k, {}).update({str(a): b for a, b in v.items()})
        elif isinstance(v, list) and len(v) <= 1000:
            if all(isinstance(x, int) for x in v):  # item indices (empty targets): union
                seen = info.setdefault(k, [])
                seen.extend(x for x in v if x not in seen)
            else:  # per-run facts (checkpoint weights): the latest
                info[k] = v


def compute_labels(
    fn: Any,
    out_dir: str | Path,
    *,
    rows: Sequence[int] | np.ndarray | None = None,
    cols: Sequence[int] | np.ndarray | None = None,
    pairs: bool = False,
    tile_rows: int | None = None,
    tile_cols: int | None = None,
    max_seconds: float | None = None,
    progress: ProgressFn | None = None,
    extra: dict[str, Any] | None = None,
) -> LabelRun:
    """Compute labels of influence function `fn` into `out_dir`, resuming what is there.

    Args:
        fn: a pairwise (``fn.block``) or pointwise (``fn.points``) influence function.
        rows, cols: pool rows and target columns (cols ignored for pointwise); None = all.
        pairs: rows and cols are paired (n,) arrays, the pairs of a sparse design (pairwise
            functions only; see the module docstring); tile_rows counts pool rows per tile.
        tile_rows, tile_cols: tile size (defaults: 16 x all columns up to 512 for
            pairwise, 64 rows for pointwise). Part of the fingerprint.
        max_seconds: stop starting new tiles after this long (the run stays resumable);
            at least one tile is computed per call.
        progress: called after every tile with (done, total, eta_seconds).
        extra: more facts for the fingerprint and manifest (e.g. the split).
    """
    out = Path(out_dir)
    pairwise = getattr(fn, "kind", None) == "pairwise"
    n_pool = len(fn.pool)
    r = as_index(rows, n_pool, "row (pool)")
    c = as_index(cols, len(fn.targets), "column (target)") if pairwise else None
    if r.size == 0 or (c is not None and c.size == 0):
        raise InputError("nothing to label: no rows or no columns")
    if pairs:
        if not pairwise or c is None:
            raise InputError("pairs=True needs a pairwise influence function and columns")
        if c.size != r.size:
            raise InputError(f"pairs need as many columns as rows, got {r.size} and {c.size}")
        if np.unique(r * len(fn.targets) + c).size != r.size:
            raise InputError("the pairs to label contain duplicates")
    tr = int(tile_rows or (16 if pairwise else 64))
    tc = int(tile_cols or (min(512, c.size) if c is not None else 1))
    if pairs:
        tc = 1
    if tr < 1 or tc < 1:
        raise InputError(f"tile sizes must be >= 1, got {tr} x {tc}")
    if max_seconds is not None and max_seconds <= 0:
        raise InputError(f"max_seconds must be > 0, got {max_seconds}")
    spec = {
        "kind": "pairwise" if pairwise else "pointwise",
        "config": fn.config(),
        "pool": items_digest(fn.pool),
        "targets": items_digest(fn.targets) if pairwise else None,
        "rows": _array_digest(r),
        "cols": _array_digest(c) if c is not None else None,
        "tile_rows": tr,
        "tile_cols": tc if pairwise else None,
        "extra": extra or {},
    }
    if pairs:  # absent for blocks, so their fingerprints stay as they were
        spec["pairs"] = True
    fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    mpath = out / MANIFEST
    # (name, row positions or pair positions, column slice or None)
    tiles: list[tuple[str, Any, slice | None]]
    if pairs:
        tiles = [(name, pos, None) for name, pos in _pair_tiles(r, tr)]
    else:
        tiles = list(_tiles(r.size, c.size if c is not None else None, tr, tc))
    out.mkdir(parents=True, exist_ok=True)
    tdir, ldir = out / "tiles", out / LOCKS
    with file_lock(out / LOCK):
        if mpath.exists():
            manifest = _read_manifest(mpath)
            _check_fingerprint(manifest, mpath, out, spec, fingerprint)
        else:
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "fingerprint": fingerprint,
                "method": getattr(fn, "name", type(fn).__name__),
                "kind": spec["kind"],
                "shape": [int(r.size)] + ([int(c.size)] if c is not None and not pairs else []),
                "pairs": pairs,
                "spec": spec,
                "tiles": {},
                "cost_total": Cost().to_dict(),
                "complete": False,
            }
            save_npy_atomic(out / "rows.npy", r)
            if c is not None:
                save_npy_atomic(out / "cols.npy", c)
            write_json_atomic(mpath, manifest)
        tdir.mkdir(exist_ok=True)
        ldir.mkdir(exist_ok=True)
        recorded: dict[str, Any] = manifest["tiles"]
        recomputed: list[str] = []
        for name in list(recorded):
            problem = _check_tile(tdir / f"{name}.npy", recorded[name])
            if problem is not None:
                log.warning("label tile %s: %s; computing it again", name, problem)
                recomputed.append(name)
                del recorded[name]
        if recomputed:
            manifest["complete"] = False
            manifest.setdefault("recomputed", []).extend(recomputed)
            write_json_atomic(mpath, manifest)

    def listed() -> dict[str, Any]:
        """The tiles the manifest on disk lists now (other processes add to it)."""
        with file_lock(out / LOCK):
            return dict(_read_manifest(mpath)["tiles"])

    reused = len(recorded)
    computed = 0
    cost = Cost()
    total_cost = _cost(manifest["cost_total"])
    t0 = time.perf_counter()
    pairs_done_now = 0
    todo = [t for t in tiles if t[0] not in recorded]

    def size(t: tuple[str, Any, slice | None]) -> int:
        if pairs:
            return int(t[1].size)
        return (t[1].stop - t[1].start) * ((t[2].stop - t[2].start) if t[2] else 1)

    pairs_left = sum(size(t) for t in todo)
    info: dict[str, Any] = {}
    stopped = False
    done = len(recorded)
    if progress is not None:
        progress(done, len(tiles), None)
    # Work items: (name, rows, cols) of a block or points, (name, rows, cols, True) of pairs.
    work: list[tuple[Any, ...]] = [
        (name, r[rs], c[rs], True)
        if pairs and c is not None
        else (name, r[rs], c[cs] if cs is not None and c is not None else None)
        for name, rs, cs in todo
    ]
    left = {item[0] for item in work}

    def finished(name: str, res: Any) -> None:
        """Store a tile this process computed and list it (the manifest re-read under the
        lock, so other processes' tiles stay listed)."""
        nonlocal computed, cost, total_cost, pairs_done_now, pairs_left, done, stopped
        left.discard(name)
        tile_path = tdir / f"{name}.npy"
        save_npy_atomic(tile_path, res.values)
        entry = {
            "sha256": sha256_file(tile_path),
            "shape": list(res.values.shape),
            "cost": res.cost.to_dict(),
        }
        with file_lock(out / LOCK):
            current = _read_manifest(mpath)
            current["tiles"][name] = entry
            total_cost = _cost(current["cost_total"]) + res.cost
            current["cost_total"] = total_cost.to_dict()
            write_json_atomic(mpath, current)
        cost = cost + res.cost
        computed += 1
        done += 1
        n = res.values.size
        pairs_done_now += n
        pairs_left -= n
        _merge_info(info, res.info)
        if progress is not None:
            rate = (time.perf_counter() - t0) / max(1, pairs_done_now)
            progress(done, len(tiles), rate * pairs_left if pairs_done_now else None)
        # At least one tile per call, so a too-small budget still makes progress.
        if left and max_seconds is not None and time.perf_counter() - t0 >= max_seconds:
            stopped = True

    def taken_by_another(name: str, now: dict[str, Any] | None = None) -> bool:
        """Whether another process sharing the folder has listed this tile meanwhile."""
        nonlocal done, reused
        if name not in (listed() if now is None else now):
            return False
        left.discard(name)
        reused += 1
        done += 1
        return True

    run_tiles = getattr(fn, "run_tiles", None)
    with file_lock(
        out / COMPUTE_LOCK,
        shared=run_tiles is None,
        waiting=f"waiting for another process labelling into {out}",
    ):
        if run_tiles is not None:
            # A function that runs many tiles itself (nncift.distributed.labels.RayInfluence)
            # gets them all and yields them as they finish; it holds the compute lock alone,
            # and this loop stays the only writer of the folder.
            now = listed()
            work = [w for w in work if not taken_by_another(w[0], now)]
            results = run_tiles(work)
            for name, res in results:
                if name not in left:  # never written twice, whatever the executor does
                    log.warning("label tile %s came back twice; keeping the first", name)
                    continue
                finished(name, res)
                if stopped:
                    break
            close = getattr(results, "close", None)
            if close is not None:  # stop a distributed run's queued tiles
                close()
        else:
            # First the tiles no other process holds, then wait for the held ones: their
            # holder lists them (reused here) or dies (computed here).
            deferred: list[tuple[Any, ...]] = []
            for blocking, batch in ((False, work), (True, deferred)):
                for item in batch:
                    name, rows_, cols_ = item[:3]
                    if stopped:
                        break
                    with file_lock(ldir / f"{name}.lock", blocking=blocking) as got:
                        if not got:
                            deferred.append(item)
                            continue
                        if taken_by_another(name):
                            continue
                        if len(item) > 3:
                            res = pair_values(fn, rows_, cols_)
                        elif cols_ is not None:
                            res = fn.block(rows_, cols_)
                        else:
                            res = fn.points(rows_)
                        finished(name, res)

    with file_lock(out / LOCK):
        manifest = _read_manifest(mpath)
        recorded = manifest["tiles"]
        complete = all(name in recorded for name, _, _ in tiles)
        values = None
        labels_path = out / "labels.npy"
        if complete:  # from the listed tiles, always (a labels.npy already there may be stale)
            shape = tuple(manifest["shape"])
            values = np.zeros(shape, dtype=np.float32)
            for name, rs, cs in tiles:
                tile = load_npy(tdir / f"{name}.npy")
                if pairs or cs is None:
                    values[rs] = tile
                else:
                    values[rs, cs] = tile
            save_npy_atomic(labels_path, values)
            manifest["labels_sha256"] = sha256_file(labels_path)
        manifest["complete"] = complete
        if info:
            manifest.setdefault("info", {}).update(info)
        write_json_atomic(mpath, manifest)
        total_cost = _cost(manifest["cost_total"])
    return LabelRun(
        out_dir=out,
        values=values,
        complete=complete,
        tiles_total=len(tiles),
        tiles_done=len(recorded),
        computed=computed,
        reused=reused,
        recomputed=recomputed,
        cost=cost,
        cost_total=total_cost,
        info=info,
    )


def pair_values(fn: Any, rows: np.ndarray, cols: np.ndarray) -> Any:
    """The values of pairs (rows[k], cols[k]) -> `Result` with (n,) float32 values.

    Uses ``fn.pairs`` when the function has it, else one ``fn.block([row], its cols)`` per
    distinct row (a DELIFT example's prefix is then shared by its targets)."""
    own = getattr(fn, "pairs", None)
    if own is not None:
        return own(rows, cols)
    from nncift.influence.base import Result, pairs_by_row

    return pairs_by_row(fn, np.asarray(rows), np.asarray(cols), Result)


def load_labels(
    out_dir: str | Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Read a finished label folder -> (labels float32, rows int64, cols int64 or None, manifest).

    A sparse design's folder (``manifest["pairs"]``) gives (n,) labels of the pairs
    (rows[k], cols[k]).

    Refuses an incomplete run or a labels file whose hash differs from the manifest.
    """
    out = Path(out_dir)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{out}: no readable {MANIFEST} ({exc})") from exc
    if not manifest.get("complete"):
        raise InputError(f"{out}: label computation is not finished; run it again to resume")
    if sha256_file(out / "labels.npy") != manifest.get("labels_sha256"):
        raise InputError(f"{out}/labels.npy: hash differs from the manifest (modified or corrupt)")
    cols = load_npy(out / "cols.npy") if (out / "cols.npy").exists() else None
    return load_npy(out / "labels.npy"), load_npy(out / "rows.npy"), cols, manifest


__all__ = ["MANIFEST", "LabelRun", "compute_labels", "items_digest", "load_labels", "pair_values"]


def compute_labels_with_progress(
    fn: Any,
    out_dir: str | Path,
    *,
    show: bool = True,
    description: str | None = None,
    **kwargs: Any,
) -> LabelRun:
    """`compute_labels` with a rich progress bar (tiles done, elapsed, estimated time left).

    show=False runs silently; every other keyword goes to `compute_labels`.
    """
    if not show:
        return compute_labels(fn, out_dir, **kwargs)
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

    from nncift.progress import bar as progress_bar

    with progress_bar(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[eta]}"),
        transient=False,
    ) as bar:
        task = bar.add_task(description or f"label {fn.name}", total=None, eta="")
        t0 = time.perf_counter()

        def progress(done: int, total: int, eta: float | None) -> None:
            left = "" if eta is None else f"~{eta:,.0f} s left"
            bar.update(
                task, completed=done, total=total, eta=f"{time.perf_counter() - t0:,.0f} s, {left}"
            )

        return compute_labels(fn, out_dir, progress=progress, **kwargs)
