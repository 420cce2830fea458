"""Benchmark: pairwise InfluenceNetwork scoring, nncift vs PyTorch, same run, same threads.

    python benches/bench_scorer.py [--threads 2] [--n 20000] [--write-docs]

Columns (pairs per second, higher is better):
  (a) torch, the straightforward batched forward on concatenated inputs [e_i, 0, e_j]
      (measured on a subsample of rows, extrapolated per pair, as stated in the table);
  (b) torch, factorised: P, Q once, then relu(P[tile, None] + Q[None]) @ w2 in row tiles
      (subsampled rows too);
  (c) nncift PairwiseScorer: dense (M, N), top-k (k = 10), aggregate (mean), and
      dense + numpy argpartition for comparison with top-k.
Every nncift result is checked against torch (b) on a few rows; the check is in the table.
Not a test: run it by hand; it writes the "Pairwise scoring" section of docs/benchmarks.md
with --write-docs.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def cpu_info() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    get = lambda key: next(  # noqa: E731
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith(key + ":")), "?"
    )
    flags = get("Flags").split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    mhz = get("CPU max MHz")
    if mhz == "?":
        bogo = get("BogoMIPS")
        mhz = f"{float(bogo) / 2:.0f} (BogoMIPS / 2)" if bogo != "?" else "?"
    return {"model": get("Model name"), "simd": simd, "mhz": mhz, "cpus": get("CPU(s)")}


def timeit(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def make_net(d: int, hidden: list[int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    layers, in0 = [], 2 * d + 1
    for h in [*hidden, 1]:
        s = 1 / np.sqrt(in0)
        layers.append(
            (
                rng.uniform(-s, s, (h, in0)).astype(np.float32),
                rng.uniform(-s, s, h).astype(np.float32),
            )
        )
        in0 = h
    return layers


def torch_modules(layers):
    import torch

    mods = []
    for k, (w, b) in enumerate(layers):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        if k + 1 < len(layers):
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods).eval()


def torch_concat(net, rows, cols, batch: int = 16384) -> np.ndarray:
    """(a): build [e_i, 0, e_j] for batches of pairs and run the network."""
    import torch

    r, c = torch.from_numpy(rows), torch.from_numpy(cols)
    m, n = len(rows), len(cols)
    out = torch.empty(m * n)
    with torch.no_grad():
        for s in range(0, m * n, batch):
            idx = torch.arange(s, min(s + batch, m * n))
            x = torch.cat([r[idx // n], torch.zeros(len(idx), 1), c[idx % n]], 1)
            out[s : s + len(idx)] = net(x)[:, 0]
    return out.reshape(m, n).numpy()


def torch_factorised(layers, rows, cols, d: int) -> np.ndarray:
    """(b): P = E_r W_a^T + b0, Q = E_c W_b^T, then the rest of the network on P_i + Q_j."""
    import torch

    # Row tiles of about 64 MB of activations.
    tile = max(1, int(1.6e7 / (len(cols) * layers[0][0].shape[0])))
    (w0, b0), rest = layers[0], layers[1:]
    w0t = torch.from_numpy(w0)
    with torch.no_grad():
        p = torch.from_numpy(rows) @ w0t[:, :d].T + torch.from_numpy(b0)
        q = torch.from_numpy(cols) @ w0t[:, d + 1 : 2 * d + 1].T
        tail = torch_modules(rest)
        out = torch.empty(len(rows), len(cols))
        for s in range(0, len(rows), tile):
            a = torch.relu(p[s : s + tile, None, :] + q[None, :, :])
            out[s : s + tile] = tail(a)[..., 0]
    return out.numpy()


def bench_case(d: int, hidden: list[int], n: int, threads: int, sub_a: int, sub_b: int) -> dict:
    import torch
    from nncift import PairwiseScorer

    torch.set_num_threads(threads)
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    layers = make_net(d, hidden)
    scorer = PairwiseScorer.from_arrays(layers, embedding_dim=d)
    net = torch_modules(layers)
    pairs = n * n
    res: dict = {"d": d, "hidden": hidden, "n": n}

    ra = emb[:sub_a]
    ta = timeit(lambda: torch_concat(net, ra, emb), repeat=1)
    res["a"] = sub_a * n / ta
    rb = emb[:sub_b]
    tb = timeit(lambda: torch_factorised(layers, rb, emb, d), repeat=1)
    res["b"] = sub_b * n / tb

    # Correctness of (c) on the subsample: against torch (b) and (a).
    want = torch_factorised(layers, emb[:8], emb, d).astype(np.float64)
    got = scorer.score(emb[:8], emb, n_jobs=threads)
    res["max_rel_err"] = float(np.abs(got - want).max() / np.abs(want).max())

    # Deep nets cost O(h_0 h_1) per pair in any implementation: score a row subsample.
    m = n if len(hidden) == 1 else min(n, 200)
    rows = emb[:m]
    res["m"] = m
    td = timeit(lambda: scorer.score(rows, emb, n_jobs=threads), repeat=1 if m * n > 1e8 else 2)
    res["dense"] = m * n / td
    tk = timeit(lambda: scorer.topk(rows, emb, 10, n_jobs=threads), repeat=1)
    res["topk"] = m * n / tk
    tg = timeit(lambda: scorer.aggregate(rows, emb, "mean", n_jobs=threads), repeat=1)
    res["aggregate"] = m * n / tg

    def dense_argpartition() -> None:
        k_mat = scorer.score(rows, emb, n_jobs=threads)
        np.argpartition(-k_mat, 10, axis=1)[:, :10]

    res["dense_argpart"] = m * n / timeit(dense_argpartition, repeat=1)
    res["full_seconds_dense"] = pairs / res["dense"]
    return res


def fmt(x: float) -> str:
    return f"{x:.2e}"


def table(results: list[dict], info: dict, threads: int, sub_a: int, sub_b: int) -> str:
    lines = [
        "## Pairwise scoring",
        "",
        f"`python benches/bench_scorer.py --threads {threads}` on {info['model']} "
        f"({info['cpus']} CPUs, {info['simd']}, ~{info['mhz']} MHz), {threads} threads for every "
        f"column, Python {platform.python_version()}, torch {_torch_version()}. "
        "Pairs per second (higher is better). (a) and (b) are measured on the first "
        f"{sub_a} / {sub_b} rows against all N columns and extrapolated per pair; nncift "
        "columns run the full M x N (deep nets: a stated row subsample). "
        "`err` = max |nncift - torch (b)| / max |torch (b)| on 8 rows x N.",
        "",
        "| d | hidden | M x N | (a) torch concat | (b) torch factorised | (c) nncift dense "
        "| (c) top-10 | (c) mean | dense + argpartition | (c)/(a) | (c)/(b) | err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['d']} | {r['hidden']} | {r['m']} x {r['n']} | {fmt(r['a'])} | {fmt(r['b'])} | "
            f"{fmt(r['dense'])} | {fmt(r['topk'])} | {fmt(r['aggregate'])} | "
            f"{fmt(r['dense_argpart'])} | {r['dense'] / r['a']:.0f}x | "
            f"{r['dense'] / r['b']:.0f}x | {r['max_rel_err']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the '## Pairwise scoring' section, keeping the others."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(r"## Pairwise scoring\n.*?(?=\n## |\Z)", re.S)
    text = (
        pattern.sub(section.rstrip("\n") + "\n", text)
        if pattern.search(text)
        else text.rstrip("\n") + "\n\n" + section
    )
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=20000, help="M = N items")
    ap.add_argument("--dims", default="384,1024")
    ap.add_argument("--sub-a", type=int, default=8, help="rows for torch (a)")
    ap.add_argument("--sub-b", type=int, default=64, help="rows for torch (b)")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    info = cpu_info()
    print(f"CPU: {info}", file=sys.stderr)
    results = []
    for d in (int(x) for x in args.dims.split(",")):
        for hidden in ([100], [500, 100]):
            r = bench_case(d, hidden, args.n, args.threads, args.sub_a, args.sub_b)
            print(r, file=sys.stderr)
            results.append(r)
    out = table(results, info, args.threads, args.sub_a, args.sub_b)
    print(out)
    if args.write_docs:
        write_section(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md", out)


if __name__ == "__main__":
    main()
