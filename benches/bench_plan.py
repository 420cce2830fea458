"""Plan against actual: `nncift select --dry-run`'s label time beside the run's own label time.

    python benches/bench_plan.py [--limit 60] [--targets 20] [--u 0.2] [--methods delift,less,selectit]
                                 [--data sharegpt,chatterbot] [--out docs/plan_vs_actual.json]

For each data set and LM method: the first `--limit` items of the packaged data set are the
pool (LESS: the next `--targets` items are its target set, written to a file), and

1. `nncift select ... --dry-run` prints the plan; its `label_*` lines (LM load + passes,
   priced by the cached probe of the LM on this machine) are summed;
2. `nncift select ...` runs for real with a fresh label cache; the actual label time is the
   `load_lm` stage plus the `label_*` stages of its manifest (OUT stem + .manifest.json).

Both are the CLI in a fresh process, as a user would run them. The probe is run (and cached)
by the first plan of each method, in a probe cache shared by all plans; its time is reported
apart. The ratio planned / actual is the figure of merit (issue 14 asks for 0.5 .. 2).
The load average is recorded beside every row: a busy 2-core machine doubles the actual time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The console script beside this interpreter (the installed package).
NNCIFT = [str(Path(sys.executable).parent / "nncift")]
#: One `label_*` line of the plan: "  label_q1   ... (~12 s: LM load 3 s + passes 9 s)".
PLAN_LINE = re.compile(r"^\s+(label_\w+)\s.*~([\d,]+) s: LM load ([\d,]+) s \+ passes ([\d,]+) s")


def _load() -> float:
    return os.getloadavg()[0]


def _nncift(*args: str, env: dict[str, str]) -> tuple[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([*NNCIFT, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"nncift {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout, seconds


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def parse_plan(text: str) -> dict[str, float]:
    """Planned seconds per label stage (LM load + passes) from the plan's text."""
    stages = {}
    for line in text.splitlines():
        m = PLAN_LINE.match(line)
        if m:
            stages[m.group(1)] = _num(m.group(3)) + _num(m.group(4))
    if not stages:
        raise SystemExit(f"no label stage in the plan:\n{text}")
    return stages


def write_items(path: Path, items: Any, lo: int, hi: int) -> None:
    with path.open("w") as f:
        for i in range(lo, hi):
            rec = {"id": items.ids[i], "prompt": items.prompts[i], "response": items.responses[i]}
            f.write(json.dumps(rec) + "\n")


def run_one(
    data: str, method: str, args: argparse.Namespace, work: Path, probe_cache: Path
) -> dict:
    from nncift.data import load_items

    items = load_items(f"builtin:{data}", limit=args.limit + args.targets)
    pool = work / f"{data}-pool.jsonl"
    write_items(pool, items, 0, args.limit)
    common = ["--pool", str(pool), "--method", method, "--budget", str(args.budget),
              "--u", str(args.u), "--seed", "0"]  # fmt: skip
    if method == "less":
        target = work / f"{data}-target.jsonl"
        write_items(target, items, args.limit, args.limit + args.targets)
        common += ["--target", str(target)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")

    load_before = _load()
    plan_text, plan_wall = _nncift(
        "select",
        *common,
        "--cache-dir",
        str(probe_cache),
        "--out",
        str(work / "unused.jsonl"),
        "--dry-run",
        env=env,
    )
    planned = parse_plan(plan_text)
    probed = "probed now" in plan_text

    run_cache = Path(tempfile.mkdtemp(dir=work, prefix=f"{data}-{method}-"))
    manifest = run_cache / "subset.manifest.json"  # OUT stem + .manifest.json
    out = run_cache / "subset.jsonl"
    load_run = _load()
    _, run_wall = _nncift(
        "select", *common, "--cache-dir", str(run_cache), "--out", str(out), env=env,
    )  # fmt: skip
    stages = json.loads(manifest.read_text())["stages"]
    actual = {k: v["seconds"] for k, v in stages.items() if k.startswith("label_")}
    load_lm = stages.get("load_lm", {}).get("seconds", 0.0)
    plan_total = sum(planned.values())
    actual_total = load_lm + sum(actual.values())
    row = {
        "data": data,
        "method": method,
        "pool": args.limit,
        "targets": args.targets if method == "less" else None,
        "u": args.u,
        "planned_label_s": round(plan_total, 2),
        "actual_label_s": round(actual_total, 2),
        "ratio_planned_over_actual": round(plan_total / actual_total, 3),
        "planned_stages_s": planned,
        "actual_stages_s": {"load_lm": load_lm, **actual},
        "plan_wall_s": round(plan_wall, 2),
        "plan_probed_now": probed,
        "run_wall_s": round(run_wall, 2),
        "load_average_at_plan": round(load_before, 2),
        "load_average_at_run": round(load_run, 2),
        "load_average_after": round(_load(), 2),
    }
    print(
        f"{data:<11} {method:<9} planned {plan_total:7.1f} s  actual {actual_total:7.1f} s  "
        f"ratio {plan_total / actual_total:5.2f}  (plan {plan_wall:.0f} s"
        f"{', probed' if probed else ''}; load {load_run:.2f})",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--targets", type=int, default=20, help="LESS target items")
    ap.add_argument("--u", type=float, default=0.2)
    ap.add_argument("--budget", type=float, default=0.2)
    ap.add_argument("--methods", default="delift,less,selectit")
    ap.add_argument("--data", default="sharegpt,chatterbot")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "plan_vs_actual.json")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        work = Path(tmp)
        probe_cache = work / "probe-cache"
        for data in args.data.split(","):
            for method in args.methods.split(","):
                rows.append(run_one(data, method, args, work, probe_cache))
    result = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
