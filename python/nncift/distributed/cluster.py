"""Connecting to a Ray cluster, and the checks that make a bad cluster a clear error.

Ray is an optional extra (``pip install nncift[ray]``); nothing here imports it at module
import time, so `nncift` works without it.

Three things go wrong with clusters in practice, and each is an `InputError` here rather than
a hang or a traceback from deep inside a worker:

* the address is unreachable (wrong host, port, firewall): a TCP probe with a timeout runs
  before ``ray.init``, which otherwise retries for minutes;
* a GPU is required (``device="cuda"``) and the cluster has none: checked against the
  cluster's resources before any actor is created (an actor asking for a GPU that does not
  exist would wait forever);
* the workers run other versions of nncift / torch / transformers / Python than the
  driver: every worker reports its versions when it starts, and `check_versions` names the
  node and the packages that differ (labels computed with another LM stack are not the
  labels the manifest claims).
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from nncift.errors import InputError

log = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection to the cluster address before giving up.
DEFAULT_CONNECT_TIMEOUT = 15.0
#: Packages whose versions must match between the driver and every worker: they decide the
#: labels (LM stack) and the scores (nncift's Rust core).
VERSIONED_PACKAGES = ("nncift", "torch", "transformers", "numpy")


def require_ray() -> Any:
    """Import ray, or explain how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise InputError(
            "--ray needs the Ray extra: pip install 'nncift[ray]' (on the driver and every "
            "worker node)"
        ) from exc
    return ray


def package_versions() -> dict[str, str]:
    """Versions of what decides labels and scores on this process (driver or worker)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": ".".join(platform.python_version_tuple()[:2])}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    from nncift._core import __version__ as core

    out["nncift-core"] = core
    return out


def check_versions(driver: dict[str, str], worker: dict[str, str], where: str) -> None:
    """Raise an `InputError` naming every package whose version differs on a worker."""
    diff = [
        f"{k} {worker.get(k, 'missing')} (driver: {v})"
        for k, v in sorted(driver.items())
        if worker.get(k) != v
    ]
    if diff:
        raise InputError(
            f"package versions on Ray worker {where} differ from this machine: "
            + "; ".join(diff)
            + ". Install the same versions on every node (labels and scores depend on them)."
        )


def _host_port(address: str) -> tuple[str, int] | None:
    """'host:port' or 'ray://host:port' -> (host, port); None for 'auto' / 'local'."""
    a = address.strip()
    if a in ("auto", "local", ""):
        return None
    a = a.removeprefix("ray://")
    host, sep, port = a.rpartition(":")
    if not sep or not host:
        raise InputError(f"Ray address {address!r} is not HOST:PORT (or auto / local)")
    try:
        return host.strip("[]"), int(port)
    except ValueError as exc:
        raise InputError(f"Ray address {address!r}: port {port!r} is not a number") from exc


def probe(address: str, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
    """Fail fast, with a clear message, if nothing listens at the address."""
    hp = _host_port(address)
    if hp is None:
        return
    host, port = hp
    t0 = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError as exc:
        raise InputError(
            f"cannot reach a Ray cluster at {address}: no answer within {timeout:.0f} s "
            "(check the address, the port and the firewall; start one with `ray start --head`)"
        ) from exc
    except OSError as exc:
        raise InputError(
            f"cannot reach a Ray cluster at {address}: {exc.strerror or exc} after "
            f"{time.perf_counter() - t0:.1f} s (is `ray start --head` running there?)"
        ) from exc


@dataclass(frozen=True)
class RaySettings:
    """How a command uses Ray (the ``--ray*`` options).

    address: see `connect` (None = Ray's default rule).
    workers: label workers (default: one per GPU, else one per ``cpus_per_worker`` CPUs).
    cpus_per_worker: CPUs each label worker (and each scoring / selection task) takes.
    shards: parts of the pool for scoring and partition-and-merge selection (default: one
        per CPU of the cluster, at least 2).
    timeout: seconds to wait for the cluster address to answer.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1
    shards: int | None = None
    timeout: float = DEFAULT_CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--ray-workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker < 1:
            raise InputError(f"--ray-cpus-per-worker must be >= 1, got {self.cpus_per_worker}")
        if self.shards is not None and self.shards < 1:
            raise InputError(f"--ray-shards must be >= 1, got {self.shards}")
        if not self.timeout > 0:
            raise InputError(f"--ray-timeout must be > 0, got {self.timeout}")

    def connect(self) -> Cluster:
        return connect(self.address, timeout=self.timeout)


@dataclass
class Cluster:
    """A connection to a Ray cluster and what it offers."""

    address: str | None
    resources: dict[str, float]
    nodes: int
    started_here: bool
    versions: dict[str, str] = field(default_factory=package_versions)

    @property
    def cpus(self) -> int:
        return int(self.resources.get("CPU", 0))

    @property
    def gpus(self) -> int:
        return int(self.resources.get("GPU", 0))

    def describe(self) -> dict[str, Any]:
        return {
            "address": self.address or "local",
            "nodes": self.nodes,
            "cpus": self.cpus,
            "gpus": self.gpus,
            "started_here": self.started_here,
        }

    def max_node_cpus(self) -> int:
        ray = require_ray()
        best = 0
        for node in ray.nodes():
            if node.get("Alive"):
                best = max(best, int(node.get("Resources", {}).get("CPU", 0)))
        return best


def connect(
    address: str | None = None,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    num_cpus: int | None = None,
) -> Cluster:
    """Connect to (or, with None / 'local', start) a Ray cluster; reuse an open connection.

    address: 'HOST:PORT' of a running head node (``ray start --head``), 'ray://HOST:PORT'
    (Ray Client), 'auto' (the cluster ``RAY_ADDRESS`` or a local ``ray start`` names; an
    error if there is none), 'local' (a new single-node Ray on this machine with
    ``num_cpus`` CPUs), or None (Ray's default: 'auto' if a cluster is found, else 'local').
    """
    ray = require_ray()
    # Probe first, even when connected: an explicit address that does not answer is an error.
    if address is not None and address not in ("local", "auto"):
        probe(address, timeout)
    elif address is None and os.environ.get("RAY_ADDRESS"):
        probe(os.environ["RAY_ADDRESS"], timeout)
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        hp = _host_port(address) if address not in (None, "local", "auto") else None
        if hp is not None and not current.endswith(f":{hp[1]}"):
            raise InputError(
                f"this process is already connected to Ray at {current}; it cannot also "
                f"connect to {address}"
            )
        res = ray.cluster_resources()
        return Cluster(address, dict(res), len(ray.nodes()), started_here=False)
    # Quiet by default: Ray's own banner and worker logs go to its log folder.
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = address == "local"
    if address is None or started:
        # Ray's own rule for no address: RAY_ADDRESS, else a cluster `ray start` runs on
        # this machine, else a new single-node Ray here.
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    remote = address not in (None, "local", "auto")  # else Ray may start one here
    _init_within(ray, address, kwargs, timeout if remote else None)
    res = dict(ray.cluster_resources())
    log.info("connected to Ray (%s): %s", address or "local", res)
    return Cluster(address, res, len(ray.nodes()), started_here=started)


def _init_within(
    ray: Any, address: str | None, kwargs: dict[str, Any], timeout: float | None
) -> None:
    """``ray.init`` bounded by `timeout`: something may accept TCP at the address (a proxy,
    another service) and Ray then retries its handshake for about 20 s on its own."""
    import threading

    if timeout is None:
        # Starting Ray here: no remote handshake to bound, and Ray's local start expects the
        # main thread (its GCS client gave up after 60 s when started from a helper thread).
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"cannot start Ray on this machine: {exc}") from exc
        return
    box: dict[str, BaseException] = {}

    def init() -> None:
        try:
            ray.init(address=address, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=init, name="nncift-ray-connect", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise InputError(
            f"cannot connect to a Ray cluster at {address}: no Ray handshake within "
            f"{timeout:.0f} s (something answers there, but not a Ray head node?)"
        )
    err = box.get("error")
    if err is not None:
        raise InputError(
            f"cannot connect to the Ray cluster at {address or 'local'}: {err}"
        ) from err


def check_gpu(cluster: Cluster, device: str | None) -> bool:
    """Whether workers should take a GPU each; an error if one is required and none exists.

    device: 'cuda' / 'gpu' requires GPUs; 'cpu' never uses them; None / 'auto' uses them
    when the cluster has any.
    """
    want = (device or "auto").lower()
    if want.startswith("cuda") or want == "gpu":
        if cluster.gpus == 0:
            raise InputError(
                f"--device {device} needs GPUs but the Ray cluster ({cluster.address or 'local'}, "
                f"{cluster.nodes} node(s), {cluster.cpus} CPUs) has none; use --device cpu or "
                "add GPU nodes"
            )
        return True
    if want == "cpu":
        return False
    if want != "auto":
        raise InputError(f"--device {device!r}: use auto, cpu or cuda with --ray")
    return cluster.gpus > 0


__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "Cluster",
    "RaySettings",
    "check_gpu",
    "check_versions",
    "connect",
    "package_versions",
    "probe",
    "require_ray",
]
