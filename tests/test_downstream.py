"""Downstream evaluation: ROUGE, response-only loss masking, LoRA fine-tuning, ICL demos."""

from __future__ import annotations

import numpy as np
import pytest
from nncift.data import Items
from nncift.downstream import (
    epoch_batches,
    finetune_evaluate,
    finetune_lora,
    icl_evaluate,
    nearest_demonstrations,
    rouge,
    training_example,
)


def items(pairs: list[tuple[str, str]]) -> Items:
    return Items(
        ids=[str(i) for i in range(len(pairs))],
        prompts=[p for p, _ in pairs],
        responses=[r for _, r in pairs],
        records=[{"prompt": p, "response": r} for p, r in pairs],
    )


def test_rouge_matches_hand_computed_values() -> None:
    assert rouge("the cat sat", "the cat sat") == {"rouge1": 1.0, "rougeL": 1.0}
    s = rouge("the cat sat on the mat", "the cat lay on a mat")
    # unigram overlap: the, cat, on, mat = 4; P = 4/6, R = 4/6
    assert s["rouge1"] == pytest.approx(4 / 6)
    # LCS: the cat on mat = 4
    assert s["rougeL"] == pytest.approx(4 / 6)
    s = rouge("mat on the cat", "the cat on the mat")
    assert s["rouge1"] == pytest.approx(2 * (4 / 4) * (4 / 5) / (4 / 4 + 4 / 5))
    assert s["rougeL"] < s["rouge1"]
    assert rouge("", "x") == {"rouge1": 0.0, "rougeL": 0.0}


@pytest.fixture(scope="module")
def lm():  # type: ignore[no-untyped-def]
    from nncift.lm import tiny_random_lm

    return tiny_random_lm(seed=0)


def test_training_example_feeds_response_and_masks_prompt(lm) -> None:  # type: ignore[no-untyped-def]
    ids, labels = training_example(lm, "What is two plus two?", "Four.", max_length=128)
    assert len(ids) == len(labels)
    resp = lm.tokenizer("Four.", add_special_tokens=False)["input_ids"]
    n_resp = len(resp) + 1  # + eos
    assert labels[-n_resp:] == ids[-n_resp:]  # response tokens are fed AND scored
    assert ids[-n_resp:-1] == resp
    assert all(x == -100 for x in labels[:-n_resp])  # prompt positions carry no loss
    # Too long: the prompt is cut from the left; the response survives.
    ids, labels = training_example(lm, "word " * 400, "Four.", max_length=64)
    assert len(ids) == 64 and labels[-n_resp:] == ids[-n_resp:]


def test_lora_fine_tuning_learns_and_base_model_is_restored(lm) -> None:  # type: ignore[no-untyped-def]
    train = items([("Say the magic word.", "banana banana banana")] * 4)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    all_linear = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    model, losses = finetune_lora(
        lm, train, epochs=4, lr=5e-2, batch_size=4, rank=8, target_modules=all_linear
    )
    # A random 2-layer model learns slowly, but the response loss must go down.
    assert losses[-1] < losses[0] - 0.2
    lm.model = model.unload()
    scores, _ = finetune_evaluate(
        lm, train, items([("Say the magic word.", "banana")]), epochs=1, max_new_tokens=4, rank=4
    )
    assert len(scores.generations) == 1
    after = lm.model.state_dict()
    assert set(after) == set(before)  # no LoRA modules left behind
    for k, v in before.items():
        assert np.array_equal(v.numpy(), after[k].numpy())


def test_epoch_batches_cover_every_example_once_and_grouping_cuts_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 300, size=1000).tolist()
    padded = {}
    for grouped in (False, True):
        batches = epoch_batches(lengths, 8, np.random.default_rng(1), group_by_length=grouped)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(1000))
        assert all(1 <= len(b) <= 8 for b in batches)
        padded[grouped] = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    # Grouping by length must waste far less padding than random batches.
    assert padded[True] < 0.75 * padded[False]
    assert padded[True] >= sum(lengths)


def test_bf16_length_grouped_fine_tuning_learns(lm) -> None:  # type: ignore[no-untyped-def]
    train = items([("Say the magic word.", "banana banana banana"), ("Hi?", "banana")] * 4)
    all_linear = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    model, losses = finetune_lora(
        lm, train, epochs=4, lr=5e-2, batch_size=2, rank=8, target_modules=all_linear,
        bf16=True, group_by_length=True,
    )  # fmt: skip
    lm.model = model.unload()
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.2


def test_nearest_demonstrations_and_icl_run(lm) -> None:  # type: ignore[no-untyped-def]
    sel = np.eye(4, dtype=np.float32)
    test = np.array([[0, 0, 1, 0], [0.6, 0.8, 0, 0]], dtype=np.float32)
    nn = nearest_demonstrations(sel, test, k=2)
    assert nn[0, 0] == 2 and nn[1].tolist() == [1, 0]
    pool = items([(f"question {i}", f"answer {i}") for i in range(4)])
    tests = items([("question 2", "answer 2"), ("question 1", "answer 1")])
    scores = icl_evaluate(lm, pool, sel, tests, test, k=2, max_new_tokens=4)
    assert len(scores.generations) == 2 and 0.0 <= scores.rouge1 <= 1.0


def test_icl_generation_cache_reuses_identical_prompts(lm) -> None:  # type: ignore[no-untyped-def]
    sel = np.eye(4, dtype=np.float32)
    test = np.array([[0, 0, 1, 0], [0, 0, 1, 0]], dtype=np.float32)
    pool = items([(f"question {i}", f"answer {i}") for i in range(4)])
    tests = items([("question 2", "answer 2"), ("question 2", "answer 2")])
    cache: dict[str, str] = {}
    first = icl_evaluate(lm, pool, sel, tests, test, k=1, max_new_tokens=4, generation_cache=cache)
    assert len(cache) == 1  # both test items see the same input ids: one generation
    plain = icl_evaluate(lm, pool, sel, tests, test, k=1, max_new_tokens=4)
    assert first.generations == plain.generations
    cache[next(iter(cache))] = "cached answer"
    again = icl_evaluate(lm, pool, sel, tests, test, k=1, max_new_tokens=4, generation_cache=cache)
    assert again.generations == ["cached answer", "cached answer"]
