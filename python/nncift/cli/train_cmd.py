"""`nncift train`: fit an InfluenceNetwork on labelled pairs and write the weight file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from nncift.cli.group import user_errors
from nncift.manifest import Manifest


def load_embeddings(
    spec: str, embedder: str, manifest: Manifest, name: str, quiet: bool
) -> tuple[np.ndarray, str | None]:
    """Embeddings from a `.npy` file (n, d), or by embedding a data file / builtin:NAME.

    Returns (embeddings (n, d) float32, embedder id or None when read from .npy).
    """
    from nncift.errors import InputError
    from nncift.io import load_npy

    if spec.lower().endswith(".npy"):
        arr = load_npy(spec)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            raise InputError(
                f"{spec}: embeddings must be a 2-D float array, got {arr.dtype} {arr.shape}"
            )
        manifest.add_input(name, spec, shape=list(arr.shape))
        return np.ascontiguousarray(arr, dtype=np.float32), None
    from nncift.data import load_items
    from nncift.embed import Embedder

    items = load_items(spec)
    manifest.add_input(name, spec, items=len(items))
    emb = Embedder(embedder, progress=not quiet)
    return emb.embed(items.texts), emb.model_id


def parse_hidden(text: str) -> tuple[int, ...]:
    """'100' -> (100,); '256,64' -> (256, 64); '' or 'linear' -> ()."""
    from nncift.errors import InputError

    text = text.strip()
    if text in ("", "linear", "none"):
        return ()
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"hidden sizes must be comma-separated integers, got {text!r}") from None
    return sizes


def training_options(fn: Any) -> Any:
    """Network and training options shared by `train` and `evaluate`."""
    from nncift.estimator import DEFAULT_MAX_STEPS, VARIANTS

    opts = [
        click.option(
            "--variant",
            type=click.Choice([*VARIANTS, "auto"]),
            default="paper",
            show_default=True,
            help="Network variant; auto = fit constant, cosine-linear, paper, cosine-residual "
            "and bilinear and keep the simplest whose rank score (Spearman within each "
            "held-out target) on held-out items is within one standard error of the best.",
        ),
        click.option(
            "--hidden", default="100", show_default=True, help="Hidden sizes, e.g. 100 or 256,64."
        ),
        click.option(
            "--layout",
            type=click.Choice(["paper", "concat"]),
            default="paper",
            show_default=True,
            help="Pair input layout: paper = [e_i, 0, e_j], concat = [e_i, e_j].",
        ),
        click.option(
            "--max-steps",
            type=int,
            default=DEFAULT_MAX_STEPS,
            show_default=True,
            help="Adam-step budget (the paper: 20 epochs of ~187k pairs = ~58k steps); early "
            "stopping usually ends training sooner.",
        ),
        click.option(
            "--epochs",
            type=int,
            default=None,
            help="Optional cap on passes over the training pairs (default: none; --max-steps "
            "and early stopping decide).",
        ),
        click.option(
            "--eval-every",
            type=int,
            default=None,
            help="Steps between early-stopping evaluations (default: one epoch, at least 100).",
        ),
        click.option("--lr", type=float, default=1e-4, show_default=True),
        click.option("--batch-size", type=int, default=64, show_default=True),
        click.option("--weight-decay", type=float, default=0.0, show_default=True),
        click.option(
            "--val-fraction",
            type=float,
            default=0.2,
            show_default=True,
            help="Share of labelled items held out, half for early stopping and half for "
            "choosing and scoring the model (0 = none; auto then refuses).",
        ),
        click.option(
            "--patience",
            type=int,
            default=5,
            show_default=True,
            help="Evaluations without improvement before stopping.",
        ),
        click.option(
            "--label-scaling",
            type=click.Choice(["standard", "minmax", "none"]),
            default="standard",
            show_default=True,
        ),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option(
            "--device", default="auto", show_default=True, help="torch device: auto, cpu, cuda."
        ),
        click.option(
            "--embedder",
            default="default",
            show_default=True,
            help="Embedder for data files (ignored for .npy embeddings).",
        ),
        click.option(
            "--embedding-model",
            default=None,
            help="Id of the model that made .npy embeddings (stored in, and checked against, "
            "the network).",
        ),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def settings_from(kw: dict[str, Any]) -> Any:
    from nncift.estimator import EstimatorSettings

    return EstimatorSettings(
        hidden_sizes=parse_hidden(kw["hidden"]),
        input_layout=kw["layout"],
        lr=kw["lr"],
        epochs=kw["epochs"],
        max_steps=kw["max_steps"],
        eval_every=kw["eval_every"],
        batch_size=kw["batch_size"],
        weight_decay=kw["weight_decay"],
        val_fraction=kw["val_fraction"],
        patience=kw["patience"],
        label_scaling=kw["label_scaling"],
    )


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
    rows_e, model_id = load_embeddings(kw["pool"], kw["embedder"], man, "pool", quiet)
    cols_e = None
    if kw["target"]:
        cols_e, model_t = load_embeddings(kw["target"], kw["embedder"], man, "target", quiet)
        model_id = model_id or model_t
    model_id = kw["embedding_model"] or model_id or "unknown"
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
        embedding_model=model_id,
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
