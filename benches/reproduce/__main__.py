"""Entry point: `python -m benches.reproduce [--quick]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import FULL, QUICK, ROOT, Cache, Data, _jsonable, log, machine_facts
from .cost import measure_costs
from .downstream import downstream_small
from .labels import exact_labels
from .network_error import delift_error, se_error, se_plots
from .probe import probe_section
from .report import numbers, render
from .selection import selection, small_subsets


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benches.reproduce",
        description="Regenerate docs/reproduction.md: our measurements of the NN-CIFT paper's claims.",
    )
    ap.add_argument("--quick", action="store_true", help="small smoke run (a few minutes)")
    ap.add_argument("--cache", default=str(ROOT / ".nncift-cache" / "repro"))
    ap.add_argument(
        "--out",
        default=None,
        help="report path (default docs/reproduction.md; --quick: <cache>/quick/reproduction.md)",
    )
    ap.add_argument("--img", default=None, help="PNG folder (default: img/ next to the report)")
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="re-render the report and plots from the last run's results.json (no compute)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is 2-3x faster than 2 on this contended box: measured)",
    )
    ap.add_argument(
        "--labels-only",
        default=None,
        help="compute only these real-LM label matrices (comma list of delift, less, selectit) "
        "into the cache and exit; run one per core, then the full run reuses the tiles",
    )
    ap.add_argument(
        "--probe-timing",
        action="store_true",
        help="time one fine-tune + evaluation at the probe's sizes, project the probe's run "
        "time, write <cache>/probe-timing.json and exit",
    )
    ap.add_argument(
        "--probe-only",
        action="store_true",
        help="run (or resume) only section 6, the task-targeted probe, into <cache>/probe.json",
    )
    ap.add_argument(
        "--gpu",
        action="store_true",
        help="with --probe-only: the larger probe of config.PROBE_GPU on CUDA (benches/"
        "gpu_probe.sh), into <cache>/gpu/probe.json; the next full run reports it separately",
    )
    args = ap.parse_args()
    if args.gpu and not args.probe_only:
        ap.error("--gpu goes with --probe-only")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("nncift", "httpx", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Mean of empty slice")
    cfg = QUICK if args.quick else FULL
    cache = Cache(Path(args.cache) / cfg.name)
    # A quick run is a smoke test: its report stays in the cache, never in docs/.
    default_out = (
        ROOT / "docs" / "reproduction.md" if not args.quick else cache.root / "reproduction.md"
    )
    out_path = Path(args.out) if args.out else default_out
    img_dir = Path(args.img) if args.img else out_path.parent / "img"
    n_cached = len(list(cache.root.glob("*.json")))
    t_start = time.perf_counter()
    R: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M %Z"), "stage_seconds": {}}
    emb_dirs = list((Path(args.cache) / "embeddings").glob("*/*.keys.npy"))
    tiles = list(cache.root.glob("delift-*/tiles/*.npy"))
    R["cached_note"] = (
        f"{n_cached} cached stage results, {len(tiles)} DELIFT label tiles and "
        f"{len(emb_dirs)} embedding-cache shards were present at the start"
    )
    R["machine"] = machine_facts(args.threads)
    if args.render_only:
        from nncift.io import write_text_atomic

        R = json.loads((cache.root / "results.json").read_text())
        images = se_plots(cfg, R["se"], img_dir)
        img_link = os.path.relpath(img_dir, out_path.parent)
        write_text_atomic(out_path, render(cfg, R, images, img_link) + "\n")
        write_text_atomic(out_path.with_suffix(".json"), json.dumps(numbers(cfg, R), indent=1))
        print(f"re-rendered {out_path} from {cache.root / 'results.json'}")
        return

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        log.info("stage %s ...", name)
        t0 = time.perf_counter()
        out = fn()
        R["stage_seconds"][name] = time.perf_counter() - t0
        log.info("stage %s done in %.1f s", name, R["stage_seconds"][name])
        return out

    if args.labels_only:  # needs only the LM, not the ShareGPT embeddings
        only = {x.strip() for x in args.labels_only.split(",") if x.strip()}
        unknown = only - {"delift", "less", "selectit"}
        if unknown:
            ap.error(f"--labels-only: unknown function(s) {sorted(unknown)}")
        from nncift.lm import load_lm

        exact_labels(cfg, stage("load_lm", lambda: load_lm("default", device="cpu")), cache, only)
        print(f"labels computed for {sorted(only)} in {cache.root}")
        return
    if args.probe_timing or args.probe_only:
        from nncift.embed import Embedder
        from nncift.lm import load_lm

        from .probe import time_one, write_timing

        if args.gpu:
            from dataclasses import replace

            from .config import PROBE_GPU

            cfg = replace(cfg, name="gpu", probe=PROBE_GPU)
            cache = Cache(Path(args.cache) / "gpu")
        device = "cuda" if args.gpu else "cpu"
        lm = stage("load_lm", lambda: load_lm("default", device=device))
        emb = Embedder(cache_dir=Path(args.cache), progress=False, device=device)
        if args.probe_timing:
            timing = stage("probe_timing", lambda: time_one(cfg, lm, emb, cache))
            write_timing(cache.root / "probe-timing.json", timing)
            print(json.dumps({k: timing[k] for k in ("measured", "projected_seconds")}, indent=1))
            return
        res = stage("probe", lambda: probe_section(cfg, lm, emb, cache))
        write_timing(cache.root / "probe.json", res)
        print(
            f"probe: {res['n_runs']} runs ({res['n_cached']} cached) in {res['wall_seconds']:.0f} s"
        )
        return
    # The embeddings are shared by quick and full runs (content-addressed cache).
    cache_emb = Cache(Path(args.cache))
    data = stage("data+embeddings", lambda: Data(cfg, cache_emb))
    R["data"] = {
        "n_source": data.n_source,
        "m": len(data.pool),
        "n": len(data.target),
        "embedder": data.model_id,
    }
    from nncift.lm import load_lm

    lm = stage("load_lm", lambda: load_lm("default", device="cpu"))
    R["cost"] = stage("cost", lambda: measure_costs(cfg, data, lm, cache))
    R["se"] = stage("se_error", lambda: se_error(cfg, data, cache))
    images = stage("plots", lambda: se_plots(cfg, R["se"], img_dir))
    R["selection"] = stage("selection", lambda: selection(cfg, data, cache))
    labels = stage("exact_labels", lambda: exact_labels(cfg, lm, cache))
    R["labels"] = {
        k: (
            {kk: vv for kk, vv in v.items() if kk != "values"}
            | {"range": [float(np.min(v["values"])), float(np.max(v["values"]))]}
            if isinstance(v, dict)
            else v
        )
        for k, v in labels.items()
    }
    R["delift"] = stage("delift_error", lambda: delift_error(cfg, labels, data.embedder, cache))
    R["small"] = stage("small_subsets", lambda: small_subsets(cfg, labels, data.embedder, cache))
    R["downstream"] = stage(
        "downstream", lambda: downstream_small(cfg, lm, data.embedder, R["small"], cache)
    )
    R["probe"] = stage("probe", lambda: probe_section(cfg, lm, data.embedder, cache))
    gpu = Path(args.cache) / "gpu" / "probe.json"
    if gpu.is_file():  # a GPU machine's larger probe (benches/gpu_probe.sh), reported apart
        R["probe_gpu"] = json.loads(gpu.read_text())
    R["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    R["wall_s"] = time.perf_counter() - t_start
    from nncift.io import write_text_atomic

    img_link = os.path.relpath(img_dir, out_path.parent)
    # Results first: a rendering error must not lose the run (--render-only re-renders).
    write_text_atomic(cache.root / "results.json", json.dumps(R, indent=1, default=_jsonable))
    write_text_atomic(out_path, render(cfg, R, images, img_link) + "\n")
    write_text_atomic(
        out_path.with_suffix(".json"), json.dumps(numbers(cfg, R), indent=1, default=_jsonable)
    )
    print(f"wrote {out_path} in {R['wall_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
