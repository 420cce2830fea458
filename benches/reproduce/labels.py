"""The exact real-LM values (DELIFT, LESS, SelectIT) of the chatterbot pool, stored and reused."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from .config import DATA_DIR, DATA_SEED, ROOT, Cache, Config, _key


def _small_items(cfg: Config) -> tuple[Any, Any, Any]:
    """Chatterbot pool / targets (the real-LM matrices) and the rest (ICL test reserve)."""
    from nncift.data import load_named

    items = load_named("chatterbot")
    m, n = cfg.delift_m, cfg.delift_n
    pool, tgt, rest = items.split([m, n, len(items) - m - n], seed=DATA_SEED)
    return pool, tgt, rest


def exact_labels(
    cfg: Config, lm: Any, cache: Cache, only: set[str] | None = None
) -> dict[str, Any]:
    """Every pair / item of the chatterbot pool valued by DELIFT, LESS and SelectIT on SmolLM2.

    The values are kept in `benches/data/chatterbot_labels_{m}x{n}.npz` (full run) so a rerun
    skips the LM passes; an entry is reused only when the hash of its inputs (the function's
    settings, the LM, the pool and target texts) matches. Otherwise the labels are computed
    with `nncift.influence.store.compute_labels` (resumable tiles in the cache) and saved.

    `only` computes just those functions' tiles and saves nothing: two processes can then
    label on two cores at once (`--labels-only`), and the next full run finds every tile done.
    """
    from nncift.influence.delift import Delift
    from nncift.influence.less import Less
    from nncift.influence.selectit import SelectIT
    from nncift.influence.store import compute_labels, items_digest, load_labels

    pool, tgt, _ = _small_items(cfg)
    m, n = cfg.delift_m, cfg.delift_n
    fns: dict[str, tuple[Any, int]] = {
        "delift": (
            Delift(pool, tgt, lm=lm, max_example_tokens=64, max_prompt_tokens=64),
            4,
        ),
        "selectit": (SelectIT(pool, lm=lm, max_sample_tokens=256), 8),
        "less": (
            Less(
                pool,
                tgt,
                lm=lm,
                warmup_fraction=cfg.less_warmup,
                epochs=cfg.less_epochs,
                proj_dim=512,
                batch_size=2,
                max_prompt_tokens=128,
                seed=0,
            ),
            m,
        ),
    }
    dirs = {
        "delift": f"delift-chatterbot-{m}x{n}",
        "selectit": f"selectit-chatterbot-{m}",
        "less": f"less-chatterbot-{m}x{n}",
    }
    path = (DATA_DIR if cfg.name == "full" else cache.root) / f"chatterbot_labels_{m}x{n}.npz"
    stored: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            stored = {k: np.asarray(z[k]) for k in z.files if k != "meta"}
    out: dict[str, Any] = {
        "path": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    }
    changed = False
    for name, (fn, tile_rows) in fns.items():
        if only is not None and name not in only:
            continue
        spec = {
            "config": fn.config(),
            "pool": items_digest(pool),
            "targets": items_digest(tgt) if name != "selectit" else None,
        }
        key = _key(spec)
        if name in stored and meta.get(name, {}).get("key") == key:
            out[name] = {"values": stored[name], "reused": True, **meta[name]}
            continue
        t0 = time.perf_counter()
        run = compute_labels(fn, cache.root / dirs[name], tile_rows=tile_rows)
        values, _, _, _ = load_labels(cache.root / dirs[name])
        meta[name] = {
            "key": key,
            "spec": spec,
            "cost_total": run.cost_total.to_dict(),
            "seconds_this_run": time.perf_counter() - t0,
        }
        stored[name] = np.asarray(values, dtype=np.float32)
        out[name] = {"values": stored[name], "reused": False, **meta[name]}
        changed = True
    if changed and only is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, meta=np.array(json.dumps(meta, default=str)), **stored)
        os.replace(tmp, path)
    out["m"], out["n"] = m, n
    return out
