"""Section 1: the cost of valuation (paper Table 7), measured on samples and extrapolated."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from .config import COST_M, COST_N, COST_U, NET_SEED, PAPER_COST, SPLIT_SEED, Cache, Config, Data


# --------------------------------------------------------------------------- 1. cost
def measure_costs(cfg: Config, data: Data, lm: Any, cache: Cache) -> dict[str, Any]:
    """Per-unit costs of each function on a small sample, then extrapolation."""
    key = {
        "cfg": cfg.name,
        "m": cfg.m,
        "v": 4,  # 4: re-measured on an idle box with larger samples
        "sample": [cfg.cost_delift, cfg.cost_selectit, cfg.cost_less],
    }

    def run() -> dict[str, Any]:
        from nncift.influence import CostMeter
        from nncift.influence.delift import Delift
        from nncift.influence.less import Less
        from nncift.influence.selectit import SelectIT

        tok = lm.tokenizer
        rng = np.random.default_rng(0)

        def short(items: Any, limit: int) -> list[int]:
            return [
                i
                for i in range(len(items))
                if 8 <= len(tok(items.responses[i], add_special_tokens=False)["input_ids"]) <= limit
                and len(items.prompts[i]) > 0
            ]

        # Cost samples: random pool / target items whose responses are at most 128 tokens
        # (ShareGPT responses are often far longer; a shorter sample under-states the per-pair
        # cost, which makes NN-CIFT's fixed overhead look relatively larger — conservative).
        pool_ok = short(data.pool.subset(range(300)), 128)
        tgt_ok = short(data.target.subset(range(min(200, len(data.target)))), 128)
        out: dict[str, Any] = {"sample_rule": "random items with 8-128 response tokens"}

        # DELIFT: no-example pass once per target, then the with-example pairs.
        r, c = cfg.cost_delift
        prow = np.sort(rng.choice(pool_ok, size=r, replace=False))
        tcol = np.sort(rng.choice(tgt_ok, size=c, replace=False))
        kw = {"max_example_tokens": 128, "max_prompt_tokens": 128}
        fn = Delift(data.pool, data.target, lm=lm, **kw)
        meter = CostMeter()
        t0 = time.perf_counter()
        fn.no_example_distances(tcol, meter)
        d0_s = time.perf_counter() - t0
        res = fn.block(prow, tcol)
        pair_s = (res.cost.seconds) / (r * c)  # the no-example passes are cached by now
        out["delift"] = {
            "settings": kw,
            "sample": f"{r} x {c} pairs",
            "s_per_target_no_example": d0_s / c,
            "s_per_pair": pair_s,
            "tokens_per_pair": res.cost.tokens / (r * c),
            "lm_passes": res.cost.lm_passes + meter.cost.lm_passes,
        }

        # SelectIT: K = 5 rating prompts per item.
        prow = np.sort(rng.choice(pool_ok, size=cfg.cost_selectit, replace=False))
        res = SelectIT(data.pool.subset(prow), lm=lm, max_sample_tokens=256).points()
        out["selectit"] = {
            "settings": {"max_sample_tokens": 256, "prompts": 5},
            "sample": f"{cfg.cost_selectit} items",
            "s_per_point": res.cost.seconds / cfg.cost_selectit,
            "lm_passes": res.cost.lm_passes,
        }

        # LESS: a warm-up epoch on w items, then per-item gradients at that checkpoint.
        w, lr_, lc = cfg.cost_less
        picks = rng.choice(pool_ok, size=w + lr_, replace=False)
        lpool = data.pool.subset(picks)
        ltgt = data.target.subset(rng.choice(tgt_ok, size=lc, replace=False))
        fn_l = Less(
            lpool,
            ltgt,
            lm=lm,
            warmup_fraction=w / len(lpool),
            epochs=1,
            proj_dim=512,
            batch_size=2,
            max_prompt_tokens=128,
        )
        t0 = time.perf_counter()
        fn_l.warm_up()
        warm_s = time.perf_counter() - t0
        n_warm = len(fn_l.warmup_rows) if fn_l.warmup_rows is not None else w
        res = fn_l.block(np.arange(len(lpool))[-lr_:], np.arange(lc))
        out["less"] = {
            "settings": {"lora_r": 8, "proj_dim": 512, "max_prompt_tokens": 128, "epochs": 1},
            "sample": f"warm-up {n_warm} items x 1 epoch; gradients of {lr_} pool + {lc} targets",
            "s_per_item_epoch_warmup": warm_s / max(1, n_warm),
            "s_per_item_gradient": res.cost.seconds / (lr_ + lc),
            "lm_passes": res.cost.lm_passes,
            "backward_passes": res.cost.backward_passes,
        }

        # Embedding (MiniLM): per text, model already loaded, no cache.
        from nncift.embed import Embedder

        emb = Embedder(use_cache=False, progress=False)
        emb.embed(["warm up"])
        texts = (
            data.pool.texts[1000 : 1000 + cfg.cost_embed]
            if cfg.m > 1000 + cfg.cost_embed
            else data.pool.texts[: cfg.cost_embed]
        )
        t0 = time.perf_counter()
        emb.embed(texts)
        out["embed"] = {
            "sample": f"{len(texts)} pool texts (MiniLM truncates at 256 tokens)",
            "s_per_text": (time.perf_counter() - t0) / len(texts),
        }
        return out

    sample = cache.json("cost-sample", key, run)

    # NN-CIFT's own stages, measured at the report's size on real DELIFT (SE) labels (the
    # training time does not depend on what the labels are).
    def nn_stages() -> dict[str, Any]:
        from nncift.estimator import EstimatorSettings, InfluenceEstimator
        from nncift.split import u_split

        pe, te = data.pool_emb, data.target_emb
        sp = u_split(len(pe), len(te), u=COST_U, seed=SPLIT_SEED)
        r, c = sp.quadrant("Q1")
        lab = pe[r] @ te[c].T
        t0 = time.perf_counter()
        est = InfluenceEstimator(
            EstimatorSettings(),
            variant="paper",
            random_state=NET_SEED,
            progress=False,
            embedding_model=data.model_id,
        ).fit(pe, te, lab, rows=r, cols=c)
        train_pair_s = time.perf_counter() - t0
        scorer = est._rust_scorer()  # build outside the timed region (an export + load)
        t0 = time.perf_counter()
        scorer.score(pe, te)
        predict_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scorer.aggregate(pe, te, how="mean")
        aggregate_s = time.perf_counter() - t0
        pts = lab.mean(axis=1)
        t0 = time.perf_counter()
        est_p = InfluenceEstimator(
            EstimatorSettings(),
            variant="paper",
            kind="pointwise",
            random_state=NET_SEED,
            progress=False,
            embedding_model=data.model_id,
        ).fit(pe, None, pts, rows=r)
        train_point_s = time.perf_counter() - t0
        sc_p = est_p._rust_scorer()
        t0 = time.perf_counter()
        sc_p.pointwise(pe)
        point_predict_s = time.perf_counter() - t0
        return {
            "pool": len(pe),
            "targets": len(te),
            "q1": [len(r), len(c)],
            "train_pairwise_s": train_pair_s,
            "predict_pairwise_s": predict_s,
            "aggregate_s": aggregate_s,
            "train_pointwise_s": train_point_s,
            "predict_pointwise_s": point_predict_s,
        }

    nn = cache.json("cost-nn", {"cfg": cfg.name, "m": cfg.m, "n": cfg.n, "v": 3}, nn_stages)
    # The network stages scale with the pool: rescale a quick run's measurement to 2,000 x 500.
    f_pairs = (COST_M * COST_N) / (nn["pool"] * nn["targets"])
    f_rows = COST_M / nn["pool"]
    f_q1 = (round(COST_U * COST_M) * round(COST_U * COST_N)) / (nn["q1"][0] * nn["q1"][1])
    mq, nq = round(COST_U * COST_M), round(COST_U * COST_N)
    emb_inputs = sample["embed"]["s_per_text"] * (COST_M + COST_N)
    d, s, le = sample["delift"], sample["selectit"], sample["less"]
    warm_full = 4 * math.ceil(0.05 * COST_M) * le["s_per_item_epoch_warmup"]
    rows = {
        "delift": {
            "unit": f"{d['s_per_pair']:.2f} s / pair (+ {d['s_per_target_no_example']:.2f} s / target once)",
            "full": COST_M * COST_N * d["s_per_pair"] + COST_N * d["s_per_target_no_example"],
            "q1": mq * nq * d["s_per_pair"] + nq * d["s_per_target_no_example"],
            "train": nn["train_pairwise_s"] * f_q1,
            "predict": nn["predict_pairwise_s"] * f_pairs,
        },
        "delift-se": {
            "unit": f"{sample['embed']['s_per_text']:.3f} s / text embedded",
            "full": emb_inputs,  # the labels are the cosine of the embeddings: embed all
            "q1": 0.0,  # Q1 labels reuse the input embeddings NN-CIFT computes anyway
            "train": nn["train_pairwise_s"] * f_q1,
            "predict": nn["predict_pairwise_s"] * f_pairs,
        },
        "less": {
            "unit": (
                f"{le['s_per_item_gradient']:.2f} s / item gradient per checkpoint; warm-up "
                f"{le['s_per_item_epoch_warmup']:.2f} s / item-epoch"
            ),
            # LESS's setting: warm-up on 5% of the pool for 4 epochs = 4 checkpoints.
            "full": warm_full + 4 * (COST_M + COST_N) * le["s_per_item_gradient"],
            "q1": warm_full + 4 * (mq + nq) * le["s_per_item_gradient"],
            "train": nn["train_pairwise_s"] * f_q1,
            "predict": nn["aggregate_s"] * f_pairs,
        },
        "selectit": {
            "unit": f"{s['s_per_point']:.2f} s / item (5 rating prompts)",
            "full": COST_M * s["s_per_point"],
            "q1": mq * s["s_per_point"],
            "train": nn["train_pointwise_s"],
            "predict": nn["predict_pointwise_s"] * f_rows,
        },
    }
    for name, row in rows.items():
        nn_total = row["q1"] + row["train"] + row["predict"]
        row["nncift"] = nn_total
        row["nncift_with_inputs"] = nn_total + emb_inputs
        # DELIFT (SE)'s original already consists of embedding everything.
        orig_with_inputs = row["full"] if name == "delift-se" else row["full"]
        row["saved"] = 1.0 - nn_total / row["full"]
        row["saved_with_inputs"] = 1.0 - row["nncift_with_inputs"] / orig_with_inputs
        po, pn = PAPER_COST[name]
        row["paper_saved"] = 1.0 - pn / po
    return {"sample": sample, "nn": nn, "rows": rows, "emb_inputs": emb_inputs, "mq": mq, "nq": nq}
