"""`nncift evaluate`: quadrant table of a network against baselines, plus u / size sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from nncift.cli.group import user_errors
from nncift.cli.training_options import (
    parse_hidden,
    settings_from,
    training_inputs,
    training_options,
)
from nncift.manifest import Manifest


def _floats(text: str | None, what: str) -> list[float]:
    from nncift.errors import InputError

    if not text:
        return []
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated numbers, got {text!r}") from None


def predict_with_network(
    path: str, rows_e: np.ndarray, cols_e: np.ndarray | None, embedding_model: str | None
) -> tuple[np.ndarray, dict[str, str]]:
    """All-pairs predictions (M, N) float32 in label units from a weight file, and its metadata."""
    import torch

    from nncift.errors import InputError
    from nncift.network import InfluenceNetwork
    from nncift.weights import check_embeddings

    net, w = InfluenceNetwork.load(path)
    meta = {
        **w.extra_metadata,
        "embedding_dim": str(w.embedding_dim),
        "embedding_model": w.embedding_model,
    }
    check_embeddings(meta, rows_e, embedding_model, what="pool embeddings")
    if net.pointwise:
        raise InputError(f"{path}: a pointwise network has no quadrants to evaluate")
    ce = rows_e if cols_e is None else cols_e
    check_embeddings(meta, ce, embedding_model, what="target embeddings")
    try:  # the Rust scorer: multi-threaded, factorised, GIL released
        from nncift.scorer import PairwiseScorer

        return np.asarray(PairwiseScorer.load(path).score(rows_e, ce), np.float32), meta
    except ImportError:
        pass
    with torch.no_grad():
        raw = net.predict_matrix(torch.from_numpy(rows_e), torch.from_numpy(ce)).numpy()
    return (raw * w.label_scale + w.label_offset).astype(np.float32), meta


@click.command("evaluate")
@click.option(
    "--net", default=None, type=click.Path(dir_okay=False), help="Weight file to evaluate."
)
@click.option(
    "--labels",
    required=True,
    type=click.Path(dir_okay=False),
    help="The full true label matrix (M, N) as .npy (every quadrant labelled).",
)
@click.option(
    "--pool", required=True, help="Pool (row) embeddings .npy, or a data file / builtin:NAME."
)
@click.option(
    "--target", default=None, help="Target (column) embeddings or data; omit for pool x pool."
)
@click.option(
    "--u", "u", type=float, default=None, help="Labelled fraction (default: from --net, else 0.05)."
)
@click.option(
    "--sweep-u", default=None, help="Comma-separated u values to train and evaluate (Fig. 2)."
)
@click.option(
    "--sweep-arch",
    default=None,
    help="Hidden sizes separated by ';', e.g. '10;100;100,100' (Fig. 4).",
)
@click.option(
    "--sweep-seeds",
    type=int,
    default=1,
    show_default=True,
    help="Seeds per sweep point (mean ± std).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@training_options
@click.pass_context
@user_errors
def evaluate_cmd(ctx: click.Context, **kw: Any) -> None:
    """Per-quadrant MSE / MAE / Spearman / top-k of a network and the baselines; plots of sweeps."""
    from rich.console import Console

    from nncift.errors import InputError
    from nncift.evaluation import (
        evaluate_quadrants,
        fit_and_evaluate,
        plot_error_vs_size,
        plot_error_vs_u,
        sweep,
        write_sweep_json,
    )
    from nncift.io import load_npy
    from nncift.split import split_from_metadata, u_split

    quiet = bool(ctx.obj.get("quiet", False))
    out = Path(kw["out"])
    man = Manifest("evaluate", options=dict(kw))
    rows_e, cols_e, model_id = training_inputs(kw, man, quiet)
    man.add_input("labels", kw["labels"])
    labels = load_npy(kw["labels"])
    n_cols = rows_e.shape[0] if cols_e is None else cols_e.shape[0]
    if labels.ndim != 2 or labels.shape != (rows_e.shape[0], n_cols):
        raise InputError(
            f"full labels have shape {labels.shape} but the embeddings give "
            f"{rows_e.shape[0]} x {n_cols}"
        )
    labels = labels.astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)  # once the inputs passed: a refused run leaves none
    console = Console(quiet=quiet)
    settings = settings_from(kw)
    results: dict[str, Any] = {}

    if kw["net"]:
        with man.stage("predict"):
            pred, meta = predict_with_network(kw["net"], rows_e, cols_e, model_id)
        sp = split_from_metadata(meta)
        if sp is not None and (sp.n_rows, sp.n_cols) != labels.shape:
            raise InputError(
                f"the network was trained on a {sp.n_rows} x {sp.n_cols} split, "
                f"labels are {labels.shape}"
            )
        if sp is None or kw["u"] is not None:
            sp = u_split(
                labels.shape[0],
                None if cols_e is None else n_cols,
                u=kw["u"] or 0.05,
                seed=kw["seed"],
            )
        rep = evaluate_quadrants(
            {"network": pred}, labels, sp, rows_e, cols_e, random_state=kw["seed"]
        )
    elif not (kw["sweep_u"] or kw["sweep_arch"]):
        with man.stage("fit"):
            rep, _ = fit_and_evaluate(
                labels,
                rows_e,
                cols_e,
                u=kw["u"] or 0.05,
                seed=kw["seed"],
                settings=settings,
                variant=kw["variant"],
                embedding_model=model_id or "unknown",
                progress=not quiet,
                device=kw["device"],
            )
    else:
        rep = None
    if rep is not None:
        rep.write_json(out / "evaluation.json")
        console.print(rep.rich_table(f"Quadrant evaluation (u={rep.info['u']})"))
        results["evaluation"] = str(out / "evaluation.json")

    seeds = list(range(kw["seed"], kw["seed"] + max(1, kw["sweep_seeds"])))
    us = _floats(kw["sweep_u"], "--sweep-u")
    if us:
        with man.stage("sweep_u"):
            recs = sweep(
                labels, rows_e, cols_e, us=us, seeds=seeds, settings=settings, variant=kw["variant"]
            )
        write_sweep_json(recs, out / "sweep_u.json")
        plot_error_vs_u(recs, out / "error_vs_u.png")
        results["sweep_u"] = str(out / "error_vs_u.png")
        console.print(f"error vs u -> {out / 'error_vs_u.png'}")
    if kw["sweep_arch"]:
        archs = [parse_hidden(a) for a in kw["sweep_arch"].split(";")]
        with man.stage("sweep_arch"):
            recs = sweep(
                labels,
                rows_e,
                cols_e,
                us=[kw["u"] or 0.05],
                archs=archs,
                seeds=seeds,
                settings=settings,
                variant=kw["variant"],
            )
        write_sweep_json(recs, out / "sweep_arch.json")
        plot_error_vs_size(recs, out / "error_vs_size.png")
        results["sweep_arch"] = str(out / "error_vs_size.png")
        console.print(f"error vs network size -> {out / 'error_vs_size.png'}")
    man.results = results
    man.write(out / "manifest.json")
