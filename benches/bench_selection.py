# ruff: noqa: E501  (the worker program below is a string run in a subprocess)
"""Selection benchmark: nncift vs submodlib vs apricot in one run (not a test).

1. submodlib's published setting: N points in 1024-d, budget N/10, lazy greedy facility
   location on a dense cosine kernel; times with the kernel given (all --sizes) and with its
   construction (--construction-sizes).
2. FLMI / FLCG against submodlib at --mi-n (apricot has neither).
3. Scale: N = --scale-n 384-d points, sparse kNN kernel built in process (time, peak RSS);
   optionally N = --huge-n with partition-and-merge (mode auto), objective against a random
   (objective baselines against random / top-k subsets are not computed yet).
4. CLI: `nncift select --pool FILE` on a --cli-n item jsonl whose embedding cache is
   pre-warmed with synthetic 384-d vectors (so the MiniLM encoder is not timed), via
   /usr/bin/time -v (wall, peak RSS).

Usage: python benches/bench_selection.py [--sizes 5000 10000 20000] [--mi-n 10000]
       [--scale-n 100000] [--huge-n 0] [--cli-n 0] [--threads 2] [--out results.json]
Each measurement runs in a fresh subprocess so its peak RSS is its own; the timer starts after
the data and imports are ready, so it covers the selection call only. "cpu_s" is the
worker's user + system CPU time: on a shared machine, wall time is inflated by other jobs
while cpu_s / threads estimates the wall time on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
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
if tool == "nncift":
    from nncift.selection import select
elif tool == "submodlib":
    import submodlib
elif tool == "apricot":
    from apricot import FacilityLocationSelection
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
if tool == "nncift":
    kw = dict(budget=k, stop_if_zero_gain=False, n_jobs=cfg["threads"])
    if task == "fl":
        r = select("fl", kernel=K, **kw) if K is not None else select("fl", embeddings=x, mode=cfg.get("mode", "dense"), knn=cfg.get("knn", 10), **kw)
        out["mode"] = r.mode
    elif task == "flmi":
        r = select("flmi", kernel=K, query_kernel=kernel_of(x, q), **kw)
    elif task == "flcg":
        r = select("flcg", kernel=K, private_kernel=kernel_of(x, q), **kw)
    out["indices"] = r.indices.tolist()
    out["objective"] = r.objective
    out["timings"] = r.timings
elif tool == "submodlib":
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
    if K is not None:
        s = FacilityLocationSelection(k, metric="precomputed", optimizer="lazy").fit(K.astype(np.float64))
    else:
        s = FacilityLocationSelection(k, metric="cosine", optimizer="lazy").fit(x)
    out["indices"] = [int(i) for i in s.ranking]
out["seconds"] = time.perf_counter() - t0
ru1 = resource.getrusage(resource.RUSAGE_SELF)
out["cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
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


CLI_SETUP = r"""
import json, sys
import numpy as np
from nncift.data import ANSWER_SEPARATOR
from nncift.embed import Embedder, _text_keys
n, path, cache = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rng = np.random.default_rng(0)
words = np.array("alpha beta gamma delta data model train select token answer query reason".split())
prompts, responses = [], []
with open(path, "w") as fh:
    for i in range(n):
        p = f"Task {i}: " + " ".join(rng.choice(words, 12))
        r = " ".join(rng.choice(words, 20)) + f" #{i}"
        prompts.append(p); responses.append(r)
        fh.write(json.dumps({"prompt": p, "response": r}) + "\n")
texts = [p + ANSWER_SEPARATOR + r for p, r in zip(prompts, responses)]
centers = rng.normal(size=(max(10, n // 500), 384)).astype(np.float32) * 2
v = centers[rng.integers(0, len(centers), n)] + rng.normal(size=(n, 384)).astype(np.float32)
v /= np.linalg.norm(v, axis=1, keepdims=True)
emb = Embedder("default", cache_dir=cache)
assert emb.cache is not None
emb.cache.store(_text_keys(texts), v.astype(np.float32))
"""


def cli_run(n: int, threads: int) -> dict:
    """Time `nncift select` on an n-item jsonl with a pre-warmed embedding cache."""
    import os
    import re
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="nncift-bench-cli-")
    try:
        pool, cache, out = f"{tmp}/pool.jsonl", f"{tmp}/cache", f"{tmp}/subset.jsonl"
        subprocess.run([sys.executable, "-c", CLI_SETUP, str(n), pool, cache], check=True)
        nncift = shutil.which("nncift") or "nncift"
        cmd = [
            "/usr/bin/time", "-v", nncift, "select", "--pool", pool, "--prompt-field", "prompt",
            "--response-field", "response", "--method", "embedding", "--objective", "fl",
            "--budget", "0.1", "--cache-dir", cache, "--n-jobs", str(threads), "--out", out,
        ]  # fmt: skip
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        wall = time.perf_counter() - t
        res: dict = {"seconds": wall, "rc": p.returncode}
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
        if m:
            res["peak_rss_mb"] = int(m.group(1)) / 1024
        cpu = re.findall(r"(User|System) time \(seconds\): ([\d.]+)", p.stderr)
        res["cpu_s"] = sum(float(v) for _, v in cpu)
        if p.returncode != 0:
            res["error"] = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"
        else:
            with open(out) as fh:
                res["selected"] = sum(1 for _ in fh)
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[5000, 10000, 20000])
    ap.add_argument(
        "--construction-sizes",
        type=int,
        nargs="*",
        default=[10000],
        help="sizes also run with the kernel built from the points inside the timer",
    )
    ap.add_argument(
        "--mi-n", type=int, default=10000, help="pool size of the FLMI / FLCG comparison (0 = skip)"
    )
    ap.add_argument(
        "--scale-n", type=int, default=100_000, help="pool size of the sparse scale run (0 = skip)"
    )
    ap.add_argument(
        "--huge-n", type=int, default=0, help="pool size of the partition-and-merge run (0 = skip)"
    )
    ap.add_argument(
        "--cli-n", type=int, default=0, help="items of the CLI end-to-end run (0 = skip)"
    )
    ap.add_argument(
        "--tools", nargs="*", default=["nncift", "submodlib", "apricot"], help="tools to compare"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []

    def record(**kw: object) -> None:
        kw["loadavg"] = os.getloadavg()
        rows.append(kw)
        print(json.dumps(kw), flush=True)

    for n in a.sizes:
        base = dict(n=n, d=1024, budget=n // 10, seed=0, threads=a.threads, task="fl")
        for given in (True, False) if n in a.construction_sizes else (True,):
            res = {t: run(dict(base, tool=t, kernel_given=given)) for t in a.tools}
            record(setting="fl", n=n, kernel_given=given, **res)
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
            res = {t: run(dict(base, tool=t)) for t in a.tools if t != "apricot"}
            record(setting=task, n=a.mi_n, kernel_given=True, **res)
    for n, mode in ((a.scale_n, "sparse"), (a.huge_n, "auto")):
        if not n:
            continue
        cfg = dict(
            n=n,
            d=384,
            budget=n // 10,
            seed=0,
            threads=a.threads,
            task="fl",
            tool="nncift",
            mode=mode,
            knn=10,
        )
        record(setting=f"fl-{mode}-scale", n=n, kernel_given=False, nncift=run(cfg))
    if a.cli_n:
        record(setting="cli-select", n=a.cli_n, nncift=cli_run(a.cli_n, a.threads))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
