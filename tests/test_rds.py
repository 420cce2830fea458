"""`nncift select --method rds`: RDS+ (the LM's pooled hidden states) as a selection method."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from nncift.cli.main import cli
from nncift.data import Items, load_items, load_named


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-q", *args])
    return result.exit_code, result.output


def write(path: Path, items: Items) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items.records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pool, target = load_named("chatterbot").split([40, 12], seed=5)
    d = tmp_path_factory.mktemp("rds-data")
    return {"pool": write(d / "pool.jsonl", pool), "target": write(d / "target.jsonl", target)}


@pytest.fixture(scope="module")
def direct(files: dict[str, Path], tiny_lm_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """RDS+ features computed directly with the library (no cache)."""
    from nncift.lm import load_lm
    from nncift.lm_features import LMFeaturizer

    f = LMFeaturizer(load_lm(str(tiny_lm_dir), device="cpu"), use_cache=False, progress=False)
    return f.features(load_items(str(files["pool"]))), f.features(load_items(str(files["target"])))


def select_args(files: dict[str, Path], lm: Path, out: Path, *extra: str) -> list[str]:
    return ["select", "--pool", str(files["pool"]), "--method", "rds", "--lm", str(lm),
            "--budget", "6", "--cache-dir", str(out.parent / "cache"), "--out", str(out),
            *extra]  # fmt: skip


def chosen(out: Path) -> list[str]:
    return [json.loads(line)["nncift_id"] for line in out.read_text().splitlines()]


def test_rds_flmi_writes_subset_and_manifest_equal_to_select_on_the_features(
    files: dict[str, Path], tiny_lm_dir: Path, tmp_path: Path, direct: Any
) -> None:
    from nncift import select

    out = tmp_path / "s.jsonl"
    code, output = run(*select_args(files, tiny_lm_dir, out, "--target", str(files["target"])))
    assert code == 0, output
    manifest = json.loads((tmp_path / "s.manifest.json").read_text())
    assert manifest["options"]["objective_resolved"] == "flmi"
    feats = manifest["results"]["lm_features"]
    assert feats["pooling"] == "position-weighted-mean" and feats["dimension"] == 64
    assert feats["truncated"] == 0 and feats["seconds"] > 0
    stage = manifest["stages"]["lm_features"]
    assert stage["pool"]["computed"] == 40 and stage["target"]["computed"] == 12
    assert "embed" not in manifest["stages"]  # no sentence embedder runs
    pool_x, target_x = direct
    want = select("flmi", budget=6, embeddings=pool_x, query_embeddings=target_x, eta=1.0)
    pool = load_items(str(files["pool"]))
    assert chosen(out) == [pool.ids[i] for i in want.indices]


def test_rds_topk_ranks_by_mean_cosine_to_the_targets(
    files: dict[str, Path], tiny_lm_dir: Path, tmp_path: Path, direct: Any
) -> None:
    out = tmp_path / "t.jsonl"
    args = select_args(files, tiny_lm_dir, out, "--target", str(files["target"]))
    code, output = run(*args, "--objective", "topk")
    assert code == 0, output
    pool_x, target_x = direct
    score = (pool_x @ target_x.T).mean(axis=1)
    pool = load_items(str(files["pool"]))
    top = [pool.ids[i] for i in np.argsort(-score, kind="stable")[:6]]
    assert chosen(out) == top
    # A second run finds every feature in the cache and selects the same items.
    again = tmp_path / "t2.jsonl"
    args = select_args(files, tiny_lm_dir, again, "--target", str(files["target"]))
    code, output = run(*args, "--objective", "topk")
    assert code == 0, output
    manifest = json.loads((tmp_path / "t2.manifest.json").read_text())
    assert manifest["stages"]["lm_features"]["pool"]["cached"] == 40
    assert manifest["stages"]["lm_features"]["pool"]["computed"] == 0
    assert chosen(again) == top


def test_rds_without_targets_is_fl_on_the_pool(
    files: dict[str, Path], tiny_lm_dir: Path, tmp_path: Path, direct: Any
) -> None:
    from nncift import select

    out = tmp_path / "f.jsonl"
    code, output = run(*select_args(files, tiny_lm_dir, out))
    assert code == 0, output
    want = select("fl", budget=6, embeddings=direct[0])
    pool = load_items(str(files["pool"]))
    assert chosen(out) == [pool.ids[i] for i in want.indices]


def test_rds_dry_run_plans_one_forward_per_item(
    files: dict[str, Path], tiny_lm_dir: Path, tmp_path: Path
) -> None:
    from nncift.influence._lm import _batches
    from nncift.lm import load_lm
    from nncift.lm_features import BATCH_TOKENS, MAX_BATCH, token_ids
    from nncift.lm_probe import PassModel, Throughput
    from nncift.pipeline import SelectOptions, plan_select
    from nncift.valuation import ValuationOptions

    pool, target = load_items(str(files["pool"])), load_items(str(files["target"]))
    opts = SelectOptions(
        budget=6, method="rds", cache_dir=str(tmp_path / "cache"),
        valuation=ValuationOptions(lm=str(tiny_lm_dir), device="cpu"),
    )  # fmt: skip
    fake = Throughput(key={}, load_seconds=2.0, forward=PassModel(0.0, 1e-3, 0.0, 0.0))
    plan = plan_select(pool, target, opts, throughput=fake)
    tok = load_lm(str(tiny_lm_dir), device="cpu").tokenizer
    lengths = [[len(token_ids(tok, p + "\n" + r, "plain", 512)[0])
                for p, r in zip(items.prompts, items.responses, strict=True)]
               for items in (pool, target)]  # fmt: skip
    tokens = sum(map(sum, lengths))
    # Priced on the padded batches the run makes (`_batches`, longest first), pool and targets
    # apart, plus the LM's load.
    padded = sum(len(g) * max(ls[i] for i in g)
                 for ls in lengths for g in _batches(ls, BATCH_TOKENS, MAX_BATCH))  # fmt: skip
    m = re.search(r"lm_features .*?\(([\d,]+) LM passes, ([\d,]+) tokens, ~(\d+) s", plan)
    assert m, plan
    assert int(m.group(1)) == 52 and int(m.group(2).replace(",", "")) == tokens
    assert padded > tokens and int(m.group(3)) == round(2.0 + 1e-3 * padded)
    assert "64-d" in plan and "before embedding" not in plan
    # The CLI prints the same plan and computes nothing.
    out = tmp_path / "d.jsonl"
    code, output = run(*select_args(files, tiny_lm_dir, out, "--target", str(files["target"])),
                       "--dry-run")  # fmt: skip
    assert code == 0 and "lm_features" in output and not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--objective", "mix"), "mix needs a score per pool item"),
        (("--objective", "topk"), "ranks by similarity to --target"),
        (("--objective", "flmi"), "needs a target set"),
        (("--embeddings", "EMB"), "computes itself"),
    ],
)
def test_bad_combinations_are_refused(
    files: dict[str, Path], tiny_lm_dir: Path, tmp_path: Path, extra: tuple[str, ...],
    message: str,
) -> None:  # fmt: skip
    emb = tmp_path / "e.npy"
    np.save(emb, np.ones((40, 8), dtype=np.float32))
    extra = tuple(str(emb) if x == "EMB" else x for x in extra)
    out = tmp_path / "x.jsonl"
    for dry in ((), ("--dry-run",)):
        code, output = run(*select_args(files, tiny_lm_dir, out, *extra), *dry)
        assert code != 0 and message in output, output
        assert "Traceback" not in output
    assert not out.exists()


def test_rds_without_the_lm_extra_is_one_line(
    files: dict[str, Path], tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def no_transformers(name: str, *a: Any, **k: Any) -> Any:
        return None if name == "transformers" else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", no_transformers)
    code, output = run(*select_args(files, tiny_lm_dir, tmp_path / "x.jsonl"))
    assert code != 0 and "pip install 'nncift[lm]'" in output and "--method rds" in output


# ------------------------------------------------------------------ --features for the networks


def test_both_features_are_unit_rows_whose_cosine_is_the_mean_of_the_two() -> None:
    from nncift.select_inputs import both_features

    rng = np.random.default_rng(0)
    e, f = rng.normal(size=(5, 7)), rng.normal(size=(5, 3)) * 10
    x = both_features(e, f)
    assert x.shape == (5, 10) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    en = e / np.linalg.norm(e, axis=1, keepdims=True)
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    np.testing.assert_allclose(x @ x.T, (en @ en.T + fn @ fn.T) / 2, atol=1e-6)


@pytest.mark.parametrize(("features", "dim"), [("lm", 64), ("both", 384 + 64)])
def test_features_choose_what_the_network_reads(
    files: dict[str, Path], tiny_lm_dir: Path, tmp_path: Path, features: str, dim: int
) -> None:
    from nncift.weights import read_network

    def select(features: str, out: Path) -> dict[str, Any]:
        args = ["select", "--pool", str(files["pool"]), "--target", str(files["target"]),
                "--method", "delift-se", "--u", "0.34", "--epochs", "1", "--network", "paper",
                "--lm", str(tiny_lm_dir), "--features", features, "--budget", "5",
                "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]  # fmt: skip
        code, output = run(*args)
        assert code == 0, output
        return json.loads(out.with_name(out.stem + ".manifest.json").read_text())

    base = select("minilm", tmp_path / "a.jsonl")
    assert "lm_features" not in base["stages"]
    m = select(features, tmp_path / "b.jsonl")
    assert m["options"]["valuation"]["features"] == features
    assert m["stages"]["lm_features"]["pool"]["texts"] == 40
    net = read_network(m["stages"]["train_pairwise"]["path"])
    assert net.embedding_dim == dim and "rds+:" in net.embedding_model
    # Another network on the same labels: the label tiles are reused, the network is new.
    assert m["stages"]["train_pairwise"]["path"] != base["stages"]["train_pairwise"]["path"]
    assert m["stages"]["label_pairwise"]["computed_tiles"] == 0


@pytest.mark.parametrize("method", ["embedding", "rds", "random"])
def test_features_without_a_network_are_refused(
    files: dict[str, Path], tiny_lm_dir: Path, tmp_path: Path, method: str
) -> None:
    out = tmp_path / "x.jsonl"
    args = ["select", "--pool", str(files["pool"]), "--method", method, "--lm", str(tiny_lm_dir),
            "--features", "lm", "--budget", "5", "--out", str(out)]  # fmt: skip
    for dry in ((), ("--dry-run",)):
        code, output = run(*args, *dry)
        assert code != 0 and "trains no network" in output, output
    assert not out.exists()
