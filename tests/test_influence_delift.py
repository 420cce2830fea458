"""DELIFT: next-token shift, exact KV reuse, block consistency, length policy, real-LM sanity."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import LM_CACHE
from nncift.errors import InputError
from nncift.influence import CostMeter, TextItems
from nncift.influence._lm import Seq, encode, prefix_response_logprobs, response_logprobs
from nncift.influence.delift import Delift, distance
from nncift.lm import load_lm, tiny_random_lm

POOL = TextItems(
    [
        "What is the capital of France?",
        "How do I bake bread?",
        "Name a primary colour.",
        "Translate 'cat' into German.",
    ],
    [
        "The capital of France is Paris.",
        "Mix flour, water, yeast and salt, knead, let it rise and bake at 230 C.",
        "Red is a primary colour.",
        "Katze.",
    ],
)
TARGETS = TextItems(
    ["Which city is the capital of France?", "Give me a primary colour.", "Say hello."],
    ["The capital of France is Paris.", "Blue is a primary colour.", "Hello!"],
)


@pytest.fixture(scope="module")
def tiny(torch_threads):  # type: ignore[no-untyped-def]
    torch_threads(2)
    return tiny_random_lm(cache=LM_CACHE)


def test_distance_definition() -> None:
    assert distance(np.zeros(4)) == 0.0  # certain of every token
    assert distance(np.full(3, -np.inf)) == pytest.approx(1.0)  # zero probability
    assert distance(np.log(np.array([0.5, 0.5]))) == pytest.approx(0.5)
    assert distance(np.zeros(0)) == 0.0


def test_shift_matches_the_loss_the_model_reports(tiny) -> None:  # type: ignore[no-untyped-def]
    tok = tiny.tokenizer
    prompt = encode(tok, "Query: what is two plus two?\n", first=True)
    resp = encode(tok, "Two plus two is four.")
    ids = torch.tensor([prompt + resp])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100  # HF shifts labels internally: its loss is the reference
    with torch.no_grad():
        ref = float(tiny.model(input_ids=ids, labels=labels).loss)
    (lp,) = response_logprobs(tiny, [Seq(prompt + resp, len(prompt))], CostMeter())
    assert lp.shape == (len(resp),)
    assert -lp.mean() == pytest.approx(ref, abs=1e-5)
    # Reading the logits without the shift (the reference scripts' bug) gives another number.
    with torch.no_grad():
        logits = tiny.model(input_ids=ids).logits[0].float().log_softmax(-1)
    unshifted = logits[torch.arange(len(prompt), ids.shape[1]), ids[0, len(prompt) :]]
    assert abs(float(-unshifted.mean()) - ref) > 1e-3


def test_batched_and_kv_reuse_are_exact(tiny) -> None:  # type: ignore[no-untyped-def]
    tok = tiny.tokenizer
    prefix = encode(
        tok, "Example:\nSome shared example text of moderate length.\nQuery:\n", first=True
    )
    sufs = [
        Seq(encode(tok, p + "\n") + encode(tok, r), len(encode(tok, p + "\n")))
        for p, r in zip(TARGETS.prompts, TARGETS.responses, strict=False)
    ]
    full = [Seq(prefix + s.ids, len(prefix) + s.start) for s in sufs]
    one_by_one = [response_logprobs(tiny, [s], CostMeter())[0] for s in full]
    batched = response_logprobs(tiny, full, CostMeter())
    meter = CostMeter()
    kv = prefix_response_logprobs(tiny, prefix, sufs, meter)
    for a, b, c in zip(one_by_one, batched, kv, strict=False):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(a, c, atol=1e-5)
    # The prefix went through the model once, not once per suffix.
    assert meter.cost.tokens == len(prefix) + sum(len(s.ids) for s in sufs)


def test_block_alone_equals_block_cut_from_full_matrix(tiny) -> None:  # type: ignore[no-untyped-def]
    full = Delift(POOL, TARGETS, lm=tiny).block()
    assert full.values.shape == (4, 3) and full.values.dtype == np.float32
    rows, cols = np.array([3, 1]), np.array([2, 0])
    alone = Delift(POOL, TARGETS, lm=tiny).block(rows, cols)  # fresh object: no shared cache
    np.testing.assert_allclose(alone.values, full.values[np.ix_(rows, cols)], atol=1e-6)
    no_kv = Delift(POOL, TARGETS, lm=tiny, kv_reuse=False).block(rows, cols)
    np.testing.assert_allclose(no_kv.values, alone.values, atol=1e-6)


def test_no_example_pass_is_cached_per_target(tiny) -> None:  # type: ignore[no-untyped-def]
    fn = Delift(POOL, TARGETS, lm=tiny)
    first = fn.block([0], [0, 1])
    second = fn.block([1], [0, 1])
    # First block: 2 no-example passes + 1 prefix + 2 suffixes; second: no no-example passes.
    assert first.cost.lm_passes == 5 and second.cost.lm_passes == 3


def test_empty_target_response_gives_zero_and_no_passes(tiny) -> None:  # type: ignore[no-untyped-def]
    targets = TextItems(["Say nothing.", "Give me a primary colour."], ["", "Blue."])
    res = Delift(POOL, targets, lm=tiny).block([0, 1], [0, 1])
    assert (res.values[:, 0] == 0).all() and (res.values[:, 1] != 0).all()
    assert res.info["empty_targets"] == [0]


def test_long_texts_cut_prompt_and_example_never_response(tiny) -> None:  # type: ignore[no-untyped-def]
    long_pool = TextItems(["word " * 400], ["answer " * 50])
    long_t = TextItems(["question " * 300], ["The final answer is forty-two."])
    fn = Delift(
        long_pool, long_t, lm=tiny, max_example_tokens=64, max_prompt_tokens=32, max_length=160
    )
    res = fn.block()
    assert res.info["example_tokens_cut"][0] > 0 and res.info["prompt_tokens_cut"][0] > 0
    q = fn._query(0)
    assert q["resp"] == encode(tiny.tokenizer, "The final answer is forty-two.")  # intact
    assert np.isfinite(res.values).all()
    # A pair that still does not fit cuts the example further for that pair only.
    tight = Delift(
        long_pool, long_t, lm=tiny, max_example_tokens=200, max_prompt_tokens=32, max_length=160
    )
    assert tight.block().info["pairs_with_extra_example_cut"] == 1
    # A response that cannot fit at all is refused, naming the target.
    huge = TextItems(["q"], ["word " * 400])
    with pytest.raises(InputError, match="target 0: its response has"):
        Delift(POOL, huge, lm=tiny, max_length=128).block([0], [0])


def test_tokenizer_without_pad_token(tiny) -> None:  # type: ignore[no-untyped-def]
    ref = Delift(POOL, TARGETS, lm=tiny).block([0, 2], [0, 1]).values
    tok = copy.deepcopy(tiny.tokenizer)
    tok.pad_token = None
    assert tok.pad_token_id is None
    lm2 = copy.copy(tiny)
    lm2.tokenizer = tok
    np.testing.assert_allclose(
        Delift(POOL, TARGETS, lm=lm2).block([0, 2], [0, 1]).values, ref, atol=1e-6
    )


def test_bad_settings_and_indices(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="max_example_tokens"):
        Delift(POOL, TARGETS, lm=tiny, max_example_tokens=0)
    with pytest.raises(InputError, match="out of range"):
        Delift(POOL, TARGETS, lm=tiny).block([9], [0])
    with pytest.raises(InputError, match="no items"):
        Delift(TextItems([], []), TARGETS, lm=tiny)


def test_real_smollm2_hand_made_utilities(torch_threads) -> None:  # type: ignore[no-untyped-def]
    """A demonstration containing the target's answer helps; an unrelated one barely moves it."""
    torch_threads(2)
    lm = load_lm("default", device="cpu", cache=LM_CACHE, check_loss=False)
    pool = TextItems(
        ["What is the capital of Australia?", "How many legs does a spider have?"],
        ["The capital of Australia is Canberra.", "A spider has eight legs."],
    )
    target = TextItems(
        ["Tell me the capital city of Australia."], ["The capital of Australia is Canberra."]
    )
    u = Delift(pool, target, lm=lm).block().values[:, 0]
    assert u[0] > 0.1  # the answer itself as the example: a large gain
    assert abs(u[1]) < 0.5 * u[0]  # unrelated: much smaller
