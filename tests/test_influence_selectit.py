"""SelectIT: token ids from the tokenizer, score levels, chat-template handling, top-k order."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import LM_CACHE
from nncift.errors import InputError
from nncift.influence import TextItems, top_k
from nncift.influence.selectit import SelectIT, digit_token_ids, sentence_scores, token_scores

POOL = TextItems(
    ["What is the capital of France?", "Name a primary colour.", "Say hi."],
    ["The capital of France is Paris.", "Red.", ""],
)


@pytest.fixture(scope="module")
def tiny(torch_threads):  # type: ignore[no-untyped-def]
    from nncift.lm import tiny_random_lm

    torch_threads(2)
    return tiny_random_lm(cache=LM_CACHE)


def test_digit_ids_come_from_the_tokenizer(tiny) -> None:  # type: ignore[no-untyped-def]
    tok = tiny.tokenizer
    ids = digit_token_ids(tok, "<|im_start|>assistant\n")
    assert ids == [tok.convert_tokens_to_ids(d) for d in "12345"]
    assert ids != [29896, 29906, 29941, 29946, 29945]  # not Llama-2's hard-coded ids
    fn = SelectIT(POOL, lm=tiny)
    assert all(t == ids for t in fn.config()["digit_token_ids"][0])


class _MergingTokenizer:
    """A tokenizer where "3" merges with the preceding text (to exercise the single-token check)."""

    eos_token_id = None

    def __init__(self, inner):  # type: ignore[no-untyped-def]
        self.inner = inner

    def __call__(self, text, add_special_tokens=False):  # type: ignore[no-untyped-def]
        out = self.inner(text, add_special_tokens=add_special_tokens)
        if text.endswith(":3"):
            out.input_ids = out.input_ids[:-2] + [999]
        return out


def test_multi_token_or_merging_digit_is_refused(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="does not encode the rating '3' as one token"):
        digit_token_ids(_MergingTokenizer(tiny.tokenizer), "Rating:")


def test_token_and_sentence_levels() -> None:
    p = np.array([[0.0, 0.0, 0.0, 1.0, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2]])
    lp = np.log(np.clip(p, 1e-30, None))
    s = token_scores(lp)
    assert s[0] == pytest.approx(4.0)  # rating 4, certain: gap 1 to every other digit
    assert s[1] == pytest.approx(0.0)  # uniform: no confidence
    # Unnormalised inputs are renormalised over the five digits.
    assert token_scores(lp[:1] - 3.0)[0] == pytest.approx(4.0)
    k = np.array([[4.0, 4.0, 4.0], [5.0, 3.0, 4.0]])
    got = sentence_scores(k, alpha=0.2)
    assert got[0] == pytest.approx(4.0)
    assert got[1] == pytest.approx(4.0 / (1 + 0.2 * np.std([5.0, 3.0, 4.0])))


def test_points_and_top_k_descending(tiny) -> None:  # type: ignore[no-untyped-def]
    fn = SelectIT(POOL, lm=tiny)
    res = fn.points()
    assert res.values.shape == (3,) and res.values.dtype == np.float32
    assert res.cost.lm_passes == 3 * 5  # K = 5 prompts per sample
    np.testing.assert_allclose(fn.points([2, 0]).values, res.values[[2, 0]], atol=1e-6)
    order = top_k(res.values, 3)
    assert list(res.values[order]) == sorted(res.values, reverse=True)
    assert list(top_k(np.array([1.0, 3.0, 3.0, 2.0]), 3)) == [1, 2, 3]  # ties: lowest index first


def test_model_level_weights_by_size(tiny) -> None:  # type: ignore[no-untyped-def]
    from nncift.lm import tiny_random_lm

    big = tiny_random_lm(seed=1, hidden_size=128, cache=LM_CACHE)
    both = SelectIT(POOL, lms=[tiny, big]).points().values
    a = SelectIT(POOL, lm=tiny).points().values
    b = SelectIT(POOL, lm=big).points().values
    w = np.array([tiny.n_params, big.n_params], dtype=np.float64)
    w /= w.sum()
    np.testing.assert_allclose(both, w[0] * a + w[1] * b, atol=1e-5)


def test_model_without_chat_template(tiny) -> None:  # type: ignore[no-untyped-def]
    lm = copy.copy(tiny)
    lm.tokenizer = copy.deepcopy(tiny.tokenizer)
    lm.tokenizer.chat_template = None
    auto = SelectIT(POOL, lm=lm)  # falls back to a plain "... Rating:" prompt
    assert auto.points().values.shape == (3,)
    with pytest.raises(InputError, match="no chat template"):
        SelectIT(POOL, lm=lm, chat_template="always")
    with pytest.raises(InputError, match="chat_template must be"):
        SelectIT(POOL, lm=tiny, chat_template="sometimes")
    with pytest.raises(InputError, match=r"\{sample\}"):
        SelectIT(POOL, lm=tiny, prompts=["no placeholder"])
