"""`nncift select`: choose a subset of an instruction pool and write it with a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nncift.cli.common import data_options, echo_summary, load_pool
from nncift.cli.main import cli, user_errors
from nncift.cli.selection_options import selection_kwargs, selection_options

DEFAULT_POOL = "builtin:ifbench"


@cli.command("select")
@click.option(
    "--pool",
    default=DEFAULT_POOL,
    show_default=True,
    help="Pool to select from: a .jsonl/.json/.csv/.parquet file, or builtin:ifbench|chatterbot|sharegpt.",
)
@click.option(
    "--target",
    default=None,
    help="Target set (same formats); the query set of flmi and the private set of flcg.",
)
@click.option(
    "--method",
    type=click.Choice(["embedding", "random"]),
    default="embedding",
    show_default=True,
    help="How items are valued: embedding = cosine similarity of sentence embeddings; random = a seeded sample.",
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
    help="Sentence-transformers model: 'default' (packaged all-MiniLM-L6-v2), a local folder or a hub id.",
)
@click.option("--device", default=None, help="torch device for embedding (default: cuda if present, else cpu).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Texts per embedding batch.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Cache folder for embeddings (default $NNCIFT_CACHE or ~/.cache/nncift).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    required=True,
    help="Output file (.jsonl/.json/.csv/.parquet): the chosen records in selection order with "
    "nncift_rank and nncift_gain; OUT's stem + .manifest.json is written next to it.",
)
@data_options
@selection_options
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
    **rest: Any,
) -> None:
    """Select a subset of POOL and write it to OUT.

    \b
    Example:
      nncift select --pool data.jsonl --budget 0.1 --out subset.jsonl
    """
    from nncift.manifest import Manifest
    from nncift.pipeline import SelectOptions, check_output_path, run_select

    quiet = ctx.obj.get("quiet", False)
    check_output_path(Path(out))
    manifest = Manifest(command="select")
    pool_items = load_pool(pool, rest, manifest, "pool")
    target_items = load_pool(target, rest, manifest, "target") if target else None
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
    )
    run = run_select(
        pool_items, options, target=target_items, out=Path(out), progress=not quiet, manifest=manifest
    )
    echo_summary(ctx, run.summary(pool_items))
