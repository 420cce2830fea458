"""Scale-out on Ray (issue 8), on a real two-node Ray cluster started on this machine.

The cluster (a head and one more node, one CPU each, separate raylets on loopback) is
started once for the module by Ray's own `ray.cluster_utils.Cluster` and shut down at the
end; only its own processes are stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from click.testing import CliRunner
from nncift.cli.main import cli
from nncift.distributed.cluster import check_versions, connect, package_versions
from nncift.distributed.labels import FunctionSpec, RayInfluence
from nncift.errors import InputError
from nncift.influence import TextItems, make
from nncift.influence.store import compute_labels, load_labels

pytestmark = pytest.mark.ray

SETTINGS = {"max_example_tokens": 24}


@pytest.fixture(scope="module")
def cluster() -> object:
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    node = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
    c = Cluster(initialize_head=True, head_node_args=dict(node))
    c.add_node(**node)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def _items(n: int, tag: str) -> TextItems:
    return TextItems(
        [f"{tag} question {i}: what is {i} plus {i % 5}?" for i in range(n)],
        [f"It is {i + i % 5}. {tag} answer number {i}." for i in range(n)],
    )


POOL, TARGETS = _items(12, "pool"), _items(6, "target")


def _local_labels(tiny_lm_dir: Path, out: Path) -> np.ndarray:
    import torch
    from nncift.lm import load_lm

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray workers use one thread each: same arithmetic
    try:
        lm = load_lm(str(tiny_lm_dir), device="cpu", dtype="auto", max_length=512)
        fn = make("delift", POOL, TARGETS, lm=lm, **SETTINGS)
        run = compute_labels(fn, out, tile_rows=2)
    finally:
        torch.set_num_threads(before)  # process-wide: later tests keep their own count
    assert run.complete and run.values is not None
    return run.values


def _ray_fn(cluster: object, tiny_lm_dir: Path, **kw: object) -> RayInfluence:
    spec = FunctionSpec("delift", SETTINGS, lm=str(tiny_lm_dir), max_length=512)
    return RayInfluence(spec, POOL, TARGETS, connect(), device="cpu", **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def local(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return _local_labels(tiny_lm_dir, tmp_path_factory.mktemp("local"))


def test_two_nodes_label_equal_local(
    cluster: object, tiny_lm_dir: Path, local: np.ndarray, tmp_path: Path
) -> None:
    with _ray_fn(cluster, tiny_lm_dir) as fn:
        assert fn.stats.workers == 2 and len(fn.stats.nodes) == 2  # one worker per node
        run = compute_labels(fn, tmp_path, tile_rows=2)
    assert run.complete and run.computed == 6 and fn.stats.tiles_done == 6
    np.testing.assert_array_equal(run.values, local)
    labels, rows, cols, manifest = load_labels(tmp_path)
    np.testing.assert_array_equal(labels, local)
    assert manifest["cost_total"]["lm_passes"] > 0


def test_sparse_design_pairs_on_ray_equal_local(
    cluster: object, tiny_lm_dir: Path, local: np.ndarray, tmp_path: Path
) -> None:
    """A sparse design's pairs (`pairs=True`) run on the workers as one block per pool row
    and store the same folder layout as a local run."""
    from nncift.designs import spread

    d = spread(12, 6, per_row=2, seed=0)
    with _ray_fn(cluster, tiny_lm_dir) as fn:
        run = compute_labels(fn, tmp_path, rows=d.rows, cols=d.cols, pairs=True, tile_rows=3)
    assert run.complete and run.computed == 4 and fn.stats.tiles_done == 4
    assert run.values is not None and run.values.shape == (24,)
    # Per-row blocks batch the passes differently from the 2-row tiles of `local`.
    np.testing.assert_allclose(run.values, local[d.rows, d.cols], atol=1e-5)
    labels, rows, cols, manifest = load_labels(tmp_path)
    np.testing.assert_array_equal(rows, d.rows)
    assert manifest["pairs"] is True and manifest["cost_total"]["lm_passes"] > 0


def test_killed_worker_run_completes_identically(
    cluster: object, tiny_lm_dir: Path, local: np.ndarray, tmp_path: Path
) -> None:
    killed: list[int] = []
    with _ray_fn(cluster, tiny_lm_dir) as fn:

        def progress(done: int, total: int, eta: float | None) -> None:
            if done >= 1 and not killed:  # mid-run: one tile written, five to go
                pid = fn.worker_pids[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        run = compute_labels(fn, tmp_path, tile_rows=2, progress=progress)
        assert killed and fn.stats.workers_lost == 1
        assert killed[0] not in fn.worker_pids  # a replacement took its place
    assert run.complete and run.tiles_done == 6
    np.testing.assert_array_equal(run.values, local)
    manifest = json.loads((tmp_path / "labels-manifest.json").read_text())
    assert len(manifest["tiles"]) == 6  # every tile recorded once
    assert len(list((tmp_path / "tiles").glob("*.npy"))) == 6


def test_stopped_run_resumes_from_its_tiles(
    cluster: object, tiny_lm_dir: Path, local: np.ndarray, tmp_path: Path
) -> None:
    with _ray_fn(cluster, tiny_lm_dir) as fn:
        first = compute_labels(fn, tmp_path, tile_rows=2, max_seconds=1e-6)
        assert not first.complete and 1 <= first.tiles_done < 6
        again = compute_labels(fn, tmp_path, tile_rows=2)
    assert again.complete and again.reused == first.tiles_done
    assert again.computed == 6 - first.tiles_done
    np.testing.assert_array_equal(again.values, local)


def test_local_folder_is_resumed_on_ray_without_recomputing(
    cluster: object, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    local = _local_labels(tiny_lm_dir, tmp_path)
    with _ray_fn(cluster, tiny_lm_dir) as fn:
        run = compute_labels(fn, tmp_path, tile_rows=2)
    assert run.reused == 6 and run.computed == 0  # same fingerprint, same layout
    np.testing.assert_array_equal(run.values, local)


def test_label_cli_on_ray(
    cluster: object, tiny_lm_dir: Path, local: np.ndarray, tmp_path: Path
) -> None:
    pool, target = tmp_path / "pool.jsonl", tmp_path / "target.jsonl"
    for path, items in ((pool, POOL), (target, TARGETS)):
        path.write_text(
            "".join(
                json.dumps({"prompt": p, "response": r}) + "\n"
                for p, r in zip(items.prompts, items.responses, strict=True)
            )
        )
    out = tmp_path / "labels"
    res = CliRunner().invoke(
        cli,
        [
            "--quiet",
            "label",
            "--method",
            "delift",
            "--pool",
            str(pool),
            "--target",
            str(target),
            "--all",
            "--lm",
            str(tiny_lm_dir),
            "--set",
            "max_example_tokens=24",
            "--max-length",
            "512",
            "--tile-rows",
            "2",
            "--device",
            "cpu",
            "--ray",
            cluster.address,
            "--out",
            str(out),  # type: ignore[attr-defined]
        ],  # fmt: skip
    )
    assert res.exit_code == 0, res.output
    labels, _, _, _ = load_labels(out)
    np.testing.assert_array_equal(labels, local)
    man = json.loads((out / "manifest.json").read_text())
    assert man["stages"]["ray_start_workers"]["workers"] == 2
    assert man["stages"]["label"]["ray"]["tiles_done"] == 6


def _cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    """`nncift ARGS` in a fresh process, as a user runs it (this one is connected to Ray)."""
    return subprocess.run(
        [sys.executable, "-c", "from nncift.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("address", ["127.0.0.1:1", "10.255.255.1:6379"])
def test_unreachable_address_fails_fast_with_a_clear_error(address: str, tmp_path: Path) -> None:
    # A fresh process, as a user runs it (this one is connected to the test cluster).
    # 127.0.0.1:1 refuses; 10.255.255.1 either drops packets (TCP timeout) or, behind a
    # proxy that accepts every connection, never completes Ray's handshake: both time out.
    t0 = time.perf_counter()
    res = _cli_process(
        "label", "--method", "delift-se", "--pool", "builtin:ifbench", "--limit", "40",
        "--ray", address, "--ray-timeout", "3", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert f"cannot reach a Ray cluster at {address}" in res.stderr or (
        f"cannot connect to a Ray cluster at {address}: no Ray handshake within 3 s" in res.stderr
    ), res.stderr
    assert "Traceback" not in res.stderr
    assert time.perf_counter() - t0 < 25
    assert not (tmp_path / "o").exists()


def test_gpu_required_but_cluster_has_none(cluster: object, tiny_lm_dir: Path) -> None:
    with pytest.raises(InputError, match="needs GPUs but the Ray cluster"):
        _ray_fn(cluster, tiny_lm_dir).__class__(
            FunctionSpec("delift", lm=str(tiny_lm_dir)), POOL, TARGETS, connect(), device="cuda"
        )


def test_too_many_cpus_per_worker_is_refused(cluster: object, tiny_lm_dir: Path) -> None:
    with pytest.raises(InputError, match="largest node of the Ray cluster has 1"):
        _ray_fn(cluster, tiny_lm_dir, cpus_per_worker=2)


def test_version_mismatch_names_the_node_and_packages() -> None:
    here = package_versions()
    assert {"nncift", "torch", "transformers", "python"} <= set(here)
    check_versions(here, dict(here), "node a")  # equal: fine
    other = dict(here, torch="1.0.0")
    with pytest.raises(InputError, match=r"worker node b differ.*torch 1\.0\.0 \(driver: "):
        check_versions(here, other, "node b")


# ---------------------------------------------------------------- sharded scoring / selection


def _net_file(path: Path, d: int = 8, kind: str = "pairwise") -> Path:
    from nncift.weights import NetworkWeights, write_network

    rng = np.random.default_rng(0)
    in0 = d if kind == "pointwise" else 2 * d + 1
    layers = [
        (rng.standard_normal((16, in0)).astype(np.float32) * 0.3, rng.standard_normal(16)),
        (rng.standard_normal((1, 16)).astype(np.float32), np.zeros(1, np.float32)),
    ]
    write_network(path, NetworkWeights(
        layers, kind=kind, input_layout="pointwise" if kind == "pointwise" else "paper",
        embedding_dim=d, embedding_model="test-model", label_scale=2.0,
    ))  # fmt: skip
    return path


def test_sharded_scoring_equals_local(cluster: object, tmp_path: Path) -> None:
    from nncift import PairwiseScorer
    from nncift.distributed.cluster import RaySettings
    from nncift.distributed.shards import ShardStats, score_sharded

    rng = np.random.default_rng(3)
    rows = rng.standard_normal((53, 8)).astype(np.float32)
    cols = rng.standard_normal((17, 8)).astype(np.float32)
    net = _net_file(tmp_path / "net.safetensors")
    local = PairwiseScorer.load(net)
    ray_settings = RaySettings(shards=3)
    st = ShardStats()
    dense = score_sharded(ray_settings, net, rows, cols, stats=st)
    assert st.shards == 3
    np.testing.assert_array_equal(dense, local.score(rows, cols))
    idx, val = score_sharded(ray_settings, net, rows, cols, how="topk", k=4)
    want_idx, want_val = local.topk(rows, cols, 4)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(val, want_val)
    mean = score_sharded(ray_settings, net, rows, cols, how="mean")
    np.testing.assert_array_equal(mean, local.aggregate(rows, cols, "mean"))
    pw = _net_file(tmp_path / "pw.safetensors", kind="pointwise")
    np.testing.assert_array_equal(
        score_sharded(ray_settings, pw, rows, how="pointwise"),
        PairwiseScorer.load(pw).pointwise(rows),
    )
    with pytest.raises(InputError, match=r"shape \(17, 5\); the network expects \(n, 8\)"):
        score_sharded(ray_settings, net, rows, cols[:, :5])


@pytest.mark.parametrize("source", ["embeddings", "kernel", "constant"])
@pytest.mark.parametrize("objective", ["fl", "graph-cut", "disparity-min"])
def test_partition_and_merge_on_ray_equals_local(
    cluster: object, source: str, objective: str
) -> None:
    """Equal to the local run, ties included (`constant`: every gain ties, so the seeded tie
    order alone decides; parts and merge must use the pool's global tie ranks)."""
    from nncift.distributed.cluster import RaySettings
    from nncift.distributed.shards import select_partitioned
    from nncift.selection import select

    rng = np.random.default_rng(7)
    emb = rng.standard_normal((240, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    data: dict[str, np.ndarray] = (
        {"embeddings": emb}
        if source == "embeddings"
        else {"kernel": np.clip(emb @ emb.T, 0, 1).astype(np.float32)}
    )
    if source == "constant":
        data = {"kernel": np.ones((240, 240), np.float32)}
    for seed, parts in ((0, 3), (5, 4)):
        local = select(objective, budget=20, optimizer="greedi", greedi_parts=parts, random_state=seed,
                       **data)  # fmt: skip
        got, info = select_partitioned(
            RaySettings(), objective, budget=20, parts=parts, seed=seed, **data
        )
        np.testing.assert_array_equal(got.indices, local.indices)
        np.testing.assert_allclose(got.gains, local.gains, rtol=1e-6)
        assert got.objective == pytest.approx(local.objective, rel=1e-6)
        assert info.parts == parts and sum(info.part_sizes) == 240 and info.seed == seed


# ---------------------------------------------------------------- the CLI's --ray paths


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nncift.data import load_named

    items = load_named("chatterbot")
    pool, _ = items.split([120, 10], seed=1)
    path = tmp_path_factory.mktemp("data") / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pool.records), encoding="utf-8")
    return path


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["-q", *args])
    return res.exit_code, res.output


def test_select_on_ray_equals_local_partition_and_merge(
    cluster: object, pool_file: Path, tmp_path: Path
) -> None:
    from nncift.data import load_items
    from nncift.embed import Embedder
    from nncift.selection import select

    out = tmp_path / "s.jsonl"
    code, output = _cli(
        "select", "--pool", str(pool_file), "--method", "embedding", "--objective", "fl",
        "--budget", "15", "--ray", cluster.address, "--ray-shards", "3",  # type: ignore[attr-defined]
        "--seed", "4", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    got = [json.loads(x)["nncift_id"] for x in out.read_text().splitlines()]
    items = load_items(str(pool_file))
    emb = Embedder("default", progress=False).embed(items.texts)
    local = select(
        "fl", budget=15, embeddings=emb, optimizer="greedi", greedi_parts=3, random_state=4
    )
    assert got == [items.ids[i] for i in local.indices]
    man = json.loads((tmp_path / "s.manifest.json").read_text())
    assert man["stages"]["select"]["ray"]["parts"] == 3
    assert man["stages"]["select"]["ray"]["seed"] == 4


def test_select_on_ray_labels_with_workers(
    cluster: object, pool_file: Path, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "s.jsonl"
    args = ["select", "--pool", str(pool_file), "--method", "selectit", "--lm", str(tiny_lm_dir),
            "--u", "0.1", "--epochs", "2", "--budget", "12"]  # fmt: skip
    code, output = _cli(*args, "--ray", cluster.address, "--cache-dir", str(tmp_path / "r"),  # type: ignore[attr-defined]
                        "--out", str(out))  # fmt: skip
    assert code == 0, output
    man = json.loads((tmp_path / "s.manifest.json").read_text())
    ray_rec = man["stages"]["label_points"]["ray"]
    assert ray_rec["workers"] == 2 and len(ray_rec["nodes"]) == 2 and ray_rec["tiles_done"] >= 1
    assert len(out.read_text().splitlines()) == 12
    # The labels equal a local run's (same store layout, same function).
    code, output = _cli(
        *args, "--cache-dir", str(tmp_path / "l"), "--out", str(tmp_path / "l.jsonl")
    )
    assert code == 0, output
    got = sorted((tmp_path / "r").glob("runs/*/labels-points/labels.npy"))
    want = sorted((tmp_path / "l").glob("runs/*/labels-points/labels.npy"))
    assert len(got) == len(want) == 1
    np.testing.assert_allclose(np.load(got[0]), np.load(want[0]), rtol=1e-5, atol=1e-6)


def test_estimate_on_ray_equals_local(cluster: object, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    np.save(tmp_path / "pool.npy", rng.standard_normal((41, 8)).astype(np.float32))
    np.save(tmp_path / "target.npy", rng.standard_normal((9, 8)).astype(np.float32))
    net = _net_file(tmp_path / "net.safetensors")
    common = ["estimate", "--net", str(net), "--pool", str(tmp_path / "pool.npy"), "--target",
              str(tmp_path / "target.npy")]  # fmt: skip
    for extra, name in (
        ([], "d.npy"),
        (["--top-k", "3"], "t.npz"),
        (["--aggregate", "max"], "a.npy"),
    ):
        code, output = _cli(*common, *extra, "--out", str(tmp_path / f"local-{name}"))
        assert code == 0, output
        code, output = _cli(*common, *extra, "--ray", cluster.address, "--ray-shards", "4",  # type: ignore[attr-defined]
                            "--out", str(tmp_path / f"ray-{name}"))  # fmt: skip
        assert code == 0, output
        a, b = np.load(tmp_path / f"local-{name}"), np.load(tmp_path / f"ray-{name}")
        if name.endswith(".npz"):
            np.testing.assert_array_equal(a["indices"], b["indices"])
            np.testing.assert_array_equal(a["values"], b["values"])
        else:
            np.testing.assert_array_equal(a, b)
    man = json.loads((tmp_path / "ray-a.npy.manifest.json").read_text())
    assert man["results"]["ray"]["shards"] == 4


def test_ray_local_starts_a_cluster_in_a_fresh_process(tmp_path: Path) -> None:
    # `--ray local` (and a bare --ray with no cluster around) starts Ray inside the command.
    rng = np.random.default_rng(5)
    np.save(tmp_path / "pool.npy", rng.standard_normal((23, 8)).astype(np.float32))
    net = _net_file(tmp_path / "net.safetensors")
    common = ["estimate", "--net", str(net), "--pool", str(tmp_path / "pool.npy")]
    code, output = _cli(*common, "--out", str(tmp_path / "local.npy"))
    assert code == 0, output
    res = _cli_process(
        "-q", *common, "--ray", "local", "--ray-shards", "2", "--out", str(tmp_path / "ray.npy")
    )
    assert res.returncode == 0, res.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "ray.npy"), np.load(tmp_path / "local.npy"))
