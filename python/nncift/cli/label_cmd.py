"""`nncift label`: compute influence labels (DELIFT, DELIFT (SE), LESS, SelectIT), resumably.

By default only the first-u block is labelled (what NN-CIFT trains on): the first
``round(u * M)`` pool items and ``round(u * N)`` targets after the seeded shuffle of
`nncift.split.u_split`. ``--all`` labels everything (the full-cost baseline).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import click

from nncift.cli.common import data_options, echo_summary, load_pool
from nncift.cli.group import user_errors
from nncift.cli.ray_options import ray_options, ray_settings
from nncift.errors import InputError


def _parse_settings(pairs: tuple[str, ...]) -> dict[str, Any]:
    """KEY=VALUE strings -> dict; values are Python literals when they parse, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out[key.strip().replace("-", "_")] = value
    return out


@click.command("label")
@click.option(
    "--method",
    type=click.Choice(["delift", "delift-se", "less", "selectit"]),
    required=True,
    help="Influence function: delift (LM in-context utility), delift-se (embedding cosine), "
    "less (LoRA gradient similarity), selectit (LM self-rating, pointwise).",
)
@click.option(
    "--pool", required=True, help="Pool file (.jsonl/.json/.csv/.parquet) or builtin:NAME."
)
@click.option(
    "--target",
    default=None,
    help="Target file; without it pairwise methods label the pool x pool kernel.",
)
@click.option(
    "--fraction",
    "-u",
    type=float,
    default=None,
    help="Label only the first-u block (0 < u <= 1) of the seeded shuffle [default: 0.05].",
)
@click.option(
    "--design",
    type=click.Choice(["block", "spread", "landmark", "random", "diverse"]),
    default=None,
    help="Which pairs (or items) to label within --label-budget (nncift.designs): block the "
    "largest first-u block, spread every pool item on a few targets, landmark as many random "
    "pool items as fit on 2 targets each; random / diverse (k-centre on --embedder "
    "embeddings) items for selectit. Writes OUT/labels.npy (n,) of the pairs OUT/rows.npy, "
    "OUT/cols.npy. Default with --label-budget: spread (block for less, random for "
    "selectit). active fits between rounds: use nncift select --design active.",
)
@click.option(
    "--label-budget",
    default=None,
    metavar="N|Nitems|P%",
    help="How much the design labels: N pairs (items for selectit), Nitems distinct pool "
    "items, or P% of the LM passes of labelling every pair (e.g. 5000, 300items, 2%); LM "
    "time (20min) is priced by nncift select, not here.",
)
@click.option(
    "--all",
    "label_all",
    is_flag=True,
    help="Label every pool item (and target): the full baseline.",
)
@click.option(
    "--lm",
    default="default",
    show_default=True,
    help="Causal LM: 'default' (packaged SmolLM2-135M-Instruct), a local folder or a hub id.",
)
@click.option("--device", default="auto", show_default=True, help="torch device for the LM.")
@click.option(
    "--dtype",
    default="auto",
    show_default=True,
    help="LM dtype: auto (bfloat16 on a capable GPU, else float32), float32, float16, bfloat16.",
)
@click.option(
    "--max-length",
    type=int,
    default=2048,
    show_default=True,
    help="Longest sequence fed to the LM.",
)
@click.option("--embedder", default="default", show_default=True, help="Embedder for delift-se.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Setting of the influence function, e.g. --set max_example_tokens=96 --set proj_dim=1024.",
)
@click.option("--tile-rows", type=int, default=None, help="Pool rows per stored tile.")
@click.option(
    "--max-seconds",
    type=float,
    default=None,
    help="Stop starting new tiles after this long; rerun the same command to continue.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the u-split (and of LESS)."
)
@click.option(
    "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)."
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder (resumed if it exists).",
)
@data_options
@ray_options
@click.pass_context
@user_errors
def label_cmd(
    ctx: click.Context,
    method: str,
    pool: str,
    target: str | None,
    fraction: float | None,
    design: str | None,
    label_budget: str | None,
    label_all: bool,
    lm: str,
    device: str,
    dtype: str,
    max_length: int,
    embedder: str,
    settings: tuple[str, ...],
    tile_rows: int | None,
    max_seconds: float | None,
    seed: int,
    threads: int | None,
    out: str,
    **data_opts: Any,
) -> None:
    """Compute influence labels for the first-u block (or --all) and store them resumably.

    Writes OUT/labels.npy (float32: rows x cols, or rows for selectit), OUT/rows.npy and
    OUT/cols.npy (int64 indices into the pool / targets), OUT/labels-manifest.json (tiles,
    hashes, cost) and OUT/manifest.json. An interrupted run continues where it stopped.
    With --ray the tiles run on Ray workers that hold the LM (same folder layout; a run can
    be resumed with or without Ray).
    """
    from nncift.labelling import function_spec, label, labelled_block
    from nncift.manifest import Manifest

    ray = ray_settings(data_opts)

    if label_all and fraction is not None:
        raise InputError("--fraction and --all exclude each other")
    if (design is not None or label_budget is not None) and (label_all or fraction is not None):
        raise InputError(
            "--fraction / --all label the paper's block or everything; --design and "
            "--label-budget choose other pairs: give one or the other"
        )
    if design is not None and label_budget is None:
        raise InputError(f"--design {design} needs --label-budget (e.g. 5000, 300items, 2%)")
    u = 1.0 if label_all else (0.05 if fraction is None else fraction)
    if not 0.0 < u <= 1.0:
        raise InputError(f"--fraction must be in (0, 1], got {u}")
    if method == "selectit" and target is not None:
        raise InputError("selectit is pointwise: it takes no --target")
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)

    manifest = Manifest(
        "label",
        options={
            "method": method,
            "fraction": u,
            "all": label_all,
            "design": design,
            "label_budget": label_budget,
            "lm": lm,
            "device": device,
            "dtype": dtype,
            "max_length": max_length,
            "embedder": embedder,
            "settings": list(settings),
            "seed": seed,
            "tile_rows": tile_rows,
            "max_seconds": max_seconds,
        },
    )
    with manifest.stage("load_data"):
        pool_items = load_pool(pool, data_opts, manifest, "pool")
        target_items = load_pool(target, data_opts, manifest, "target") if target else None
    spec = function_spec(
        method, _parse_settings(settings), seed=seed, lm=lm, dtype=dtype,
        max_length=max_length, embedder=embedder,
    )  # fmt: skip
    m = len(pool_items)
    pairs = False
    if label_budget is not None:
        rows, cols, design_rec = _design_rows_cols(
            method, design, label_budget, pool_items, target_items, seed, embedder, device
        )
        manifest.results["design"] = design_rec
        pairs = cols is not None
    elif method == "selectit":
        rows, cols = labelled_block(m, None, u=u, seed=seed, exact=label_all)
    elif target_items is None:
        rows, cols = labelled_block(m, m, u=u, seed=seed, exact=label_all, square=True)
    else:
        rows, cols = labelled_block(m, len(target_items), u=u, seed=seed, exact=label_all)
    quiet = bool(ctx.obj.get("quiet", False)) if ctx.obj else False
    with manifest.stage("label") as rec:
        result = label(
            spec, pool_items, target_items, out=out, rows=rows, cols=cols, pairs=pairs,
            device=device, ray=ray, tile_rows=tile_rows, max_seconds=max_seconds, progress=not quiet,
            manifest=manifest,
        )  # fmt: skip
        rec.update(_run_record(result.run))
        if result.ray is not None:
            rec["ray"] = result.ray
    _finish(ctx, manifest, method, result, rows, cols, out)


def _design_rows_cols(
    method: str,
    design: str | None,
    label_budget: str,
    pool: Any,
    target: Any,
    seed: int,
    embedder: str,
    device: str,
) -> tuple[Any, Any, dict[str, Any]]:
    """The design's (rows, cols or None) and its manifest record."""
    from nncift.designs import DESIGNS_FOR, make_design, parse_label_budget

    budget = parse_label_budget(label_budget)
    name = design or DESIGNS_FOR[method][0]
    if name == "active":  # the default of delift: its rounds fit between labelling
        name = "spread"
    m = len(pool)
    n_cols = None if method == "selectit" else (m if target is None else len(target))
    features = None
    if name == "diverse":
        from nncift.embed import Embedder

        features = Embedder(embedder, device=None if device == "auto" else device,
                            progress=False).embed(pool.texts)  # fmt: skip
    d = make_design(name, method=method, n_rows=m, n_cols=n_cols, budget=budget, seed=seed,
                    features=features, square=target is None and n_cols is not None)  # fmt: skip
    rec = {
        "design": name, "label_budget": budget.to_dict(),
        "pairs": len(d) if d.cols is not None else None,
        "items": int(d.labelled_rows().size),
        "targets": None if d.cols is None else int(d.labelled_cols().size),
    }  # fmt: skip
    return d.rows, d.cols, rec


def _run_record(run: Any) -> dict[str, Any]:
    return {
        "tiles_total": run.tiles_total,
        "tiles_done": run.tiles_done,
        "computed": run.computed,
        "reused": run.reused,
        "recomputed": run.recomputed,
        "cost": run.cost.to_dict(),
    }


def _finish(
    ctx: click.Context, manifest: Any, method: str, result: Any, rows: Any, cols: Any, out: str
) -> None:
    run = result.run
    pairs = "design" in manifest.results and result.kind == "pairwise"
    design = manifest.results.get("design")
    manifest.results = {
        "complete": run.complete,
        "shape": [int(rows.size)]
        + ([int(cols.size)] if result.kind == "pairwise" and not pairs else []),
        "cost_total": run.cost_total.to_dict(),
        "function": result.config,
    }
    if design is not None:
        manifest.results["design"] = design
    manifest.write(Path(out) / "manifest.json")
    shape = "x".join(str(s) for s in manifest.results["shape"])
    if run.complete:
        echo_summary(
            ctx,
            f"{method}: {shape} labels in {out}/labels.npy "
            f"({run.computed} tiles computed, {run.reused} reused; "
            f"{run.cost_total.lm_passes} LM passes, {run.cost_total.seconds:.1f} s in total)",
        )
    else:
        echo_summary(
            ctx,
            f"{method}: stopped after {run.tiles_done}/{run.tiles_total} tiles; "
            "run the same command again to continue",
        )
