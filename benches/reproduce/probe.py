"""Section 6: the task-targeted downstream probe (`nncift.probe`), its timing and projection."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .config import Cache, Config, log


def probe_section(cfg: Config, lm: Any, embedder: Any, cache: Cache) -> dict[str, Any]:
    """Run (or resume) the probe: every fine-tune is cached under <cache>/probe."""
    from nncift.probe import run_probe

    t0 = time.perf_counter()
    out = run_probe(cfg.probe, lm, embedder, cache_dir=cache.root / "probe", progress=log.info)
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def _train_tokens(lm: Any, items: Any, max_length: int) -> int:
    from nncift.downstream import training_example

    return sum(
        len(training_example(lm, p, r, max_length)[0])
        for p, r in zip(items.prompts, items.responses, strict=True)
    )


def time_one(
    cfg: Config, lm: Any, embedder: Any, cache: Cache, row: str = "random"
) -> dict[str, Any]:
    """Time one fine-tune + NLL / ROUGE evaluation at the full probe's sizes, then project the
    whole probe: fine-tune seconds scale with the training tokens of each planned subset
    (counted here, without training), evaluation seconds are the same for every run."""
    from nncift.probe import INFLUENCE_ROWS, evaluate_subset, row_subset

    pc = cfg.probe
    data = pc.build_data()
    m = len(data.pool)
    pool_emb = embedder.embed(data.pool.texts)
    target_emb = embedder.embed(data.targets.texts)
    k = max(1, int(round(pc.budgets[0] * m)))
    idx = row_subset(
        row,
        k,
        seed=0,
        pool_emb=pool_emb,
        target_emb=target_emb,
        pool_response_chars=data.pool_response_chars,
    )
    train = data.pool.subset(idx)
    # No cache: this measures the work, it must not be a cache hit.
    res = evaluate_subset(lm, train, data.test, pc.finetune, seed=0, cache_dir=None)
    tok = _train_tokens(lm, train, pc.finetune.max_length)
    s = res["seconds"]
    ft_per_token = s["finetune"] / (tok * pc.finetune.epochs)
    eval_s = s["nll"] + s["rouge"]
    planned = []
    for r, b in pc.plan():
        kk = max(1, int(round(b * m)))
        seeds = pc.seeds if r == "random" else pc.seeds[:1]
        # rds and the NN-CIFT rows are projected with the embedding-FLMI subset's tokens.
        proxy = "embedding-flmi" if r in ("rds", *INFLUENCE_ROWS) else r
        toks = [
            _train_tokens(
                lm,
                data.pool.subset(
                    row_subset(
                        proxy,
                        kk,
                        seed=sd,
                        pool_emb=pool_emb,
                        target_emb=target_emb,
                        pool_response_chars=data.pool_response_chars,
                    )
                ),
                pc.finetune.max_length,
            )
            for sd in seeds
        ]
        mean_tok = float(np.mean(toks))
        planned.append(
            {
                "row": r,
                "budget": b,
                "k": kk,
                "train_tokens": mean_tok,
                "seconds": len(pc.seeds) * (mean_tok * pc.finetune.epochs * ft_per_token + eval_s),
            }
        )
    full_tok = _train_tokens(lm, data.pool, pc.finetune.max_length)
    full_s = len(pc.full_data_seeds) * (full_tok * pc.finetune.epochs * ft_per_token + eval_s)
    total = sum(p["seconds"] for p in planned) + eval_s + (full_s if pc.full_data else 0.0)
    return {
        "measured": {
            "row": row,
            "k": k,
            "train_tokens": tok,
            "finetune_seconds": s["finetune"],
            "nll_seconds": s["nll"],
            "rouge_seconds": s["rouge"],
            "test_tokens": int(np.sum(res["tokens"])),
            "n_test": len(data.test),
            "n_rouge": len(res["rougeL"]),
        },
        "finetune_seconds_per_token": ft_per_token,
        "planned": planned,
        "full_data": {
            "train_tokens": full_tok,
            "seconds": full_s,
            "included": pc.full_data,
            "seeds": list(pc.full_data_seeds),
        },
        "projected_seconds": total,
        "data": data.info,
    }


def write_timing(path: Path, timing: dict[str, Any]) -> None:
    import json

    from nncift.io import write_text_atomic

    write_text_atomic(path, json.dumps(timing, indent=1))
