"""`nncift label`: u-block labelling, resume, option errors — with a real (tiny) LM folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from nncift.cli.main import cli
from nncift.split import u_split


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("data")
    pool, target = d / "pool.jsonl", d / "target.jsonl"
    with pool.open("w") as f:
        for i in range(40):
            f.write(
                json.dumps({"prompt": f"Question number {i}?", "response": f"Answer {i * 7}."})
                + "\n"
            )
    with target.open("w") as f:
        for i in range(20):
            f.write(
                json.dumps({"instruction": f"Task {i}", "input": "", "output": f"Result {i}"})
                + "\n"
            )
    return pool, target


def test_delift_u_block_and_resume(
    tiny_lm_dir: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    pool, target = data
    args = [
        "label",
        "--method",
        "delift",
        "--pool",
        str(pool),
        "--target",
        str(target),
        "--fraction",
        "0.1",
        "--lm",
        str(tiny_lm_dir),
        "--seed",
        "3",
        "--threads",
        "2",
        "--set",
        "max_example_tokens=32",
        "--out",
        str(tmp_path),
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    labels = np.load(tmp_path / "labels.npy")
    split = u_split(40, 20, u=0.1, seed=3)
    assert labels.shape == (4, 2) and labels.dtype == np.float32
    np.testing.assert_array_equal(np.load(tmp_path / "rows.npy"), split.rows_in)
    np.testing.assert_array_equal(np.load(tmp_path / "cols.npy"), split.cols_in)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["results"]["function"]["max_example_tokens"] == 32
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "0 tiles computed, 1 reused" in again.output
    changed = CliRunner().invoke(
        cli, [*args[:-2], "--set", "max_example_tokens=33", "--out", str(tmp_path)]
    )
    assert changed.exit_code != 0 and "different run" in changed.output


def test_option_errors(data: tuple[Path, Path], tmp_path: Path) -> None:
    pool, target = data
    base = ["label", "--pool", str(pool), "--out", str(tmp_path)]
    for extra, msg in [
        (["--method", "delift-se", "--fraction", "0"], "(0, 1]"),
        (["--method", "delift-se", "--fraction", "1.2"], "(0, 1]"),
        (["--method", "delift-se", "--fraction", "0.5", "--all"], "exclude each other"),
        (["--method", "selectit", "--target", str(target)], "takes no --target"),
        (["--method", "delift-se", "--set", "oops"], "KEY=VALUE"),
        (["--method", "delift", "--lm", str(tmp_path / "nope")], "cannot load language model"),
    ]:
        res = CliRunner().invoke(cli, base + extra)
        assert res.exit_code == 2 or res.exit_code == 1, res.output
        assert msg in res.output, res.output


def test_selectit_all_in_a_subprocess(
    tiny_lm_dir: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    pool, _ = data
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-c",
        "from nncift.cli import main; main()",
        "-q",
        "label",
        "--method",
        "selectit",
        "--pool",
        str(pool),
        "--all",
        "--lm",
        str(tiny_lm_dir),
        "--threads",
        "1",
        "--set",
        "prompts=['Rate 1-5: {sample}']",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    values = np.load(tmp_path / "labels.npy")
    assert values.shape == (40,) and np.isfinite(values).all() and (values >= 0).all()
