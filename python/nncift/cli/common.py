"""Options and helpers shared by several subcommands (data loading, embedding, summaries)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import numpy as np

from nncift.data import Items, load_items
from nncift.errors import InputError
from nncift.manifest import Manifest


def data_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options that say how to read the user's data files (schema overrides, ids)."""
    for decorator in reversed(
        [
            click.option(
                "--prompt-field",
                default=None,
                help="Column holding the prompt (overrides schema detection; needs --response-field).",
            ),
            click.option("--response-field", default=None, help="Column holding the response."),
            click.option(
                "--id-field",
                default=None,
                help="Column holding a stable item id (default: 'id' if present, else a content hash).",
            ),
            click.option(
                "--dedupe/--no-dedupe",
                default=False,
                help="Drop exact duplicate items instead of failing on them.",
            ),
            click.option(
                "--limit", type=int, default=None, help="Use only the first N items of each file."
            ),
        ]
    ):
        fn = decorator(fn)
    return fn


def load_pool(spec: str, opts: dict[str, Any], manifest: Manifest, name: str) -> Items:
    """Load a data file (or builtin:NAME) with the data options; record it in the manifest."""
    items = load_items(
        spec,
        prompt_field=opts.get("prompt_field"),
        response_field=opts.get("response_field"),
        id_field=opts.get("id_field"),
        dedupe=bool(opts.get("dedupe")),
        limit=opts.get("limit"),
    )
    manifest.add_input(name, spec, items=len(items), schema=items.schema)
    return items


def load_embeddings(
    spec: str,
    embedder: str | None,
    manifest: Manifest,
    name: str,
    quiet: bool,
    *,
    network: dict[str, str] | None = None,
) -> tuple[np.ndarray, str | None, list[str] | None]:
    """Embeddings from a `.npy` file (n, d), or by embedding a data file / builtin:NAME.

    The one way `train`, `estimate` and `evaluate` read their pool and targets. With
    `network` (a weight file's metadata: ``embedding_dim``, ``embedding_model``) a data file
    is embedded by default with the network's own embedder, and the inputs are checked
    against it (`nncift.weights.check_embeddings`; the embedder before embedding).

    Returns (embeddings (n, d) float32, embedder id or None when read from .npy, item ids
    or None when read from .npy).
    """
    from nncift.io import load_npy
    from nncift.provided_embeddings import finite_rows
    from nncift.weights import check_embedding_model, check_embeddings

    if spec.lower().endswith(".npy"):
        arr = load_npy(spec)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            raise InputError(
                f"{spec}: embeddings must be a 2-D float array, got {arr.dtype} {arr.shape}"
            )
        manifest.add_input(name, spec, shape=list(arr.shape))
        # NaN / inf reached the Rust scorer, whose ValueError showed as a traceback.
        vecs = finite_rows(arr, spec)
        if network is not None:
            check_embeddings(network, vecs, what=f"{name} embeddings")
        return vecs, None, None
    from nncift.embed import Embedder

    items = load_items(spec)
    manifest.add_input(name, spec, items=len(items))
    if embedder is None and network is not None:
        embedder = network.get("embedding_model")
        if embedder in (None, "", "unknown"):
            raise InputError(
                f"{spec}: the network does not record which embedder it was trained with; "
                "pass --embedder (or give .npy embeddings)"
            )
    emb = Embedder(embedder or "default", progress=not quiet)
    if network is not None:
        check_embedding_model(network, emb.model_id, what=f"{name} embeddings")
    with manifest.stage(f"embed_{name}") as rec:
        vecs = emb.embed(items.texts)
        rec.update(emb.last_stats)
    if network is not None:
        check_embeddings(network, vecs, emb.model_id, what=f"{name} embeddings")
    return vecs, emb.model_id, list(items.ids)


def echo_summary(ctx: click.Context, text: str) -> None:
    """Print a run summary unless --quiet."""
    if not ctx.obj.get("quiet", False):
        click.echo(text)
