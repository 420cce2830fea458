"""Build the larger real DELIFT matrix of the valuation benchmark, resumably, from packages.

A mixed pool of 300 items (100 each from ShareGPT, IFBench and chatterbot first turns) and
100 targets (34 / 33 / 33, no prompt shared with the pool), responses and prompts cut to
`--max-chars` characters so that the whole 30,000-pair matrix runs in hours on 2 cores. The
inputs are rebuilt from the installed data packages every time (ShareGPT's licence is not
stated, so its texts are never committed); only the numbers are: the label folder
`benches/data/delift_mixed_300x100/` (tiles, `labels-manifest.json` with the inputs' sha256,
and `labels.npy` once complete) is in git, so a fresh clone continues from the committed
tiles instead of starting over, and a changed input (a new package version) is refused by
the label store's fingerprint rather than mixed in.

    python benches/build_matrix.py --max-seconds 3000     # label for ~50 minutes, then stop
    python benches/build_matrix.py --inputs-only          # write pool / targets, print hashes

Labelling runs `nncift label --method delift --all` with the settings of the stored 140 x 70
chatterbot matrix (max_example_tokens = max_prompt_tokens = 64, KV reuse), one torch thread
by default so the machine stays usable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from nncift.data import Items, load_named

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benches" / "data" / "delift_mixed_300x100"
SOURCES = ("sharegpt", "ifbench", "chatterbot")
POOL_PER_SOURCE = 100
TARGETS_PER_SOURCE = (34, 33, 33)
# The pointwise / gradient matrices (LESS, SelectIT) are cheap per item, so their pool is the
# 300 DELIFT items plus more of each source, drawn after the targets (the 300 stay a subset, so
# the functions can be compared on them): 1,000 items.
LARGE_POOL_PER_SOURCE = (420, 240, 340)
OUTS = {
    "delift": OUT,
    "less": ROOT / "benches" / "data" / "less_mixed_1000x100",
    "selectit": ROOT / "benches" / "data" / "selectit_mixed_1000",
}
# Settings of the stored 140 x 70 chatterbot labels (benches/reproduce/labels.py).
METHOD_SETTINGS = {
    "delift": ("max_example_tokens=64", "max_prompt_tokens=64"),
    "less": ("proj_dim=512", "batch_size=2", "max_prompt_tokens=128", "epochs=1"),
    "selectit": ("max_sample_tokens=256",),
}
SEED = 20261203


def _cut(text: str, max_chars: int) -> str:
    text = text.strip()
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + " ..."


def build_inputs(
    max_chars: int, large: bool = False
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Pool and target records: seeded samples per source, disjoint by normalised prompt.

    `large` gives the 1,000-item pool: the same first 100 per source, then the items drawn
    after the targets (the targets are the same either way)."""
    rng = np.random.default_rng(SEED)
    pool: list[dict[str, str]] = []
    targets: list[dict[str, str]] = []
    seen: set[str] = set()
    extra: list[dict[str, str]] = []
    for source, n_targets, n_large in zip(
        SOURCES, TARGETS_PER_SOURCE, LARGE_POOL_PER_SOURCE, strict=True
    ):
        wanted = POOL_PER_SOURCE + n_targets + (n_large - POOL_PER_SOURCE if large else 0)
        items: Items = load_named(source)
        order = rng.permutation(len(items))
        picked: list[dict[str, str]] = []
        for i in order:
            prompt = _cut(items.prompts[i], max_chars)
            key = " ".join(prompt.lower().split())
            if key in seen or not items.responses[i].strip():
                continue
            seen.add(key)
            picked.append(
                {
                    "id": f"{source}-{items.ids[i]}",
                    "prompt": prompt,
                    "response": _cut(items.responses[i], max_chars),
                    "source": source,
                }
            )
            if len(picked) == wanted:
                break
        if len(picked) < wanted:
            raise SystemExit(f"{source}: only {len(picked)} distinct items")
        pool += picked[:POOL_PER_SOURCE]
        targets += picked[POOL_PER_SOURCE : POOL_PER_SOURCE + n_targets]
        extra += picked[POOL_PER_SOURCE + n_targets :]
    return pool + extra, targets


def _write_jsonl(path: Path, records: list[dict[str, str]]) -> str:
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "nncift" / "matrix")
    ap.add_argument("--method", choices=sorted(OUTS), default="delift")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--max-chars", type=int, default=320)
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tile-rows", type=int, default=5)
    ap.add_argument("--inputs-only", action="store_true")
    args = ap.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    large = args.method != "delift"
    pool, targets = build_inputs(args.max_chars, large=large)
    pool_path = args.work / ("pool_1000.jsonl" if large else "pool.jsonl")
    target_path = args.work / "targets.jsonl"
    out = args.out or OUTS[args.method]
    hashes = {"pool": _write_jsonl(pool_path, pool), "targets": _write_jsonl(target_path, targets)}
    print(json.dumps({"pool_items": len(pool), "targets": len(targets), "sha256": hashes}))
    if args.inputs_only:
        return 0
    cmd = [
        str(Path(sys.executable).parent / "nncift"), "label", "--method", args.method, "--all",
        "--pool", str(pool_path), "--out", str(out),
        "--threads", str(args.threads), "--tile-rows", str(args.tile_rows),
    ]  # fmt: skip
    if args.method != "selectit":
        cmd += ["--target", str(target_path)]
    for setting in METHOD_SETTINGS[args.method]:
        cmd += ["--set", setting]
    if args.max_seconds is not None:
        cmd += ["--max-seconds", str(args.max_seconds)]
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())
