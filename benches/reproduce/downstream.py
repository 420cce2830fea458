"""Section 5: downstream ICL and LoRA rows on the chatterbot pool."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np

from .config import Cache, Config, _key
from .labels import _small_items


def _test_draw(cfg: Config, rest: Any, seed: int) -> np.ndarray:
    """Seeded test prompts from the chatterbot reserve (reference of 10-300 characters)."""
    ok = [i for i in range(len(rest)) if 10 <= len(rest.responses[i]) <= 300 and rest.prompts[i]]
    return np.sort(np.random.default_rng(100 + seed).choice(ok, size=cfg.ds_n_test, replace=False))


DS_ROWS = (
    ("initial (no demonstrations)", None),
    ("random", "random"),
    ("embedding top-k", "embedding top-k"),
    ("DELIFT (SE), exact", "delift-se/exact"),
    ("DELIFT (SE), NN-CIFT", "delift-se/nncift-paper"),
    ("DELIFT, exact", "delift/exact"),
    ("DELIFT, NN-CIFT", "delift/nncift-paper"),
    ("LESS, exact", "less/exact"),
    ("LESS, NN-CIFT", "less/nncift-paper"),
    ("SelectIT, exact", "selectit/exact"),
    ("SelectIT, NN-CIFT", "selectit/nncift-paper"),
    ("full data", "full"),
)
LORA_ROWS = tuple(label for label, name in DS_ROWS if name is not None)  # all but the base model


def downstream_small(
    cfg: Config, lm: Any, embedder: Any, subs: dict[str, Any], cache: Cache
) -> dict[str, Any]:
    """ICL (every row, every seed) and LoRA fine-tuning (LORA_ROWS) on the chatterbot pool."""
    from nncift.downstream import finetune_evaluate, icl_evaluate

    pool, _, rest = _small_items(cfg)
    pe = embedder.embed(pool.texts)  # (m, 384)
    gen_path = cache.root / "icl-generations.json"
    gens: dict[str, str] = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    n_gen_start = len(gens)
    icl: dict[str, dict[str, Any]] = {}
    lora: dict[str, dict[str, Any]] = {}
    tests: dict[str, list[int]] = {}
    t_icl = time.perf_counter()
    for s in cfg.ds_seeds:
        S = subs["subsets"][str(s)]
        tix = _test_draw(cfg, rest, s)
        tests[str(s)] = tix.tolist()
        test = rest.subset(tix)
        test_emb = embedder.embed(test.prompts)
        for label, name in DS_ROWS:
            idx = list(range(len(pool))) if name in (None, "full") else S[name]
            key = {
                "cfg": cfg.name,
                "idx": idx if name is not None else None,
                "test": _key(test.ids),
                "k": cfg.ds_k,
                "new": cfg.ds_new_tokens,
                "chars": cfg.ds_demo_chars,
                "v": 1,
            }

            def one(
                idx: list[int] = idx, name: Any = name, test: Any = test, test_emb: Any = test_emb
            ) -> dict[str, Any]:
                a = np.asarray(idx)
                res = icl_evaluate(
                    lm,
                    pool.subset(a),
                    pe[a],
                    test,
                    test_emb,
                    k=0 if name is None else cfg.ds_k,
                    max_new_tokens=cfg.ds_new_tokens,
                    max_demo_chars=cfg.ds_demo_chars,
                    embedder=embedder,
                    generation_cache=gens,
                )
                from nncift.io import write_text_atomic

                write_text_atomic(gen_path, json.dumps(gens))
                return _per_item(res, test, embedder)

            icl.setdefault(label, {})[str(s)] = cache.json("ds-icl", key, one)
    icl_seconds = time.perf_counter() - t_icl
    t_lora = time.perf_counter()
    for s in cfg.lora_seeds:
        S = subs["subsets"][str(s)]
        test = rest.subset(np.asarray(tests[str(s)]))
        names = dict(DS_ROWS)
        for label in LORA_ROWS:
            name = names[label]
            idx = list(range(len(pool))) if name == "full" else S[name]
            key = {
                "cfg": cfg.name,
                "idx": idx,
                "test": _key(test.ids),
                "seed": s,
                "lora": cfg.lora,
                "new": cfg.ds_new_tokens,
                "v": 1,
            }

            def one_ft(idx: list[int] = idx, test: Any = test, s: int = s) -> dict[str, Any]:
                res, losses = finetune_evaluate(
                    lm,
                    pool.subset(np.asarray(idx)),
                    test,
                    max_new_tokens=cfg.ds_new_tokens,
                    embedder=embedder,
                    seed=s,
                    **cfg.lora,
                )
                d = _per_item(res, test, embedder)
                d["losses"] = losses
                d["steps"] = cfg.lora["epochs"] * math.ceil(len(idx) / cfg.lora["batch_size"])
                return d

            lora.setdefault(label, {})[str(s)] = cache.json("ds-lora", key, one_ft)
    return {
        "icl": icl,
        "lora": lora,
        "tests": tests,
        "icl_seconds": icl_seconds,
        "lora_seconds": time.perf_counter() - t_lora,
        "generations_new": len(gens) - n_gen_start,
        "generations_total": len(gens),
        "k": subs["k"],
        "m": subs["m"],
    }


def _per_item(res: Any, test: Any, embedder: Any) -> dict[str, Any]:
    from nncift.downstream import rouge

    per = [rouge(g, r) for g, r in zip(res.generations, test.responses, strict=True)]
    ga = embedder.embed([g if g.strip() else "." for g in res.generations])
    ra = embedder.embed(test.responses)
    d = res.as_dict()
    d["per_item"] = {
        "rouge1": [x["rouge1"] for x in per],
        "rougeL": [x["rougeL"] for x in per],
        "emb": np.sum(ga * ra, axis=1).astype(float).tolist(),
    }
    d["generations"] = res.generations
    return d


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of a - b and its standard error over test items."""
    d = np.asarray(a) - np.asarray(b)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")


def _pooled(runs: dict[str, Any], seeds: list[int], metric: str = "rougeL") -> list[float]:
    return [x for s in seeds for x in runs[str(s)]["per_item"][metric]]
