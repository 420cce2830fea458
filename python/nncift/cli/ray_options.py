"""The ``--ray*`` options shared by `label`, `estimate` and `select` (docs/scaling.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from nncift.distributed.cluster import DEFAULT_CONNECT_TIMEOUT, RaySettings

#: What a bare ``--ray`` means: Ray's own rule (RAY_ADDRESS, a local `ray start`, else new).
BARE = "default"


def ray_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --ray [ADDRESS], --ray-workers, --ray-cpus-per-worker, --ray-shards, --ray-timeout."""
    for decorator in reversed(
        [
            click.option(
                "--ray",
                "ray_address",
                is_flag=False,
                flag_value=BARE,
                default=None,
                metavar="[ADDRESS]",
                help="Run on a Ray cluster (pip install 'nncift[ray]'): HOST:PORT of `ray start "
                "--head`, ray://HOST:PORT, auto, local; bare --ray uses RAY_ADDRESS or a local "
                "cluster, else starts one here.",
            ),
            click.option(
                "--ray-workers",
                type=int,
                default=None,
                help="Label workers (default: one per GPU, else one per --ray-cpus-per-worker CPUs).",
            ),
            click.option(
                "--ray-cpus-per-worker",
                type=int,
                default=1,
                show_default=True,
                help="CPUs per Ray worker / task.",
            ),
            click.option(
                "--ray-shards",
                type=int,
                default=None,
                help="Pool shards for scoring and partition-and-merge selection "
                "(default: one per cluster CPU, at least 2).",
            ),
            click.option(
                "--ray-timeout",
                type=float,
                default=DEFAULT_CONNECT_TIMEOUT,
                show_default=True,
                help="Seconds to wait for the Ray address to answer.",
            ),
        ]
    ):
        fn = decorator(fn)
    return fn


def ray_settings(opts: dict[str, Any]) -> RaySettings | None:
    """Pop the --ray* options from a command's keyword arguments; None without --ray."""
    address = opts.pop("ray_address", None)
    workers = opts.pop("ray_workers", None)
    cpus = opts.pop("ray_cpus_per_worker", 1)
    shards = opts.pop("ray_shards", None)
    timeout = opts.pop("ray_timeout", DEFAULT_CONNECT_TIMEOUT)
    if address is None:
        return None
    return RaySettings(
        address=None if address == BARE else address,
        workers=workers,
        cpus_per_worker=cpus,
        shards=shards,
        timeout=timeout,
    )
