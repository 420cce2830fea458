"""Options and helpers shared by several subcommands (data loading, summaries)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from nncift.data import Items, load_items
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


def echo_summary(ctx: click.Context, text: str) -> None:
    """Print a run summary unless --quiet."""
    if not ctx.obj.get("quiet", False):
        click.echo(text)
