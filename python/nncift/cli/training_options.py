"""Network and training options shared by `nncift train` and `nncift evaluate`, and the
inputs both read (pool and target embeddings)."""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from nncift.cli.common import load_embeddings
from nncift.errors import InputError
from nncift.manifest import Manifest


def parse_hidden(text: str) -> tuple[int, ...]:
    """'100' -> (100,); '256,64' -> (256, 64); '' or 'linear' -> ()."""
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


def training_inputs(
    kw: dict[str, Any], manifest: Manifest, quiet: bool
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Pool (row) and target (column; None without --target) embeddings of `train` and
    `evaluate`, and the id of their embedder: --embedding-model, else the embedder used
    here, else None (.npy embeddings of unknown origin)."""
    rows_e, model_id, _ = load_embeddings(kw["pool"], kw["embedder"], manifest, "pool", quiet)
    cols_e = None
    if kw["target"]:
        cols_e, model_t, _ = load_embeddings(
            kw["target"], kw["embedder"], manifest, "target", quiet
        )
        model_id = model_id or model_t
    return rows_e, cols_e, kw["embedding_model"] or model_id
