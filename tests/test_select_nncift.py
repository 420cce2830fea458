"""`nncift select` through NN-CIFT: u-block labels, network, Rust prediction, selection rule,
stage caching, --exact, --dry-run and the errors a user can hit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from nncift.cli.main import cli
from nncift.data import load_named


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    items = load_named("chatterbot")
    pool, target = items.split([120, 40], seed=1)
    d = tmp_path_factory.mktemp("data")
    for name, part in (("pool", pool), ("target", target)):
        (d / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in part.records), encoding="utf-8"
        )
    return d / "pool.jsonl", d / "target.jsonl"


def manifest_of(out: Path) -> dict:
    return json.loads(out.with_name(out.stem + ".manifest.json").read_text())


def test_delift_se_nncift_stages_and_cache_reuse(files: tuple[Path, Path], tmp_path: Path) -> None:
    pool, _ = files
    cache = tmp_path / "cache"
    out = tmp_path / "a.jsonl"
    args = ["select", "--pool", str(pool), "--method", "delift-se", "--u", "0.1",
            "--epochs", "3", "--cache-dir", str(cache), "--no-stop-at-zero"]  # fmt: skip
    code, output = run(*args, "--budget", "10", "--out", str(out))
    assert code == 0, output
    m = manifest_of(out)
    assert {"embed", "label_data", "train_data", "predict_data", "select"} <= set(m["stages"])
    assert m["stages"]["train_data"]["reused"] is False
    assert m["stages"]["label_data"]["rows"] == 12  # u = 0.1 of 120 pool items
    assert m["options"]["objective_resolved"] == "fl"
    # The pool x pool block labels the same first-u pool items on both sides (one shuffle).
    labels_dir = Path(m["results"]["run_dir"]) / "labels-data"
    rows, cols = np.load(labels_dir / "rows.npy"), np.load(labels_dir / "cols.npy")
    assert np.array_equal(rows, cols)
    assert len(out.read_text().splitlines()) == 10

    # Only the budget changes: labels and network come from the run folder.
    out2 = tmp_path / "b.jsonl"
    code, output = run(*args, "--budget", "20", "--out", str(out2))
    assert code == 0, output
    m2 = manifest_of(out2)
    assert m2["stages"]["train_data"]["reused"] is True
    assert m2["stages"]["label_data"]["computed_tiles"] == 0
    first = [json.loads(x)["nncift_id"] for x in out.read_text().splitlines()]
    second = [json.loads(x)["nncift_id"] for x in out2.read_text().splitlines()]
    assert second[:10] == first  # greedy is a prefix of itself: same kernel, same order
    assert "warnings" not in m["results"]  # a real ranking: no unranked-picks warning


def test_switching_the_network_reuses_labels_but_u_or_seed_relabels(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """Labels are keyed by what determines them: another --network / --epochs trains a new
    network on the labels already computed; another --u or --seed computes new labels."""
    pool, _ = files
    args = ["select", "--pool", str(pool), "--method", "delift-se", "--budget", "5",
            "--cache-dir", str(tmp_path / "cache"), "--no-stop-at-zero"]  # fmt: skip

    def stages(*extra: str) -> tuple[dict, dict]:
        out = tmp_path / f"{len(list(tmp_path.glob('*.jsonl')))}.jsonl"
        code, output = run(*args, *extra, "--out", str(out))
        assert code == 0, output
        m = manifest_of(out)
        return m["stages"], m["results"]

    paper = ("--network", "paper", "--epochs", "2")
    first, r1 = stages("--u", "0.1", *paper)
    assert first["label_data"]["computed_tiles"] > 0
    for network in (("--network", "constant"), ("--network", "paper", "--epochs", "3")):
        st, r = stages("--u", "0.1", *network)
        assert st["label_data"]["computed_tiles"] == 0, network
        assert st["label_data"]["reused_tiles"] == first["label_data"]["computed_tiles"]
        assert st["train_data"]["reused"] is False  # a fresh network for new settings
        assert r["run_dir"] == r1["run_dir"]
        assert r["valuation"]["entries"]["data"]["true_labels"] == 12 * 12
    st, _ = stages("--u", "0.1", *paper)  # the first settings again: nothing new
    assert st["label_data"]["computed_tiles"] == 0 and st["train_data"]["reused"] is True
    for relabel in (("--u", "0.2"), ("--u", "0.1", "--seed", "1")):
        st, r = stages(*relabel, *paper)
        assert st["label_data"]["computed_tiles"] > 0 and st["label_data"]["reused_tiles"] == 0
        assert r["run_dir"] != r1["run_dir"]


def test_constant_values_warn_that_picks_rank_nothing(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A network that predicts one value ranks nothing: the user is told, not left guessing.

    Only the 12 labelled items (u = 0.1 of 120) carry values (their true labels, used as
    computed); past them every pick has no gain.
    """
    pool, _ = files
    out = tmp_path / "c.jsonl"
    code, output = run("select", "--pool", str(pool), "--method", "delift-se", "--u", "0.1",
                       "--network", "constant", "--budget", "30", "--cache-dir",
                       str(tmp_path / "cache"), "--no-stop-at-zero", "--out", str(out))  # fmt: skip
    assert code == 0, output
    m = manifest_of(out)
    warnings = m["results"]["warnings"]
    assert len(warnings) == 1 and "18 of 30 picks had no gain" in warnings[0]
    # ... and what it says holds: the labelled items first (ranked by their true labels),
    # then the constant part of the kernel's picks in the seed's tie order (issue 14: no
    # longer pool order, so a sorted pool file does not decide them).
    from nncift import _core

    labelled = np.load(Path(m["results"]["run_dir"]) / "labels-data" / "rows.npy")
    records = [json.loads(x)["prompt"] for x in pool.read_text().splitlines()]
    chosen = [json.loads(x)["prompt"] for x in out.read_text().splitlines()]
    assert set(chosen[:12]) == {records[i] for i in labelled}
    rank = _core.tie_ranks(len(records), 0)  # --seed 0
    rest = sorted(set(range(len(records))) - set(labelled.tolist()), key=lambda i: rank[i])
    assert chosen[12:] == [records[i] for i in rest[:18]]
    assert chosen[12:] != [records[i] for i in sorted(rest)[:18]]  # not the file's order


def test_unranked_picks_counts_ties_and_zero_gains() -> None:
    from nncift.pipeline import unranked_picks

    assert unranked_picks(np.array([3.0, 2.0, 1.0, 0.5])) == 0
    assert unranked_picks(np.array([3.0, 0.0, 0.0, 0.0])) == 3
    assert unranked_picks(np.array([0.4, 0.4, 0.4, 0.2])) == 2
    assert unranked_picks(np.array([1.0])) == 0


def test_exact_flmi_with_target(files: tuple[Path, Path], tmp_path: Path) -> None:
    pool, target = files
    out = tmp_path / "e.jsonl"
    code, output = run("select", "--pool", str(pool), "--target", str(target), "--method",
                       "delift-se", "--exact", "--budget", "8", "--cache-dir", str(tmp_path / "c"),
                       "--out", str(out))  # fmt: skip
    assert code == 0, output
    m = manifest_of(out)
    assert m["options"]["objective_resolved"] == "flmi"
    assert m["stages"]["label_data"]["rows"] == 120  # every pair: the baseline
    assert m["stages"]["label_pairwise"]["cols"] == 40
    assert "train_data" not in m["stages"]


def test_fl_target_labels_only_the_pool_x_target_kernel(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """--objective fl-target: facility location over the targets on K[pool, target] alone -
    no pool x pool labels, network or kernel - and the same subset as nncift.select's fl with
    the targets as the represented set; exact and NN-CIFT both; the embedding method too."""
    from nncift.data import load_items
    from nncift.embed import Embedder
    from nncift.selection import select

    pool, target = files
    base = ["select", "--pool", str(pool), "--target", str(target), "--objective", "fl-target",
            "--budget", "8", "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    out = tmp_path / "e.jsonl"
    code, output = run(*base, "--method", "delift-se", "--exact", "--out", str(out))
    assert code == 0, output
    m = manifest_of(out)
    assert m["options"]["objective_resolved"] == "fl-target"
    assert "label_data" not in m["stages"] and m["stages"]["label_pairwise"]["cols"] == 40
    # DELIFT (SE)'s exact pairwise labels are the embeddings' cosine: the same FL over targets.
    emb = Embedder(progress=False, cache_dir=str(tmp_path / "c"))
    pe = emb.embed(load_items(str(pool)).texts)
    te = emb.embed(load_items(str(target)).texts)
    items = load_items(str(pool))
    got = [items.ids.index(json.loads(x)["nncift_id"]) for x in out.read_text().splitlines()]
    cos = pe @ te.T
    k01 = (cos - cos.min()) / (cos.max() - cos.min())
    want = select("fl", budget=8, kernel=k01.astype(np.float32), random_state=0).indices
    assert got == want.tolist()
    out2 = tmp_path / "n.jsonl"
    code, output = run(*base, "--method", "delift-se", "--u", "0.2", "--out", str(out2))
    assert code == 0, output
    stages = manifest_of(out2)["stages"]
    assert not any(s.endswith("_data") for s in stages) and "label_pairwise" in stages
    out3 = tmp_path / "m.jsonl"
    code, output = run(*base, "--method", "embedding", "--out", str(out3))
    assert code == 0, output
    want = select("fl", budget=8, embeddings=pe, represented_embeddings=te, random_state=0)
    got = [items.ids.index(json.loads(x)["nncift_id"]) for x in out3.read_text().splitlines()]
    assert got == want.indices.tolist()
    code, output = run("select", "--pool", str(pool), "--method", "delift-se", "--objective",
                       "fl-target", "--budget", "5", "--out", str(tmp_path / "x.jsonl"))  # fmt: skip
    assert code != 0 and "give --target" in output


def test_flqmi_reads_the_pool_x_target_kernel_and_ranks_past_saturation(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """--objective flqmi: FL over the targets + eta * each item's best target value (PRISM's
    FLQMI) on K[pool, target] alone: no pool x pool labels, the same subset as nncift.select's
    mix on that kernel, and - unlike fl-target - every pick has a gain past saturation."""
    from nncift.data import load_items
    from nncift.embed import Embedder
    from nncift.selection import select

    pool, target = files
    base = ["select", "--pool", str(pool), "--target", str(target), "--objective", "flqmi",
            "--budget", "60", "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    items = load_items(str(pool))
    emb = Embedder(progress=False, cache_dir=str(tmp_path / "c"))
    pe, te = emb.embed(items.texts), emb.embed(load_items(str(target)).texts)
    cos = pe @ te.T
    k01 = ((cos - cos.min()) / (cos.max() - cos.min())).astype(np.float32)
    for method, kernel, extra in (
        ("delift-se", k01, ["--exact"]),
        ("embedding", np.maximum(cos, 0).astype(np.float32), ["--eta", "0.5"]),
    ):
        out = tmp_path / f"{method}.jsonl"
        code, output = run(*base, "--method", method, *extra, "--out", str(out))
        assert code == 0, output
        m = manifest_of(out)
        assert m["options"]["objective_resolved"] == "flqmi"
        assert "label_data" not in m["stages"]
        eta = 0.5 if "--eta" in extra else 1.0
        want = select("mix", budget=60, kernel=kernel, scores=eta * kernel.max(axis=1),
                      random_state=0)  # fmt: skip
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        got = [items.ids.index(x["nncift_id"]) for x in lines]
        assert got == want.indices.tolist()
        # 60 picks for 40 targets: fl-target would tie after saturation; flqmi still gains.
        assert all(x["nncift_gain"] > 0 for x in lines)
    fl = tmp_path / "fl.jsonl"
    code, output = run(*base, "--method", "delift-se", "--exact", "--objective", "fl-target",
                       "--out", str(fl))  # fmt: skip
    assert code == 0, output
    gains = [json.loads(x)["nncift_gain"] for x in fl.read_text().splitlines()]
    assert sum(g == 0 for g in gains) > 0  # FL over 40 targets saturates within 60 picks


def test_errors_a_user_can_hit(files: tuple[Path, Path], tmp_path: Path) -> None:
    pool, target = files
    out = str(tmp_path / "x.jsonl")
    code, output = run("select", "--pool", str(pool), "--method", "delift-se", "--u", "0.01",
                       "--budget", "5", "--out", out)  # fmt: skip
    assert code != 0 and "at least 400 are required" in output
    code, output = run(
        "select", "--pool", str(pool), "--method", "less", "--budget", "5", "--out", out
    )
    assert code != 0 and "give --target" in output
    code, output = run("select", "--pool", str(pool), "--method", "delift-se", "--objective",
                       "flmi", "--budget", "5", "--out", out)  # fmt: skip
    assert code != 0 and "needs a target set" in output
    code, output = run("select", "--pool", str(pool), "--method", "selectit", "--objective", "fl",
                       "--budget", "5", "--out", out)  # fmt: skip
    assert code != 0 and "top-k" in output
    assert not Path(out).exists()


def test_dry_run_plans_without_work(
    files: tuple[Path, Path], tiny_lm_dir: Path, tmp_path: Path
) -> None:
    pool, target = files
    out = tmp_path / "never.jsonl"
    code, output = run("select", "--pool", str(pool), "--target", str(target), "--method", "delift",
                       "--lm", str(tiny_lm_dir), "--u", "0.1", "--budget", "0.1", "--out",
                       str(out), "--cache-dir", str(tmp_path / "c"), "--dry-run")  # fmt: skip
    assert code == 0, output
    # 120 * 0.1 = 12 pool items labelled against themselves and against 4 targets (the 40
    # targets are too few for the default u = 0.05, which the run and so the plan refuse),
    # counted as the run's cost meter counts them: per target its no-example pass, per example
    # its prefix (once, shared by its targets) and one pass per target:
    # 12 + 12 * (1 + 12) = 168 and 4 + 12 * (1 + 4) = 64.
    assert "label_data" in output and "12 x 12 (168 LM passes" in output
    assert "12 x 4 (64 LM passes" in output
    assert "total: 232 LM passes" in output
    assert not out.exists()
    # fl-target and flqmi: the pool x target block alone.
    for objective in ("fl-target", "flqmi"):
        code, output = run("select", "--pool", str(pool), "--target", str(target), "--method",
                           "delift", "--lm", str(tiny_lm_dir), "--u", "0.1", "--budget", "0.1",
                           "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--dry-run",
                           "--objective", objective)  # fmt: skip
        assert code == 0, output
        assert "label_data" not in output and "12 x 4 (64 LM passes" in output
        assert "total: 64 LM passes" in output
    assert not out.exists()


def test_selectit_nncift_with_a_real_tiny_lm(
    files: tuple[Path, Path], tiny_lm_dir: Path, tmp_path: Path
) -> None:
    pool, _ = files
    out = tmp_path / "s.jsonl"
    code, output = run("select", "--pool", str(pool), "--method", "selectit", "--lm", str(tiny_lm_dir),
                       "--u", "0.1", "--epochs", "2", "--budget", "12", "--cache-dir",
                       str(tmp_path / "c"), "--out", str(out))  # fmt: skip
    assert code == 0, output
    m = manifest_of(out)
    assert m["options"]["objective_resolved"] == "topk"
    assert m["stages"]["label_points"]["cost"]["lm_passes"] == 12 * 5  # K = 5 prompts per item
    gains = [json.loads(x)["nncift_gain"] for x in out.read_text().splitlines()]
    assert len(gains) == 12 and gains == sorted(gains, reverse=True)  # top-k: highest first


def test_auto_keeping_the_constant_is_said_and_recorded(
    files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """Issue 14: when auto's constant wins, `select` says the labels carried no learnable
    signal and what the selection fell back to, in the log and in the manifest, also when
    the network is reused from the run folder."""
    import logging

    import nncift.estimator

    # Auto with the constant as its only candidate: the constant wins, as on signal-free labels.
    monkeypatch.setattr(nncift.estimator, "AUTO_CANDIDATES", ("constant",))
    pool, _ = files
    args = ["select", "--pool", str(pool), "--method", "delift-se", "--u", "0.1", "--budget", "5",
            "--network", "auto", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    for i, reused in enumerate((False, True)):
        out = tmp_path / f"{i}.jsonl"
        with caplog.at_level(logging.WARNING, logger="nncift.pipeline"):
            caplog.clear()
            code, output = run(*args, "--out", str(out))
        assert code == 0, output
        assert any("no learnable signal" in r.getMessage() for r in caplog.records)
        m = manifest_of(out)
        assert m["stages"]["train_data"]["no_signal"] is True
        assert m["stages"]["train_data"]["reused"] is reused
        warn = [w for w in m["results"]["warnings"] if "no learnable signal" in w]
        assert warn and "network data:" in warn[0] and "true labels" in warn[0]
