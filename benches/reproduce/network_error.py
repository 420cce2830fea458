"""Section 2: the network's error by quadrant and by u (paper Fig. 2 / Table 2)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .config import NET_SEED, SPLIT_SEED, Cache, Config, Data, _key
from .labels import _small_items


# --------------------------------------------------------------------------- 2. error
def _quadrant_summary(rep: Any) -> dict[str, Any]:
    return {
        "quadrants": rep.quadrants,
        "selection": rep.selection,
        "variant": rep.info.get("variant"),
        "candidates": rep.info.get("candidates_val_mse"),
        "best_epoch": rep.info.get("best_epoch"),
        "sizes": rep.info.get("quadrant_sizes"),
    }


def se_error(cfg: Config, data: Data, cache: Cache) -> dict[str, Any]:
    """DELIFT (SE) at full scale: u sweep, paper and auto networks, baselines."""
    from nncift.evaluation import fit_and_evaluate

    K = data.pool_emb @ data.target_emb.T  # (M, N) cosine labels
    lo, hi = float(K.min()), float(K.max())
    K01 = ((K - lo) / (hi - lo)).astype(np.float32)  # min-max scaled like the paper's labels
    runs: dict[str, Any] = {}
    plan = [(u, NET_SEED) for u in cfg.us] + [(0.05, s) for s in cfg.extra_seeds]
    for u, seed in plan:
        for variant in ("paper", "auto"):
            k = {
                "cfg": cfg.name,
                "m": cfg.m,
                "n": cfg.n,
                "u": u,
                "seed": seed,
                "variant": variant,
                "v": 1,
            }

            def one(u: float = u, seed: int = seed, variant: str = variant) -> dict[str, Any]:
                t0 = time.perf_counter()
                rep, _ = fit_and_evaluate(
                    K01,
                    data.pool_emb,
                    data.target_emb,
                    u=u,
                    seed=seed,
                    variant=variant,
                    embedding_model=data.model_id,
                )
                out = _quadrant_summary(rep)
                out["seconds"] = time.perf_counter() - t0
                return out

            runs[f"{u}/{seed}/{variant}"] = cache.json("se-error", k, one)
    return {"runs": runs, "label_range": [lo, hi], "shape": list(K.shape)}


def se_plots(cfg: Config, se: dict[str, Any], img: Path) -> list[str]:
    """Fig. 2 analogue (MSE vs u) with the library's plot, and Spearman vs u."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nncift.evaluation import plot_error_vs_u

    preds = ("paper", "auto", "constant", "additive", "cosine")
    records = []
    for u in cfg.us:
        for seed in [NET_SEED] + (list(cfg.extra_seeds) if u == 0.05 else []):
            p = se["runs"][f"{u}/{seed}/paper"]["quadrants"]
            a = se["runs"][f"{u}/{seed}/auto"]["quadrants"]
            rec: dict[str, Any] = {"u": u, "seed": seed, "mse": {}, "spearman": {}}
            for q in ("Q1", "Q2", "Q3", "Q4"):
                rec["mse"][q] = {"paper": p[q]["network"]["mse"], "auto": a[q]["network"]["mse"]}
                rec["spearman"][q] = {
                    "paper": p[q]["network"]["spearman"],
                    "auto": a[q]["network"]["spearman"],
                }
                for b in ("constant", "additive", "cosine"):
                    rec["mse"][q][b] = p[q][b]["mse"]
                    rec["spearman"][q][b] = p[q][b]["spearman"]
            records.append(rec)
    img.mkdir(parents=True, exist_ok=True)
    names = []
    path = img / "repro_se_mse_vs_u.png"
    plot_error_vs_u(records, path, predictors=preds)
    names.append(path.name)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
    for ax, q in zip(axes, ("Q1", "Q2", "Q3", "Q4"), strict=True):
        for pred in preds:
            xs = sorted({r["u"] for r in records})
            ys = [
                float(
                    np.nanmean(
                        [
                            r["spearman"][q][pred] if r["spearman"][q][pred] is not None else np.nan
                            for r in records
                            if r["u"] == x
                        ]
                    )
                )
                for x in xs
            ]
            # auto coincides with cosine when it picks cosine-linear: draw it dashed on top.
            style = {"linestyle": "--", "marker": "x", "zorder": 3} if pred == "auto" else {}
            ax.plot(xs, ys, label=pred, **({"marker": "o"} | style))
        ax.set_title(q)
        ax.set_xscale("log")
        ax.set_xticks(list(cfg.us), [str(u) for u in cfg.us])
        ax.minorticks_off()
        ax.set_xlabel("u (labelled fraction of items)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Spearman")
    axes[0].legend()
    fig.tight_layout()
    path = img / "repro_se_spearman_vs_u.png"
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    names.append(path.name)
    return names


def delift_error(
    cfg: Config, labels: dict[str, Any], embedder: Any, cache: Cache
) -> dict[str, Any]:
    """DELIFT on SmolLM2 over short chatterbot items: the full matrix, then quadrants."""
    from nncift.evaluation import fit_and_evaluate

    pool, tgt, _ = _small_items(cfg)
    L = labels["delift"]
    info: dict[str, Any] = {
        "m": cfg.delift_m,
        "n": cfg.delift_n,
        "settings": L["spec"]["config"],
        "complete": True,
        "reused": L["reused"],
        "seconds_this_run": 0.0 if L["reused"] else L["seconds_this_run"],
        "cost_total": L["cost_total"],
    }
    K = np.asarray(L["values"], dtype=np.float32)
    assert K.shape == (cfg.delift_m, cfg.delift_n)
    emb = embedder
    pe, te = emb.embed(pool.texts), emb.embed(tgt.texts)
    lo, hi = float(K.min()), float(K.max())
    K01 = ((K - lo) / (hi - lo)).astype(np.float32)
    info["raw_range"] = [lo, hi]
    info["raw_mean"] = float(K.mean())
    info["positive_share"] = float((K > 0).mean())
    info["cos_corr"] = float(np.corrcoef((pe @ te.T).ravel(), K.ravel())[0, 1])
    info["mean_prompt_chars"] = float(np.mean([len(t) for t in pool.texts + tgt.texts]))
    runs = {}
    for u in cfg.delift_us:
        for variant in ("paper", "auto"):
            k = {"cfg": cfg.name, "lab": _key(K.tolist()), "u": u, "variant": variant, "v": 1}

            def one(u: float = u, variant: str = variant) -> dict[str, Any]:
                # Also scores selection of 10% of the pool (top-k and FL) on the true values.
                rep, _ = fit_and_evaluate(
                    K01, pe, te, u=u, seed=SPLIT_SEED, variant=variant, embedding_model=emb.model_id
                )
                return _quadrant_summary(rep)

            runs[f"{u}/{variant}"] = cache.json("delift-error", k, one)
    info["runs"] = runs
    return info
