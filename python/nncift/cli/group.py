"""The `nncift` Click group and the error funnel every subcommand shares.

Subcommand modules import from here (never from `nncift.cli.main`), and `nncift.cli.main`
registers them on the group in one place, so no module imports its importer.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn nncift's own errors and file errors into a one-line message and exit code 1.

    Caught: `NnciftError` and its subclasses (`InputError`: a problem with the user's input,
    and the Rust extension's errors) and `OSError` (a missing, unreadable or misplaced file,
    a full disk). Anything else, a bare `ValueError` or `MemoryError` from a library included,
    is a bug and keeps its traceback so it can be reported; code that expects a library to
    reject bad input converts that error to `InputError` where it happens.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from nncift.errors import NnciftError

        try:
            return fn(*args, **kwargs)
        except (NnciftError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="nncift", prog_name="nncift")
@click.option(
    "-q", "--quiet", is_flag=True, help="Only print errors: no progress bars, no summary."
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages to stderr.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """nncift: select instruction fine-tuning data with learned influence (NN-CIFT).

    The main job is `nncift select`: embed a pool, value it, and write the chosen subset.
    """
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    if quiet:
        from nncift.progress import quiet as quiet_scope

        # Held until the command ends: no bars (nncift's or any library's), no warnings.
        ctx.with_resource(quiet_scope())
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.WARNING)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
