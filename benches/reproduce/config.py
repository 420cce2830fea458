"""Configuration (run sizes, seeds, paper numbers), the result cache and the data."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nncift.probe import INFLUENCE_ROWS, FinetuneSettings, ProbeConfig

log = logging.getLogger("reproduce")

ROOT = Path(__file__).resolve().parent.parent.parent
DATA_SEED = 0  # disjoint pool / target / test split of ShareGPT
SPLIT_SEED = 0  # the u-split (which items are labelled)
NET_SEED = 0  # network initialisation, held-out items, batch order


@dataclass(frozen=True)
class Config:
    """Sizes of one run. `full` is the report; `quick` is a smoke test."""

    name: str
    m: int  # pool (ShareGPT)
    n: int  # targets (ShareGPT, disjoint)
    us: tuple[float, ...]  # the u sweep on DELIFT (SE)
    extra_seeds: tuple[int, ...]  # more u-split / network seeds at u = 0.05
    delift_m: int  # DELIFT real-LM matrix on chatterbot: pool ...
    delift_n: int  # ... x targets
    delift_us: tuple[float, ...]
    delift_max_seconds: float  # time cap for the DELIFT matrix in one run (resumable)
    cost_delift: tuple[int, int]  # sample block for DELIFT's per-pair cost
    cost_selectit: int  # sample points for SelectIT
    cost_less: tuple[int, int, int]  # LESS sample: warm-up items, pool rows, target cols
    cost_embed: int  # texts for the per-text embedding cost
    budgets: tuple[float, ...]  # v
    # Downstream on the chatterbot pool whose DELIFT / LESS / SelectIT values are all computed.
    less_epochs: int = 2  # LESS warm-up epochs = checkpoints (paper: 4)
    less_warmup: float = 0.1  # LESS warm-up share of the pool (paper: 0.05)
    ds_u: float = 0.2  # NN-CIFT's labelled share of items on the small pool
    ds_budget: float = 0.3  # v
    ds_seeds: tuple[int, ...] = (0, 1, 2)
    ds_n_test: int = 20  # test prompts per seed
    ds_k: int = 2
    ds_new_tokens: int = 12
    ds_demo_chars: int = 300
    lora_seeds: tuple[int, ...] = (0, 1, 2)
    lora: dict[str, Any] = field(
        default_factory=lambda: {
            "epochs": 2,
            "lr": 1e-3,
            "rank": 8,
            "batch_size": 4,
            "max_length": 256,
            "bf16": True,
            "group_by_length": True,
        }
    )
    # Section 6: the task-targeted probe (nncift.probe); sizes chosen to fit the 4-hour budget.
    probe: ProbeConfig = field(default_factory=ProbeConfig)


PROBE_FULL = ProbeConfig(
    pool_size=2000,
    n_targets=40,
    n_test=300,
    budgets=(0.1,),
    # All rows at 10%; random and embedding FLMI also at 5% and 20% (the fallback
    # when every row at every budget does not fit 4 hours on 2 cores: see --probe-timing).
    extra_budgets=(0.05, 0.2),
    extra_rows=("random", "embedding-flmi"),
    # NN-CIFT on DELIFT, the benchmark's default and the paper's (nncift.probe.INFLUENCE_ROWS):
    # ~1,600 and 800 DELIFT pairs' worth of LM passes on the pool x target matrix.
    influence_rows=INFLUENCE_ROWS,
    seeds=(0, 1, 2),
    full_data=True,
    full_data_seeds=(0,),  # ~10x a 10% fine-tune (~20-25 core-minutes): one seed here
    # Texts cut to fit the session that regenerates the report (--probe-timing, 2026-12-03:
    # 400 / 300 characters projected 3.6 core-hours for the fine-tunes alone).
    max_prompt_chars=300,
    max_response_chars=240,
    finetune=FinetuneSettings(n_rouge=30, max_new_tokens=16, max_length=256, batch_size=8),
)
PROBE_QUICK = ProbeConfig(
    pool_size=150,
    n_targets=10,
    n_test=24,
    budgets=(0.1,),
    extra_budgets=(),
    # No NN-CIFT rows: 10 targets are too few for the paper's block (it needs 4 at u = 0.1).
    seeds=(0,),
    max_prompt_chars=200,
    max_response_chars=120,
    finetune=FinetuneSettings(n_rouge=6, max_new_tokens=8, max_length=96, batch_size=8),
    n_boot=500,
)

# The probe rerun larger on a GPU machine (`--probe-only --gpu`, benches/gpu_probe.sh): a
# larger pool and test set, longer fine-tuning, every row at every budget. Its numbers go to a
# separate table of the report (<cache>/gpu/probe.json, read by the next full run).
PROBE_GPU = ProbeConfig(
    pool_size=4000,
    n_targets=40,
    n_test=600,
    budgets=(0.05, 0.1, 0.2),
    extra_budgets=(),
    influence_rows=INFLUENCE_ROWS,
    seeds=(0, 1, 2),
    full_data=True,
    full_data_seeds=(0, 1, 2),
    max_prompt_chars=1200,
    max_response_chars=1200,
    finetune=FinetuneSettings(
        epochs=3, n_rouge=200, max_new_tokens=64, max_length=512, batch_size=16,
        eval_batch_size=64,
    ),
)  # fmt: skip

FULL = Config(
    name="full",
    m=2000,
    n=500,
    us=(0.02, 0.05, 0.1, 0.2),
    extra_seeds=(1, 2),
    delift_m=140,
    delift_n=70,
    delift_us=(0.1, 0.2, 0.3),
    delift_max_seconds=720.0,
    cost_delift=(4, 8),
    cost_selectit=4,
    cost_less=(2, 4, 4),
    cost_embed=32,
    budgets=(0.3, 0.1),
    probe=PROBE_FULL,
)
QUICK = Config(
    name="quick",
    m=600,
    n=150,
    us=(0.05, 0.2),
    extra_seeds=(),
    delift_m=10,
    delift_n=8,
    delift_us=(0.5,),
    delift_max_seconds=120.0,
    cost_delift=(1, 2),
    cost_selectit=1,
    cost_less=(1, 1, 1),
    cost_embed=8,
    budgets=(0.3, 0.1),
    less_epochs=1,
    less_warmup=0.2,
    ds_u=0.5,
    ds_seeds=(0, 1),
    ds_n_test=3,
    ds_new_tokens=8,
    lora_seeds=(0,),
    lora={
        "epochs": 1,
        "lr": 1e-3,
        "rank": 8,
        "batch_size": 4,
        "max_length": 128,
        "bf16": True,
        "group_by_length": True,
    },  # fmt: skip
    probe=PROBE_QUICK,
)
# What the report extrapolates the cost table to (the pool, whatever the run size).
COST_M, COST_N, COST_U = 2000, 500, 0.05

# Paper numbers quoted for comparison (method.md, "Headline results").
PAPER_COST = {  # seconds on 2x A40, MixInstruct, Phi-3: original -> NN-CIFT
    "delift": (67379, 215),
    "less": (12338, 78),
    "selectit": (7047, 65),
    "delift-se": (216, 48),
}
PAPER_Q_MSE = {"Q1": 0.072, "Q2": 0.072, "Q3": 0.062, "Q4": 0.063}


# --------------------------------------------------------------------------- caching
def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Cache:
    """JSON results keyed by everything that determines them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def json(self, name: str, key: Any, fn: Callable[[], Any]) -> Any:
        from nncift.io import write_text_atomic

        path = self.root / f"{name}-{_key(key)}.json"
        if path.is_file():
            log.info("cached: %s", path.name)
            return json.loads(path.read_text())
        t0 = time.perf_counter()
        out = fn()
        log.info("%s: %.1f s", name, time.perf_counter() - t0)
        write_text_atomic(path, json.dumps(out, indent=1, default=_jsonable))
        return json.loads(path.read_text())

    def array(self, name: str, key: Any, fn: Callable[[], np.ndarray]) -> np.ndarray:
        from nncift.io import load_npy, save_npy_atomic

        path = self.root / f"{name}-{_key(key)}.npy"
        if path.is_file():
            return load_npy(path)
        out = np.ascontiguousarray(fn())
        save_npy_atomic(path, out)
        return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


# --------------------------------------------------------------------------- helpers
def machine_facts(threads: int) -> dict[str, Any]:
    import torch

    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


# --------------------------------------------------------------------------- data
class Data:
    """ShareGPT pool / targets / test (disjoint, seeded) and their embeddings."""

    def __init__(self, cfg: Config, cache: Cache) -> None:
        from nncift.data import load_named
        from nncift.embed import Embedder

        items = load_named("sharegpt")
        self.n_source = len(items)
        # One seeded permutation: pool, then a disjoint target set.
        self.pool, self.target = items.split([cfg.m, cfg.n], seed=DATA_SEED)
        self.embedder = Embedder(cache_dir=cache.root, progress=False)
        t0 = time.perf_counter()
        self.pool_emb = self.embedder.embed(self.pool.texts)  # (M, 384) float32
        self.target_emb = self.embedder.embed(self.target.texts)  # (N, 384)
        self.embed_seconds = time.perf_counter() - t0
        self.model_id = self.embedder.model_id
        self.embedder_root = cache.root


# --------------------------------------------------------------------------- exact labels
DATA_DIR = ROOT / "benches" / "data"
