"""Distributed labelling on Ray versus one process, on this machine (issue 8).

    python benches/bench_ray.py [--lm default|tiny] [--rows 8] [--cols 8] [--tile-rows 1]
                                [--workers 2] [--out docs/ray_bench.json]

Labels the same DELIFT block twice into fresh folders through the same store
(`nncift.influence.store.compute_labels`): once in this process (torch with one thread per
worker's worth of cores, i.e. all cores), once with `RayInfluence` on a local Ray with
``--workers`` actors of one CPU each. Reports wall time, the Ray workers' start-up (LM load
included), time per tile, and the per-tile overhead of the Ray path:

    overhead per tile = (Ray wall - sum over tiles of the tile's own compute / workers) / tiles

where a tile's own compute is what the function measured inside the worker (its `Cost.seconds`).
Checks that both paths give the same labels. On a 2-core box expect little or no gain: the
point is the overhead, and that the same code runs unchanged on a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lm", default="default", help="'default' (SmolLM2-135M) or 'tiny'")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--tile-rows", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import torch
    from nncift.data import load_named
    from nncift.distributed.cluster import connect
    from nncift.distributed.labels import FunctionSpec, RayInfluence
    from nncift.influence import make
    from nncift.influence.store import compute_labels
    from nncift.lm import load_lm, tiny_random_lm

    items = load_named("chatterbot")
    pool, targets = items.split([args.rows, args.cols], seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="nncift-bench-ray-"))
    lm_spec = args.lm
    if args.lm == "tiny":
        tiny = tiny_random_lm(cache=ROOT / ".nncift-cache")
        tiny.model.save_pretrained(tmp / "lm")
        tiny.tokenizer.save_pretrained(tmp / "lm")
        lm_spec = str(tmp / "lm")
    settings = {"max_example_tokens": 96}

    # One process, all cores.
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    lm = load_lm(lm_spec, device="cpu", dtype="float32", max_length=1024)
    t_load = time.perf_counter() - t0
    fn = make("delift", pool, targets, lm=lm, **settings)
    t0 = time.perf_counter()
    local = compute_labels(fn, tmp / "local", tile_rows=args.tile_rows)
    t_local = time.perf_counter() - t0
    assert local.complete and local.values is not None
    del fn, lm

    # Ray: a local single-node Ray with `workers` one-CPU actors.
    t0 = time.perf_counter()
    cluster = connect("local", num_cpus=args.workers)
    t_connect = time.perf_counter() - t0
    spec = FunctionSpec("delift", settings, lm=lm_spec, dtype="float32", max_length=1024)
    rf = RayInfluence(spec, pool, targets, cluster, workers=args.workers, device="cpu")
    t0 = time.perf_counter()
    rf.start()
    t_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    remote = compute_labels(rf, tmp / "ray", tile_rows=args.tile_rows)
    t_ray = time.perf_counter() - t0
    rf.close()
    ray.shutdown()
    assert remote.complete and remote.values is not None
    max_diff = float(np.abs(remote.values - local.values).max())
    tiles = remote.tiles_total
    compute_in_workers = remote.cost.seconds
    overhead = (t_ray - compute_in_workers / args.workers) / tiles
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "lm": args.lm,
        "block": [args.rows, args.cols],
        "tiles": tiles,
        "tile_rows": args.tile_rows,
        "workers": args.workers,
        "local": {
            "lm_load_s": round(t_load, 2),
            "label_s": round(t_local, 2),
            "s_per_tile": round(t_local / tiles, 3),
            "pairs_per_s": round(args.rows * args.cols / t_local, 3),
        },
        "ray": {
            "connect_s": round(t_connect, 2),
            "workers_start_s": round(t_start, 2),
            "label_s": round(t_ray, 2),
            "s_per_tile": round(t_ray / tiles, 3),
            "pairs_per_s": round(args.rows * args.cols / t_ray, 3),
            "compute_in_workers_s": round(compute_in_workers, 2),
            "overhead_per_tile_s": round(overhead, 4),
        },
        "speedup_label_stage": round(t_local / t_ray, 3),
        "max_abs_label_difference": max_diff,
    }
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
