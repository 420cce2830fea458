"""Language-model loading: the packaged SmolLM2 cache, the tokenizer repair, the tiny model.

The materialised SmolLM2 lives in the repository's git-ignored `.nncift-cache/` so the
one-time ~40 s conversion is paid once per checkout, not once per test session.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import LM_CACHE
from nncift.errors import InputError
from nncift.lm import (
    DEFAULT_LM_NAME,
    load_lm,
    materialize_default_lm,
    resolve_device,
    resolve_dtype,
    text_loss,
    tiny_random_lm,
)


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return tiny_random_lm(cache=LM_CACHE).tokenizer


def test_repaired_tokenizer_specials(tok) -> None:  # type: ignore[no-untyped-def]
    # offline-assets.md: no automatic BOS, bos <|im_start|> (1), eos <|im_end|> (2), pad/unk 0.
    assert tok("Hello world").input_ids == tok("Hello world", add_special_tokens=False).input_ids
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 2, 0, 0)
    assert len(tok) == 49152
    assert "<|im_start|>" in tok.chat_template


def test_tokenizer_survives_save_and_reload(tok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "Instruction: rate this.\n<|im_start|>user\nQuoi? 12345 <|im_end|>"
    assert again(text).input_ids == tok(text).input_ids


def test_tiny_random_lm_is_seeded_and_small() -> None:
    a, b, c = (tiny_random_lm(seed=s, cache=LM_CACHE) for s in (0, 0, 1))
    pa, pb, pc = (next(m.model.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.n_params < 5_000_000 and a.model.config.num_hidden_layers == 2
    assert a.max_length == 512


def test_resolve_device_and_dtype() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(InputError, match="unknown dtype"):
        resolve_dtype("int3", torch.device("cpu"))
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("warp-drive")


def test_load_lm_refuses_bad_names(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no config.json"):
        load_lm(tmp_path, device="cpu")
    # conftest sets HF_HUB_OFFLINE=1: a hub id fails at once with a clear message.
    with pytest.raises(InputError, match="cannot load language model"):
        load_lm("nobody/no-such-model-xyz", device="cpu")
    with pytest.raises(InputError, match="max_length"):
        load_lm("default", max_length=2)


def test_load_lm_local_folder_roundtrip(tmp_path: Path) -> None:
    tiny = tiny_random_lm(cache=LM_CACHE)
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    lm = load_lm(tmp_path, device="cpu", dtype="float32", max_length=128)
    assert lm.max_length == 128 and lm.n_params == tiny.n_params
    assert abs(text_loss(lm.model, lm.tokenizer) - text_loss(tiny.model, tiny.tokenizer)) < 1e-5


def test_default_lm_loads_from_cache_and_passes_loss_check() -> None:
    # Uses the materialised folder (built on first use); the load re-runs the loss check.
    lm = load_lm("default", device="cpu", cache=LM_CACHE)
    assert lm.name == DEFAULT_LM_NAME and 130e6 < lm.n_params < 140e6
    assert abs(lm.source["loss_check"] - lm.source["gguf_loss"]) < 1e-3
    # A sane LM scores ordinary English at a few nats per token; a broken tokenizer gives ~9.
    assert 1.0 < lm.source["loss_check"] < 4.0


@pytest.mark.slow
def test_reloaded_tokenizer_matches_in_memory_gguf_loss() -> None:
    """The reloaded (repaired) tokenizer scores text exactly like the in-memory GGUF one."""
    from nncift.lm import _load_gguf, smollm2_package_folder
    from transformers import AutoTokenizer

    folder = materialize_default_lm(LM_CACHE)
    gguf_model, gguf_tok = _load_gguf(smollm2_package_folder())
    ref = text_loss(gguf_model, gguf_tok)
    repaired = AutoTokenizer.from_pretrained(folder)
    assert abs(text_loss(gguf_model, repaired) - ref) < 1e-4
    # Same token ids as the in-memory GGUF tokenizer, special tokens included. (offline-assets.md
    # reports the naive save/reload as broken; with transformers 5.24 here it was not, so the
    # test pins the repaired tokenizer to the GGUF one rather than the naive one's failure.)
    text = "<|im_start|>user\nWhat is 2+2? Réponds en français.<|im_end|>\n"
    assert repaired(text).input_ids == gguf_tok(text, add_special_tokens=False).input_ids


# --------------------------------------------------------------------------------------------
# LM families: token probabilities equal the model's own logits, or the family is refused
# --------------------------------------------------------------------------------------------

#: Tiny random decoders of each family with a head nncift handles; the scalings are far from 1
#: (and initializer_range large) so a path that ignores them is wrong by a wide margin.
_COMMON = dict(
    vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    initializer_range=0.5, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)  # fmt: skip


def _family_config(family: str):  # type: ignore[no-untyped-def]
    import transformers as tf

    if family == "llama":
        return tf.LlamaConfig(**_COMMON)
    if family == "granite":  # logits / logits_scaling
        return tf.GraniteConfig(**_COMMON, logits_scaling=4.0)
    if family == "cohere":  # logits * logit_scale
        return tf.CohereConfig(**_COMMON, logit_scale=3.0)
    if family == "gemma2":  # tanh soft-cap
        return tf.Gemma2Config(
            **_COMMON, head_dim=8, final_logit_softcapping=2.0, sliding_window=16
        )
    raise AssertionError(family)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> dict[str, Path]:
    """Each family saved as a local model folder with the tiny test LM's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    out = {}
    for family in ("llama", "granite", "cohere", "gemma2"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(_family_config(family))
        d = tmp_path_factory.mktemp(f"lm-{family}")
        model.save_pretrained(d)
        tok.save_pretrained(d)
        out[family] = d
    return out


@pytest.mark.parametrize("family", ["llama", "granite", "cohere", "gemma2"])
def test_token_logprobs_equal_the_models_own_logits(
    family: str, family_dirs: dict[str, Path]
) -> None:
    from nncift.influence import CostMeter
    from nncift.influence._lm import (
        Seq,
        next_token_logprobs,
        prefix_response_logprobs,
        response_logprobs,
        supports_kv_reuse,
    )

    lm = load_lm(family_dirs[family], device="cpu", dtype="float32", max_length=256)
    texts = ["Hello there, how are you today? I am fine, thanks.", "Paris is in France. Yes."]
    seqs = [list(lm.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    want = []
    with torch.no_grad():
        for ids in seqs:  # log_softmax of the model's own forward, one sequence at a time
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0].float()
            want.append(torch.log_softmax(logits, dim=-1).numpy())
    start = 4
    got = response_logprobs(lm, [Seq(ids, start) for ids in seqs], CostMeter())
    for ids, lp, w in zip(seqs, got, want, strict=True):
        ref = w[range(start - 1, len(ids) - 1), ids[start:]]
        assert abs(lp - ref).max() < 1e-4, family
    nxt = next_token_logprobs(lm, seqs, CostMeter())
    for row, w in zip(nxt, want, strict=True):
        assert abs(row - w[-1]).max() < 1e-4, family
    if supports_kv_reuse(lm.model):  # DELIFT's shared-prefix path (not Gemma-2's sliding window)
        pre = seqs[0][:3]
        sufs = [Seq(ids[3:], 1) for ids in seqs]
        both = prefix_response_logprobs(lm, pre, sufs, CostMeter())
        for ids, lp in zip(seqs, both, strict=True):
            with torch.no_grad():
                full = lm.model(input_ids=torch.tensor([pre + ids[3:]])).logits[0].float()
            w = torch.log_softmax(full, dim=-1).numpy()
            ref = w[range(3, 3 + len(ids) - 4), ids[4:]]
            assert abs(lp - ref).max() < 1e-4, family


def test_a_head_nncift_does_not_reproduce_is_refused(tiny_lm_dir: Path) -> None:
    from nncift.influence import CostMeter
    from nncift.influence._lm import Seq, logits_path, response_logprobs
    from transformers import LlamaForCausalLM

    class OffsetHeadLM(LlamaForCausalLM):  # a family that post-processes its logits
        def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2.5
            return out

    lm = load_lm(tiny_lm_dir, device="cpu", dtype="float32")
    odd = OffsetHeadLM(lm.model.config)
    odd.load_state_dict(lm.model.state_dict())
    lm.model = odd.eval()
    with pytest.raises(InputError, match=r"OffsetHeadLM \(model_type 'llama'\).*differ"):
        logits_path(lm)
    with pytest.raises(InputError, match="OffsetHeadLM"):
        response_logprobs(lm, [Seq([5, 6, 7, 8], 2)], CostMeter())


def test_a_config_attribute_the_forward_ignores_falls_back_to_the_plain_head(
    family_dirs: dict[str, Path],
) -> None:
    from nncift.influence._lm import logits_path

    lm = load_lm(family_dirs["llama"], device="cpu", dtype="float32")
    lm.model.config.logit_scale = 3.0  # Llama's forward never reads it
    path = logits_path(lm)
    assert path.scale is None and path.softcap is None


# --------------------------------------------------------------------------------------------
# BOS: every sequence nncift feeds an LM starts the same way
# --------------------------------------------------------------------------------------------


def _bos_tokenizer(tiny_lm_dir: Path, chat_bos: bool = False):  # type: ignore[no-untyped-def]
    """The tiny LM's tokenizer made to add a BOS (id 0) like Llama-2's. With `chat_bos`, its
    chat template also writes the BOS text, like Llama-3's."""
    import json

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    base = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    state = json.loads(base.backend_tokenizer.to_str())
    bos = {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}
    state["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}},
    }  # fmt: skip
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
    )  # fmt: skip
    tok.chat_template = ("<|endoftext|>" if chat_bos else "") + base.chat_template
    assert tok("hi").input_ids[0] == 0 and tok("hi", add_special_tokens=False).input_ids[0] != 0
    return tok


def _starts_once(seq: list[int], bos: int = 0) -> bool:
    return seq[0] == bos and seq[1] != bos


def test_bos_helpers(tiny_lm_dir: Path) -> None:
    from nncift.influence._lm import bos_ids, cut_left, encode, start_sequence

    plain = tiny_random_lm(cache=LM_CACHE).tokenizer
    assert bos_ids(plain) == []  # SmolLM2 adds none: nothing changes for it
    assert encode(plain, "hi", first=True) == encode(plain, "hi")
    tok = _bos_tokenizer(tiny_lm_dir)
    assert bos_ids(tok) == [0]
    assert encode(tok, "", first=True) == [0]
    ids = encode(tok, "one two three four five six", first=True)
    assert start_sequence(tok, ids) == ids  # never a second BOS
    cut = cut_left(tok, ids, 3)
    assert cut == [0, *ids[-2:]]


@pytest.mark.parametrize("chat", ["never", "auto", "auto-bos-in-template"])
def test_every_selectit_prompt_starts_with_one_bos(
    chat: str, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nncift.influence.selectit as selectit
    import numpy as np
    from nncift.influence import TextItems

    tok = _bos_tokenizer(tiny_lm_dir, chat_bos=chat == "auto-bos-in-template")
    lm = tiny_random_lm(tokenizer=tok)
    seen: list[list[int]] = []

    def record(lm_, prompts, meter, **kw):  # type: ignore[no-untyped-def]
        seen.extend(list(p) for p in prompts)
        return np.zeros((len(prompts), lm_.model.config.vocab_size), np.float32)

    monkeypatch.setattr(selectit, "next_token_logprobs", record)
    pool = TextItems(["What is 2+2? " * 40, "Say hi."], ["4", "Hi!"])
    fn = selectit.SelectIT(pool, lm=lm, chat_template=chat.split("-")[0], max_sample_tokens=16)
    fn.token_level(np.arange(2), selectit.CostMeter())
    # One of the default rating prompts begins with the sample itself: it used to get no BOS.
    assert len(seen) == 2 * len(selectit.RATING_PROMPTS)
    assert all(_starts_once(s) for s in seen), [s[:3] for s in seen]


def test_less_and_lora_inputs_keep_the_bos_when_cut(tiny_lm_dir: Path) -> None:
    from nncift.downstream import _chat, training_example
    from nncift.influence import TextItems
    from nncift.influence.less import Less

    tok = _bos_tokenizer(tiny_lm_dir)
    lm = tiny_random_lm(tokenizer=tok, max_length=64)
    long_prompt = "Explain the water cycle in detail. " * 30
    items = TextItems(
        [long_prompt, "Say hi.", "Count to three. " * 8], ["It rains.", "Hi!", "1 2 3"]
    )
    fn = Less(items, items, lm=lm, max_prompt_tokens=20)
    seqs = [fn._seq(items, i)[0] for i in range(3)]
    assert all(_starts_once(s) for s in seqs), [s[:3] for s in seqs]
    assert max(len(s) for s in seqs) <= 64
    for prompt, resp in zip(items.prompts, items.responses, strict=True):
        ids, labels = training_example(lm, prompt, resp, max_length=32)
        assert _starts_once(ids) and len(ids) <= 32 and labels[0] == -100
    for template in (tok.chat_template, None):  # chat and plain-text prompts
        tok.chat_template = template
        assert _starts_once(_chat(lm, [("q", "a")], "Say hi."))


def test_materialised_folder_follows_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The GGUF conversion is replaced by the tiny model; the folder is built and saved as for
    # the real one (safetensors writes its file 0600, the temporary folder starts 0700).
    import os
    import stat
    import time

    import nncift.lm as lm_mod

    tiny = tiny_random_lm(cache=LM_CACHE)
    monkeypatch.setattr(lm_mod, "_load_gguf", lambda src: (tiny.model, tiny.tokenizer))
    src = tmp_path / "src"
    src.mkdir()
    (src / lm_mod._GGUF_FILE).write_bytes(b"stand-in")
    target = lm_mod.default_lm_folder(tmp_path / "cache")
    target.parent.mkdir(parents=True)
    old = os.umask(0o022)
    try:
        lm_mod._materialize(src, target, time.perf_counter())
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in target.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o644}, modes
