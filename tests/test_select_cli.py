"""`nncift select` end to end through Click and as a real subprocess, plus bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from nncift.cli.main import cli
from nncift.data import load_named


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    items = load_named("chatterbot", limit=80)
    path = tmp_path_factory.mktemp("data") / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in items.records), encoding="utf-8")
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_select_writes_records_in_order_with_rank_gain_and_manifest(
    pool_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "subset.jsonl"
    code, output = run("select", "--pool", str(pool_file), "--budget", "0.1", "--out", str(out))
    assert code == 0, output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8
    assert [r["nncift_rank"] for r in rows] == list(range(1, 9))
    gains = [r["nncift_gain"] for r in rows]
    assert gains == sorted(gains, reverse=True)  # facility-location gains never increase
    originals = [json.loads(line) for line in pool_file.read_text().splitlines()]
    for r in rows:
        orig = {k: v for k, v in r.items() if not k.startswith("nncift_")}
        assert orig in originals
    manifest = json.loads((tmp_path / "subset.manifest.json").read_text())
    assert manifest["inputs"]["pool"]["sha256"]
    assert manifest["options"]["budget_count"] == 8
    assert {"embed", "select", "write"} <= set(manifest["stages"])
    assert manifest["options"]["seed"] == 0


def test_select_is_deterministic_and_parquet_output(pool_file: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.parquet"
    assert run("select", "--pool", str(pool_file), "--budget", "5", "--out", str(a))[0] == 0
    assert run("select", "--pool", str(pool_file), "--budget", "5", "--out", str(b))[0] == 0
    ids_a = [json.loads(line)["nncift_id"] for line in a.read_text().splitlines()]
    assert pl.read_parquet(b)["nncift_id"].to_list() == ids_a


def test_n_jobs_minus_one_means_all_cores_and_changes_nothing(
    pool_file: Path, tmp_path: Path
) -> None:
    base = ["select", "--pool", str(pool_file), "--budget", "6"]
    outs = []
    for jobs in ("-1", "1"):
        out = tmp_path / f"jobs{jobs}.jsonl"
        code, output = run(*base, "--n-jobs", jobs, "--out", str(out))
        assert code == 0, output
        outs.append([json.loads(line)["nncift_id"] for line in out.read_text().splitlines()])
    assert outs[0] == outs[1]
    code, output = run(*base, "--n-jobs", "-2", "--out", str(tmp_path / "bad.jsonl"))
    assert code != 0 and "-2" in output
    assert not (tmp_path / "bad.jsonl").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "500"], "larger than the pool"),
        (["--budget", "0"], "budget must be > 0"),
        (["--budget", "2.5"], "must be whole"),
    ],
)
def test_impossible_budgets(
    pool_file: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "o.jsonl"
    code, output = run("select", "--pool", str(pool_file), "--out", str(out), *extra)
    assert code != 0 and message in output
    assert "Traceback" not in output
    assert not out.exists() and not list(tmp_path.glob(".o.jsonl*"))


def test_bad_files_give_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{oops\n', encoding="utf-8")
    code, output = run("select", "--pool", str(bad), "--out", str(tmp_path / "o.jsonl"))
    assert code != 0 and "bad.jsonl: line 2: malformed JSON" in output
    code, output = run("select", "--pool", str(tmp_path / "nope.jsonl"), "--out", "x.jsonl")
    assert code != 0 and "no such file" in output
    code, output = run("select", "--pool", str(bad), "--out", str(tmp_path / "o.txt"))
    assert code != 0 and "unknown output type" in output


def test_unknown_schema_through_the_cli_and_field_flags(tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "".join(json.dumps({"q": f"question {i}", "a": f"answer {i}"}) + "\n" for i in range(12)),
        encoding="utf-8",
    )
    code, output = run(
        "select", "--pool", str(data), "--budget", "3", "--out", str(tmp_path / "o.jsonl")
    )
    assert code != 0 and "--prompt-field" in output and "['a', 'q']" in output
    code, output = run(
        "select", "--pool", str(data), "--prompt-field", "q", "--response-field", "a",
        "--budget", "3", "--out", str(tmp_path / "o.jsonl"),
    )  # fmt: skip
    assert code == 0, output


def test_random_method_needs_no_model(pool_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    code, output = run("select", "--pool", str(pool_file), "--method", "random", "--budget", "4",
                       "--seed", "3", "--out", str(out))  # fmt: skip
    assert code == 0, output
    assert len(out.read_text().splitlines()) == 4


def test_real_subprocess_run(pool_file: Path, tmp_path: Path) -> None:
    # The console script installed next to this interpreter (the wheel's entry point).
    exe = str(Path(sys.executable).parent / "nncift")
    assert Path(exe).is_file(), "the nncift console script must be installed"
    out = tmp_path / "s.jsonl"
    proc = subprocess.run(
        [exe, "select", "--pool", str(pool_file), "--budget", "4", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "selected 4 of 80 items" in proc.stdout
    bad = subprocess.run([exe, "select", "--pool", str(tmp_path / "missing.jsonl"), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def copies_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three texts, four copies each (own ids): facility location saturates after 3 picks."""
    texts = ("How do I bake bread?", "What is the capital of France?", "Explain recursion.")
    recs = [
        {"id": f"r{4 * a + b}", "prompt": t, "response": f"An answer about {t}"}
        for a, t in enumerate(texts)
        for b in range(4)
    ]
    path = tmp_path_factory.mktemp("copies") / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


def test_a_short_selection_is_reported_and_recorded(copies_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "z.jsonl"
    res = CliRunner().invoke(
        cli, ["select", "--pool", str(copies_file), "--budget", "6", "--stop-at-zero",
              "--out", str(out)], catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "warning: selected 3 of the budget 6: no remaining item adds value" in res.output
    assert len(out.read_text().splitlines()) == 3
    short = json.loads((tmp_path / "z.manifest.json").read_text())["results"]["short_of_budget"]
    assert (short["selected"], short["budget"], short["reason"]) == (3, 6, "zero_gain")
    # The default fills the budget (no stop at zero gain) and records nothing.
    full = tmp_path / "f.jsonl"
    res = CliRunner().invoke(
        cli, ["select", "--pool", str(copies_file), "--budget", "6", "--out", str(full)],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(full.read_text().splitlines()) == 6 and "of the budget" not in res.output
    manifest = json.loads((tmp_path / "f.manifest.json").read_text())
    assert "short_of_budget" not in manifest["results"]


def test_zero_gain_picks_follow_the_seed_not_the_file(copies_file: Path, tmp_path: Path) -> None:
    picks = {}
    for seed in range(4):
        out = tmp_path / f"s{seed}.jsonl"
        code, output = run("select", "--pool", str(copies_file), "--budget", "9", "--seed",
                           str(seed), "--out", str(out))  # fmt: skip
        assert code == 0, output
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 9
        picks[seed] = [r["nncift_id"] for r in rows]
    # Picks 4..9 all have gain 0: which copies they are is the seed's tie order.
    assert len({tuple(p[3:]) for p in picks.values()}) > 1
    # ... not the file's order (the old lowest-index rule took the remaining copies in it).
    in_file_order = [sorted(p[3:], key=lambda i: int(i[1:])) == p[3:] for p in picks.values()]
    assert not all(in_file_order)


# ---------------------------------------------------------------- --embeddings (bring your own)


@pytest.fixture(scope="module")
def own_embeddings(pool_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The default embedder's vectors of the pool, written as the user would bring them."""
    from nncift.data import load_items
    from nncift.embed import Embedder

    items = load_items(pool_file)
    vecs = Embedder("default", progress=False).embed(items.texts)
    folder = tmp_path_factory.mktemp("own")
    np.save(folder / "pool.npy", vecs)
    order = np.random.default_rng(1).permutation(len(items))  # a table in another order
    pl.DataFrame(
        {"id": [items.ids[i] for i in order], "embedding": [vecs[i].tolist() for i in order]}
    ).write_parquet(folder / "pool.parquet")
    np.save(folder / "short.npy", vecs[:-1])
    return {"npy": folder / "pool.npy", "parquet": folder / "pool.parquet",
            "short": folder / "short.npy", "items": pool_file}  # fmt: skip


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["nncift_id"] for line in path.read_text().splitlines()]


def test_provided_embeddings_select_what_the_embedder_would(
    own_embeddings: dict[str, Path], tmp_path: Path
) -> None:
    pool = str(own_embeddings["items"])
    base = ["select", "--pool", pool, "--budget", "8", "--seed", "3"]
    assert run(*base, "--out", str(tmp_path / "ref.jsonl"))[0] == 0
    for kind in ("npy", "parquet"):
        out = tmp_path / f"{kind}.jsonl"
        code, output = run(*base, "--embeddings", str(own_embeddings[kind]), "--out", str(out))
        assert code == 0, output
        assert _ids(out) == _ids(tmp_path / "ref.jsonl")
        manifest = json.loads((tmp_path / f"{kind}.manifest.json").read_text())
        embed = manifest["stages"]["embed"]
        assert embed["model"].startswith("provided:")
        assert embed["provided"]["sha256"] == manifest["inputs"]["embeddings"]["sha256"]
        assert embed["provided"]["shape"] == [80, 384]
        assert "pool" not in embed  # nothing was embedded


def test_provided_embeddings_feed_nncift_and_the_plan(
    own_embeddings: dict[str, Path], tmp_path: Path
) -> None:
    pool = str(own_embeddings["items"])
    args = ["select", "--pool", pool, "--method", "delift-se", "--budget", "8", "--u", "0.2",
            "--embeddings", str(own_embeddings["npy"]), "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    code, plan = run(*args, "--out", str(tmp_path / "p.jsonl"), "--dry-run")
    assert code == 0, plan
    assert "384-d embeddings provided" in plan and "texts with" not in plan
    code, output = run(*args, "--out", str(tmp_path / "s.jsonl"))
    assert code == 0, output
    manifest = json.loads((tmp_path / "s.manifest.json").read_text())
    assert manifest["options"]["embedder"].startswith("provided:")
    assert len(_ids(tmp_path / "s.jsonl")) == 8


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--embeddings", "{short}"), "79 rows, but the pool has 80 items"),
        (("--embeddings", "{npy}", "--dedupe"), "--dedupe"),
        (("--embeddings", "{npy}", "--target", "{items}"), "give --target-embeddings too"),
        (("--target-embeddings", "{npy}"), "without a target set"),
        (("--embeddings", "{missing}"), "no such embeddings file"),
    ],
)
def test_provided_embeddings_errors(
    own_embeddings: dict[str, Path], tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    files = {k: str(v) for k, v in own_embeddings.items()} | {"missing": str(tmp_path / "no.npy")}
    out = tmp_path / "x.jsonl"
    args = [a.format(**files) for a in extra]
    result = CliRunner().invoke(
        cli, ["select", "--pool", files["items"], "--budget", "5", *args, "--out", str(out)]
    )
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert not out.exists()
