"""Cost of the four influence functions on the real SmolLM2-135M-Instruct (CPU by default).

Run:  python benches/bench_influence.py [--pool-size 4 --targets 4 --threads 2 --json out.json]

Measures, side by side in one process on the same IFBench items:

* DELIFT three ways on one pool x target block, interleaved `--reps` times (the box's load
  drifts by minutes; min and median are reported): a plain unbatched reference (two full
  forwards per pair, full logits, nothing reused — the 0.9 s/pair implementation the issue
  quotes), ours without KV reuse (batched, no-example pass once per target, logits only at
  response positions), and ours with KV reuse of the example prefix. Values must agree.
* LESS (small warm-up), SelectIT (K = 5 prompts), DELIFT (SE) (MiniLM embeddings).

Then extrapolates each to the full matrix at M = 2,000, N = 500 and to the Q1 block at
u = 0.05 (100 x 25), from the measured per-pair / per-item costs — an extrapolation from a
small sample, stated as such in the output.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np


def reference_delift(
    lm: Any, fn: Any, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, float, int]:
    """The plain implementation: per pair, two full forwards with full logits, nothing cached."""
    import torch
    from nncift.influence.delift import distance

    out = np.zeros((rows.size, cols.size))
    tokens = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for a, i in enumerate(rows):
            ex, _ = fn._example(int(i))
            for b, t in enumerate(cols):
                q = fn._query(int(t))
                ds = []
                for ids, start in (
                    (fn._h0 + q["q0"] + q["resp"], len(fn._h0) + len(q["q0"])),
                    (
                        fn._h1 + ex + fn._tail + q["q1"] + q["resp"],
                        len(fn._h1) + len(ex) + len(fn._tail) + len(q["q1"]),
                    ),
                ):
                    x = torch.tensor([ids])
                    logp = lm.model(input_ids=x).logits[0].float().log_softmax(-1)
                    k = torch.arange(start, len(ids))
                    ds.append(distance(logp[k - 1, x[0, k]].numpy()))
                    tokens += len(ids)
                out[a, b] = ds[0] - ds[1]
    return out, time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool-size", type=int, default=4)
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--max-response-tokens", type=int, default=96, help="pick items with responses this short"
    )
    ap.add_argument("--skip", default="", help="comma list of: less,selectit,se")
    ap.add_argument("--json", default=None)
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of DELIFT")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from nncift.data import load_named
    from nncift.influence.delift import Delift
    from nncift.lm import load_lm

    lm = load_lm("default", device="cpu")
    items = load_named("ifbench")
    tok = lm.tokenizer
    short = [
        i
        for i in range(len(items))
        if len(tok(items.responses[i]).input_ids) <= args.max_response_tokens
    ]
    rng = np.random.default_rng(0)
    pick = rng.choice(short, size=args.pool_size + args.targets, replace=False)
    pool = items.subset(pick[: args.pool_size])
    targets = items.subset(pick[args.pool_size :])
    M, N, u = 2000, 500, 0.05
    mq, nq = math.ceil(u * M), math.ceil(u * N)
    report: dict[str, Any] = {
        "sample": {
            "pool": args.pool_size,
            "targets": args.targets,
            "threads": args.threads,
            "items_with_short_responses": len(short),
        }
    }
    pairs = args.pool_size * args.targets
    kw = {"max_example_tokens": 96, "max_prompt_tokens": 96}

    # ---------------- DELIFT, three ways on the same block, interleaved (the load drifts)
    rows, cols = np.arange(args.pool_size), np.arange(args.targets)
    runs: dict[str, list[float]] = {"reference": [], "no_kv": [], "kv": []}
    facts: dict[str, tuple[int, int, float]] = {}
    for _ in range(args.reps):
        ref_fn = Delift(pool, targets, lm=lm, **kw)
        ref_vals, ref_s, ref_tok = reference_delift(lm, ref_fn, rows, cols)
        runs["reference"].append(ref_s)
        facts["reference"] = (2 * pairs, ref_tok, 0.0)
        for name, flag in (("no_kv", False), ("kv", True)):
            res = Delift(pool, targets, lm=lm, kv_reuse=flag, **kw).block(rows, cols)
            runs[name].append(res.cost.seconds)
            diff = float(np.abs(res.values - ref_vals).max())
            facts[name] = (res.cost.lm_passes, res.cost.tokens, diff)
    report["delift"] = {
        name: {
            "s_per_pair_min": min(v) / pairs,
            "s_per_pair_median": float(np.median(v)) / pairs,
            "runs_s": v,
            "lm_passes": facts[name][0],
            "tokens_per_pair": facts[name][1] / pairs,
            "max_abs_diff_vs_reference": facts[name][2],
        }
        for name, v in runs.items()
    }
    per_pair = min(runs["kv"]) / pairs
    report["delift"]["extrapolated_from_kv_min"] = {
        "full_M2000_N500_s": per_pair * M * N,
        "q1_u005_s": per_pair * mq * nq,
    }
    print(json.dumps(report["delift"], indent=2), flush=True)
    skip = set(filter(None, args.skip.split(",")))
    # ---------------- LESS (small warm-up so it fits a CPU benchmark)
    if "less" not in skip:
        from nncift.influence.less import Less

        lpool = items.subset(pick)  # warm-up draws from this pool
        fn = Less(lpool, targets, lm=lm, warmup_fraction=0.5, epochs=1, proj_dim=512, batch_size=4)
        t0 = time.perf_counter()
        fn.warm_up()
        warm_s = time.perf_counter() - t0
        res = fn.block(np.arange(args.pool_size), np.arange(args.targets))
        n_items = args.pool_size + args.targets
        n_warm = len(fn.warmup_rows) if fn.warmup_rows is not None else 0
        warm_per_item_epoch = warm_s / max(1, n_warm)
        per_item = res.cost.seconds / n_items  # gradient + projection per item per checkpoint
        report["less"] = {
            "warmup_s": warm_s,
            "warmup_items": n_warm,
            "checkpoints": 1,
            "s_per_item_gradient": per_item,
            "lm_passes": res.cost.lm_passes,
            "backward_passes": res.cost.backward_passes,
            "tokens": res.cost.tokens,
            "extrapolated": {
                # paper setting: 4 checkpoints, warm-up on 5% of M for 4 epochs
                "full_M2000_N500_s": 4 * per_item * (M + N) + 4 * 0.05 * M * warm_per_item_epoch,
                "q1_u005_s": 4 * per_item * (mq + nq) + 4 * 0.05 * M * warm_per_item_epoch,
            },
        }
    # ---------------- SelectIT
    if "selectit" not in skip:
        from nncift.influence.selectit import SelectIT

        res = SelectIT(pool, lm=lm).points()
        per_pt = res.cost.seconds / args.pool_size
        report["selectit"] = {
            "s_per_point": per_pt,
            "lm_passes": res.cost.lm_passes,
            "tokens": res.cost.tokens,
            "extrapolated": {"full_M2000_s": per_pt * M, "q1_u005_s": per_pt * mq},
        }
    # ---------------- DELIFT (SE)
    if "se" not in skip:
        from nncift.influence.delift_se import DeliftSE

        fn_se = DeliftSE(pool, targets, embed_kwargs={"use_cache": False, "progress": False})
        res = fn_se.block()
        per_text = res.cost.seconds / (args.pool_size + args.targets)
        report["delift_se"] = {
            "s_per_text_incl_model_load": per_text,
            "embed_texts": res.cost.embed_texts,
            "extrapolated": {
                "full_M2000_N500_s": per_text * (M + N),
                "q1_u005_s": per_text * (mq + nq),
            },
        }

    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
