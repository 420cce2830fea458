"""The task-targeted downstream probe: de-duplication, response-only NLL, paired bootstrap,
cached fine-tunes, and a whole tiny run."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from nncift.data import Items
from nncift.errors import InputError
from nncift.probe import (
    MDD_FACTOR,
    FinetuneSettings,
    ProbeConfig,
    ProbeData,
    build_probe_data,
    check_disjoint,
    evaluate_subset,
    normalise_prompt,
    paired_bootstrap,
    response_nll,
    row_subset,
    run_probe,
    shared_prompts,
)


def items(pairs: list[tuple[str, str]], tag: str = "") -> Items:
    return Items(
        ids=[f"{tag}{i}" for i in range(len(pairs))],
        prompts=[p for p, _ in pairs],
        responses=[r for _, r in pairs],
        records=[{"prompt": p, "response": r} for p, r in pairs],
    )


# ---------------------------------------------------------------- de-duplication


def fake_sources() -> dict[str, Items]:
    # "kind" items repeat prompts (two answers to one question) and other sources contain
    # the same questions spelled differently: the checks must work on normalised prompts.
    kind = [(f"Question number {i}?", f"answer {i}") for i in range(60)]
    kind += [(f"question NUMBER {i}", f"another answer {i}") for i in range(0, 60, 3)]
    other = [(f"Write an essay about topic {i}.", "x" * (10 + i)) for i in range(200)]
    other += [(f"  question number {i}!!", "copied") for i in range(60)]
    third = [(f"Follow instruction {i}", "y" * 50) for i in range(80)]
    return {
        "kind": items(kind, "k"),
        "other": items(other, "o"),
        "third": items(third, "t"),
    }


def test_normalise_prompt() -> None:
    assert normalise_prompt("What is AI?") == normalise_prompt("  what IS ai ") == "what is ai"
    assert normalise_prompt("What's AI?") != normalise_prompt("What is AI?")


def test_probe_data_is_disjoint_by_normalised_prompt() -> None:
    src = fake_sources()
    data = build_probe_data(
        pool_size=150,
        n_targets=5,
        n_test=20,
        target_source="kind",
        mix=(("kind", 0.1), ("third", 0.2), ("other", 0.7)),
        max_response_chars=40,
        seed=1,
        loader=src.__getitem__,
    )
    assert len(data.targets) == 5 and len(data.test) == 20
    assert shared_prompts(data.pool, data.targets, data.test) == []
    held = {normalise_prompt(p) for p in data.targets.prompts + data.test.prompts}
    # The copies of target / test questions in the "other" source were kept out of the pool.
    assert not held & {normalise_prompt(p) for p in data.pool.prompts}
    assert len(data.pool) == 150
    assert data.info["pool_sources"] == {"kind": 15, "third": 30, "other": 105}
    assert max(len(r) for r in data.pool.responses) <= 40
    # The length row ranks by the response before it was cut.
    assert int(data.pool_response_chars.max()) > 40
    assert data.pool_source.count("kind") == 15


def test_check_disjoint_refuses_a_planted_overlap() -> None:
    pool = items([("Tell me a joke", "no"), ("Hello", "hi")])
    targets = items([("hello!", "hey")])
    test = items([("Bye", "bye")])
    assert shared_prompts(pool, targets, test) == ["hello"]
    with pytest.raises(InputError, match="shared"):
        check_disjoint(pool, targets, test)
    check_disjoint(pool.subset([0]), targets, test)


def test_probe_data_refuses_too_few_prompts() -> None:
    src = fake_sources()
    with pytest.raises(InputError, match="distinct prompts"):
        build_probe_data(
            pool_size=50,
            n_targets=30,
            n_test=40,
            target_source="kind",
            mix=(("other", 1.0),),
            loader=src.__getitem__,
        )


# ---------------------------------------------------------------- the metric


@pytest.fixture(scope="module")
def lm():  # type: ignore[no-untyped-def]
    from nncift.lm import tiny_random_lm

    return tiny_random_lm(seed=0)


def test_response_nll_scores_response_tokens_only(lm) -> None:  # type: ignore[no-untyped-def]
    import torch
    from nncift.downstream import training_example

    test = items(
        [("What is two plus two?", "Four."), ("Name a colour " * 5, "Blue, or green, or red.")]
    )
    sums, counts = response_nll(lm, lm.model, test, max_length=64, batch_size=2)
    for i in range(len(test)):
        ids, labels = training_example(lm, test.prompts[i], test.responses[i], 64)
        n_resp = len(lm.tokenizer(test.responses[i], add_special_tokens=False)["input_ids"]) + 1
        assert counts[i] == n_resp  # response + EOS, no prompt token
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
        manual = -sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)) if labels[t] != -100)
        assert sums[i] == pytest.approx(manual, rel=1e-4)
    # Batched (padded) and one at a time agree.
    one = [response_nll(lm, lm.model, test.subset([i]), max_length=64)[0][0] for i in range(2)]
    np.testing.assert_allclose(sums, one, rtol=1e-4)


# ---------------------------------------------------------------- statistics


def test_paired_bootstrap_finds_a_planted_difference() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 40, size=300).astype(float)
    b = rng.normal(2.0, 0.5, size=(3, 300)) * tokens  # NLL sums per seed and item
    a = b - 0.1 * tokens + rng.normal(0, 0.2, size=(3, 300)) * np.sqrt(tokens)
    res = paired_bootstrap(a, b, tokens, n_boot=1000)
    assert res["excludes_zero"] and res["ci"][0] < -0.1 < res["ci"][1] < 0
    assert res["difference"] == pytest.approx(-0.1, abs=0.02)
    assert res["mdd"] == pytest.approx(MDD_FACTOR * res["se"])
    assert res["mdd"] < 0.1  # the planted difference is above what the probe can detect
    # No planted difference: the interval covers 0.
    c = b + rng.normal(0, 0.2, size=(3, 300)) * np.sqrt(tokens)
    res0 = paired_bootstrap(c, b, tokens, n_boot=1000)
    assert res0["ci"][0] < 0 < res0["ci"][1] and not res0["excludes_zero"]
    # The same draw for both rows: identical rows differ by exactly 0.
    same = paired_bootstrap(b, b, tokens, n_boot=200)
    assert same["difference"] == 0 and same["ci"] == [0.0, 0.0]
    with pytest.raises(InputError):
        paired_bootstrap(a, b[:2], tokens)


def test_paired_bootstrap_interval_narrows_with_more_items() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 800):
        b = rng.normal(0, 1, size=(2, n))
        a = b + 0.05 + rng.normal(0, 1, size=(2, n))
        r = paired_bootstrap(a, b, n_boot=800)
        widths.append(r["ci"][1] - r["ci"][0])
    assert widths[1] < widths[0] / 2


# ---------------------------------------------------------------- cached fine-tunes


def test_evaluate_subset_is_cached_by_subset_and_settings(
    lm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import nncift.downstream as ds

    train = items([("Say the magic word.", "banana banana")] * 4)
    test = items([("Say the magic word.", "banana"), ("Another?", "yes")])
    s = FinetuneSettings(batch_size=2, max_length=64, n_rouge=1, max_new_tokens=3)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    first = evaluate_subset(lm, train, test, s, seed=0, cache_dir=tmp_path)
    assert (
        first is not None
        and not first["cached"]
        and len(first["nll_sum"]) == 2
        and len(first["rougeL"]) == 1
    )
    assert len(list(tmp_path.glob("ft-*.json"))) == 1
    after = lm.model.state_dict()
    assert set(after) == set(before)  # the adapter was removed
    calls = []
    real = ds.finetune_lora
    monkeypatch.setattr(ds, "finetune_lora", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = evaluate_subset(lm, train, test, s, seed=0, cache_dir=tmp_path)
    assert (
        again is not None and again["cached"] and not calls and again["nll_sum"] == first["nll_sum"]
    )
    # Another seed, subset or setting is another fine-tune.
    evaluate_subset(lm, train, test, s, seed=1, cache_dir=tmp_path)
    evaluate_subset(lm, train.subset([0, 1]), test, s, seed=0, cache_dir=tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("ft-*.json"))) == 3
    # The base model (empty subset) is evaluated without fine-tuning.
    base = evaluate_subset(lm, train.subset([]), test, s, cache_dir=tmp_path)
    assert base is not None and base["losses"] == [] and len(calls) == 2
    # A fine-tune another process holds is skipped on request (run_probe's first pass).
    from nncift.io import file_lock
    from nncift.probe import finetune_key

    key = finetune_key(lm, train, test, s, 7)
    with file_lock(tmp_path / f"ft-{key}.lock"):
        assert (
            evaluate_subset(lm, train, test, s, seed=7, cache_dir=tmp_path, skip_if_busy=True)
            is None
        )
    assert not (tmp_path / f"ft-{key}.json").exists() and len(calls) == 2
    done = evaluate_subset(lm, train, test, s, seed=7, cache_dir=tmp_path, skip_if_busy=True)
    assert done is not None and not done["cached"] and (tmp_path / f"ft-{key}.json").is_file()


# ---------------------------------------------------------------- rows and a whole run


class FakeEmbedder:
    """Bag-of-words hashing embedder: similar texts get similar unit vectors."""

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in normalise_prompt(t).split():
                out[i, zlib.crc32(w.encode()) % 64] += 1.0
        out += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_row_subsets() -> None:
    emb = FakeEmbedder().embed([f"text {i} word{i % 3}" for i in range(30)])
    chars = np.arange(30)[::-1].copy()
    assert row_subset("length", 3, seed=0, pool_response_chars=chars).tolist() == [0, 1, 2]
    r0 = row_subset("random", 5, seed=0, pool_emb=emb)
    assert len(set(r0.tolist())) == 5
    assert not np.array_equal(r0, row_subset("random", 5, seed=1, pool_emb=emb))
    fl = row_subset("embedding-fl", 4, seed=0, pool_emb=emb)
    mi = row_subset("embedding-flmi", 4, seed=0, pool_emb=emb, target_emb=emb[[7]])
    assert len(fl) == 4 and 7 in mi.tolist()  # the target itself is the most informative
    rds = row_subset("rds", 2, seed=0, rds_pool=emb, rds_targets=emb[[7, 8]])
    assert set(rds.tolist()) <= set(range(30)) and len(rds) == 2
    with pytest.raises(InputError, match="unknown probe row"):
        row_subset("nope", 2, seed=0)


def tiny_probe_data(targets: list[tuple[str, str]], n_test: int) -> ProbeData:
    """12 greetings (the targets' kind) and 12 essays of growing length."""
    pool = items(
        [(f"greet me number {i}", "hello friend") for i in range(12)]
        + [(f"essay {i} on topic", "long text " * (i + 1)) for i in range(12)],
        "p",
    )
    return ProbeData(
        pool=pool,
        targets=items(targets, "t"),
        test=items([(f"say hi {i}", "hello friend") for i in range(n_test)], "s"),
        pool_source=["kind"] * 12 + ["other"] * 12,
        pool_response_chars=np.array([len(r) for r in pool.responses]),
        info={"target_source": "kind"},
    )


def test_run_probe_tiny(lm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tiny_probe_data([("greet me please", "hello friend")], n_test=6)
    cfg = ProbeConfig(
        budgets=(0.25,),
        extra_budgets=(),
        seeds=(0, 1),
        full_data=True,
        finetune=FinetuneSettings(batch_size=4, max_length=48, n_rouge=2, max_new_tokens=2),
        n_boot=200,
    )
    emb = FakeEmbedder()
    out = run_probe(
        cfg, lm, emb, cache_dir=tmp_path, data=data, rds_features=lambda it: emb.embed(it.texts)
    )
    rows = {r["row"]: r for r in out["rows"]}
    assert set(rows) == {"random", "length", "embedding-fl", "embedding-flmi", "rds", "full"}
    # Full data (one seed) is paired with the main budget's rows on that seed.
    assert len(rows["full"]["nll_per_seed"]) == 1
    full_vs = rows["full"]["vs_random"]
    assert full_vs is not None and full_vs["ci"][0] <= full_vs["difference"] <= full_vs["ci"][1]
    # FLMI to a greeting picks greetings first; the longest responses are all essays.
    assert rows["embedding-flmi"]["target_source_share"] >= 0.5
    assert rows["length"]["target_source_share"] == 0.0
    pc = out["power_check"]
    assert pc is not None and len(pc["ci"]) == 2 and pc["mdd"] > 0
    assert rows["random"]["vs_random"] is None and rows["length"]["vs_random"] is not None
    assert out["n_runs"] == 11 and out["n_cached"] == 0
    assert out["base"]["nll"] > 0
    again = run_probe(
        cfg, lm, emb, cache_dir=tmp_path, data=data, rds_features=lambda it: emb.embed(it.texts)
    )
    assert again["n_cached"] == 11 and again["rows"][0]["nll"] == out["rows"][0]["nll"]


def test_run_probe_nncift_rows(lm, tiny_lm_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The NN-CIFT rows value the pool through `nncift select` (DELIFT on a real tiny LM,
    facility location over the targets), carry their LM cost, and reuse the cached labels."""
    from nncift.probe import INFLUENCE_ROWS

    data = tiny_probe_data([(f"greet me please {i}", "hello friend") for i in range(8)], n_test=4)
    cfg = ProbeConfig(
        budgets=(0.25,),
        rows=("random",),
        extra_budgets=(),
        seeds=(0,),
        influence_rows=INFLUENCE_ROWS,
        influence_options={
            "nncift-delift": {"design": "spread", "label_budget": "24", "estimator": "auto"},
            "nncift-delift-paper": {"u": 0.5, "variant": "paper", "epochs": 3},
        },
        lm_name=str(tiny_lm_dir),
        finetune=FinetuneSettings(batch_size=4, max_length=48, n_rouge=1, max_new_tokens=2),
        n_boot=50,
    )
    out = run_probe(cfg, lm, FakeEmbedder(), cache_dir=tmp_path, data=data)
    rows = {r["row"]: r for r in out["rows"]}
    assert set(rows) == {"random", *INFLUENCE_ROWS}
    for name in INFLUENCE_ROWS:
        r = rows[name]
        assert r["k"] == 6 and r["lm_passes"] > 0 and r["valuation_seconds"] > 0
        assert r["vs_random"] is not None  # a paired difference like every other row
    # Each NN-CIFT row against the best label-free row (only random here), then the designs.
    comps = [(c["row"], c["ref"]) for c in out["comparisons"]]
    assert comps == [(n, "random") for n in INFLUENCE_ROWS] + [tuple(INFLUENCE_ROWS)]
    assert all(c["ci"][0] <= c["difference"] <= c["ci"][1] for c in out["comparisons"])
    again = run_probe(cfg, lm, FakeEmbedder(), cache_dir=tmp_path, data=data)
    for name in INFLUENCE_ROWS:
        r = {x["row"]: x for x in again["rows"]}[name]
        assert r["nll"] == rows[name]["nll"]  # the same subset: a cached fine-tune
        # Labels reused from the cache, and still charged what they cost to compute.
        assert r["passes_this_run"] == 0 and rows[name]["passes_this_run"] > 0
        assert r["lm_passes"] == rows[name]["lm_passes"]
        assert r["lm_seconds"] == rows[name]["lm_seconds"] > 0
    assert again["n_cached"] == out["n_runs"]
