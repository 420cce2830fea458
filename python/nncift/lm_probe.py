"""How fast the LM runs on this machine: a short timed probe, cached as a small JSON file.

`nncift select --dry-run` plans the LM cost of DELIFT, LESS and SelectIT from the token counts
of the user's texts (`nncift.plan`) and from what this module measures: the seconds of one
batched pass of the LM as

    seconds = overhead + per_token * tokens + per_attention * attention + per_head * head_tokens

where ``tokens`` are the padded tokens of the batch, ``attention`` the query x key pairs its
attention computes (``B * width * (prefix + width)``) and ``head_tokens`` the positions that go
through the output layer. The coefficients are fitted from a few forward passes at three or four
lengths, through the very functions the influence functions call
(`nncift.influence._lm.response_logprobs`). For LESS the probe also times its setup (copying the
model and attaching LoRA), batched per-example gradients (forward + backward) at a few lengths,
and its random projection, through `nncift.influence.less.Less` itself.

Results are cached per LM, dtype, device, torch thread count and torch version under
``<cache>/probe/``, so only the first plan on a machine pays the few seconds of the probe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nncift.io import write_text_atomic

log = logging.getLogger(__name__)

#: Bumped when what the probe measures or how it fits changes (old cache files are ignored).
PROBE_VERSION = 1
#: Probe batches as (sequences, length); the last entries carry the most weight in the fit.
_FORWARD_SHAPES = ((1, 16), (4, 64), (2, 192), (1, 384))
_TRAIN_SHAPES = ((1, 16), (4, 32), (2, 96), (1, 192))
#: Text whose token ids fill the probe sequences (any ids cost the same).
_FILLER = (
    "The quick brown fox jumps over the lazy dog while the committee reviews the annual "
    "budget, the weather report and a long list of instructions for the new assistant. "
)


@dataclass(frozen=True)
class PassModel:
    """Seconds of one batched pass, linear in its work (see the module docstring)."""

    overhead: float
    per_token: float
    per_attention: float
    per_head: float = 0.0

    def seconds(
        self, tokens: float, attention: float, head: float = 0.0, batches: int = 1
    ) -> float:
        return (
            batches * self.overhead
            + self.per_token * tokens
            + self.per_attention * attention
            + self.per_head * head
        )

    def tokens_per_second(self, length: int = 256, batch: int = 4) -> float:
        """Throughput on a batch of `batch` sequences of `length` tokens (output layer on
        one position per sequence, as a probe pass)."""
        t = batch * length
        return t / max(1e-12, self.seconds(t, t * length, batch))


@dataclass
class LessProbe:
    """LESS's own costs on this LM with given LoRA / projection settings."""

    settings: dict[str, Any]
    #: Copying the model and attaching the LoRA adapter (once per run).
    setup_seconds: float
    #: Batched per-example gradients (forward + backward + per-example extraction).
    gradients: PassModel
    #: LoRA parameters (the projection's input dimension) and the projection's output size.
    grad_dim: int
    proj_dim: int
    #: Generating one block of the projection matrix, and projecting n rows through one block:
    #: ``proj_overhead + proj_per_row * n`` seconds.
    proj_gen_seconds: float
    proj_overhead: float
    proj_per_row: float


@dataclass
class Throughput:
    """What the probe measured for one LM on this machine."""

    key: dict[str, Any]
    #: Loading the LM (`nncift.lm.load_lm`), as the run's label stage does.
    load_seconds: float
    #: A forward pass through the decoder, plus the output layer per scored position.
    forward: PassModel
    less: dict[str, LessProbe] = field(default_factory=dict)
    load_average: list[float] = field(default_factory=list)
    probe_seconds: float = 0.0
    measured_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Throughput:
        less = {
            k: LessProbe(**{**v, "gradients": PassModel(**v["gradients"])})
            for k, v in d.get("less", {}).items()
        }
        return cls(
            key=d["key"],
            load_seconds=float(d["load_seconds"]),
            forward=PassModel(**d["forward"]),
            less=less,
            load_average=list(d.get("load_average", [])),
            probe_seconds=float(d.get("probe_seconds", 0.0)),
            measured_at=str(d.get("measured_at", "")),
        )


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def probe_key(lm: str, device: str | None, dtype: str | None) -> dict[str, Any]:
    """What a probe result depends on: the LM, its resolved dtype and device, torch's threads."""
    import torch

    from nncift.lm import DEFAULT_LM_ALIASES, DEFAULT_LM_NAME, resolve_device, resolve_dtype

    dev = resolve_device(device or "auto")
    name = DEFAULT_LM_NAME if lm in DEFAULT_LM_ALIASES else str(lm)
    path = Path(name).expanduser()
    if path.exists():
        name = str(path.resolve())
    key = {
        "version": PROBE_VERSION,
        "lm": name,
        "dtype": str(resolve_dtype(dtype or "auto", dev)).removeprefix("torch."),
        "device": dev.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if dev.type == "cuda":
        key["gpu"] = torch.cuda.get_device_name(dev)
    return key


def probe_path(cache_dir: str | os.PathLike[str], key: dict[str, Any]) -> Path:
    return Path(cache_dir) / "probe" / f"lm-{_digest(key)}.json"


def less_settings_key(fn: Any) -> dict[str, Any]:
    """The LESS settings its per-pass costs depend on (`fn` is a `Less`)."""
    return {
        "lora_r": fn.cfg.lora_r,
        "target_modules": sorted(fn.cfg.target_modules),
        "proj_dim": fn.proj_dim,
    }


def read_cached(path: Path) -> Throughput | None:
    try:
        return Throughput.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------- fitting


def fit_nonnegative(features: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Least squares ``features @ coef ~ seconds`` with coef >= 0 (drop negative terms, refit).

    Rows are weighted by 1 / seconds, so the fit is good in relative terms at every size.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(seconds, dtype=np.float64)
    w = 1.0 / np.maximum(y, 1e-6)
    active = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active] * w[:, None], y * w, rcond=None)
        if (sol >= 0).all():
            coef[:] = 0.0
            coef[active] = sol
            return coef
        active = [a for a, s in zip(active, sol, strict=True) if s > 0]
    return coef


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize(device)


def _filler_ids(tokenizer: Any, n: int) -> list[int]:
    from nncift.influence._lm import encode

    base = encode(tokenizer, _FILLER)
    reps = n // max(1, len(base)) + 1
    return (base * reps)[:n]


def _scale(device: Any) -> int:
    """Probe batches grow on a GPU, where small ones measure only the launch overhead."""
    return 16 if getattr(device, "type", "cpu") == "cuda" else 1


def measure_forward(lm: Any) -> PassModel:
    """Fit the forward `PassModel` from a few timed passes of `response_logprobs`."""
    from nncift.influence import CostMeter
    from nncift.influence._lm import Seq, response_logprobs

    def timed(b: int, length: int, start: int) -> float:
        ids = _filler_ids(lm.tokenizer, length)
        seqs = [Seq(ids, start)] * b
        _sync(lm.device)
        t0 = time.perf_counter()
        response_logprobs(lm, seqs, CostMeter(), batch_tokens=b * length, max_batch=b)
        _sync(lm.device)
        return time.perf_counter() - t0

    s = _scale(lm.device)
    cap = max(16, min(lm.max_length, 384))
    shapes = [(b * s, min(n, cap)) for b, n in _FORWARD_SHAPES]
    timed(1, 16, 15)  # warm-up: first calls allocate
    rows, secs = [], []
    for b, n in shapes:
        t = min(timed(b, n, n - 1) for _ in range(2 if b * n <= 256 else 1))
        rows.append([1.0, b * n, b * n * n])
        secs.append(t)
    coef = fit_nonnegative(np.array(rows), np.array(secs))
    # The output layer: the same batch with every position scored, minus it with one scored.
    b, n = shapes[2]
    with_head = timed(b, n, 1)
    per_head = max(0.0, (with_head - secs[2]) / (b * (n - 2)))
    return PassModel(float(coef[0]), float(coef[1]), float(coef[2]), per_head)


def measure_less(fn: Any) -> LessProbe:
    """Time LESS's setup, per-example gradients and projection on `fn` (a `Less`)."""
    import torch

    from nncift.influence import CostMeter
    from nncift.influence.less import _PROJ_CHUNK, RademacherProjection

    lm = fn.lm
    t0 = time.perf_counter()
    fn._ensure_model()
    setup = time.perf_counter() - t0

    def timed(b: int, length: int) -> float:
        ids = _filler_ids(lm.tokenizer, length)
        seqs = [(ids, max(1, length // 2))] * b
        _sync(lm.device)
        t0 = time.perf_counter()
        fn.per_example_gradients(seqs, CostMeter())
        _sync(lm.device)
        return time.perf_counter() - t0

    s = _scale(lm.device)
    cap = max(16, min(lm.max_length, 256))
    timed(1, 16)  # warm-up
    rows, secs = [], []
    for b, n in ((b * s, min(n, cap)) for b, n in _TRAIN_SHAPES):
        rows.append([1.0, b * n, b * n * n])
        secs.append(min(timed(b, n) for _ in range(2 if b * n <= 128 else 1)))
    coef = fit_nonnegative(np.array(rows), np.array(secs))

    dim = int(sum(p.numel() for p in fn._params))
    proj = RademacherProjection(2 * _PROJ_CHUNK, fn.proj_dim, seed=0, cache_bytes=1 << 62)
    g1 = torch.zeros((1, 2 * _PROJ_CHUNK))
    g8 = torch.zeros((8, 2 * _PROJ_CHUNK))
    t0 = time.perf_counter()
    proj.project(g1)  # generates and keeps both blocks
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    proj.project(g1)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    proj.project(g8)
    eight = time.perf_counter() - t0
    per_row = max(0.0, (eight - one) / 7) / 2
    overhead = max(0.0, one / 2 - per_row)
    return LessProbe(
        settings=less_settings_key(fn),
        setup_seconds=setup,
        gradients=PassModel(float(coef[0]), float(coef[1]), float(coef[2])),
        grad_dim=dim,
        proj_dim=int(fn.proj_dim),
        proj_gen_seconds=max(0.0, (first - one) / 2),
        proj_overhead=overhead,
        proj_per_row=per_row,
    )


# ---------------------------------------------------------------------------- entry point


def _load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def load_timed(
    lm: str, device: str | None, dtype: str | None, max_length: int
) -> tuple[Any, float]:
    """`load_lm` as the run calls it, and its seconds (a one-time materialisation of the
    packaged default LM is done first and not counted: the run will find it done)."""
    from nncift.lm import DEFAULT_LM_ALIASES, load_lm, materialize_default_lm

    if lm in DEFAULT_LM_ALIASES:
        materialize_default_lm()
    t0 = time.perf_counter()
    model = load_lm(lm, device=device or "auto", dtype=dtype or "auto", max_length=max_length)
    return model, time.perf_counter() - t0


def get_throughput(
    cache_dir: str | os.PathLike[str],
    *,
    lm: str,
    device: str | None,
    dtype: str | None,
    max_length: int,
    less: tuple[dict[str, Any], Callable[[Any], Any]] | None = None,
    model: Any = None,
) -> tuple[Throughput, Any, bool]:
    """The cached probe result for this LM and machine, probing (and caching) what is missing.

    less: (`less_settings_key` of the run's LESS function, a callable ``LM -> Less`` that
        builds it); when given, LESS's part of the probe is measured too, once per settings.
    Returns (throughput, the loaded LM or None when everything came from the cache, whether
    everything came from the cache).
    """
    key = probe_key(lm, device, dtype)
    path = probe_path(cache_dir, key)
    result = read_cached(path)
    if result is not None and result.key != key:
        result = None
    less_key = _digest(less[0]) if less is not None else None
    if result is not None and (less_key is None or less_key in result.less):
        return result, None, True
    if model is None:
        model, load_seconds = load_timed(lm, device, dtype, max_length)
    else:
        load_seconds = 0.0
    t0 = time.perf_counter()
    if result is None:
        result = Throughput(
            key=key,
            load_seconds=load_seconds,
            forward=measure_forward(model),
            load_average=_load_average(),
            measured_at=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
    if less is not None and less_key is not None:
        result.less[less_key] = measure_less(less[1](model))
    result.probe_seconds += time.perf_counter() - t0
    log.info(
        "LM probe (%s): %.0f tokens/s forward, load %.1f s, probe %.1f s",
        key["lm"], result.forward.tokens_per_second(), load_seconds, result.probe_seconds,
    )  # fmt: skip
    _save(path, result)
    return result, model, False


def _save(path: Path, result: Throughput) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, result.to_json())
    except OSError as exc:  # a read-only cache only costs the next plan another probe
        log.warning("could not cache the LM probe at %s: %s", path, exc)


def lm_shell(lm: str, *, device: str | None, dtype: str | None, max_length: int) -> Any:
    """An `LM` with the real tokenizer and configuration but its weights on torch's meta
    device: enough to build the influence functions' inputs for a plan, with no weights read.

    Raises what `load_lm` raises when the model cannot be found (it is called to say so).
    """
    from nncift.extras import require

    require("torch", "transformers", purpose=f"planning with the language model {lm!r}", extra="lm")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from nncift.lm import (
        DEFAULT_LM_ALIASES,
        DEFAULT_LM_NAME,
        LM,
        load_lm,
        materialize_default_lm,
        resolve_device,
        resolve_dtype,
    )

    dev = resolve_device(device or "auto")
    dt = resolve_dtype(dtype or "auto", dev)
    name = str(lm)
    if name in DEFAULT_LM_ALIASES:
        where: str = str(materialize_default_lm())
        name = DEFAULT_LM_NAME
    else:
        where = name
    try:
        tok = AutoTokenizer.from_pretrained(where)
        cfg = AutoConfig.from_pretrained(where)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except (OSError, ValueError):
        # The run's own loader words the error.
        load_lm(lm, device=device or "auto", dtype=dtype or "auto", max_length=max_length)
        raise
    return LM.wrap(
        model, tok, name=name, device=dev, dtype=dt, max_length=max_length, source={"shell": True}
    )


__all__ = [
    "LessProbe",
    "PassModel",
    "Throughput",
    "fit_nonnegative",
    "get_throughput",
    "lm_shell",
    "measure_forward",
    "measure_less",
    "probe_key",
    "probe_path",
]
