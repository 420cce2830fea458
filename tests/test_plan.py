"""`nncift select --dry-run`: plans laid out from the real texts and priced by a cached probe of
the LM on this machine, selection memory that counts the predicted kernels, and the same
refusals as the run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from nncift.cli.main import cli
from nncift.data import Items, load_named
from nncift.influence import TextItems


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    return result.exit_code, result.output


def write(path: Path, items: Items) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items.records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    items = load_named("chatterbot")
    pool, target, small = items.split([60, 30, 20], seed=3)
    d = tmp_path_factory.mktemp("data")
    return {
        "pool": write(d / "pool.jsonl", pool),
        "target": write(d / "target.jsonl", target),
        "small": write(d / "small.jsonl", small),
    }


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir: Path) -> object:
    from nncift.lm import load_lm

    return load_lm(str(tiny_lm_dir), device="cpu")


def fake_throughput(per_token: float = 1e-3) -> object:
    from nncift.lm_probe import PassModel, Throughput

    return Throughput(key={}, load_seconds=0.0, forward=PassModel(0.0, per_token, 0.0, 0.0))


# ------------------------------------------------------------------ passes as the run makes them


def planned(output: str, stage: str) -> tuple[int, int]:
    m = re.search(rf"{stage}\s.*?\(([\d,]+) LM passes, ([\d,]+) tokens", output)
    assert m, output
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


@pytest.mark.parametrize(
    ("method", "extra", "stage"),
    [
        ("delift", (), "label_data"),
        ("selectit", (), "label_points"),
        ("less", ("--target", "target"), "label_pairwise"),
    ],
)
def test_plan_counts_the_passes_and_tokens_the_run_makes(
    method: str, extra: tuple[str, ...], stage: str, files: dict[str, Path], tiny_lm_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The plan lays out the very passes of the run (u-split block, tiles, cuts, batches,
    DELIFT's shared example prefixes, LESS's warm-up and checkpoints): its LM passes and
    tokens equal what the run's cost meter records."""
    extra = tuple(str(files[x]) if x in files else x for x in extra)
    args = ["select", "--pool", str(files["pool"]), *extra, "--method", method, "--lm",
            str(tiny_lm_dir), "--u", "0.15", "--epochs", "1", "--budget", "5",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "s.jsonl")]  # fmt: skip
    code, plan = run(*args, "--dry-run")
    assert code == 0, plan
    passes, tokens = planned(plan, stage)
    assert "measured on this machine" in plan and "tokens/s" in plan
    code, output = run(*args)
    assert code == 0, output
    manifest = json.loads((tmp_path / "s.manifest.json").read_text())
    cost = manifest["stages"][stage]["cost"]
    assert (passes, tokens) == (cost["lm_passes"], cost["tokens"])


def test_delift_layout_matches_the_meter_across_tiles_and_cut_pairs(tiny: object) -> None:
    """Several row tiles, KV-shared prefixes and pairs too long to share one (cut one by one)."""
    from nncift.influence import make
    from nncift.lm_work import delift_work

    items = load_named("sharegpt")
    pool = TextItems(items.prompts[:20], items.responses[:20])
    fn = make("delift", pool, lm=tiny, max_length=320, max_example_tokens=200)
    rows, cols = np.arange(18)[::-1].copy(), np.array([3, 1, 4, 15, 9])
    res = fn.block(rows, cols)
    assert res.info["pairs_with_extra_example_cut"] > 0  # the layout covers the cut path
    work = delift_work(make("delift", pool, lm=tiny, max_length=320, max_example_tokens=200),
                       rows, cols)  # fmt: skip
    assert (work.passes, work.tokens) == (res.cost.lm_passes, res.cost.tokens)


# ------------------------------------------------------------------ real token counts


def test_longer_texts_plan_proportionally_more_time(tiny: object) -> None:
    """With a fixed throughput, planned time follows the token counts of the actual texts."""
    from nncift.data import Items
    from nncift.plan import plan_valuation
    from nncift.valuation import ValuationOptions

    n = 40

    def items(words: int) -> Items:
        # Texts of one length each, so no batch is padded and time is per_token * tokens.
        prompts = [f"item {i}: " + "please explain the weather " * words for i in range(10, 50)]
        responses = ["it is sunny and warm today " * words] * n
        return Items([str(i) for i in range(n)], prompts, responses, [{}] * n)

    fake = fake_throughput(per_token=1e-3)
    for method in ("delift", "selectit"):
        opts = ValuationOptions(method=method, u=0.2, lm="tiny")
        short, long = (
            plan_valuation(items(words), None, opts, "topk" if method == "selectit" else "fl",
                           throughput=fake, lm=tiny).stages[0]
            for words in (2, 8)
        )  # fmt: skip
        assert long.lm_passes == short.lm_passes  # the same passes, over longer texts
        # SelectIT's rating prompts add a fixed ~80 tokens around each text.
        assert long.tokens > (2.5 if method == "delift" else 1.5) * short.tokens
        for st in (short, long):
            assert st.seconds == pytest.approx(1e-3 * st.tokens)


# ------------------------------------------------------------------ the probe


def test_probe_is_cached_per_lm_and_machine(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from nncift import lm_probe

    calls: list[str] = []
    real = lm_probe.measure_forward

    def counting(lm: object) -> object:
        calls.append("probe")
        return real(lm)

    monkeypatch.setattr(lm_probe, "measure_forward", counting)
    kw = {"lm": str(tiny_lm_dir), "device": "cpu", "dtype": None, "max_length": 256}
    first, loaded, cached = lm_probe.get_throughput(tmp_path, **kw)
    assert not cached and loaded is not None and calls == ["probe"]
    assert first.forward.tokens_per_second() > 0 and first.load_seconds > 0
    path = lm_probe.probe_path(tmp_path, first.key)
    assert path.is_file() and path.stat().st_size < 4096  # a small JSON file
    second, loaded, cached = lm_probe.get_throughput(tmp_path, **kw)
    assert cached and loaded is None and calls == ["probe"]  # no second probe, no LM load
    assert second.forward == first.forward
    # Another thread count is another machine as far as speed goes.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert lm_probe.probe_key(str(tiny_lm_dir), "cpu", None) != first.key
    finally:
        torch.set_num_threads(threads)


def test_fit_recovers_a_known_cost_model() -> None:
    from nncift.lm_probe import fit_nonnegative

    shapes = [(1, 16), (4, 64), (2, 192), (1, 384)]
    x = np.array([[1.0, b * n, b * n * n] for b, n in shapes])
    y = x @ np.array([0.02, 1e-3, 2e-6])
    assert fit_nonnegative(x, y) == pytest.approx([0.02, 1e-3, 2e-6], rel=1e-6)
    # A term that would come out negative is dropped, never used to subtract time.
    coef = fit_nonnegative(x, x @ np.array([0.02, 1e-3, 0.0]) * [1.0, 1.0, 1.0, 0.9])
    assert (coef >= 0).all()


def test_plans_without_an_lm_load_none(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nncift.lm
    from nncift import lm_probe

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("an LM was loaded")

    monkeypatch.setattr(nncift.lm, "load_lm", boom)
    monkeypatch.setattr(lm_probe, "lm_shell", boom)
    monkeypatch.setattr(lm_probe, "get_throughput", boom)
    for method in ("delift-se", "embedding", "random"):
        code, output = run("select", "--pool", str(files["pool"]), "--method", method, "--u",
                           "0.2", "--budget", "5", "--out", str(tmp_path / "x.jsonl"),
                           "--dry-run")  # fmt: skip
        assert code == 0, output
        assert "measured on this machine" not in output


# ------------------------------------------------------------------ selection memory


def test_selection_line_counts_the_predicted_kernels(
    files: dict[str, Path], tmp_path: Path
) -> None:
    from nncift.selection_plan import estimate_selection

    code, output = run("select", "--pool", str(files["pool"]), "--target", str(files["target"]),
                       "--method", "delift-se", "--u", "0.2", "--budget", "5", "--out",
                       str(tmp_path / "x.jsonl"), "--dry-run")  # fmt: skip
    assert code == 0, output
    line = next(x for x in output.splitlines() if x.strip().startswith("select"))
    assert "including the predicted 60 x 60 + 60 x 30 float32 kernels" in line
    without = estimate_selection(60, budget=5, objective="flmi", n_queries=30, kernel_given=True)
    expected = without.memory_bytes + 4 * 60 * 60 + 4 * 60 * 30
    assert f"about {expected / 1024:.1f} KB memory" in line


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    "args",
    [
        # LESS on 20 targets at u = 0.1: the labelled block would hold 2 targets.
        ("--method", "less", "--target", "small", "--u", "0.1", "--budget", "5"),
        ("--method", "delift", "--u", "0.01", "--budget", "5"),  # pool too small for u
        ("--method", "selectit", "--budget", "500"),  # budget larger than the pool
        ("--method", "less", "--budget", "5", "--u", "0.2"),  # less without a target
        ("--method", "delift-se", "--objective", "flmi", "--budget", "5"),  # no query set
        ("--method", "selectit", "--objective", "fl", "--budget", "5", "--u", "0.2"),
        ("--method", "embedding", "--objective", "topk", "--budget", "5"),  # nothing to rank by
    ],
)
def test_dry_run_refuses_what_the_run_refuses(
    args: tuple[str, ...], files: dict[str, Path], tmp_path: Path
) -> None:
    args = tuple(str(files[a]) if a in files else a for a in args)
    base = ["select", "--pool", str(files["pool"]), "--lm", "no-such-lm-needed", *args,
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "x.jsonl")]  # fmt: skip
    code_plan, plan = run(*base, "--dry-run")
    code_run, real = run(*base)
    assert code_run != 0 and code_plan == code_run
    error = [x for x in real.splitlines() if x.startswith("Error")]
    assert error and error == [x for x in plan.splitlines() if x.startswith("Error")]
    assert not (tmp_path / "x.jsonl").exists()
