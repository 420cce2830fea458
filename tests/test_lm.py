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
