"""A task-targeted downstream probe with power: does a selection method pick data that helps?

The setting (issue 17, after Ivison et al. 2025 and Xia et al. 2024): a **mixed pool** of
instruction items from several sources, a small **target set** of one kind and a larger
**held-out test set** of the same kind. Each method selects a subset of the pool; SmolLM2
(or any `nncift.lm.LM`) is LoRA fine-tuned on it (`nncift.downstream.finetune_lora`, loss on
response tokens only) and judged by

- the mean per-token negative log-likelihood of the test items' reference responses
  (response tokens only; a low-variance metric, every test item contributes), and
- ROUGE-L of greedy answers on the first `n_rouge` test items.

Differences between rows are paired: the same test items and the same LoRA seeds. Their 95%
intervals come from a two-level bootstrap (seeds, then test items, both with replacement),
and the minimum detectable difference is ``(z_0.975 + z_0.8) * SE`` (a two-sided 5% test with
80% power). The **power check** asks whether embedding FLMI to the targets and random differ
with an interval that excludes 0: if not, the probe cannot tell methods apart.

Every fine-tune + evaluation is cached as one JSON file keyed by the hash of its training
subset, the test set and the settings (`evaluate_subset`): an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nncift.data import Items
from nncift.errors import InputError

log = logging.getLogger(__name__)

#: z quantiles of a two-sided 5% test with 80% power: MDD = (1.96 + 0.84) * SE.
MDD_FACTOR = 1.959964 + 0.841621
ROWS = ("random", "length", "embedding-fl", "embedding-flmi", "rds")
#: NN-CIFT rows: DELIFT values on the pool x target pairs through `nncift select`
#: (`nncift.pipeline.run_select`, labels and networks cached in the probe's cache), selected
#: by FL query mutual information on the pool x target kernel (`--objective flqmi`: the
#: paper's FLMI would add a pool x pool kernel, 4,000,000 pairs on the probe's pool, and
#: fl-target saturates: with 40 targets it left 194-196 of 200 picks to ties, 2026-12-03).
#: "nncift-delift": what `nncift select --method delift` uses by default (the benchmark's design, estimator and
#: features, `nncift.design_valuation.DEFAULT_FOR`); "nncift-delift-paper": the paper's first-u
#: block and its network trained to convergence, at u = 0.1 (the paper's 0.05 would label 2 of
#: the 40 targets; the block needs at least 4). Opt-in (`influence_rows`): each
#: costs LM labelling.
INFLUENCE_ROWS = ("nncift-delift", "nncift-delift-paper")


def default_influence_options() -> dict[str, dict[str, Any]]:
    """`nncift.valuation.ValuationOptions` fields of each NN-CIFT row (see INFLUENCE_ROWS)."""
    from nncift.design_valuation import DEFAULT_FOR

    default = DEFAULT_FOR["delift"]
    assert default is not None
    design, budget, estimator = default
    cut = {"max_example_tokens": 64, "max_prompt_tokens": 64}
    return {
        "nncift-delift": {"design": design, "label_budget": budget, "estimator": estimator,
                          "influence_settings": cut},
        "nncift-delift-paper": {"u": 0.1, "variant": "paper", "influence_settings": cut},
    }  # fmt: skip


def influence_subset(
    row: str,
    k: int,
    data: ProbeData,
    options: dict[str, Any],
    *,
    lm: str,
    cache_dir: str | Path,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(k,) pool indices of one NN-CIFT row and its cost, from the run's manifest: the LM
    passes and seconds of every label stage as the label store recorded them when the labels
    were computed (a rerun reuses the cached labels and reports the same cost), plus this
    run's seconds for the other stages (estimator, prediction, selection).
    `passes_this_run` counts only what this call labelled."""
    from nncift.pipeline import run_select
    from nncift.select_options import SelectOptions
    from nncift.valuation import TARGET_QMI, ValuationOptions

    if row not in INFLUENCE_ROWS:
        raise InputError(f"unknown NN-CIFT row {row!r}; choose from {', '.join(INFLUENCE_ROWS)}")
    val = ValuationOptions(method="delift", lm=lm, seed=seed, **options)
    opts = SelectOptions(budget=k, method="delift", objective=TARGET_QMI, seed=seed,
                         cache_dir=str(cache_dir), valuation=val)  # fmt: skip
    run = run_select(data.pool, opts, target=data.targets, progress=False)
    passes = lm_seconds = other_seconds = 0.0
    this_run = 0
    for name, rec in run.manifest.stages.items():
        if not name.startswith("label_"):
            other_seconds += float(rec.get("seconds") or 0.0)
            continue
        if "lm_cost" in rec:  # a design's record (nncift.design_valuation)
            total, now = rec["lm_cost"] or {}, rec.get("lm_cost_this_run") or {}
            passes += total.get("passes", 0)
            lm_seconds += total.get("seconds", 0.0)
            this_run += int(now.get("passes", 0))
        else:  # the paper's u-block
            total, now = rec.get("cost_total") or {}, rec.get("cost") or {}
            passes += total.get("lm_passes", 0)
            lm_seconds += total.get("seconds", 0.0)
            this_run += int(now.get("lm_passes", 0))
    cost = {"seconds": lm_seconds + other_seconds, "lm_passes": int(passes),
            "lm_seconds": lm_seconds, "passes_this_run": this_run}  # fmt: skip
    return np.asarray(run.indices, dtype=np.int64), cost


_WORD = re.compile(r"[a-z0-9]+")


def normalise_prompt(prompt: str) -> str:
    """The de-duplication key of a prompt: lower-cased alphanumeric words joined by one space
    ("What's AI?" and "whats  ai" differ; "What is AI?" and "what is ai" do not)."""
    return " ".join(_WORD.findall(prompt.lower()))


def shared_prompts(*parts: Items) -> list[str]:
    """Normalised prompts that occur in more than one of `parts` (empty = disjoint)."""
    seen: dict[str, int] = {}
    shared: set[str] = set()
    for k, part in enumerate(parts):
        for p in {normalise_prompt(x) for x in part.prompts}:
            if p in seen and seen[p] != k:
                shared.add(p)
            seen.setdefault(p, k)
    return sorted(shared)


def check_disjoint(pool: Items, targets: Items, test: Items) -> None:
    """Raise InputError unless pool, targets and test share no normalised prompt."""
    shared = shared_prompts(pool, targets, test)
    if shared:
        raise InputError(
            f"probe data: {len(shared)} normalised prompt(s) shared between pool, targets and "
            f"test, e.g. {shared[0]!r}"
        )


def _cut(text: str, limit: int) -> str:
    return text if limit <= 0 or len(text) <= limit else text[:limit]


@dataclass
class ProbeData:
    """Pool (mixed sources), targets and test (one source), de-duplicated by prompt.

    pool_source: per pool item, the source name; pool_response_chars: (M,) int64 length of
    each pool response before it was cut (the `length` row ranks by it).
    """

    pool: Items
    targets: Items
    test: Items
    pool_source: list[str]
    pool_response_chars: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def build_probe_data(
    *,
    pool_size: int,
    n_targets: int,
    n_test: int,
    target_source: str = "chatterbot",
    mix: Sequence[tuple[str, float]] = (
        ("chatterbot", 0.15),
        ("ifbench", 0.14),
        ("sharegpt", 0.71),
    ),
    max_prompt_chars: int = 600,
    max_response_chars: int = 400,
    seed: int = 0,
    loader: Callable[[str], Items] | None = None,
) -> ProbeData:
    """Draw the probe's pool, targets and test items (seeded), disjoint by normalised prompt.

    Targets and test come from `target_source`: its items are grouped by normalised prompt and
    whole groups are dealt to targets, test and the pool, so no prompt crosses a boundary. The
    pool takes round(share * pool_size) items of each source in `mix` (the last source fills
    the rest); items of other sources whose prompt equals a target's or test item's are
    dropped first. Prompts and responses are cut to `max_prompt_chars` / `max_response_chars`
    characters (CPU cost); the check runs on the cut texts.
    """
    from nncift.data import load_named

    load = loader or load_named
    if not mix or abs(sum(s for _, s in mix) - 1.0) > 1e-6:
        raise InputError(f"probe data: the mix shares must sum to 1, got {list(mix)}")
    rng = np.random.default_rng(seed)
    sources = {name: load(name) for name, _ in mix}
    if target_source not in sources:
        sources[target_source] = load(target_source)

    # Target-kind items grouped by normalised prompt, groups in a seeded order.
    tgt_items = sources[target_source]
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(tgt_items.prompts):
        groups.setdefault(normalise_prompt(p), []).append(i)
    keys = [k for k in groups if k]
    order = rng.permutation(len(keys))
    if len(keys) < n_targets + n_test:
        raise InputError(
            f"probe data: {target_source} has {len(keys)} distinct prompts, fewer than "
            f"{n_targets} targets + {n_test} test items"
        )
    # One item per target / test prompt (the group's first); the rest of the groups feed the pool.
    t_keys = [keys[j] for j in order[:n_targets]]
    s_keys = [keys[j] for j in order[n_targets : n_targets + n_test]]
    held = set(t_keys) | set(s_keys)
    targets = tgt_items.subset([groups[k][0] for k in t_keys])
    test = tgt_items.subset([groups[k][0] for k in s_keys])

    counts = [int(round(share * pool_size)) for _, share in mix]
    counts[-1] = pool_size - sum(counts[:-1])
    pool_parts: list[tuple[Items, str]] = []
    for (name, _), count in zip(mix, counts, strict=True):
        items = sources[name]
        ok = [i for i, p in enumerate(items.prompts) if normalise_prompt(p) not in held]
        if len(ok) < count:
            raise InputError(
                f"probe data: {name} has {len(ok)} usable items, the pool needs {count}"
            )
        pick = np.sort(rng.choice(len(ok), size=count, replace=False))
        pool_parts.append((items.subset([ok[j] for j in pick]), name))

    def cut(items: Items) -> Items:
        return Items(
            ids=list(items.ids),
            prompts=[_cut(p, max_prompt_chars) for p in items.prompts],
            responses=[_cut(r, max_response_chars) for r in items.responses],
            records=list(items.records),
            source=items.source,
            schema=items.schema,
        )

    pool = Items(
        ids=[i for part, _ in pool_parts for i in part.ids],
        prompts=[p for part, _ in pool_parts for p in part.prompts],
        responses=[r for part, _ in pool_parts for r in part.responses],
        records=[r for part, _ in pool_parts for r in part.records],
        source="probe-pool",
    )
    pool_source = [name for part, name in pool_parts for _ in range(len(part))]
    resp_chars = np.array([len(r) for r in pool.responses], dtype=np.int64)
    pool, targets, test = cut(pool), cut(targets), cut(test)
    # Cutting can only make prompts collide (a shared prefix): check on what is used.
    clash = set(shared_prompts(pool, targets, test))
    if clash:
        keep = [i for i, p in enumerate(pool.prompts) if normalise_prompt(p) not in clash]
        pool = pool.subset(keep)
        pool_source = [pool_source[i] for i in keep]
        resp_chars = resp_chars[keep]
    check_disjoint(pool, targets, test)
    info = {
        "pool_size": len(pool),
        "pool_sources": {name: pool_source.count(name) for name, _ in mix},
        "target_source": target_source,
        "n_targets": len(targets),
        "n_test": len(test),
        "dropped_after_cut": len(clash),
        "max_prompt_chars": max_prompt_chars,
        "max_response_chars": max_response_chars,
        "seed": seed,
    }
    return ProbeData(pool, targets, test, pool_source, resp_chars, info)


# ---------------------------------------------------------------- the metric


def response_nll(
    lm: Any, model: Any, items: Items, *, max_length: int = 256, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Negative log-likelihood of each item's response under `model`, response tokens only.

    Items are formatted as for fine-tuning (`nncift.downstream.training_example`: the chat
    prompt, then the response and EOS; the prompt is cut from the left when too long).
    Returns (sums (n,) float64: summed NLL in nats over the response tokens, counts (n,)
    int64: how many response tokens were scored). Padding never reaches a real token (right
    padding, causal LM, masked), so batching does not change the numbers beyond rounding.
    """
    import torch
    import torch.nn.functional as F

    from nncift.downstream import training_example

    examples = [
        training_example(lm, p, r, max_length)
        for p, r in zip(items.prompts, items.responses, strict=True)
    ]
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    sums = np.zeros(len(examples), dtype=np.float64)
    counts = np.zeros(len(examples), dtype=np.int64)
    was_training = model.training
    model.eval()
    # Longest first: batches of similar length waste less padding.
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(examples[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            labels = torch.full((len(idx), width), -100, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for b, i in enumerate(idx):
                x, y = examples[i]
                ids[b, : len(x)] = torch.tensor(x)
                labels[b, : len(y)] = torch.tensor(y)
                mask[b, : len(x)] = 1
            logits = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
            # Position t predicts token t + 1.
            target = labels[:, 1:].to(logits.device)  # (B, L-1)
            nll = F.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), target, ignore_index=-100, reduction="none"
            )  # (B, L-1)
            scored = target != -100
            sums[idx] = (nll * scored).sum(dim=1).double().cpu().numpy()
            counts[idx] = scored.sum(dim=1).cpu().numpy()
    if was_training:
        model.train()
    return sums, counts


@dataclass(frozen=True)
class FinetuneSettings:
    """LoRA fine-tuning of one subset (`nncift.downstream.finetune_lora`) and its evaluation."""

    epochs: int = 1
    lr: float = 1e-3
    rank: int = 8
    batch_size: int = 8
    max_length: int = 256
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    n_rouge: int = 60  # test items answered greedily for ROUGE-L (the first n)
    max_new_tokens: int = 24
    eval_batch_size: int = 16
    # Training only (evaluation stays float32): bfloat16 autocast where the device has native
    # bf16, and length-grouped batches; ~4x faster fine-tunes on this project's CPUs.
    bf16: bool = True
    group_by_length: bool = True


def items_digest(items: Items) -> str:
    """sha256 of the items' ids, prompts and responses (what a fine-tune depends on)."""
    h = hashlib.sha256()
    for i, p, r in zip(items.ids, items.prompts, items.responses, strict=True):
        h.update(json.dumps([i, p, r]).encode())
        h.update(b"\n")
    return h.hexdigest()


def finetune_key(lm: Any, train: Items, test: Items, settings: FinetuneSettings, seed: int) -> str:
    """Cache key of one fine-tune + evaluation: LM, training subset, test set, settings, seed."""
    from nncift.downstream import bf16_supported

    spec = {
        "lm": str(getattr(lm, "name", "")),
        "train": items_digest(train),
        "test": items_digest(test),
        "settings": asdict(settings),
        "seed": int(seed),
        # bf16 autocast is used only where the device has it: the precision actually used.
        "bf16": bool(settings.bf16 and bf16_supported(getattr(lm, "device", "cpu"))),
        "v": 1,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def evaluate_subset(
    lm: Any,
    train: Items,
    test: Items,
    settings: FinetuneSettings,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    skip_if_busy: bool = False,
) -> dict[str, Any] | None:
    """Fine-tune a LoRA adapter on `train` (none when empty: the base model), then score `test`.

    Returns a JSON-able dict: ``nll_sum`` / ``tokens`` per test item (`response_nll`), ``nll``
    (mean per token), ``rougeL`` per item for the first ``settings.n_rouge`` test items,
    ``losses`` (per epoch), ``seconds`` {finetune, nll, rouge} and ``cached``. With `cache_dir`
    the result is stored as ``ft-<finetune_key>.json`` and read back on a later call; the base
    model is restored either way. Processes sharing `cache_dir` compute each fine-tune once:
    it runs under a file lock, and the cache is read again once the lock is held;
    `skip_if_busy` returns None at once when another process holds that lock.
    """
    if cache_dir is None:
        return _evaluate(lm, train, test, settings, seed, None)
    from nncift.io import file_lock

    path = Path(cache_dir) / f"ft-{finetune_key(lm, train, test, settings, seed)}.json"
    if path.is_file():
        return _cached(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_suffix(".lock"), blocking=not skip_if_busy) as got:
        if not got:
            return None
        if path.is_file():  # computed by the process that held the lock
            return _cached(path)
        return _evaluate(lm, train, test, settings, seed, path)


def _cached(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(path.read_text())
    out["cached"] = True
    return out


def _evaluate(
    lm: Any,
    train: Items,
    test: Items,
    settings: FinetuneSettings,
    seed: int,
    path: Path | None,
) -> dict[str, Any]:
    from nncift.downstream import _chat, _generate, bf16_supported, finetune_lora, rouge
    from nncift.io import write_text_atomic

    t0 = time.perf_counter()
    losses: list[float] = []
    model = lm.model
    if len(train):
        model, losses = finetune_lora(
            lm,
            train,
            epochs=settings.epochs,
            lr=settings.lr,
            rank=settings.rank,
            batch_size=settings.batch_size,
            max_length=settings.max_length,
            seed=seed,
            target_modules=settings.target_modules,
            bf16=settings.bf16,
            group_by_length=settings.group_by_length,
        )
    t_ft = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        sums, counts = response_nll(
            lm, model, test, max_length=settings.max_length, batch_size=settings.eval_batch_size
        )
        t_nll = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_r = min(settings.n_rouge, len(test))
        gens = [
            _generate(lm, model, _chat(lm, [], test.prompts[i]), settings.max_new_tokens)
            for i in range(n_r)
        ]
        t_rouge = time.perf_counter() - t0
    finally:
        if len(train):
            lm.model = model.unload()
    out = {
        "n_train": len(train),
        "seed": int(seed),
        "nll_sum": sums.tolist(),
        "tokens": counts.tolist(),
        "nll": float(sums.sum() / max(1, counts.sum())),
        "rougeL": [rouge(g, test.responses[i])["rougeL"] for i, g in enumerate(gens)],
        "generations": gens,
        "losses": losses,
        "train_tokens": int(
            sum(
                len(lm.tokenizer(p + r)["input_ids"])
                for p, r in zip(train.prompts, train.responses, strict=True)
            )
        ),
        "seconds": {"finetune": t_ft, "nll": t_nll, "rouge": t_rouge},
        "train_precision": "bf16-autocast"
        if settings.bf16 and bf16_supported(lm.device)
        else "float32",
    }
    if path is not None:
        write_text_atomic(path, json.dumps(out))
    out["cached"] = False
    return out


# ---------------------------------------------------------------- statistics


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Difference of a ratio metric between two rows, paired over seeds and test items.

    a, b: (S, T) per seed and test item: summed values (e.g. NLL sums over an item's tokens)
    or per-item values; weights: (T,) the denominators (token counts), default 1 per item. The
    metric of a row and seed is ``sum_t a[s, t] / sum_t w[t]``; the difference is the mean
    over seeds of a's metric minus b's. Two-level bootstrap: seeds resampled with
    replacement, test items resampled with replacement (the same draw for both rows).

    Returns {"difference", "ci": [lo, hi] (2.5 / 97.5 percentiles), "se" (bootstrap std),
    "mdd" (minimum detectable difference, MDD_FACTOR * se), "excludes_zero"}.
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape:
        raise InputError(f"paired_bootstrap: shapes differ, {a.shape} vs {b.shape}")
    n_seeds, n_items = a.shape
    w = np.ones(n_items) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n_items,):
        raise InputError(f"paired_bootstrap: weights must have shape ({n_items},), got {w.shape}")
    d = a - b  # (S, T)
    point = float(d.sum(axis=1).mean() / w.sum())
    rng = np.random.default_rng(seed)
    item_w = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot)  # (B, T)
    seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot)  # (B, S)
    per_seed = d @ item_w.T  # (S, B)
    denom = item_w @ w  # (B,)
    boots = (seed_w * per_seed.T).sum(axis=1) / n_seeds / np.maximum(denom, 1e-12)  # (B,)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    se = float(boots.std(ddof=1))
    return {
        "difference": point,
        "ci": [float(lo), float(hi)],
        "se": se,
        "mdd": MDD_FACTOR * se,
        "excludes_zero": bool(lo > 0 or hi < 0),
    }


# ---------------------------------------------------------------- the rows


def row_subset(
    row: str,
    k: int,
    *,
    seed: int,
    pool_emb: np.ndarray | None = None,
    target_emb: np.ndarray | None = None,
    pool_response_chars: np.ndarray | None = None,
    rds_pool: np.ndarray | None = None,
    rds_targets: np.ndarray | None = None,
) -> np.ndarray:
    """(k,) int64 pool indices chosen by one row of the probe.

    random: a seeded draw; length: the longest responses (before cutting; ties to the lowest
    index); embedding-fl: facility location on the pool's sentence embeddings (cosine);
    embedding-flmi: FLMI to the targets' embeddings; rds: top-k of the mean cosine of RDS+
    features to the targets' (Ivison et al.'s rule, `nncift select --method rds --objective
    topk`). Only `random` depends on `seed`.
    """
    from nncift.selection import select

    if row == "random":
        n = len(pool_emb) if pool_emb is not None else len(np.asarray(pool_response_chars))
        return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False)).astype(
            np.int64
        )
    if row == "length":
        chars = np.asarray(pool_response_chars)
        return np.argsort(-chars, kind="stable")[:k].astype(np.int64)
    if row == "embedding-fl":
        return select("fl", budget=k, embeddings=pool_emb, mode="dense").indices.astype(np.int64)
    if row == "embedding-flmi":
        return select(
            "flmi", budget=k, embeddings=pool_emb, query_embeddings=target_emb, mode="dense"
        ).indices.astype(np.int64)
    if row == "rds":
        scores = (np.asarray(rds_pool) @ np.asarray(rds_targets).T).mean(axis=1)
        return select("topk", budget=k, scores=scores.astype(np.float32)).indices.astype(np.int64)
    raise InputError(f"unknown probe row {row!r}; choose from {', '.join(ROWS)}")


@dataclass(frozen=True)
class ProbeConfig:
    """Sizes of one probe run. `budgets` x `rows` are fine-tuned for every seed, plus the
    `extra_budgets` for `extra_rows` only (the strongest rows at the other budgets)."""

    pool_size: int = 2000
    n_targets: int = 40
    n_test: int = 300
    budgets: tuple[float, ...] = (0.1,)
    rows: tuple[str, ...] = ROWS
    extra_budgets: tuple[float, ...] = (0.05, 0.2)
    extra_rows: tuple[str, ...] = ("random", "embedding-flmi")
    #: NN-CIFT rows (INFLUENCE_ROWS) at the main budgets, their valuation settings and LM.
    influence_rows: tuple[str, ...] = ()
    influence_options: dict[str, dict[str, Any]] = field(default_factory=default_influence_options)
    lm_name: str = "default"
    seeds: tuple[int, ...] = (0, 1, 2)
    full_data: bool = False
    full_data_seeds: tuple[int, ...] = (0,)  # fine-tuning on the whole pool costs the most
    data_seed: int = 0
    max_prompt_chars: int = 600
    max_response_chars: int = 400
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    n_boot: int = 2000

    def plan(self) -> list[tuple[str, float]]:
        """(row, budget) pairs to fine-tune, main budgets first."""
        out = [(r, b) for b in self.budgets for r in (*self.rows, *self.influence_rows)]
        out += [(r, b) for b in self.extra_budgets for r in self.extra_rows if (r, b) not in out]
        return out

    def build_data(self) -> ProbeData:
        """The probe's pool, targets and test items at these sizes (`build_probe_data`)."""
        return build_probe_data(
            pool_size=self.pool_size,
            n_targets=self.n_targets,
            n_test=self.n_test,
            max_prompt_chars=self.max_prompt_chars,
            max_response_chars=self.max_response_chars,
            seed=self.data_seed,
        )


def run_probe(
    config: ProbeConfig,
    lm: Any,
    embedder: Any,
    *,
    cache_dir: str | Path,
    data: ProbeData | None = None,
    rds_features: Callable[[Items], np.ndarray] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the probe: data, each row's subsets (with their valuation seconds), one fine-tune
    per (row, budget, seed) (cached), the base model, the power check and every paired
    difference. Returns a JSON-able dict (see the module docstring for what it measures).

    embedder: has ``embed(texts) -> (n, d)`` L2-normalised float32 (`nncift.embed.Embedder`);
    rds_features: items -> (n, H) L2-normalised RDS+ features (default
    `nncift.lm_features.lm_features` on `lm`, cached under `cache_dir`).
    """
    say = progress or (lambda msg: log.info("%s", msg))
    cache = Path(cache_dir)
    if data is None:
        data = config.build_data()
    check_disjoint(data.pool, data.targets, data.test)
    m = len(data.pool)
    rows_needed = {r for r, _ in config.plan()}
    cost: dict[str, float] = {"random": 0.0, "length": 0.0}
    t0 = time.perf_counter()
    pool_emb = embedder.embed(data.pool.texts)  # (M, d)
    target_emb = embedder.embed(data.targets.texts)  # (N, d)
    t_emb = time.perf_counter() - t0
    rds_pool = rds_targets = None
    if "rds" in rows_needed:
        from nncift.lm_features import lm_features

        feats = rds_features or (
            lambda items: lm_features(items, lm=lm, cache_dir=cache, progress=False)
        )
        t0 = time.perf_counter()
        rds_pool, rds_targets = feats(data.pool), feats(data.targets)
        cost["rds_features"] = time.perf_counter() - t0
    subsets: dict[str, dict[str, Any]] = {}
    for row, budget in config.plan():
        k = max(1, int(round(budget * m)))
        seeds = config.seeds if row == "random" else config.seeds[:1]
        if row in INFLUENCE_ROWS:
            say(f"NN-CIFT row {row} at {budget:g}: valuing the pool (nncift select)")
            idx, spent = influence_subset(row, k, data, config.influence_options[row],
                                          lm=config.lm_name, cache_dir=cache / "select")  # fmt: skip
            subsets[f"{row}@{budget}"] = {
                "row": row, "budget": budget, "k": k, "indices": {str(seeds[0]): idx.tolist()},
                "valuation_seconds": spent["seconds"], "lm_passes": spent["lm_passes"],
                "lm_seconds": spent["lm_seconds"], "passes_this_run": spent["passes_this_run"],
                "target_source_share": _source_share(data, idx),
            }  # fmt: skip
            continue
        t0 = time.perf_counter()
        picks = {
            s: row_subset(
                row,
                k,
                seed=s,
                pool_emb=pool_emb,
                target_emb=target_emb,
                pool_response_chars=data.pool_response_chars,
                rds_pool=rds_pool,
                rds_targets=rds_targets,
            )
            for s in seeds
        }
        t_sel = (time.perf_counter() - t0) / len(seeds)
        valuation = {
            "random": 0.0,
            "length": 0.0,
            "embedding-fl": t_emb,
            "embedding-flmi": t_emb,
            "rds": cost.get("rds_features", 0.0),
        }[row]
        subsets[f"{row}@{budget}"] = {
            "row": row,
            "budget": budget,
            "k": k,
            "indices": {str(s): picks[s].tolist() for s in seeds},
            "valuation_seconds": valuation + t_sel,
            "selection_seconds": t_sel,
            "target_source_share": _source_share(data, picks[seeds[0]]),
        }
    if config.full_data:
        subsets["full@1.0"] = {"row": "full", "budget": 1.0, "k": m, "valuation_seconds": 0.0}
    jobs: list[tuple[str, int, Items]] = []
    for name, sub in subsets.items():
        if sub["row"] == "full":
            jobs += [(name, s, data.pool) for s in config.full_data_seeds]
            continue
        for s in config.seeds:
            idx = sub["indices"].get(str(s), sub["indices"][str(config.seeds[0])])
            jobs.append((name, s, data.pool.subset(idx)))
    jobs.append(("base", 0, data.pool.subset([])))
    # Fine-tunes another process is computing (same cache) are left for a second pass, which
    # waits for them: two processes, one per core, share the work.
    runs: dict[str, dict[str, Any]] = {}
    for skip in (True, False):
        for name, s, train in jobs:
            if str(s) in runs.get(name, {}):
                continue
            say(f"fine-tune {name} seed {s} ({len(train)} items)")
            res = evaluate_subset(
                lm,
                train,
                data.test,
                config.finetune,
                seed=s,
                cache_dir=cache,
                skip_if_busy=skip,
            )
            if res is not None:
                runs.setdefault(name, {})[str(s)] = _slim(res)
    base = runs.pop("base")["0"]
    return summarise(config, data, subsets, runs, base, {"embed": t_emb, **cost})


def _comparisons(
    rows: list[dict[str, Any]], diff: Callable[[str, str, str], dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """Each NN-CIFT row against the strongest label-free row at its budget (lowest mean NLL:
    picked after the fact, so the comparison favours the baseline), and NN-CIFT's default
    design against the paper's. Paired NLL differences, negative = the first row is better."""
    out = []
    for r in rows:
        if r["row"] not in INFLUENCE_ROWS:
            continue
        b = r["budget"]
        free = [x for x in rows if x["budget"] == b and x["row"] in ROWS]  # label-free
        if free:
            best = min(free, key=lambda x: x["nll"])
            d = diff(f"{r['row']}@{b}", f"{best['row']}@{b}", "nll_sum")
            if d is not None:
                out.append({"row": r["row"], "ref": best["row"], "budget": b, **d})
    for b in sorted({r["budget"] for r in rows}):
        d = diff(f"{INFLUENCE_ROWS[0]}@{b}", f"{INFLUENCE_ROWS[1]}@{b}", "nll_sum")
        if d is not None:
            out.append({"row": INFLUENCE_ROWS[0], "ref": INFLUENCE_ROWS[1], "budget": b, **d})
    return out


def _source_share(data: ProbeData, idx: np.ndarray) -> float:
    """Share of chosen items from the targets' source."""
    kind = data.info.get("target_source", "chatterbot")
    return float(np.mean([data.pool_source[i] == kind for i in idx]))


def _slim(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "generations"}


def _matrix(runs: dict[str, Any], seeds: Sequence[int], key: str) -> np.ndarray:
    return np.array([runs[str(s)][key] for s in seeds], dtype=np.float64)  # (S, T)


def summarise(
    config: ProbeConfig,
    data: ProbeData,
    subsets: dict[str, dict[str, Any]],
    runs: dict[str, dict[str, Any]],
    base: dict[str, Any],
    valuation_seconds: dict[str, float],
) -> dict[str, Any]:
    """Per row and budget: NLL, ROUGE-L and paired differences against random and embedding
    FLMI at the same budget (negative NLL difference = better than the reference row); the
    power check (embedding FLMI - random at the first main budget)."""
    all_seeds = list(config.seeds)
    tokens = np.asarray(base["tokens"], dtype=np.float64)

    def diff(
        name: str, ref: str, key: str, seeds: Sequence[int] | None = None
    ) -> dict[str, Any] | None:
        if ref not in runs or name not in runs or name == ref:
            return None
        w = tokens if key == "nll_sum" else None
        use = list(all_seeds if seeds is None else seeds)
        return paired_bootstrap(
            _matrix(runs[name], use, key), _matrix(runs[ref], use, key), w, n_boot=config.n_boot
        )

    rows = []
    for name, sub in subsets.items():
        budget = sub["budget"]
        seeds = list(config.full_data_seeds if sub["row"] == "full" else config.seeds)
        ref_b = budget if budget in set(config.budgets) | set(config.extra_budgets) else None
        # Full data is compared with the main budget's rows, on the seeds it was run with.
        pair_seeds = seeds if sub["row"] == "full" else None
        if sub["row"] == "full":
            ref_b = config.budgets[0]
        nll = _matrix(runs[name], seeds, "nll_sum").sum(axis=1) / tokens.sum()
        rl = _matrix(runs[name], seeds, "rougeL").mean(axis=1)
        ft_s = [runs[name][str(s)]["seconds"]["finetune"] for s in seeds]
        rows.append(
            {
                "row": sub["row"],
                "budget": budget,
                "k": sub["k"],
                "nll": float(nll.mean()),
                "nll_per_seed": nll.tolist(),
                "rougeL": float(rl.mean()),
                "vs_base": paired_bootstrap(
                    _matrix(runs[name], seeds, "nll_sum"),
                    np.tile(np.asarray(base["nll_sum"]), (len(seeds), 1)),
                    tokens,
                    n_boot=config.n_boot,
                ),
                "vs_random": diff(name, f"random@{ref_b}", "nll_sum", pair_seeds)
                if ref_b
                else None,
                "vs_embedding_flmi": diff(name, f"embedding-flmi@{ref_b}", "nll_sum", pair_seeds)
                if ref_b
                else None,
                "rougeL_vs_random": diff(name, f"random@{ref_b}", "rougeL", pair_seeds)
                if ref_b
                else None,
                "valuation_seconds": sub["valuation_seconds"],
                "lm_passes": sub.get("lm_passes", 0),
                "lm_seconds": sub.get("lm_seconds", 0.0),
                "passes_this_run": sub.get("passes_this_run", 0),
                "finetune_seconds": float(np.mean(ft_s)),
                "target_source_share": sub.get("target_source_share"),
            }
        )
    b0 = config.budgets[0]
    power = diff(f"embedding-flmi@{b0}", f"random@{b0}", "nll_sum")
    return {
        "comparisons": _comparisons(rows, diff),
        "config": {**asdict(config), "finetune": asdict(config.finetune)},
        "data": data.info,
        "base": {"nll": base["nll"], "rougeL": float(np.mean(base["rougeL"]))},
        "power_check": None if power is None else {"budget": b0, **power},
        "rows": rows,
        "valuation_seconds": valuation_seconds,
        "finetune_seconds_total": float(
            sum(
                x["seconds"]["finetune"]
                for r in runs.values()
                for x in r.values()
                if not x.get("cached")
            )
        ),
        "n_cached": sum(bool(x.get("cached")) for r in runs.values() for x in r.values()),
        "n_runs": sum(len(r) for r in runs.values()),
        "mdd": None if power is None else power["mdd"],
        "tokens_scored": int(tokens.sum()),
    }


__all__ = [
    "INFLUENCE_ROWS",
    "MDD_FACTOR",
    "ROWS",
    "FinetuneSettings",
    "ProbeConfig",
    "ProbeData",
    "build_probe_data",
    "check_disjoint",
    "default_influence_options",
    "evaluate_subset",
    "influence_subset",
    "finetune_key",
    "items_digest",
    "normalise_prompt",
    "paired_bootstrap",
    "response_nll",
    "row_subset",
    "run_probe",
    "shared_prompts",
    "summarise",
]
