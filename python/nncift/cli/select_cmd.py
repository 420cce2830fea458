"""`nncift select`: choose a subset of an instruction pool and write it with a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nncift.cli.common import data_options, echo_summary, load_pool
from nncift.cli.group import user_errors
from nncift.cli.ray_options import ray_options, ray_settings
from nncift.cli.selection_options import selection_kwargs, selection_options
from nncift.effects import EFFECT_NAMES

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


def check_design_options(
    method: str,
    u: float | None,
    design: str | None,
    label_budget: str | None,
    estimator: str | None,
    exact: bool,
) -> None:
    """Refuse design options that contradict each other or the method, before any work."""
    from nncift.errors import InputError

    given = [
        name
        for name, v in (("--design", design), ("--label-budget", label_budget),
                        ("--estimator", estimator))
        if v is not None
    ]  # fmt: skip
    if given and method not in ("delift", "delift-se", "less", "selectit"):
        raise InputError(
            f"{', '.join(given)} choose how delift, delift-se, less and selectit are labelled "
            f"and estimated; --method {method} labels nothing"
        )
    if exact and (design is not None or label_budget is not None):
        raise InputError("--exact labels every pair: it takes no --design or --label-budget")
    if u is not None and label_budget is not None:
        raise InputError(
            "--u sizes the paper's block and --label-budget sizes any design: give one of them"
        )
    if u is not None and design not in (None, "block"):
        raise InputError(
            f"--u sizes the paper's block; --design {design} is sized by --label-budget"
        )
    if design is not None:
        from nncift.designs import check_design

        check_design(design, method)
    if label_budget is not None:
        from nncift.designs import parse_label_budget

        parse_label_budget(label_budget)


def default_design(
    method: str,
    u_given: bool,
    network_given: bool,
    design: str | None,
    label_budget: str | None,
    estimator: str | None,
) -> tuple[str | None, str | None, str | None]:
    """The design options a run uses: as given (--network without --estimator: the
    network); the paper's (first-u block, network) when --u or --network was given without
    a design or budget; else the method's benchmarked default
    (`nncift.design_valuation.DEFAULT_FOR`)."""
    from nncift.design_valuation import DEFAULT_FOR

    if network_given and estimator is None:
        estimator = "network"
    if design is not None or label_budget is not None or estimator is not None:
        return design, label_budget, estimator
    default = DEFAULT_FOR.get(method)
    if u_given or default is None:
        return None, None, None  # the paper: first-u block, InfluenceNetwork
    return default


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
    default=None,
    help="Fraction of pool (and target) items whose influence is computed for real (NN-CIFT's "
    "u): the paper's first-u block [default: 0.05]. Not with --label-budget.",
)
@click.option(
    "--design",
    type=click.Choice(["block", "spread", "landmark", "active", "random", "diverse"]),
    default=None,
    help="Which pairs (or items) the influence function labels (docs/valuation.md): block the "
    "paper's first-u block (sized by --u, or the largest within --label-budget); spread every "
    "pool item on a few targets; landmark as many (k-centre) pool items as fit, 2 targets "
    "each; active a landmark start then 3 rounds where a bootstrap fit is least sure about "
    "the items the selection would take (resumable); random / diverse (k-centre) items for "
    "selectit. Default: the paper's block without --label-budget; with it, active for delift, "
    "block for delift-se and less, random for selectit.",
)
@click.option(
    "--label-budget",
    default=None,
    metavar="N|Nitems|P%|TIME",
    help="How much to label, instead of --u: N pairs (items for selectit), Nitems distinct "
    "pool items, P% of the LM passes of labelling every pair, or LM time on this machine "
    "(Ns, Nmin, Nh: priced into the share it buys with the LM probe of --dry-run, recorded "
    "in the manifest) (e.g. 5000, 300items, 2%, 20min). A bare fraction is refused "
    "(ambiguous). Default with a --design other than block: 2% (delift-se: 400 pairs).",
)
@click.option(
    "--estimator",
    type=click.Choice(["auto", "network", *EFFECT_NAMES]),
    default=None,
    help="What predicts the unlabelled pairs: network the InfluenceNetwork (--network), auto "
    "the estimator of nncift.effects whose ranking of held-out labelled items is best (one-SE "
    "rule, additive+cos preferred), or one by name. Default: network on the paper's u-block, "
    "else auto.",
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
    default=None,
    help="What the network of delift/delift-se/less/selectit reads for an item: minilm the "
    "sentence embeddings (--embedder or --embeddings), lm the LM's RDS+ features (its "
    "position-weighted mean-pooled hidden states, one --lm forward per item, cached), both the "
    "two concatenated. Labels do not depend on it. Default: what the method's benchmarked "
    "default uses (nncift.design_valuation.DEFAULT_FEATURES_FOR, docs/valuation.md), minilm "
    "on the paper's path (--u, --network, --design block) and for other methods.",
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
    u: float | None,
    design: str | None,
    label_budget: str | None,
    estimator: str | None,
    exact: bool,
    lm: str,
    dtype: str | None,
    max_length: int,
    variant: str,
    features: str | None,
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
    check_design_options(method, u, design, label_budget, estimator, exact)
    if not exact and method in ("delift", "delift-se", "less", "selectit"):
        network_given = ctx.get_parameter_source("variant") != click.core.ParameterSource.DEFAULT
        given = (design, label_budget, estimator)
        design, label_budget, estimator = default_design(
            method, u is not None, network_given, design, label_budget, estimator
        )
        if features is None and given == (None, None, None) and design is not None:
            # The benchmarked default, with the features it was chosen with.
            from nncift.design_valuation import DEFAULT_FEATURES_FOR

            features = DEFAULT_FEATURES_FOR[method]
    features = features or "minilm"
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
            u=0.05 if u is None else u,
            design=design,
            label_budget=label_budget,
            estimator=estimator,
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
