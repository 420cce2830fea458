"""One progress display: no third-party tqdm bars over nncift's own, and `-q` silences all."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

#: What a tqdm bar leaves in captured output ("100%|████| 20/20 [00:00<00:00, 5.3it/s]").
TQDM_TEXT = re.compile(r"it/s\]|s/it\]|Loading weights|Writing model shards|de-quantizing")


@pytest.fixture
def bars_on() -> object:
    """Third-party bars enabled as a fresh process has them (another test may have turned
    them off), restored afterwards."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as hf_logging

    was_hf, was_hub = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    hf_logging.enable_progress_bar()
    enable_progress_bars()
    yield
    if not was_hf:
        hf_logging.disable_progress_bar()
    elif not was_hub:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def test_loading_an_lm_draws_no_library_bar(
    tiny_lm_dir: Path, bars_on: object, capfd: pytest.CaptureFixture[str]
) -> None:
    from nncift.lm import load_lm
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir))  # the bar a plain load draws
    assert TQDM_TEXT.search(capfd.readouterr().err), "the baseline should draw a bar"
    load_lm(tiny_lm_dir, device="cpu", dtype="float32")
    out, err = capfd.readouterr()
    assert not TQDM_TEXT.search(out + err), err
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is restored


def test_gguf_conversion_bar_is_switched_off(
    bars_on: object, capfd: pytest.CaptureFixture[str]
) -> None:
    import transformers.modeling_gguf_pytorch_utils as gguf
    from nncift.progress import third_party_bars_off

    def convert() -> None:  # what transformers does while de-quantizing a GGUF file
        for _ in gguf.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass

    convert()
    assert "de-quantizing" in capfd.readouterr().err
    with third_party_bars_off():
        convert()
    assert capfd.readouterr().err == ""
    convert()  # restored afterwards
    assert "de-quantizing" in capfd.readouterr().err


def _select(tmp_path: Path, tiny_lm_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "nncift")
    # A cache of its own, so the embedder is loaded (and could draw its bar) in every run.
    env = dict(os.environ, NNCIFT_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    env.pop("TQDM_DISABLE", None)
    return subprocess.run(
        [exe, *flags, "select", "--pool", "builtin:ifbench", "--limit", "40", "--method",
         "selectit", "--lm", str(tiny_lm_dir), "--u", "0.5", "--budget", "5",
         "--out", str(tmp_path / "o.jsonl")],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def test_quiet_cli_prints_nothing(tmp_path: Path, tiny_lm_dir: Path) -> None:
    proc = _select(tmp_path, tiny_lm_dir, "-q")
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 5


def test_cli_shows_only_its_own_display(tmp_path: Path, tiny_lm_dir: Path) -> None:
    proc = _select(tmp_path, tiny_lm_dir)
    assert proc.returncode == 0, proc.stderr
    assert not TQDM_TEXT.search(proc.stdout + proc.stderr), proc.stderr
    # The summary is the only thing on stdout; nncift's own bars go to stderr.
    assert "selected 5 of 40 items" in proc.stdout
    assert "labelling" not in proc.stdout
