"""`nncift select` / `nncift label` with labelling designs and the estimators of
`nncift.effects` (issue 16): every design end to end, the manifest's records, refusals, an
active run interrupted between rounds and resumed, and `--design block` = the paper."""

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
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    items = load_named("chatterbot")
    pool, target, small = items.split([120, 40, 40], seed=1)
    d = tmp_path_factory.mktemp("data")
    for name, part in (("pool", pool), ("target", target), ("small", small)):
        (d / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in part.records), encoding="utf-8"
        )
    return d / "pool.jsonl", d / "target.jsonl", d / "small.jsonl"


def manifest_of(out: Path) -> dict:
    return json.loads(out.with_name(out.stem + ".manifest.json").read_text())


def ids(out: Path) -> list[str]:
    return [json.loads(x)["nncift_id"] for x in out.read_text().splitlines()]


@pytest.mark.parametrize(
    ("design", "budget", "pairs", "items"),
    [
        ("spread", "400", 360, 120),  # 3 targets per pool item
        ("landmark", "100", 100, 50),  # 2 targets per landmark
        ("block", "400", 400, 20),  # the largest first-u block: 20 x 20
        ("active", "300", 300, 120),  # landmark-1 on 120 items, then rounds
    ],
)
def test_each_design_end_to_end_with_its_manifest(
    files: tuple[Path, Path, Path], tmp_path: Path, design: str, budget: str, pairs: int,
    items: int,
) -> None:  # fmt: skip
    pool, target, _ = files
    out = tmp_path / "s.jsonl"
    code, output = run("select", "--pool", str(pool), "--target", str(target), "--method",
                       "delift-se", "--design", design, "--label-budget", budget, "--budget",
                       "10", "--cache-dir", str(tmp_path / "c"), "--out", str(out))  # fmt: skip
    assert code == 0, output
    assert len(ids(out)) == 10
    m = manifest_of(out)
    val = m["results"]["valuation"]
    d = val["designs"]["data"]
    assert d["design"] == design and d["label_budget"]["text"] == budget
    assert d["label_budget"]["unit"] == "pairs"
    assert (d["pairs"], d["items"]) == (pairs, items)
    assert d["budget_used"] <= float(budget)
    assert set(d["lm_cost"]) == {"passes", "backward_passes", "tokens", "seconds"}
    assert d["lm_cost"]["passes"] == 0  # delift-se: embedding cosines
    e = val["estimators"]["data"]
    assert e["estimator"] == "auto" and e["chosen"] in e["candidates"]
    assert e["rank_score"] == e["candidates"][e["chosen"]]
    assert e["candidates"]["constant"] == 0.0  # a constant ranks nothing
    # DELIFT (SE) labels are the embeddings' cosine: the cosine estimators rank them.
    assert e["rank_score"] > 0.9
    assert val["entries"]["data"] == {"true_labels": pairs, "predicted": 120 * 120 - pairs}
    assert {"label_data", "estimate_data", "label_pairwise", "estimate_pairwise"} <= set(
        m["stages"]
    )
    assert "pairwise" in val["designs"]  # flmi: the pool x target kernel, same design
    if design == "active":
        rounds = d["rounds"]
        assert [r["round"] for r in rounds] == list(range(len(rounds))) and len(rounds) >= 2
        assert sum(r["labels"] for r in rounds) == pairs


def test_delift_default_is_a_block_at_two_percent_with_a_real_lm(
    files: tuple[Path, Path, Path], tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """No design option: delift uses the benchmark's default (block, 2% of the LM passes,
    auto estimator); the manifest records the LM passes, tokens and seconds spent."""
    _, _, small = files
    out = tmp_path / "d.jsonl"
    code, output = run("select", "--pool", str(small), "--method", "delift", "--lm",
                       str(tiny_lm_dir), "--budget", "5", "--cache-dir", str(tmp_path / "c"),
                       "--out", str(out))  # fmt: skip
    assert code == 0, output
    m = manifest_of(out)
    d = m["results"]["valuation"]["designs"]["data"]
    assert d["design"] == "block" and d["label_budget"]["text"] == "2%"
    assert d["label_budget"]["unit"] == "share" and 0 < d["budget_used"] <= 0.02
    cost = d["lm_cost"]
    assert cost["passes"] > 0 and cost["tokens"] > 0 and cost["seconds"] > 0
    # The passes the store counted are the passes the design was priced in (design_cost).
    full = 40 + 40 + 40 * 40  # no-example + prefix + pair passes of every pair
    assert cost["passes"] <= 0.02 * full
    assert m["results"]["valuation"]["estimators"]["data"]["estimator"] == "auto"
    # ... reading the LM's RDS+ features (DEFAULT_FEATURES_FOR); the paper's path reads MiniLM.
    assert m["options"]["valuation"]["features"] == "lm"
    out2 = tmp_path / "p.jsonl"
    code, output = run("select", "--pool", str(small), "--method", "delift", "--lm",
                       str(tiny_lm_dir), "--budget", "5", "--cache-dir", str(tmp_path / "c"),
                       "--u", "0.5", "--out", str(out2), "--dry-run")  # fmt: skip
    assert code == 0 and "read by the network" not in output, output
    code, output = run("select", "--pool", str(small), "--method", "delift", "--lm",
                       str(tiny_lm_dir), "--budget", "5", "--cache-dir", str(tmp_path / "c"),
                       "--out", str(out2), "--dry-run")  # fmt: skip
    assert code == 0 and "read by the network (--features lm)" in output, output


def test_pointwise_designs_choose_the_items(
    files: tuple[Path, Path, Path], tiny_lm_dir: Path, tmp_path: Path
) -> None:
    _, _, small = files
    chosen = {}
    for design in ("random", "diverse", "active"):
        out = tmp_path / f"{design}.jsonl"
        code, output = run("select", "--pool", str(small), "--method", "selectit", "--lm",
                           str(tiny_lm_dir), "--design", design, "--label-budget", "8",
                           "--budget", "5", "--cache-dir", str(tmp_path / "c"), "--out",
                           str(out))  # fmt: skip
        assert code == 0, output
        m = manifest_of(out)
        d = m["results"]["valuation"]["designs"]["points"]
        assert d["design"] == design and d["items"] == 8 and d["pairs"] is None
        assert d["lm_cost"]["passes"] == 8 * 5  # 5 prompts per item
        assert m["results"]["valuation"]["estimators"]["points"]["criterion"]
        labelled = Path(m["results"]["run_dir"]) / "labels-points"
        if design != "active":
            chosen[design] = set(np.load(labelled / "rows.npy").tolist())
    assert chosen["random"] != chosen["diverse"]


def test_refusals_name_the_alternatives_and_minimums(
    files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    pool, target, _ = files
    out = str(tmp_path / "x.jsonl")
    base = ["select", "--pool", str(pool), "--budget", "5", "--out", out]
    cases = [
        (["--method", "selectit", "--design", "spread"],
         "does not fit --method selectit, which labels pool items (pointwise); choose from "
         "random, diverse, active, block"),
        (["--method", "delift-se", "--design", "random"],
         "choose from block, spread, landmark, active"),
        (["--method", "delift-se", "--label-budget", "0.02"], "is not understood; use N"),
        (["--method", "delift-se", "--label-budget", "600s"], "runs no LM, so LM time means"),
        (["--method", "delift-se", "--label-budget", "10days"], "is not understood; use N"),
        (["--method", "delift-se", "--label-budget", "2%"], "costs no LM passes"),
        (["--method", "delift-se", "--u", "0.1", "--label-budget", "50"], "give one of them"),
        (["--method", "delift-se", "--u", "0.1", "--design", "spread"], "sized by --label-budget"),
        (["--method", "embedding", "--design", "spread"], "labels nothing"),
        (["--method", "delift-se", "--exact", "--design", "spread"], "takes no --design"),
        # Too small: each names the minimum.
        (["--method", "delift-se", "--design", "spread", "--label-budget", "100"],
         "too small for the spread design: it labels every one of the 120 pool items at least "
         "once, which costs at least 120"),
        (["--method", "delift-se", "--design", "landmark", "--label-budget", "1"],
         "below one landmark's cost 2"),
        (["--method", "delift-se", "--design", "block", "--label-budget", "3items"],
         "only 3 are labelled (at least 4 needed)"),
        (["--method", "delift-se", "--estimator", "additive", "--design", "spread",
          "--label-budget", "3"], "too small for the spread design"),
    ]  # fmt: skip
    for extra, message in cases:
        code, output = run(*base, *extra)
        assert code != 0 and message in " ".join(output.split()), (extra, output)
    code, output = run(*base, "--method", "selectit", "--estimator", "lowrank")
    assert code != 0 and "does not fit --method selectit" in output
    assert not Path(out).exists()


def test_interrupted_active_run_resumes_without_recomputing_a_tile(
    files: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after round 1 was labelled: the rerun reuses round 0 and 1's tiles, labels
    rounds 2 and 3 only, and ends with the uninterrupted run's design and subset."""
    import nncift.design_valuation as dv

    pool, _, _ = files
    args = ["select", "--pool", str(pool), "--method", "delift-se", "--design", "active",
            "--label-budget", "300", "--budget", "10"]  # fmt: skip
    straight = tmp_path / "straight.jsonl"
    code, output = run(*args, "--cache-dir", str(tmp_path / "a"), "--out", str(straight))
    assert code == 0, output
    ref = manifest_of(straight)["results"]["valuation"]["designs"]["data"]

    real = dv.DesignStages._label_pairs

    def dies_at_round_2(self, out, targets, design, rec):  # type: ignore[no-untyped-def]
        if out.name == "round-2":
            raise KeyboardInterrupt
        return real(self, out, targets, design, rec)

    monkeypatch.setattr(dv.DesignStages, "_label_pairs", dies_at_round_2)
    cache = tmp_path / "b"
    first = tmp_path / "first.jsonl"
    result = CliRunner().invoke(cli, ["-q", *args, "--cache-dir", str(cache), "--out", str(first)])
    assert result.exit_code != 0 and not first.exists()  # click: KeyboardInterrupt -> Aborted!
    run_dirs = list((cache / "runs").iterdir())
    record = json.loads((run_dirs[0] / "labels-data" / "rounds.json").read_text())
    assert [r["round"] for r in record["rounds"]] == [0, 1, 2]  # round 2 chosen, not labelled
    done_tiles = {
        k: len(json.loads((run_dirs[0] / "labels-data" / f"round-{k}" /
                           "labels-manifest.json").read_text())["tiles"])
        for k in (0, 1)
    }  # fmt: skip
    monkeypatch.setattr(dv.DesignStages, "_label_pairs", real)
    again = tmp_path / "again.jsonl"
    code, output = run(*args, "--cache-dir", str(cache), "--out", str(again))
    assert code == 0, output
    d = manifest_of(again)["results"]["valuation"]["designs"]["data"]
    rounds = {r["round"]: r for r in d["rounds"]}
    for k in (0, 1):
        assert rounds[k]["resumed"] and rounds[k]["computed_tiles"] == 0
        assert rounds[k]["reused_tiles"] == done_tiles[k]
    assert rounds[2]["resumed"] and rounds[2]["computed_tiles"] > 0
    assert not rounds[3]["resumed"] and rounds[3]["computed_tiles"] > 0
    assert [r["labels"] for r in d["rounds"]] == [r["labels"] for r in ref["rounds"]]
    assert ids(again) == ids(straight)
    # A third run labels nothing.
    third = tmp_path / "third.jsonl"
    code, output = run(*args, "--cache-dir", str(cache), "--out", str(third))
    assert code == 0, output
    d3 = manifest_of(third)["results"]["valuation"]["designs"]["data"]
    assert all(r["computed_tiles"] == 0 and r["resumed"] for r in d3["rounds"])
    assert d3["lm_cost_this_run"]["seconds"] == 0


def test_design_block_with_u_is_the_paper(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """`--design block --u 0.1` is today's `--u 0.1` (test_select_nncift's expectations:
    12 labelled items, the pool x pool block on both sides, the same subset and run folder)."""
    pool, _, _ = files
    args = ["select", "--pool", str(pool), "--method", "delift-se", "--u", "0.1", "--network",
            "paper", "--epochs", "2", "--budget", "10", "--cache-dir", str(tmp_path / "c"),
            "--no-stop-at-zero"]  # fmt: skip
    plain, block = tmp_path / "plain.jsonl", tmp_path / "block.jsonl"
    code, output = run(*args, "--out", str(plain))
    assert code == 0, output
    code, output = run(*args, "--design", "block", "--out", str(block))
    assert code == 0, output
    mp, mb = manifest_of(plain), manifest_of(block)
    assert ids(plain) == ids(block)
    assert mp["results"]["run_dir"] == mb["results"]["run_dir"]
    assert mb["stages"]["label_data"]["rows"] == 12 and mb["stages"]["train_data"]["reused"]
    assert "designs" not in mb["results"]["valuation"]  # the paper's path, unchanged
    # With an estimator of nncift.effects the same labels are reused, not recomputed.
    eff = tmp_path / "eff.jsonl"
    code, output = run(*args, "--estimator", "additive+cos", "--out", str(eff))
    assert code == 0, output
    me = manifest_of(eff)
    assert me["results"]["run_dir"] == mp["results"]["run_dir"]
    assert me["stages"]["label_data"]["computed_tiles"] == 0
    assert me["results"]["valuation"]["designs"]["data"]["pairs"] == 12 * 12
    assert me["results"]["valuation"]["estimators"]["data"]["chosen"] == "additive+cos"


def test_label_command_with_a_design(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    pool, target, _ = files
    out = tmp_path / "lab"
    code, output = run("label", "--method", "delift-se", "--pool", str(pool), "--target",
                       str(target), "--design", "spread", "--label-budget", "240", "--out",
                       str(out))  # fmt: skip
    assert code == 0, output
    labels, rows, cols = (np.load(out / f"{n}.npy") for n in ("labels", "rows", "cols"))
    assert labels.shape == rows.shape == cols.shape == (240,)
    assert np.bincount(rows, minlength=120).tolist() == [2] * 120  # every pool item, twice
    m = json.loads((out / "manifest.json").read_text())
    assert m["results"]["design"]["design"] == "spread" and m["results"]["shape"] == [240]
    # `nncift train --labels labels.npy --rows rows.npy --cols cols.npy` reads them as pairs.
    from nncift.labels import read_labels

    lab = read_labels(out / "labels.npy", rows, cols)
    assert not lab.pointwise and np.array_equal(lab.cols, cols) and len(lab) == 240
    # Resumed: nothing computed again.
    code, output = run("label", "--method", "delift-se", "--pool", str(pool), "--target",
                       str(target), "--design", "spread", "--label-budget", "240", "--out",
                       str(out))  # fmt: skip
    assert code == 0, output
    m = json.loads((out / "manifest.json").read_text())
    assert m["stages"]["label"]["computed"] == 0 and m["stages"]["label"]["reused"] > 0
    code, output = run("label", "--method", "delift-se", "--pool", str(pool), "--design",
                       "spread", "--out", str(tmp_path / "x"))  # fmt: skip
    assert code != 0 and "needs --label-budget" in output


def test_dry_run_prices_a_design(
    files: tuple[Path, Path, Path], tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """--dry-run lays out a design's passes as the run makes them (one block per pool row,
    DELIFT's no-example pass once per target) and the active design's start and rounds."""
    _, _, small = files
    args = ["select", "--pool", str(small), "--method", "delift", "--lm", str(tiny_lm_dir),
            "--budget", "5", "--cache-dir", str(tmp_path / "c"), "--out",
            str(tmp_path / "never.jsonl"), "--dry-run"]  # fmt: skip
    code, output = run(*args, "--design", "spread", "--label-budget", "40")
    assert code == 0, output
    # 40 pairs, one per pool item (no shared prefix), 40 distinct targets: 40 + 40 passes.
    assert "spread design: 40 pairs over 40 pool items" in output
    assert "(80 LM passes" in output and "estimate_data" in output
    code, output = run(*args, "--design", "active", "--label-budget", "2%")
    assert code == 0, output
    assert "active design" in output and "then up to 3 rounds to the budget (2%" in output
    code, output = run(*args)  # the default: the largest block within 2%
    assert code == 0 and "block design" in output, output
    assert not (tmp_path / "never.jsonl").exists()


def test_time_budget_buys_the_share_the_probe_prices(
    files: tuple[Path, Path, Path], tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """--label-budget in LM time: priced into a share of every pair's LM cost with the run's
    own function and the machine's LM probe (probed once, then cached), recorded in the
    manifest; twice the time buys twice the share; --dry-run prices it the same way."""
    _, _, small = files
    cache = tmp_path / "c"
    base = ["select", "--pool", str(small), "--method", "selectit", "--lm", str(tiny_lm_dir),
            "--budget", "5", "--cache-dir", str(cache)]  # fmt: skip
    priced = []
    for budget in ("2s", "4s"):
        out = tmp_path / f"t{budget}.jsonl"
        code, output = run(*base, "--label-budget", budget, "--out", str(out))
        assert code == 0, output
        d = manifest_of(out)["results"]["valuation"]["designs"]["points"]
        lb = d["label_budget"]
        assert lb["text"] == budget and lb["unit"] == "share"
        p = lb["priced"]
        assert p["seconds"] == float(budget[:-1]) and p["full_matrix_seconds"] > 0
        assert lb["amount"] == pytest.approx(min(1.0, p["seconds"] / p["full_matrix_seconds"]))
        assert 0 < d["budget_used"] <= lb["amount"] + 1e-9
        priced.append(p)
    # One probe of this machine, reused: the same full-matrix price both times.
    assert priced[0]["full_matrix_seconds"] == priced[1]["full_matrix_seconds"]
    assert priced[0]["probe_measured_at"] == priced[1]["probe_measured_at"]
    code, output = run(*base, "--label-budget", "2s", "--out", str(tmp_path / "n.jsonl"),
                       "--dry-run")  # fmt: skip
    assert code == 0 and "label_points" in output, output
    assert not (tmp_path / "n.jsonl").exists()
    # DELIFT and LESS price their own passes (LESS: its warm-up comes off the budget first).
    pool, target, _ = files
    for method, budget in (("delift", "3s"), ("less", "1h")):
        code, output = run("select", "--pool", str(small), "--target", str(target), "--method",
                           method, "--lm", str(tiny_lm_dir), "--budget", "5", "--cache-dir",
                           str(cache), "--label-budget", budget, "--out",
                           str(tmp_path / "n.jsonl"), "--dry-run")  # fmt: skip
        assert code == 0 and "label_pairwise" in output, (method, output)
    code, output = run("select", "--pool", str(small), "--target", str(target), "--method",
                       "less", "--lm", str(tiny_lm_dir), "--budget", "5", "--cache-dir",
                       str(cache), "--label-budget", "0.001s", "--out", str(tmp_path / "n.jsonl"),
                       "--dry-run")  # fmt: skip
    assert code != 0 and "does not cover LESS's warm-up" in output, output


def test_active_run_killed_between_rounds_resumes(
    files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """SIGKILL of a real process after round 1 was labelled, while round 2's pairs are being
    written: the rerun reuses rounds 0 and 1 whole (0 tiles computed), labels rounds 2 and 3,
    and ends with the uninterrupted run's subset."""
    from faults import finish, kill_at, start

    pool, _, _ = files
    args = ["select", "--pool", str(pool), "--method", "delift-se", "--design", "active",
            "--label-budget", "300", "--budget", "10"]  # fmt: skip
    ref = tmp_path / "ref.jsonl"
    rc, err = finish(start([*args, "--out", str(ref)], tmp_path / "a"))
    assert rc == 0, err
    cache = tmp_path / "b"
    out = tmp_path / "out.jsonl"
    point = "write:round-2-rows.npy"
    assert kill_at([*args, "--out", str(out)], cache, point) == point
    assert not out.exists()
    labels = next((cache / "runs").iterdir()) / "labels-data"
    done = {
        p.parent.name: len(json.loads(p.read_text())["tiles"])
        for p in labels.glob("round-*/labels-manifest.json")
    }
    rc, err = finish(start([*args, "--out", str(out)], cache))
    assert rc == 0, err
    assert ids(out) == ids(ref)
    rounds = manifest_of(out)["results"]["valuation"]["designs"]["data"]["rounds"]
    for r in rounds:
        finished = done.get(f"round-{r['round']}", 0)
        assert r["reused_tiles"] == finished, (r, done)  # every finished tile reused
    assert [r["resumed"] for r in rounds] == [True, True, False, False]
    assert rounds[0]["computed_tiles"] == rounds[1]["computed_tiles"] == 0
    assert rounds[2]["computed_tiles"] > 0 and rounds[3]["computed_tiles"] > 0
