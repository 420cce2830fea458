"""`nncift train`: fit an InfluenceNetwork on labelled pairs and write the weight file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nncift.cli.group import user_errors
from nncift.cli.training_options import settings_from, training_inputs, training_options
from nncift.manifest import Manifest


@click.command("train")
@click.option(
    "--labels",
    required=True,
    type=click.Path(dir_okay=False),
    help="Labels: .npy block (m, n) or points (m,), .npz {labels, rows, cols}, "
    "or .parquet/.csv triples (row, col, value).",
)
@click.option(
    "--rows",
    type=click.Path(dir_okay=False),
    default=None,
    help=".npy int row indices of a labelled block.",
)
@click.option(
    "--cols",
    type=click.Path(dir_okay=False),
    default=None,
    help=".npy int column indices of a block.",
)
@click.option(
    "--pool",
    required=True,
    help="Pool (row) embeddings .npy (M, d), or a data file / builtin:NAME to embed.",
)
@click.option(
    "--target",
    default=None,
    help="Target (column) embeddings or data; omit for pool x pool or pointwise.",
)
@click.option(
    "--kind", type=click.Choice(["pairwise", "pointwise"]), default="pairwise", show_default=True
)
@click.option(
    "--label-name", default=None, help="What the labels are (delift, delift-se, less, ...)."
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output weight file (.safetensors).",
)
@training_options
@click.pass_context
@user_errors
def train_cmd(ctx: click.Context, **kw: Any) -> None:
    """Train an InfluenceNetwork on labelled pairs and export it for the Rust scorer."""
    from nncift.estimator import NO_SIGNAL_MESSAGE, InfluenceEstimator, read_labels
    from nncift.io import load_npy

    quiet = bool(ctx.obj.get("quiet", False))
    man = Manifest("train", options={k: v for k, v in kw.items()})
    rows_e, cols_e, model_id = training_inputs(kw, man, quiet)
    rows = load_npy(kw["rows"]) if kw["rows"] else None
    cols = load_npy(kw["cols"]) if kw["cols"] else None
    man.add_input("labels", kw["labels"])
    with man.stage("read_labels") as rec:
        labels = read_labels(kw["labels"], rows, cols)
        rec["pairs"] = len(labels)
    est = InfluenceEstimator(
        settings_from(kw),
        variant=kw["variant"],
        kind=kw["kind"],
        device=kw["device"],
        random_state=kw["seed"],
        progress=not quiet,
        embedding_model=model_id or "unknown",
        label_name=kw["label_name"],
    )
    with man.stage("fit") as rec:
        est.fit(rows_e, cols_e, labels)
        rec.update(
            {
                "variant": est.variant_,
                "steps": est.steps_,
                "best_step": est.best_step_,
                "best_epoch": est.best_epoch_,
                "val_mse_scaled": est.val_mse_,
                "val_rank": est.val_rank_,
                "criterion": est.criterion_,
                "no_signal": est.no_signal_,
            }
        )
    out = Path(kw["out"])
    est.export(out)
    man.results = {
        "network": str(out),
        "variant": est.variant_,
        "steps": est.steps_,
        "candidates_val_mse_scaled": est.candidates_,
        "candidates_rank": est.candidates_rank_,
        "candidates_se": est.candidates_se_,
        "candidate_steps": est.candidate_steps_,
        "history": est.history_,
    }
    if est.no_signal_:
        man.results["warnings"] = [NO_SIGNAL_MESSAGE]
    man.write(out.with_name(out.name + ".manifest.json"))
    if not quiet:
        val = "n/a" if est.val_mse_ is None else f"{est.val_mse_ * est.label_scale_**2:.5g}"
        rank = "n/a" if est.val_rank_ is None else f"{est.val_rank_:.3f}"
        click.echo(
            f"trained {est.variant_} on {est.n_train_pairs_} pairs ({est.steps_} steps, best at "
            f"step {est.best_step_}; held-out-item val MSE {val}, Spearman {rank}) -> {out}"
        )
        if est.no_signal_:
            click.echo(f"warning: {NO_SIGNAL_MESSAGE}", err=True)
