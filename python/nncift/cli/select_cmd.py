"""`nncift select`: choose a subset of an instruction pool and write it with a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nncift.cli.common import data_options, echo_summary, load_pool
from nncift.cli.group import user_errors
from nncift.cli.ray_options import ray_options, ray_settings
from nncift.cli.selection_options import selection_kwargs, selection_options

DEFAULT_POOL = "builtin:ifbench"


def provided_embeddings(
    pool_file: str | None,
    target_file: str | None,
    pool: Any,
    target: Any,
    data_opts: dict[str, Any],
    manifest: Any,
) -> dict[str, Any]:
    """Read --embeddings / --target-embeddings, matched to the loaded items; record them."""
    from nncift.provided_embeddings import load_provided_embeddings

    found: dict[str, Any] = {}
    for key, path, items in (
        ("embeddings", pool_file, pool),
        ("target_embeddings", target_file, target),
    ):
        if path is None or items is None:
            continue  # run_select says what is missing or extra
        got = load_provided_embeddings(
            path, items.ids, dedupe=bool(data_opts.get("dedupe")),
            id_column=data_opts.get("id_field"),
        )  # fmt: skip
        manifest.add_input(key, path, shape=list(got.vectors.shape), matched_by=got.matched_by)
        found[key] = got
    if target_file is not None and target is None:
        from nncift.errors import InputError

        raise InputError("--target-embeddings was given without a target set (--target)")
    return found


@click.command("select")
@click.option(
    "--pool",
    default=DEFAULT_POOL,
    show_default=True,
    help="Pool to select from: a .jsonl/.json/.csv/.parquet file, "
    "or builtin:ifbench|chatterbot|sharegpt.",
)
@click.option(
    "--target",
    default=None,
    help="Target set (same formats); the query set of flmi and the private set of flcg.",
)
@click.option(
    "--method",
    type=click.Choice(["embedding", "rds", "random", "delift", "delift-se", "less", "selectit"]),
    default="embedding",
    show_default=True,
    help="How items are valued. delift / delift-se / less / selectit: that influence function "
    "through NN-CIFT (label the u-block, train the network, predict the rest); embedding: cosine "
    "similarity of sentence embeddings (the cheap baseline); rds: RDS+ (Ivison et al. 2025), cosine "
    "similarity of the LM's position-weighted mean-pooled final hidden states, one LM forward per "
    "item (--lm, --max-length; needs the lm extra; not with --embeddings); random: a seeded "
    "sample.",
)
@click.option(
    "--u",
    "u",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.05,
    show_default=True,
    help="Fraction of pool (and target) items whose influence is computed for real (NN-CIFT's u).",
)
@click.option(
    "--exact",
    is_flag=True,
    help="Compute the influence function on every pair instead of NN-CIFT (the costly baseline).",
)
@click.option(
    "--lm",
    default="default",
    show_default=True,
    help="Language model for delift/less/selectit/rds: 'default' (packaged SmolLM2-135M-Instruct), "
    "a local folder or a hub id.",
)
@click.option(
    "--dtype", default=None, help="LM dtype: float32, float16 or bfloat16 (default: auto)."
)
@click.option(
    "--max-length", type=int, default=1024, show_default=True, help="Longest LM input in tokens."
)
@click.option(
    "--network",
    "variant",
    default="auto",
    show_default=True,
    help="InfluenceNetwork variant: auto (fit the paper's network and its rivals, keep the simplest "
    "whose ranking of held-out items (Spearman within each held-out target) is within one "
    "standard error of the best; says so when only the constant is left), paper (the paper's "
    "MLP only), or another variant of nncift.estimator.VARIANTS.",
)
@click.option(
    "--features",
    type=click.Choice(["minilm", "lm", "both"]),
    default="minilm",
    show_default=True,
    help="What the network of delift/delift-se/less/selectit reads for an item: minilm the "
    "sentence embeddings (--embedder or --embeddings), lm the LM's RDS+ features (its "
    "position-weighted mean-pooled hidden states, one --lm forward per item, cached), both the "
    "two concatenated. Labels do not depend on it.",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Optional cap on the network's training epochs (default: none; the network trains "
    "for up to 50,000 Adam steps with early stopping on held-out items).",
)
@click.option(
    "--budget",
    type=float,
    default=0.3,
    show_default=True,
    help="How many items to select: a fraction of the pool (0 < b < 1) or a count (>= 1).",
)
@click.option(
    "--embedder",
    default="default",
    show_default=True,
    help="Sentence-transformers model: 'default' (packaged all-MiniLM-L6-v2), "
    "a local folder or a hub id.",
)
@click.option(
    "--device",
    default=None,
    help="torch device for embedding (default: cuda if present, else cpu).",
)
@click.option(
    "--batch-size", type=int, default=64, show_default=True, help="Texts per embedding batch."
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Cache folder for embeddings (default $NNCIFT_CACHE or ~/.cache/nncift).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for every random choice."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    required=True,
    help="Output file (.jsonl/.json/.csv/.parquet): the chosen records in selection order with "
    "nncift_rank and nncift_gain; OUT's stem + .manifest.json is written next to it.",
)
@click.option(
    "--embeddings",
    "embeddings_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Pool embeddings you computed: .npy (row i = pool item i) or a .parquet/.jsonl/.json "
    "table with an id column (--id-field, default 'id') and a vector column ('embedding'); "
    "used instead of --embedder everywhere.",
)
@click.option(
    "--target-embeddings",
    "target_embeddings_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Target embeddings from the same model, as for --embeddings (needed with --target).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (stages, LM passes, memory and time estimates) and stop.",
)
@data_options
@selection_options
@ray_options
@click.pass_context
@user_errors
def select_command(
    ctx: click.Context,
    pool: str,
    target: str | None,
    method: str,
    budget: float,
    embedder: str,
    device: str | None,
    batch_size: int,
    cache_dir: str | None,
    seed: int,
    out: str,
    u: float,
    exact: bool,
    lm: str,
    dtype: str | None,
    max_length: int,
    variant: str,
    features: str,
    epochs: int | None,
    dry_run: bool,
    embeddings_file: str | None,
    target_embeddings_file: str | None,
    **rest: Any,
) -> None:
    """Select a subset of POOL and write it to OUT.

    \b
    Example:
      nncift select --pool data.jsonl --budget 0.1 --out subset.jsonl
    """
    from nncift.manifest import Manifest
    from nncift.pipeline import SelectOptions, check_output_path, plan_select, run_select
    from nncift.valuation import ValuationOptions

    quiet = ctx.obj.get("quiet", False)
    ray = ray_settings(rest)
    check_output_path(Path(out))
    manifest = Manifest(command="select")
    pool_items = load_pool(pool, rest, manifest, "pool")
    target_items = load_pool(target, rest, manifest, "target") if target else None
    provided = provided_embeddings(
        embeddings_file, target_embeddings_file, pool_items, target_items, rest, manifest
    )
    objective, kwargs = selection_kwargs(rest)
    options = SelectOptions(
        budget=budget,
        method=method,
        objective=objective,
        embedder=embedder,
        seed=seed,
        device=device,
        batch_size=batch_size,
        cache_dir=cache_dir,
        selection=kwargs,
        ray=ray,
        valuation=ValuationOptions(
            u=u,
            exact=exact,
            lm=lm,
            device=device,
            dtype=dtype,
            max_length=max_length,
            variant=variant,
            features=features,
            epochs=epochs,
        ),
    )
    if dry_run:
        click.echo(plan_select(pool_items, target_items, options, **provided))
        return
    run = run_select(
        pool_items,
        options,
        target=target_items,
        out=Path(out),
        progress=not quiet,
        manifest=manifest,
        **provided,
    )
    echo_summary(ctx, run.summary(pool_items))
