"""The vectors and values a selection run selects on: sentence embeddings (computed or
provided by the user), RDS+ LM features, and influence values from the valuer.

`nncift.pipeline` calls these in order; each records what it did in the run's manifest.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nncift.data import Items
from nncift.embed import Embedder
from nncift.errors import InputError
from nncift.manifest import Manifest
from nncift.provided_embeddings import ProvidedEmbeddings, check_pair
from nncift.select_options import FEATURES, SelectOptions, valuation_options
from nncift.valuation import TARGET_FL, TARGET_OBJECTIVES, TARGET_QMI, Valuer, label_key

log = logging.getLogger(__name__)


def with_provided(
    options: SelectOptions,
    pool: Items,
    target: Items | None,
    embeddings: ProvidedEmbeddings | None,
    target_embeddings: ProvidedEmbeddings | None,
) -> SelectOptions:
    """Check provided embeddings against the run; they replace the embedder's id."""
    if options.method == "rds" and (embeddings is not None or target_embeddings is not None):
        raise InputError(
            "--method rds selects on the LM's own hidden states (RDS+ features), which it "
            "computes itself; --embeddings / --target-embeddings are other vectors: drop them, "
            "or use --method embedding to select on the vectors you have"
        )
    if embeddings is None:
        if target_embeddings is not None:
            raise InputError(
                "target embeddings were given without pool embeddings: give both (--embeddings "
                "and --target-embeddings), so pool and targets come from one model"
            )
        return options
    if target is not None and target_embeddings is None and options.method != "random":
        raise InputError(
            "pool embeddings were given but the target set has none: give --target-embeddings "
            "too (vectors from one model for both), or drop --embeddings to embed both"
        )
    if target is None and target_embeddings is not None:
        raise InputError("--target-embeddings was given without a target set (--target)")
    if len(embeddings.vectors) != len(pool):
        raise InputError(
            f"{embeddings.path}: {len(embeddings.vectors):,} vectors for {len(pool):,} pool items"
        )
    if target is not None and target_embeddings is not None:
        if len(target_embeddings.vectors) != len(target):
            raise InputError(
                f"{target_embeddings.path}: {len(target_embeddings.vectors):,} vectors for "
                f"{len(target):,} target items"
            )
        check_pair(embeddings, target_embeddings)
    return replace(options, embedder=embeddings.model_id)


def provided_vectors(
    embeddings: ProvidedEmbeddings,
    target_embeddings: ProvidedEmbeddings | None,
    manifest: Manifest,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    with manifest.stage("embed", model=embeddings.model_id) as rec:
        rec.update(provided=embeddings.manifest_record())
        if target_embeddings is not None:
            rec.update(provided_target=target_embeddings.manifest_record())
    target = None if target_embeddings is None else target_embeddings.vectors
    return embeddings.vectors, target, embeddings.model_id


def embed_items(
    pool: Items, target: Items | None, options: SelectOptions, manifest: Manifest, progress: bool
) -> tuple[np.ndarray, np.ndarray | None, str]:
    embedder = Embedder(
        options.embedder,
        device=options.device,
        batch_size=options.batch_size,
        cache_dir=options.cache_dir,
        progress=progress,
    )
    with manifest.stage("embed", model=embedder.model_id) as rec:
        pool_emb = embedder.embed(pool.texts)  # (M, d)
        rec.update(pool=dict(embedder.last_stats))
        target_emb = None
        if target is not None:
            target_emb = embedder.embed(target.texts)  # (N, d)
            rec.update(target=dict(embedder.last_stats))
    return pool_emb, target_emb, embedder.model_id


def embedding_inputs(
    objective: str,
    pool_emb: np.ndarray,
    target_emb: np.ndarray | None,
    method: str = "embedding",
) -> dict[str, Any]:
    """Selection inputs for the embedding and rds methods: cosine kernels built in Rust from
    L2-normalised vectors (sentence embeddings, or RDS+ features); for flqmi the small pool x
    target kernel is built here (the clipped cosine, `nncift.select`'s default), with each
    item's best target value as its score."""
    if objective in TARGET_OBJECTIVES and target_emb is None:
        raise InputError(f"objective {objective} needs a target set: give --target")
    if objective == "topk":
        if target_emb is None:
            raise InputError(
                f"top-k with the {method} method ranks by similarity to --target; give one"
            )
        # The cheap baseline of Ivison et al.: mean cosine similarity to the target set.
        return {"scores": (pool_emb @ target_emb.T).mean(axis=1).astype(np.float32)}
    if objective == TARGET_QMI:
        assert target_emb is not None
        kernel = np.maximum(pool_emb @ target_emb.T, 0.0).astype(np.float32)
        return query_only_inputs(objective, kernel)
    kwargs: dict[str, Any] = {"embeddings": pool_emb}
    if objective == TARGET_FL:
        kwargs["represented_embeddings"] = target_emb
    elif objective == "flmi":
        kwargs["query_embeddings"] = target_emb
    elif objective == "flcg":
        kwargs["private_embeddings"] = target_emb
    return kwargs


def require_lm_extra(purpose: str = "--method rds (LM hidden-state features)") -> None:
    """The one-line error of LM features (`--method rds`, `--features lm|both`) without the
    `lm` extra."""
    from nncift.extras import require

    require("torch", "transformers", purpose=purpose, extra="lm")


def network_features_wanted(options: SelectOptions) -> bool:
    """Whether the run computes LM features for its networks (checks `--features`)."""
    v = valuation_options(options)
    if v.features not in FEATURES:
        raise InputError(f"unknown features {v.features!r}; choose from {', '.join(FEATURES)}")
    if v.features == "minilm":
        return False
    if options.method not in ("delift", "delift-se", "less", "selectit"):
        hint = " (it selects on LM features already)" if options.method == "rds" else ""
        raise InputError(
            f"--features {v.features} chooses what the network of delift, delift-se, less and "
            f"selectit reads; --method {options.method} trains no network{hint}"
        )
    if v.exact:
        return False  # --exact trains no network: nothing reads the features
    require_lm_extra(f"--features {v.features} (LM hidden-state features)")
    return True


def network_features(
    pool: Items,
    target: Items | None,
    pool_emb: np.ndarray,
    target_emb: np.ndarray | None,
    model_id: str,
    options: SelectOptions,
    manifest: Manifest,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray | None, str] | None:
    """What the networks read with `--features lm|both` (pool, targets, model id); None for
    the embeddings (`minilm`, or `--exact`, which trains no network)."""
    if not network_features_wanted(options):
        return None
    lm_pool, lm_target = lm_feature_vectors(pool, target, options, manifest, progress)
    lm_id = str(manifest.stages["lm_features"]["model_id"])
    if valuation_options(options).features == "lm":
        return lm_pool, lm_target, lm_id
    target_x = None
    if target_emb is not None and lm_target is not None:
        target_x = both_features(target_emb, lm_target)
    return both_features(pool_emb, lm_pool), target_x, f"{model_id}+{lm_id}"


def both_features(embeddings: np.ndarray, lm_features: np.ndarray) -> np.ndarray:
    """`--features both`: [e / |e|, f / |f|] / sqrt(2) -> (n, d_e + d_f) float32, unit rows
    (the cosine of two items is the mean of the two cosines)."""

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    both = np.concatenate([unit(embeddings), unit(lm_features)], axis=1) / np.sqrt(2.0)
    return np.ascontiguousarray(both, dtype=np.float32)


def lm_featurizer(options: SelectOptions, progress: bool = True) -> Any:
    """The `nncift.lm_features.LMFeaturizer` of a run: LM, dtype and context from
    `options.valuation` (`--lm`, `--dtype`, `--max-length`), device and cache from `options`."""
    from nncift.lm_features import LMFeaturizer

    v = valuation_options(options)
    return LMFeaturizer(
        v.lm, device=v.device or options.device, dtype=v.dtype, max_length=v.max_length,
        cache_dir=options.cache_dir, progress=progress,
    )  # fmt: skip


def lm_feature_vectors(
    pool: Items, target: Items | None, options: SelectOptions, manifest: Manifest, progress: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """RDS+ features of pool and targets (stage ``lm_features``; summary in
    ``results.lm_features``: LM, pooling, dimension, truncated items, seconds)."""
    featurizer = lm_featurizer(options, progress)
    with manifest.stage("lm_features") as rec:
        pool_x = featurizer.features(pool)  # (M, H)
        rec.update(featurizer.describe(), pool=dict(featurizer.last_stats))
        target_x = None
        if target is not None:
            target_x = featurizer.features(target)  # (N, H)
            rec.update(target=dict(featurizer.last_stats))
    truncated = sum(int(rec[k]["truncated"]) for k in ("pool", "target") if k in rec)
    manifest.results["lm_features"] = {
        "lm": rec["lm"],
        "pooling": rec["pooling"],
        "pooling_version": rec["pooling_version"],
        "dimension": int(pool_x.shape[1]),
        "truncated": truncated,
        "max_length": rec["max_length"],
        "seconds": rec["seconds"],
    }
    if truncated:
        manifest.results.setdefault("warnings", []).append(
            f"{truncated} items were longer than {rec['max_length']} tokens and were cut from "
            "the left for their LM features"
        )
    return pool_x, target_x


def value_inputs(
    pool: Items,
    target: Items | None,
    pool_emb: np.ndarray,
    target_emb: np.ndarray | None,
    options: SelectOptions,
    objective: str,
    manifest: Manifest,
    progress: bool,
    model_id: str,
    features: tuple[np.ndarray, np.ndarray | None, str] | None = None,
) -> Any:
    from nncift.embed import default_cache_dir

    vopt = valuation_options(options)
    root = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    # Keyed by what determines the labels only: another network reuses them (valuation.py).
    run_dir = root / "runs" / label_key(pool, target, vopt)
    manifest.results["run_dir"] = str(run_dir)
    valuer = Valuer(
        pool, target, pool_emb, target_emb, vopt,
        run_dir=run_dir, manifest=manifest, progress=progress, embedding_model=model_id,
        ray=options.ray, features=features,
    )  # fmt: skip
    valuation = valuer.value(objective)
    manifest.results["valuation"] = valuation.info
    return valuation


def plan_lm_features(
    pool: Items, target: Items | None, options: SelectOptions, throughput: Any
) -> dict[str, Any]:
    """The ``lm_features`` stage of a plan: one forward per item not cached yet, grouped in
    the run's batches and priced with the LM probe of this machine (or `throughput`)."""
    from nncift import lm_probe
    from nncift.embed import default_cache_dir
    from nncift.lm_features import BATCH_TOKENS, MAX_BATCH
    from nncift.lm_work import LMWork

    v = valuation_options(options)
    featurizer = lm_featurizer(options, progress=False)
    work = LMWork()
    cached = truncated = 0
    dimension = 0
    for items in (pool, target):
        if items is None:
            continue
        todo = featurizer.pending(items)
        work.add(todo["lengths"], [0] * len(todo["lengths"]), batch_tokens=BATCH_TOKENS,
                 max_batch=MAX_BATCH)  # fmt: skip
        cached += todo["cached"]
        truncated += todo["truncated"]
        dimension = todo["dimension"]
    probe_cached = throughput is not None
    cache = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    if throughput is None and work.passes:
        throughput, _, probe_cached = lm_probe.get_throughput(
            cache, lm=v.lm, device=v.device or options.device, dtype=v.dtype,
            max_length=v.max_length,
        )  # fmt: skip
    seconds, basis = 0.0, "all cached"
    notes: list[str] = []
    if throughput is not None and work.passes:
        passes_s = work.seconds(throughput)
        seconds = throughput.load_seconds + passes_s
        basis = f"LM load {throughput.load_seconds:.0f} s + passes {passes_s:,.0f} s"
        notes.append(
            f"measured on this machine: {throughput.forward.tokens_per_second():,.0f} tokens/s "
            "(LM forward); " + ("probe cached" if probe_cached else "probed now")
            + "; a busier machine takes longer"
        )  # fmt: skip
    n_texts = len(pool) + (len(target) if target is not None else 0)
    extra = [f"{work.passes:,} LM passes", f"{work.tokens:,} tokens", f"~{seconds:,.0f} s: {basis}"]
    line = (
        f"  lm_features      RDS+ features of {n_texts:,} texts with {featurizer.describe()['lm']}"
        f", {dimension}-d, one forward per item, {cached:,} cached, {truncated:,} cut to "
        f"{featurizer.context} tokens ({', '.join(extra)})"
    )
    return {
        "line": line, "passes": work.passes, "seconds": seconds, "dimension": dimension,
        "notes": notes,
    }  # fmt: skip


def query_only_inputs(objective: str, kernel: np.ndarray) -> dict[str, Any]:
    """Inputs of the objectives on the pool x target kernel alone: fl-target reads the kernel
    (the targets are the represented set); flqmi also each pool item's best target value
    (the modular term of FLQMI, scaled by eta when the selection runs)."""
    if objective == TARGET_QMI:
        return {"kernel": kernel, "scores": np.asarray(kernel.max(axis=1), dtype=np.float32)}
    return {"kernel": kernel}


def influence_inputs(objective: str, valuation: Any) -> dict[str, Any]:
    """Selection inputs from a valuation: kernels for the FL family, scores for top-k."""
    if objective == "topk":
        if valuation.scores is None:
            raise InputError(
                "this method gives a kernel, not scores: use fl, flmi, flcg or fl-target"
            )
        return {"scores": valuation.scores}
    if objective in (TARGET_FL, TARGET_QMI):
        return query_only_inputs(objective, valuation.query_kernel)
    if valuation.data_kernel is None:
        raise InputError(
            f"objective {objective} needs a kernel; this method gives scores: use topk"
        )
    kwargs: dict[str, Any] = {"kernel": valuation.data_kernel}
    if objective == "flmi":
        kwargs["query_kernel"] = valuation.query_kernel
    elif objective == "flcg":
        kwargs["private_kernel"] = valuation.query_kernel
    return kwargs
