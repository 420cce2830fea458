"""`nncift train` and `nncift evaluate` through click's CliRunner and a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from nncift.cli.main import cli
from nncift.split import u_split

D = 12
FAST = ["--epochs", "2", "--lr", "3e-3", "--hidden", "8"]


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(40, D)).astype(np.float32)
    cols = rng.normal(size=(30, D)).astype(np.float32)
    full = (np.tanh(rows @ np.linspace(-1, 1, D))[:, None] + (cols @ np.ones(D))[None, :]).astype(
        np.float32
    )
    sp = u_split(40, 30, u=0.5, seed=0)
    r, c = sp.quadrant("Q1")
    np.save(tmp_path / "pool.npy", rows)
    np.save(tmp_path / "target.npy", cols)
    np.save(tmp_path / "full.npy", full)
    np.savez(tmp_path / "q1.npz", labels=full[np.ix_(r, c)], rows=r, cols=c)
    return tmp_path


def test_train_then_evaluate(files) -> None:
    runner = CliRunner()
    net = files / "net.safetensors"
    res = runner.invoke(
        cli,
        [
            "train",
            "--labels",
            str(files / "q1.npz"),
            "--pool",
            str(files / "pool.npy"),
            "--target",
            str(files / "target.npy"),
            "--out",
            str(net),
            "--embedding-model",
            "toy",
            "--label-name",
            "toy-labels",
            *FAST,
        ],
    )
    assert res.exit_code == 0, res.output
    assert "trained paper" in res.output and net.is_file()
    man = json.loads((files / "net.safetensors.manifest.json").read_text())
    assert man["results"]["variant"] == "paper" and man["inputs"]["labels"]["sha256"]
    from nncift.weights import read_network

    w = read_network(net)
    assert w.embedding_model == "toy" and w.label_name == "toy-labels"
    # Evaluate with the split rebuilt from --u/--seed (the .npz carried no split record).
    out = files / "eval"
    res = runner.invoke(
        cli,
        [
            "evaluate",
            "--net",
            str(net),
            "--labels",
            str(files / "full.npy"),
            "--pool",
            str(files / "pool.npy"),
            "--target",
            str(files / "target.npy"),
            "--u",
            "0.5",
            "--embedding-model",
            "toy",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "evaluation.json").read_text())
    assert set(rep["quadrants"]["Q4"]) >= {"network", "constant", "cosine", "additive"}
    assert "Q4" in res.output


def test_evaluate_refuses_other_model(files) -> None:
    runner = CliRunner()
    net = files / "net.safetensors"
    args = [
        "train",
        "--labels",
        str(files / "q1.npz"),
        "--pool",
        str(files / "pool.npy"),
        "--target",
        str(files / "target.npy"),
        "--out",
        str(net),
        "--embedding-model",
        "toy",
    ]
    assert runner.invoke(cli, [*args, *FAST]).exit_code == 0
    res = runner.invoke(
        cli,
        [
            "evaluate",
            "--net",
            str(net),
            "--labels",
            str(files / "full.npy"),
            "--pool",
            str(files / "pool.npy"),
            "--target",
            str(files / "target.npy"),
            "--embedding-model",
            "other",
            "--out",
            str(files / "e"),
        ],
    )
    assert res.exit_code != 0 and "'other'" in res.output and "'toy'" in res.output


def test_train_bad_labels_is_one_line_error(files) -> None:
    lab = np.ones((5, 5))
    lab[1, 1] = np.nan
    np.save(files / "nan.npy", lab)
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "--labels",
            str(files / "nan.npy"),
            "--pool",
            str(files / "pool.npy"),
            "--target",
            str(files / "target.npy"),
            "--out",
            str(files / "x.safetensors"),
            *FAST,
        ],
    )
    assert res.exit_code != 0 and "NaN" in res.output and "Traceback" not in res.output
    assert not (files / "x.safetensors").exists()


def test_evaluate_sweep_subprocess(files) -> None:
    out = files / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from nncift.cli import main; main()",
            "-q",
            "evaluate",
            "--labels",
            str(files / "full.npy"),
            "--pool",
            str(files / "pool.npy"),
            "--target",
            str(files / "target.npy"),
            "--sweep-u",
            "0.3,0.6",
            "--sweep-arch",
            "4;16",
            "--u",
            "0.5",
            "--out",
            str(out),
            *FAST,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "error_vs_u.png").stat().st_size > 1000
    assert (out / "error_vs_size.png").stat().st_size > 1000
    recs = json.loads((out / "sweep_arch.json").read_text())
    assert [r["arch"] for r in recs] == [[4], [16]]


def test_train_reports_steps_and_says_when_labels_carry_no_signal(files) -> None:
    """Issue 14: the step count is reported; auto's constant is called out, not hidden."""
    rng = np.random.default_rng(100)
    np.save(files / "noise.npy", rng.normal(size=(30, 20)))
    net = files / "noise.safetensors"
    args = ["train", "--labels", str(files / "noise.npy"), "--pool", str(files / "pool.npy"),
            "--target", str(files / "target.npy"), "--out", str(net), "--variant", "auto",
            "--epochs", "4", "--lr", "3e-3"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "trained constant" in res.output and "no learnable signal" in res.output
    man = json.loads((files / "noise.safetensors.manifest.json").read_text())
    assert man["stages"]["fit"]["no_signal"] is True
    assert any("no learnable signal" in w for w in man["results"]["warnings"])
    assert man["results"]["candidates_rank"]["constant"] == 0.0
    # A named variant on learnable labels: steps taken, capped here by --max-steps.
    res = CliRunner().invoke(
        cli,
        ["train", "--labels", str(files / "q1.npz"), "--pool", str(files / "pool.npy"),
         "--target", str(files / "target.npy"), "--out", str(net), "--max-steps", "30",
         "--hidden", "8", "--lr", "3e-3"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "(30 steps, best at step" in res.output and "no learnable signal" not in res.output
    man = json.loads((files / "noise.safetensors.manifest.json").read_text())
    assert man["stages"]["fit"]["steps"] == man["results"]["steps"] == 30
