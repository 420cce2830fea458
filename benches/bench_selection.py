# ruff: noqa: E501  (the worker program below is a string run in a subprocess)
"""Selection benchmark: nncift vs submodlib vs apricot in one run (not a test).

1. submodlib's published setting: N points in 1024-d, budget N/10, lazy greedy facility
   location on a dense cosine kernel; times with the kernel given and with its construction.
2. FLMI / FLCG against submodlib (apricot has neither).
3. Scale: N = 100,000 384-d points, sparse kNN kernel built in process (time, peak RSS).

Usage: python benches/bench_selection.py [--sizes 1000 5000 10000] [--mi-n 5000]
       [--scale-n 100000] [--threads 2] [--out results.json]
Each measurement runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

WORKER = r"""
import json, resource, sys, time
import numpy as np
cfg = json.loads(sys.argv[1])
rng = np.random.default_rng(cfg["seed"])
n, d, k = cfg["n"], cfg["d"], cfg["budget"]
# Clustered points (blobs), as in submodlib's benchmark.
centers = rng.normal(size=(max(10, n // 500), d)).astype(np.float32) * 2
x = (centers[rng.integers(0, len(centers), n)] + rng.normal(size=(n, d)).astype(np.float32))
x = x.astype(np.float32)
def kernel_of(a, b=None):
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = an if b is None else b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.clip(an @ bn.T, 0, 1).astype(np.float32)
out = {}
tool, task = cfg["tool"], cfg["task"]
q = x[rng.choice(n, cfg.get("nq", 10), replace=False)] + 0.1 * rng.normal(size=(cfg.get("nq", 10), d)).astype(np.float32)
K = kernel_of(x) if cfg.get("kernel_given") else None
t0 = time.perf_counter()
if tool == "nncift":
    from nncift.selection import select
    kw = dict(budget=k, stop_if_zero_gain=False, n_jobs=cfg["threads"])
    if task == "fl":
        r = select("fl", kernel=K, **kw) if K is not None else select("fl", embeddings=x, mode=cfg.get("mode", "dense"), knn=cfg.get("knn", 10), **kw)
    elif task == "flmi":
        r = select("flmi", kernel=K, query_kernel=kernel_of(x, q), **kw)
    elif task == "flcg":
        r = select("flcg", kernel=K, private_kernel=kernel_of(x, q), **kw)
    out["indices"] = r.indices.tolist()
    out["objective"] = r.objective
    out["timings"] = r.timings
elif tool == "submodlib":
    import submodlib
    if task == "fl":
        if K is not None:
            f = submodlib.FacilityLocationFunction(n=n, mode="dense", sijs=K, separate_rep=False)
        else:
            f = submodlib.FacilityLocationFunction(n=n, mode="dense", data=x, metric="cosine", separate_rep=False)
    elif task == "flmi":
        f = submodlib.FacilityLocationMutualInformationFunction(n=n, num_queries=len(q), data_sijs=K, query_sijs=kernel_of(x, q))
    else:
        f = submodlib.FacilityLocationConditionalGainFunction(n=n, num_privates=len(q), data_sijs=K, private_sijs=kernel_of(x, q))
    res = f.maximize(budget=k, optimizer="LazyGreedy", show_progress=False)
    out["indices"] = [int(i) for i, _ in res]
elif tool == "apricot":
    from apricot import FacilityLocationSelection
    if K is not None:
        s = FacilityLocationSelection(k, metric="precomputed", optimizer="lazy").fit(K.astype(np.float64))
    else:
        s = FacilityLocationSelection(k, metric="cosine", optimizer="lazy").fit(x)
    out["indices"] = [int(i) for i in s.ranking]
out["seconds"] = time.perf_counter() - t0
if task in ("fl", "flmi", "flcg") and n <= 20000:
    KK = K if K is not None else kernel_of(x)
    idx = np.asarray(out["indices"])
    if task == "fl":
        out["check"] = float(np.maximum(KK[:, idx].max(axis=1), 0).astype(np.float64).sum())
    elif task == "flmi":
        cap = kernel_of(x, q).max(axis=1)
        out["check"] = float(np.minimum(KK[:, idx].max(axis=1), cap).astype(np.float64).sum())
    else:
        fl = kernel_of(x, q).max(axis=1)
        out["check"] = float(np.maximum(KK[:, idx].max(axis=1) - fl, 0).astype(np.float64).sum())
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out.pop("indices")
print(json.dumps(out))
"""


def run(cfg: dict, timeout: float = 3600) -> dict:
    env = None
    if cfg.get("threads"):
        import os

        env = dict(
            os.environ, NUMBA_NUM_THREADS=str(cfg["threads"]), OMP_NUM_THREADS=str(cfg["threads"])
        )
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if p.returncode != 0:
        return {
            "error": p.stderr.strip().splitlines()[-1] if p.stderr else "failed",
            "wall": time.perf_counter() - t,
        }
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000, 10000])
    ap.add_argument(
        "--mi-n", type=int, default=5000, help="pool size of the FLMI / FLCG comparison (0 = skip)"
    )
    ap.add_argument(
        "--scale-n", type=int, default=100_000, help="pool size of the sparse scale run (0 = skip)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--no-construction",
        action="store_true",
        help="skip the runs that include kernel construction",
    )
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []

    def record(**kw: object) -> None:
        rows.append(kw)
        print(json.dumps(kw), flush=True)

    for n in a.sizes:
        base = dict(n=n, d=1024, budget=n // 10, seed=0, threads=a.threads, task="fl")
        for given in (True, False) if not a.no_construction else (True,):
            res = {
                t: run(dict(base, tool=t, kernel_given=given))
                for t in ("nncift", "submodlib", "apricot")
            }
            record(setting="fl", n=n, kernel_given=given, **{t: r for t, r in res.items()})
    if a.mi_n:
        for task in ("flmi", "flcg"):
            base = dict(
                n=a.mi_n,
                d=1024,
                budget=a.mi_n // 10,
                seed=0,
                threads=a.threads,
                task=task,
                kernel_given=True,
            )
            res = {t: run(dict(base, tool=t)) for t in ("nncift", "submodlib")}
            record(setting=task, n=a.mi_n, kernel_given=True, **res)
    if a.scale_n:
        cfg = dict(
            n=a.scale_n,
            d=384,
            budget=a.scale_n // 10,
            seed=0,
            threads=a.threads,
            task="fl",
            tool="nncift",
            mode="sparse",
            knn=10,
        )
        record(setting="fl-sparse-scale", n=a.scale_n, kernel_given=False, nncift=run(cfg))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
