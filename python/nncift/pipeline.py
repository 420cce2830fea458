"""The `nncift select` job as one Python call: load -> embed -> value -> select -> write.

`run_select` is what the CLI calls; everything it does is available here for users who
drive nncift from their own code.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nncift.data import Items
from nncift.errors import InputError
from nncift.io import atomic_path, write_text_atomic
from nncift.manifest import Manifest
from nncift.provided_embeddings import ProvidedEmbeddings
from nncift.select_inputs import (
    embed_items,
    embedding_inputs,
    influence_inputs,
    lm_feature_vectors,
    network_features,
    network_features_wanted,
    plan_lm_features,
    provided_vectors,
    require_lm_extra,
    value_inputs,
    with_provided,
)
from nncift.select_options import (
    COSINE_METHODS,
    METHODS,
    SelectOptions,
    valuation_options,
)
from nncift.valuation import QUERY_ONLY_OBJECTIVES, TARGET_OBJECTIVES, TARGET_QMI

log = logging.getLogger(__name__)


def resolve_objective(objective: str, method: str, has_target: bool) -> str:
    """`auto` -> the method's own selection rule (method.md): top-k for less and selectit,
    FLMI with the target as queries when a target set is given, else facility location.
    An objective no method here can feed (mix without scores) is refused."""
    if objective == "mix" and method in ("embedding", "rds", "delift", "delift-se"):
        # mix weighs a kernel against a score per item; these methods give a kernel only.
        raise InputError(
            f"objective mix needs a score per pool item, which --method {method} "
            "does not give: use fl, or nncift.select('mix', ..., scores=...) in Python"
        )
    if objective in QUERY_ONLY_OBJECTIVES and not has_target:
        raise InputError(f"objective {objective} serves the target set: give --target")
    if objective != "auto":
        return objective
    if method in ("less", "selectit"):
        return "topk"
    return "flmi" if has_target else "fl"


#: Fields added to every output record.
RANK_FIELD, GAIN_FIELD, ID_FIELD = "nncift_rank", "nncift_gain", "nncift_id"


def resolve_budget(budget: float, n: int) -> int:
    """A budget as a count (>= 1, whole) or a fraction of the pool (0 < b < 1) -> a count
    that fits the pool."""
    from nncift.selection import resolve_budget as to_count

    k = to_count(budget, n)  # InputError on a bad budget
    if k > n:
        raise InputError(f"budget {k} is larger than the pool ({n} items)")
    return k


@dataclass
class SelectRun:
    """What a run produced: chosen pool indices in order, their gains, and the manifest."""

    indices: np.ndarray
    gains: np.ndarray
    objective_value: float | None
    manifest: Manifest
    output: Path | None = None

    def summary(self, pool: Items) -> str:
        k = len(self.indices)
        lines = [
            f"selected {k} of {len(pool)} items ({k / len(pool):.1%}) from {pool.source}",
        ]
        if self.objective_value is not None:
            lines.append(f"objective value {self.objective_value:.6g}")
        valuation = self.manifest.results.get("valuation") or {}
        for name, d in (valuation.get("designs") or {}).items():
            e = (valuation.get("estimators") or {}).get(name, {})
            budget = d.get("label_budget") or {}
            what = (
                f"{d['pairs']:,} pairs" if d.get("pairs") is not None else f"{d['items']:,} items"
            )
            score = e.get("rank_score")
            lines.append(
                f"{name}: {d['design']} design labelled {what}"
                + (f" (label budget {budget['text']})" if budget else f" (u = {d.get('u')})")
                + f", {(d.get('lm_cost') or {}).get('passes', 0):,} LM passes; estimator "
                + str(e.get("chosen"))
                + ("" if score is None else f", held-out rank score {score:.3f}")
            )
        short = self.manifest.results.get("short_of_budget")
        if short:
            lines.append(f"warning: {short['message']}")
        stages = ", ".join(
            f"{name} {rec['seconds']:.2f}s" for name, rec in self.manifest.stages.items()
        )
        lines.append(f"stages: {stages}")
        if self.output is not None:
            lines.append(f"wrote {self.output} and {manifest_path(self.output)}")
        return "\n".join(lines)


def manifest_path(output: Path) -> Path:
    """`subset.jsonl` -> `subset.manifest.json` (next to the output)."""
    return output.with_name(output.stem + ".manifest.json")


def output_records(pool: Items, indices: np.ndarray, gains: np.ndarray) -> list[dict[str, Any]]:
    """The chosen original records in selection order, with rank, gain and id added."""
    out = []
    for rank, (i, g) in enumerate(zip(indices, gains, strict=True), start=1):
        rec = dict(pool.records[int(i)])
        rec[RANK_FIELD] = rank
        rec[GAIN_FIELD] = float(g)
        rec[ID_FIELD] = pool.ids[int(i)]
        out.append(rec)
    return out


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write records atomically as .jsonl, .json, .csv or .parquet (by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        write_text_atomic(path, text)
    elif suffix == ".json":
        write_text_atomic(
            path, json.dumps(records, ensure_ascii=False, indent=1, default=str) + "\n"
        )
    elif suffix in (".csv", ".parquet"):
        import polars as pl

        # Nested values (chat turns) do not fit a CSV cell: store them as JSON text.
        flat = (
            [
                {
                    k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                    for k, v in r.items()
                }
                for r in records
            ]
            if suffix == ".csv"
            else records
        )
        df = pl.DataFrame(flat, infer_schema_length=None)
        with atomic_path(path, suffix=suffix) as tmp:
            if suffix == ".csv":
                df.write_csv(tmp)
            else:
                df.write_parquet(tmp)
    else:
        raise InputError(
            f"{path}: unknown output type {path.suffix!r}; use .jsonl, .json, .csv or .parquet"
        )


def check_output_path(path: Path) -> None:
    """Refuse an output path nncift cannot write, before any work is done."""
    if path.suffix.lower() not in (".jsonl", ".ndjson", ".json", ".csv", ".parquet"):
        raise InputError(
            f"{path}: unknown output type {path.suffix!r}; use .jsonl, .json, .csv or .parquet"
        )
    if path.exists() and path.is_dir():
        raise InputError(f"{path}: is a directory")


def run_select(
    pool: Items,
    options: SelectOptions,
    *,
    target: Items | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    manifest: Manifest | None = None,
    embeddings: ProvidedEmbeddings | None = None,
    target_embeddings: ProvidedEmbeddings | None = None,
) -> SelectRun:
    """Select `options.budget` items of `pool`; write them to `out` with a manifest.

    Args:
        pool: the items to select from (`D_F`).
        target: the target set (`D_T`) for objectives that need one (flmi, flcg, fl-target).
        out: output file (.jsonl/.json/.csv/.parquet); the manifest goes next to it.
        embeddings, target_embeddings: vectors the user brings
            (`nncift.provided_embeddings.load_provided_embeddings`, aligned with `pool` /
            `target`) instead of embedding the texts; they stand for the embedder everywhere
            (network inputs, DELIFT (SE), the embedding method, cache keys).
    """
    _check_method(options.method)
    options = with_provided(options, pool, target, embeddings, target_embeddings)
    if options.method == "rds":
        require_lm_extra()
    network_features_wanted(options)  # refuses a bad --features before any work
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        check_output_path(out_path)
    k = resolve_budget(options.budget, len(pool))
    objective = resolve_objective(options.objective, options.method, target is not None)
    manifest = manifest or Manifest(command="select")
    manifest.options.update(asdict(options))
    manifest.options.update(budget_count=k, objective_resolved=objective)
    manifest.results["pool_size"] = len(pool)

    if options.method == "random":
        with manifest.stage("select", method="random"):
            rng = np.random.default_rng(options.seed)
            indices = rng.choice(len(pool), size=k, replace=False).astype(np.int64)
            gains = np.zeros(k, dtype=np.float64)
            value = None
    else:
        if options.method == "rds":
            pool_emb, target_emb = lm_feature_vectors(pool, target, options, manifest, progress)
            kwargs = embedding_inputs(objective, pool_emb, target_emb, method="rds")
        elif embeddings is not None:
            pool_emb, target_emb, model_id = provided_vectors(
                embeddings, target_embeddings, manifest
            )
        else:
            pool_emb, target_emb, model_id = embed_items(pool, target, options, manifest, progress)
        if options.method == "embedding":
            kwargs = embedding_inputs(objective, pool_emb, target_emb)
        elif options.method != "rds":
            features = network_features(
                pool, target, pool_emb, target_emb, model_id, options, manifest, progress
            )
            valuation = value_inputs(
                pool, target, pool_emb, target_emb, options, objective, manifest, progress,
                model_id, features,
            )  # fmt: skip
            kwargs = influence_inputs(objective, valuation)
        with manifest.stage("select", objective=objective) as rec:
            result = _select(objective, k, kwargs, options, rec)
            rec.update(mode=result.mode, optimizer=result.optimizer, timings=result.timings)
        indices, gains, value = result.indices, result.gains, float(result.objective)
        _warn_if_short(result, k, manifest)
        _warn_if_unranked(gains, options.method, manifest)
        _warn_if_no_signal(manifest)

    manifest.results.update(selected=int(len(indices)), objective_value=value)
    run = SelectRun(indices=indices, gains=gains, objective_value=value, manifest=manifest)
    if out_path is not None:
        with manifest.stage("write"):
            write_records(out_path, output_records(pool, indices, gains))
        manifest.results["output"] = str(out_path)
        manifest.write(manifest_path(out_path))
        run.output = out_path
    return run


#: What to do about a selection that stopped short of its budget, by reason.
_SHORT_ADVICE = {
    "zero_gain": "pass --no-stop-at-zero to fill the budget (tied items then follow the "
    "seeded tie order), or try another --objective or --network",
    "negative_gain": "every further item lowers the objective; lower --budget or try "
    "another --objective",
    "cost_budget": "raise the cost budget or lower --budget",
    "exhausted": "lower --budget",
}


def _warn_if_short(result: Any, budget: int, manifest: Manifest) -> None:
    """Warn and record `results.short_of_budget` when fewer than `budget` items came back."""
    from nncift.selection import STOP_REASONS

    chosen = len(result.indices)
    if chosen >= budget:
        return
    reason = getattr(result, "stopped_early", None) or "exhausted"
    msg = (
        f"selected {chosen} of the budget {budget}: "
        f"{STOP_REASONS.get(reason, reason)}; {_SHORT_ADVICE.get(reason, 'lower --budget')}"
    )
    log.warning(msg)
    manifest.results["short_of_budget"] = {
        "selected": chosen,
        "budget": budget,
        "reason": reason,
        "message": msg,
    }


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def unranked_picks(gains: np.ndarray) -> int:
    """Picks after the first whose gain is <= 0 or equal to the pick before.

    Such picks carry no ranking: the selection engine breaks exact ties by a permutation of
    the pool drawn from the run's seed, so among tied items they are a seeded random choice
    (another ``--seed`` picks others), not the best ones. Many of them mean the values are
    (near-)constant (e.g. a network that learned nothing) or the kernel is saturated.
    """
    g = np.asarray(gains, dtype=np.float64)
    if g.size < 2:
        return 0
    tail = g[1:]
    return int(np.count_nonzero((tail <= 0) | (tail == g[:-1])))


def _warn_if_no_signal(manifest: Manifest) -> None:
    """Say plainly when `--network auto` kept the constant (stages.train_*.no_signal)."""
    from nncift.estimator import NO_SIGNAL_MESSAGE

    nets = [k[6:] for k, r in manifest.stages.items() if k[:6] == "train_" and r.get("no_signal")]
    if nets:
        msg = f"network {', '.join(nets)}: {NO_SIGNAL_MESSAGE}"
        log.warning(msg)
        manifest.results.setdefault("warnings", []).append(msg)
    # The estimators of a labelling design (nncift.design_valuation): a held-out rank score
    # at or below 0 means the labels taught nothing that ranks unlabelled items.
    for k, r in manifest.stages.items():
        if k.startswith("estimate_") and r.get("no_signal"):
            score = r.get("rank_score")
            msg = (
                f"estimator {k[9:]}: {r.get('chosen')} ranked held-out labelled items at "
                + ("no better than a constant" if score is None else f"Spearman {score:.3f}")
                + " (" + str(r.get("criterion")) + "): the labels carried no learnable signal "
                "there, so unlabelled items are ranked by the estimator's features alone. "
                "Label more (raise --label-budget) or use --exact"
            )  # fmt: skip
            log.warning(msg)
            manifest.results.setdefault("warnings", []).append(msg)


def _warn_if_unranked(gains: np.ndarray, method: str, manifest: Manifest) -> None:
    n, k = unranked_picks(gains), len(gains)
    if k >= 4 and n > k // 2:
        advice = (
            "the kernel is saturated; lower --budget"
            if method in COSINE_METHODS  # no network: only saturation can cause it
            else "the values are (near-)constant or the kernel is saturated; check the "
            "network's validation error or the estimator's held-out rank score in the manifest "
            "(stages.train_*, stages.estimate_*), raise --u or --label-budget, lower --budget "
            "or use --exact"
        )
        msg = (
            f"{n} of {k} picks had no gain or the same gain as the pick before: the values "
            "rank nothing there, so those picks are a random choice among tied items (the "
            f"tie order drawn from --seed), not a ranking. Likely {advice}."
        )
        log.warning(msg)
        manifest.results.setdefault("warnings", []).append(msg)


def _select(
    objective: str, k: int, inputs: dict[str, Any], options: SelectOptions, rec: dict[str, Any]
) -> Any:
    """Select locally, or with --ray by partition-and-merge, one Ray task per part, when the
    objective allows it (fl on a square kernel or embeddings, graph cut, disparity)."""
    from nncift.selection import select

    if options.ray is not None:
        from nncift.distributed.shards import PARTITIONABLE, select_partitioned

        square = "represented_embeddings" not in inputs and (
            "embeddings" in inputs
            or ("kernel" in inputs and inputs["kernel"].shape[0] == inputs["kernel"].shape[1])
        )
        if objective in PARTITIONABLE and square and objective not in QUERY_ONLY_OBJECTIVES:
            extra = {
                key: v
                for key, v in options.selection.items()
                if key not in ("optimizer", "greedi_parts", "n_jobs", "memory_limit")
            }
            result, info = select_partitioned(
                options.ray, objective, budget=k, seed=options.seed, parts=options.ray.shards,
                **inputs, **extra,
            )  # fmt: skip
            rec["ray"] = info.to_dict()
            return result
        rec["ray"] = f"selection ran on the driver: {objective} has no partition-and-merge"
        log.warning("--ray: %s is selected on this machine (no partition-and-merge)", objective)
    settings = dict(options.selection)
    if objective == TARGET_QMI:
        # FLQMI = fl over the targets + eta * each item's best target value: nncift's mix.
        eta = settings.pop("eta", None)
        inputs = {**inputs, "scores": inputs["scores"] * np.float32(1.0 if eta is None else eta)}
        settings.pop("quality_weight", None)
        return select("mix", budget=k, random_state=options.seed, **inputs, **settings)
    # fl-target is facility location with the targets as the represented set.
    name = "fl" if objective in QUERY_ONLY_OBJECTIVES else objective
    return select(name, budget=k, random_state=options.seed, **inputs, **settings)


def plan_select(
    pool: Items,
    target: Items | None,
    options: SelectOptions,
    *,
    throughput: Any = None,
    embeddings: ProvidedEmbeddings | None = None,
    target_embeddings: ProvidedEmbeddings | None = None,
) -> str:
    """What `run_select` would do, with LM passes, tokens, memory and time estimates.

    No labels, embeddings or selection are computed, but the run's own checks are: a run
    `run_select` would refuse raises the same error here. For delift, less and selectit the
    label time comes from the token counts of the passes the run would make over these very
    texts and from a short probe of the LM on this machine (`nncift.lm_probe`; its first use
    loads the LM and takes a few seconds, then it is cached). Other methods load no LM.

    throughput: a `nncift.lm_probe.Throughput` to price LM passes with instead of the probe.
    embeddings, target_embeddings: provided vectors, as for `run_select`.
    """
    from nncift.plan import plan_valuation
    from nncift.selection_plan import estimate_selection

    _check_method(options.method)
    options = with_provided(options, pool, target, embeddings, target_embeddings)
    k = resolve_budget(options.budget, len(pool))
    objective = resolve_objective(options.objective, options.method, target is not None)
    if options.method in COSINE_METHODS:  # the run's input checks, on stand-in embeddings
        stand_in = np.zeros((1, 1), dtype=np.float32)
        embedding_inputs(
            objective, stand_in, None if target is None else stand_in, method=options.method
        )
    if options.method == "rds":
        require_lm_extra()
    lm_for_network = network_features_wanted(options)
    total_passes, total_seconds = 0, 0.0
    notes: list[str] = []
    lines = [
        f"plan: {options.method} on {len(pool):,} pool items"
        + (f" and {len(target):,} targets" if target is not None else "")
        + f", objective {objective}, budget {k:,}"
    ]
    feature_dim = None
    if options.method == "rds" or lm_for_network:
        rds = plan_lm_features(pool, target, options, throughput)
        if options.method == "rds":
            feature_dim = rds["dimension"]
            lines.append(rds["line"])
        else:
            features = valuation_options(options).features
            lines.append(f"{rds['line']}, read by the network (--features {features})")
        total_passes += rds["passes"]
        total_seconds += rds["seconds"]
        notes.extend(rds["notes"])
    if options.method == "rds":
        pass  # no sentence embedder runs
    elif options.method != "random" and embeddings is not None:
        d = embeddings.vectors.shape[1]
        lines.append(f"  embed            none: {d}-d embeddings provided ({embeddings.path})")
    elif options.method != "random":
        n_texts = len(pool) + (len(target) if target is not None else 0)
        lines.append(
            f"  embed            {n_texts:,} texts with {options.embedder} (cached texts skipped)"
        )
    if options.method in ("delift", "delift-se", "less", "selectit"):
        vplan = plan_valuation(
            pool, target, valuation_options(options), objective,
            cache_dir=options.cache_dir, throughput=throughput,
        )  # fmt: skip
        for st in vplan.stages:
            extra = []
            if st.lm_passes:
                extra.append(f"{st.lm_passes:,} LM passes")
            if st.tokens:
                extra.append(f"{st.tokens:,} tokens")
            if st.memory_bytes:
                extra.append(f"{st.memory_bytes / 2**20:,.1f} MiB")
            if st.basis:
                extra.append(f"~{st.seconds:,.0f} s: {st.basis}")
            else:
                extra.append(f"~{st.seconds:,.0f} s on 2 CPU cores")
            lines.append(f"  {st.stage:<16} {st.what} ({', '.join(extra)})")
            total_passes += st.lm_passes
            total_seconds += st.seconds
        tp = vplan.throughput
        if tp is not None:
            where = ", ".join(
                str(tp.key.get(f)) for f in ("lm", "dtype", "device") if tp.key.get(f)
            )
            load = " ".join(f"{x:.2f}" for x in tp.load_average)
            notes.append(
                f"measured on this machine: {tp.forward.tokens_per_second():,.0f} tokens/s "
                f"(LM forward, batches of 4 x 256 tokens; {where}, {tp.key.get('threads')} threads; "
                + ("probe cached" if vplan.probe_cached else "probed now")
                + (f" {tp.measured_at}" if tp.measured_at else "")
                + (f" at load average {load}" if load else "")
                + (f", {vplan.probe_file}" if vplan.probe_file else "")
                + "); a busier machine takes longer"
            )
    if options.method != "random":
        d = 384 if embeddings is None else embeddings.vectors.shape[1]  # MiniLM's, by default
        if feature_dim is not None:
            d = feature_dim
        n_q = len(target) if target is not None and objective in TARGET_OBJECTIVES else 0
        given = options.method not in COSINE_METHODS
        plan = estimate_selection(
            len(pool), budget=k, d=d,
            objective="fl" if objective in QUERY_ONLY_OBJECTIVES else objective,
            n_queries=n_q, kernel_given=given,
        )  # fmt: skip
        held = ""
        if given and objective != "topk":
            # The predicted dense kernels are held in memory while the selection runs.
            m = len(pool)
            square = 0 if objective in QUERY_ONLY_OBJECTIVES else 4 * m * m
            kernels = square + 4 * m * n_q
            plan = replace(plan, memory_bytes=plan.memory_bytes + kernels)
            shapes = " + ".join(
                ([f"{m:,} x {m:,}"] if square else []) + ([f"{m:,} x {n_q:,}"] if n_q else [])
            )
            held = f", including the predicted {shapes} float32 kernel{'s' if n_q else ''}"
        lines.append(f"  select           {plan}{held}")
        total_seconds += plan.seconds
    lines.append(
        f"total: {total_passes:,} LM passes, roughly {total_seconds:,.0f} s"
        + ("" if options.method == "rds" else " before embedding")
    )
    lines.extend(notes)
    return "\n".join(lines)
