"""Click options shared by commands that run a selection (`nncift select`).

`selection_options` adds the options; `selection_kwargs` turns their parsed values into
keyword arguments for :func:`nncift.selection.select`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from nncift.selection import MODES, OBJECTIVES, OPTIMIZERS, STOP_IF_ZERO_GAIN_DEFAULT
from nncift.valuation import TARGET_FL, TARGET_QMI

F = TypeVar("F", bound=Callable[..., Any])

#: Click parameter name -> `select()` keyword.
_PARAMS = {
    "optimizer": "optimizer",
    "mode": "mode",
    "knn": "knn",
    "epsilon": "epsilon",
    "eta": "eta",
    "nu": "nu",
    "lambda_": "lambda_",
    "n_jobs": "n_jobs",
    "stop_at_zero": "stop_if_zero_gain",
}


def selection_options(fn: F) -> F:
    """Add `--objective`, `--optimizer`, `--mode`, `--knn`, `--epsilon`, `--eta`, `--nu`,
    `--lambda`, `--n-jobs` and `--stop-at-zero/--no-stop-at-zero` to a Click command."""
    options = [
        click.option(
            "--objective",
            type=click.Choice(("auto", *OBJECTIVES, TARGET_FL, TARGET_QMI)),
            default="auto",
            show_default=True,
            help="Set function. auto = the method's own rule: top-k for less/selectit, flmi when "
            "--target is given, else fl. Facility location (fl), its mutual information with --target "
            "(flmi) or conditional gain given --target (flcg), facility location over the target "
            "set (fl-target: each target served by its best chosen item; needs only the pool x "
            "target similarities, so influence methods label no pool x pool kernel; it saturates "
            "once every target is served, after which picks are ties), flqmi (fl-target + --eta x "
            "each item's best target value: FL query mutual information, PRISM's FLQMI, also on "
            "the pool x target similarities alone, and it keeps ranking past saturation), graph-cut, "
            "disparity-sum/-min, top-k by score, or mix (fl + quality).",
        ),
        click.option(
            "--optimizer",
            type=click.Choice(OPTIMIZERS),
            default="lazy",
            show_default=True,
            help="Greedy variant; greedi = partition and merge for pools that do not fit.",
        ),
        click.option(
            "--mode",
            type=click.Choice(MODES),
            default="auto",
            show_default=True,
            help="Kernel storage: dense N x N, sparse kNN, on the fly, or auto "
            "(from the memory estimate).",
        ),
        click.option(
            "--knn",
            type=click.IntRange(min=1),
            default=10,
            show_default=True,
            help="Neighbours kept per item in sparse mode.",
        ),
        click.option(
            "--epsilon",
            type=click.FloatRange(0, 1, min_open=True, max_open=True),
            default=0.01,
            show_default=True,
            help="Sample-size parameter of the stochastic optimizers.",
        ),
        click.option(
            "--eta",
            type=click.FloatRange(min=0),
            default=1.0,
            show_default=True,
            help="FLMI query-relevance weight.",
        ),
        click.option(
            "--nu",
            type=click.FloatRange(min=0),
            default=1.0,
            show_default=True,
            help="FLCG privacy hardness.",
        ),
        click.option(
            "--lambda",
            "lambda_",
            type=click.FloatRange(min=0),
            default=0.5,
            show_default=True,
            help="Graph-cut diversity weight.",
        ),
        click.option(
            "--n-jobs",
            type=click.IntRange(min=-1),
            default=0,
            show_default=True,
            help="Threads for selection (0 or -1 = all cores); results do not depend on it.",
        ),
        click.option(
            "--stop-at-zero/--no-stop-at-zero",
            default=STOP_IF_ZERO_GAIN_DEFAULT,
            show_default=True,
            help="Stop early once no item adds value (may return fewer than the budget; a "
            "short result is reported and recorded in the manifest). Never stops top-k. The "
            "default fills the budget; exact ties are broken by a permutation drawn from "
            "--seed, not by file order. Documented in nncift.selection ('Stopping early').",
        ),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def selection_kwargs(values: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split parsed option values into (objective, keyword arguments for `select`).

    Keys that these options did not add are ignored, so a command may pass all its kwargs.
    """
    objective = str(values.get("objective", "auto"))
    kwargs = {dst: values[src] for src, dst in _PARAMS.items() if src in values}
    return objective, kwargs


__all__ = ["selection_kwargs", "selection_options"]
