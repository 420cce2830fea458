"""`nncift estimate` end to end: dense .npy (memory-mapped), top-k parquet / npz, aggregates,
pointwise networks, embedding a data file with the network's own embedder, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from nncift import PairwiseScorer
from nncift.cli.main import cli
from nncift.weights import NetworkWeights, write_network

D = 8


def _net(path: Path, *, kind: str = "pairwise", d: int = D, model: str = "test-model") -> Path:
    rng = np.random.default_rng(0)
    in0 = d if kind == "pointwise" else 2 * d + 1
    layers = [
        (
            rng.standard_normal((16, in0)).astype(np.float32) * 0.3,
            rng.standard_normal(16).astype(np.float32),
        ),
        (rng.standard_normal((1, 16)).astype(np.float32), np.zeros(1, np.float32)),
    ]
    write_network(
        path,
        NetworkWeights(
            layers,
            kind=kind,
            input_layout="pointwise" if kind == "pointwise" else "paper",
            embedding_dim=d,
            embedding_model=model,
            label_scale=2.0,
        ),
    )
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    pool = tmp_path / "pool.npy"
    target = tmp_path / "target.npy"
    np.save(pool, rng.standard_normal((37, D)).astype(np.float32))
    np.save(target, rng.standard_normal((11, D)))  # float64 on disk: converted
    return {"net": _net(tmp_path / "net.safetensors"), "pool": pool, "target": target}


def _run(*args: object) -> object:
    result = CliRunner().invoke(cli, ["-q", *map(str, args)])
    return result


def test_dense_npy(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "k.npy"
    r = _run(
        "estimate",
        "--net",
        files["net"],
        "--pool",
        files["pool"],
        "--target",
        files["target"],
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    got = np.load(out)
    want = PairwiseScorer.load(files["net"]).score(np.load(files["pool"]), np.load(files["target"]))
    np.testing.assert_array_equal(got, want)
    manifest = json.loads((tmp_path / "k.npy.manifest.json").read_text())
    assert manifest["results"]["shape"] == [37, 11]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_pool_by_pool_topk_parquet_and_npz(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "top.parquet"
    r = _run("estimate", "--net", files["net"], "--pool", files["pool"], "--top-k", 4, "--out", out)
    assert r.exit_code == 0, r.output
    df = pl.read_parquet(out)
    assert df.columns == ["row", "col", "row_id", "col_id", "rank", "score"]
    assert df.height == 37 * 4
    pool = np.load(files["pool"])
    dense = PairwiseScorer.load(files["net"]).score(pool, pool)
    best = np.argsort(-dense, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(df["col"].to_numpy().reshape(37, 4), best)
    np.testing.assert_array_equal(
        df["score"].to_numpy().reshape(37, 4), np.take_along_axis(dense, best, 1)
    )
    npz = tmp_path / "top.npz"
    assert (
        _run(
            "estimate", "--net", files["net"], "--pool", files["pool"], "--top-k", 4, "--out", npz
        ).exit_code
        == 0
    )
    with np.load(npz) as z:
        np.testing.assert_array_equal(z["indices"], best)


def test_aggregate_and_pointwise(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mean.npy"
    args = ["--net", files["net"], "--pool", files["pool"], "--target", files["target"]]
    assert _run("estimate", *args, "--aggregate", "mean", "--out", out).exit_code == 0
    dense = PairwiseScorer.load(files["net"]).score(
        np.load(files["pool"]), np.load(files["target"])
    )
    np.testing.assert_allclose(np.load(out), dense.astype(np.float64).mean(1), rtol=1e-6, atol=1e-6)
    pw = _net(tmp_path / "pw.safetensors", kind="pointwise")
    out2 = tmp_path / "pw.parquet"
    r = _run("estimate", "--net", pw, "--pool", files["pool"], "--out", out2)
    assert r.exit_code == 0, r.output
    df = pl.read_parquet(out2)
    want = PairwiseScorer.load(pw).pointwise(np.load(files["pool"]))
    np.testing.assert_array_equal(df["score"].to_numpy(), want)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "x.csv"], "--out must end"),
        (["--top-k", "3", "--aggregate", "max", "--out", "x.parquet"], "alternatives"),
        (["--top-k", "0", "--out", "x.parquet"], ">= 1"),
        (["--top-k", "99", "--out", "x.parquet"], "more than the 37 columns"),
        (["--top-k", "3", "--out", "x.npy"], ".parquet"),
        (["--out", "x.parquet"], "dense matrix is written as .npy"),
    ],
)
def test_option_errors(
    files: dict[str, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    extra = [str(tmp_path / e) if e.startswith("x.") else e for e in extra]
    r = _run("estimate", "--net", files["net"], "--pool", files["pool"], *extra)
    assert r.exit_code != 0
    assert message in r.output, r.output


def test_input_errors(files: dict[str, Path], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((5, D + 1), np.float32))
    r = _run("estimate", "--net", files["net"], "--pool", wrong, "--out", tmp_path / "o.npy")
    assert r.exit_code != 0 and "8-dimensional" in r.output, r.output
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    r = _run("estimate", "--net", bad, "--pool", files["pool"], "--out", tmp_path / "o.npy")
    assert r.exit_code != 0 and "safetensors" in r.output, r.output
    assert not (tmp_path / "o.npy").exists()
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n")
    unknown = _net(tmp_path / "u.safetensors", model="unknown")
    r = _run("estimate", "--net", unknown, "--pool", data, "--out", tmp_path / "o.npy")
    assert r.exit_code != 0 and "--embedder" in r.output, r.output


def test_embeds_a_data_file_with_the_networks_embedder(tmp_path: Path) -> None:
    """Real default embedder (packaged all-MiniLM-L6-v2), real items, real subprocess."""
    from nncift.embed import DEFAULT_EMBEDDER_ID

    net = _net(tmp_path / "net.safetensors", d=384, model=DEFAULT_EMBEDDER_ID)
    data = tmp_path / "items.jsonl"
    rows = [
        {"instruction": "Name a primary colour.", "output": "Red."},
        {"instruction": "What is 2 + 2?", "output": "4"},
        {"instruction": "Translate 'hello' into French.", "output": "Bonjour."},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "top.parquet"
    env = dict(os.environ, HF_HUB_OFFLINE="1", NNCIFT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "nncift"),
            "-q",
            "estimate",
            "--net",
            str(net),
            "--pool",
            str(data),
            "--top-k",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    df = pl.read_parquet(out)
    assert df.height == 6
    assert len(set(df["row_id"].to_list())) == 3  # content-hash ids of the three items
    assert set(df["col_id"].to_list()) <= set(df["row_id"].to_list())  # pool x pool
    assert np.isfinite(df["score"].to_numpy()).all()
