"""Shared LM machinery: tokenising segments, batched scoring of response tokens, KV reuse.

A scored sequence is a list of token ids plus the index where the response starts; the
probability of response token ``ids[k]`` is read from the logits at position ``k - 1``
(the next-token shift the reference scripts forgot). Only the hidden states of those
positions go through the output layer: for a 49k vocabulary that is most of the saving on
long prompts, and it bounds the memory of a batch (no ``(B, L, V)`` logits tensor).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nncift.errors import InputError
from nncift.influence.base import CostMeter

#: Response positions pushed through the output layer at once (bounds a (n, V) float32 block).
_HEAD_CHUNK = 512
#: Text of the one-off probe that checks the output-layer path against the model's logits.
LOSS_PROBE_TEXT = "The capital of France is Paris. It is known for the Eiffel Tower."


@dataclass
class Seq:
    """Token ids (int list) and the index of the first response token (>= 1)."""

    ids: list[int]
    start: int


_BOS: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()


def bos_ids(tokenizer: Any) -> list[int]:
    """The ids the tokenizer itself puts before a text when asked for special tokens
    (Llama-2's ``<s>``); [] for tokenizers that add none (SmolLM2, GPT-2, Qwen)."""
    with contextlib.suppress(TypeError):
        if tokenizer in _BOS:
            return list(_BOS[tokenizer])
    plain = list(tokenizer("a", add_special_tokens=False).input_ids)
    full = list(tokenizer("a", add_special_tokens=True).input_ids)
    found: list[int] | None = None
    for k in range(len(full) - len(plain) + 1):
        if plain and full[k : k + len(plain)] == plain:
            found = full[:k]
            break
    if found is None:
        bos = getattr(tokenizer, "bos_token_id", None)
        found = [bos] if isinstance(bos, int) and full[:1] == [bos] else []
    with contextlib.suppress(TypeError):
        _BOS[tokenizer] = found
    return list(found)


def start_sequence(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """`ids` as the start of a sequence fed to the LM: with the tokenizer's own BOS, once.

    The one place nncift decides how a sequence starts (DELIFT headers, every SelectIT rating
    prompt, LESS and LoRA inputs, generation prompts). Text from a chat template that
    already begins with the BOS (Llama-3) gets no second one.
    """
    bos = bos_ids(tokenizer)
    ids = list(ids)
    if not bos or ids[: len(bos)] == bos:
        return ids
    return bos + ids


def cut_left(tokenizer: Any, ids: Sequence[int], keep: int) -> list[int]:
    """`start_sequence(ids)` cut from the left to at most `keep` tokens; the BOS stays first.

    Cutting the plain list would drop the BOS of a long prompt and no other's.
    """
    bos = bos_ids(tokenizer)
    ids = list(ids)
    body = ids[len(bos) :] if bos and ids[: len(bos)] == bos else ids
    room = max(0, keep - len(bos))
    return start_sequence(tokenizer, body[len(body) - room :] if room else [])


def encode(tokenizer: Any, text: str, *, first: bool = False) -> list[int]:
    """Token ids of `text`, without special tokens. The first segment of a sequence
    (``first=True``) starts it via `start_sequence` (the BOS, if the model has one), even
    when the text is empty."""
    ids = list(tokenizer(text, add_special_tokens=False).input_ids) if text else []
    return start_sequence(tokenizer, ids) if first else ids


def pad_id(tokenizer: Any) -> int:
    """A harmless id for padded positions (masked out; any valid id works), so a tokenizer
    without a pad token is fine."""
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, int):
            return v
    return 0


#: Output-layer post-processing nncift applies itself, by the config attribute that turns it on
#: (every family is still checked against its own logits by `logits_path`).
HANDLED_HEADS = {
    "final_logit_softcapping": "tanh soft-cap (Gemma 2 / 3)",
    "logits_scaling": "logits divided by it (Granite)",
    "logit_scale": "logits multiplied by it (Cohere)",
}


@dataclass(frozen=True)
class LogitsPath:
    """How a causal LM turns the decoder's last hidden states into its logits.

    nncift runs the decoder body and then the output layer only at the positions it scores,
    which bounds memory (no ``(B, L, V)`` tensor). `logits` reproduces the model's own
    post-processing: `scale` multiplies the head's output (Granite's ``1/logits_scaling``,
    Cohere's ``logit_scale``), then `softcap` applies Gemma's ``tanh(x / c) * c``, in the
    head's dtype as the model's forward does.
    """

    body: Any
    head: Any
    scale: float | None = None
    softcap: float | None = None

    def logits(self, hidden: Any) -> Any:
        """Logits (n, V) float32 from last hidden states (n, H)."""
        import torch

        out = self.head(hidden)
        if self.scale is not None:
            out = out * self.scale
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out.float()


_PATHS: weakref.WeakKeyDictionary[Any, LogitsPath] = weakref.WeakKeyDictionary()


def _head_candidates(model: Any, body: Any, head: Any) -> list[LogitsPath]:
    """The family's own transform (from its config) first, then a plain head."""
    cfg = model.config
    scale: float | None = None
    s = getattr(cfg, "logits_scaling", None)
    if isinstance(s, (int, float)) and s not in (0, 1):
        scale = 1.0 / float(s)
    s = getattr(cfg, "logit_scale", None)
    if isinstance(s, (int, float)) and s != 1:
        scale = (scale or 1.0) * float(s)
    cap = getattr(cfg, "final_logit_softcapping", None)
    cap = float(cap) if isinstance(cap, (int, float)) and cap else None
    guess = LogitsPath(body, head, scale, cap)
    plain = LogitsPath(body, head)
    return [guess] if guess == plain else [guess, plain]


def logits_path(lm: Any) -> LogitsPath:
    """The decoder body and output layer of `lm`'s model, checked once against its own logits.

    A short probe compares log_softmax of ``model(ids).logits`` with the body-then-head path
    (tolerance: 1e-3 nats in float32, a few rounding steps of the largest logit in 16-bit
    dtypes). A family whose head post-processes logits in a way nncift does not reproduce is
    refused with an error naming it, instead of yielding wrong DELIFT / SelectIT values.
    """
    import torch

    model = lm.model
    cached = _PATHS.get(model)
    if cached is not None:
        return cached
    cfg = model.config
    family = f"{type(model).__name__} (model_type {getattr(cfg, 'model_type', '?')!r})"
    prefix = getattr(model, "base_model_prefix", "model")
    body = getattr(model, prefix, None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or head is None:
        raise InputError(f"{family}: not a causal LM with a separable output layer")
    vocab = int(getattr(cfg, "vocab_size", 0) or head.weight.shape[0])
    ids = encode(lm.tokenizer, LOSS_PROBE_TEXT)[:16] or list(range(1, 9))
    x = torch.tensor([[i % vocab for i in ids]], dtype=torch.long, device=lm.device)
    with torch.inference_mode():
        want = model(input_ids=x).logits[0].float()  # (L, V)
        hidden = body(input_ids=x).last_hidden_state[0]  # (L, H)
        ref = torch.log_softmax(want, dim=-1)
        tol = 1e-3
        if want.dtype != hidden.dtype or hidden.dtype != torch.float32:
            eps = torch.finfo(hidden.dtype).eps if hidden.dtype.is_floating_point else 0.0
            tol += 4.0 * eps * float(want.abs().max())
        worst = float("inf")
        for cand in _head_candidates(model, body, head):
            got = cand.logits(hidden)
            if got.shape != want.shape:
                continue
            worst = min(worst, float((torch.log_softmax(got, dim=-1) - ref).abs().max()))
            if worst <= tol:
                _PATHS[model] = cand
                return cand
    handled = "; ".join(f"{k}: {v}" for k, v in HANDLED_HEADS.items())
    raise InputError(
        f"{family}: the model's own logits differ from its decoder body + output layer by up "
        f"to {worst:.3g} nats (log-probability), so this family post-processes its logits in "
        f"a way nncift does not reproduce; DELIFT and SelectIT would get wrong values. Handled "
        f"besides a plain output layer: {handled}."
    )


def _token_logprobs(path: LogitsPath, hidden: Any, targets: Any) -> Any:
    """log p(targets) from hidden states `hidden` (n, H) float -> (n,) float32."""
    import torch

    out = []
    for s in range(0, hidden.shape[0], _HEAD_CHUNK):
        lp = torch.log_softmax(path.logits(hidden[s : s + _HEAD_CHUNK]), dim=-1)  # (n, V)
        out.append(lp.gather(1, targets[s : s + _HEAD_CHUNK, None])[:, 0])
    return torch.cat(out) if out else hidden.new_zeros(0)


def _batches(lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Group sequence indices, longest first, so that B * max_len <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * width > batch_tokens or len(cur) >= max_batch):
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    return groups


def right_pad(seqs: Sequence[Sequence[int]], group: Sequence[int], pid: int) -> tuple[Any, Any]:
    """`(ids, mask)` of the sequences `group` picks, right-padded with `pid` to the longest.

    Padding never influences real tokens of a causal LM given the attention mask.
    """
    import torch

    width = max(len(seqs[i]) for i in group)
    ids = torch.full((len(group), width), pid, dtype=torch.long)
    mask = torch.zeros((len(group), width), dtype=torch.long)
    for b, i in enumerate(group):
        ids[b, : len(seqs[i])] = torch.tensor(seqs[i])
        mask[b, : len(seqs[i])] = 1
    return ids, mask


def _gather_logprobs(
    path: LogitsPath,
    hidden: Any,
    ids: Any,
    group: Sequence[int],
    starts: Sequence[int],
    ends: Sequence[int],
    out: list[np.ndarray],
) -> None:
    """`out[i]` = log p of tokens `starts[i]:ends[i]` of batch row `b` (``group[b] == i``).

    Position k-1 of `hidden` predicts token k (the next-token shift); only the wanted
    positions go through the LM head, so a batch never builds its full logits tensor.
    """
    import torch

    dev = hidden.device
    rows, pos, tgt = [], [], []
    for b, i in enumerate(group):
        k = torch.arange(starts[i], ends[i])
        rows.append(torch.full_like(k, b))
        pos.append(k - 1)
        tgt.append(ids[b, k])
    r, p, t = torch.cat(rows), torch.cat(pos), torch.cat(tgt)
    lp = _token_logprobs(path, hidden[r.to(dev), p.to(dev)], t.to(dev)).cpu().numpy()
    offset = 0
    for i in group:
        n = ends[i] - starts[i]
        out[i] = lp[offset : offset + n].astype(np.float32)
        offset += n


def response_logprobs(
    lm: Any,
    seqs: Sequence[Seq],
    meter: CostMeter,
    *,
    batch_tokens: int = 4096,
    max_batch: int = 64,
) -> list[np.ndarray]:
    """log p of each response token given everything before it -> one float32 (T_k,) per seq.

    Sequences are right-padded into batches of at most `batch_tokens` tokens (padding
    never influences real tokens of a causal LM with an attention mask).
    """
    import torch

    dev = lm.device
    path = logits_path(lm)
    body = path.body
    pid = pad_id(lm.tokenizer)
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(seqs)
    for s in seqs:
        if s.start < 1:
            raise ValueError("a scored response needs at least one token before it")
    lengths = [len(s.ids) for s in seqs]
    with torch.inference_mode():
        for group in _batches(lengths, batch_tokens, max_batch):
            ids, mask = right_pad([s.ids for s in seqs], group, pid)
            hidden = body(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
            meter.forward(len(group), sum(lengths[i] for i in group))
            _gather_logprobs(path, hidden, ids, group, [s.start for s in seqs], lengths, out)
    return out


def _cache_kwarg(body: Any) -> str:
    """Name of the cache argument: `cache` in transformers >= 5.2x, `past_key_values` before."""
    import inspect

    params = inspect.signature(body.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def supports_kv_reuse(model: Any) -> bool:
    """Whether prefix KV tensors can be shared across a batch (a standard DynamicCache model)."""
    cfg = model.config
    if getattr(cfg, "is_encoder_decoder", False):
        return False
    # Sliding-window / hybrid caches have layer types a plain DynamicCache would misuse.
    layer_types = getattr(cfg, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        return False
    return not (getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True))


def prefix_response_logprobs(
    lm: Any,
    prefix: Sequence[int],
    suffixes: Sequence[Seq],
    meter: CostMeter,
    *,
    batch_tokens: int = 4096,
    max_batch: int = 64,
) -> list[np.ndarray]:
    """Like `response_logprobs` for sequences ``prefix + suffix``, running the prefix once.

    The prefix's keys and values are computed once and broadcast over each batch of
    suffixes (`Seq.start` indexes into the suffix and must be >= 1). Results equal
    `response_logprobs` on the concatenated sequences up to float rounding.
    """
    import torch
    from transformers import DynamicCache

    dev = lm.device
    path = logits_path(lm)
    body = path.body
    pid = pad_id(lm.tokenizer)
    plen = len(prefix)
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(suffixes)
    if plen == 0:
        return response_logprobs(
            lm, suffixes, meter, batch_tokens=batch_tokens, max_batch=max_batch
        )
    lengths = [len(s.ids) for s in suffixes]
    starts = [s.start for s in suffixes]
    with torch.inference_mode():
        pids = torch.tensor([list(prefix)], dtype=torch.long, device=dev)
        cache = DynamicCache(config=lm.model.config)
        ckw = _cache_kwarg(body)
        body(input_ids=pids, use_cache=True, **{ckw: cache})
        meter.forward(1, plen)
        # (1, kv_heads, plen, head_dim) per layer; `supports_kv_reuse` vetted the layer type.
        kv: list[tuple[Any, Any]] = [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[union-attr]
        # Attention over the prefix costs B * plen per suffix token; keep batches within budget.
        for group in _batches([n + plen for n in lengths], batch_tokens + plen, max_batch):
            B = len(group)
            width = max(lengths[i] for i in group)
            ids = torch.full((B, width), pid, dtype=torch.long)
            mask = torch.zeros((B, plen + width), dtype=torch.long)
            mask[:, :plen] = 1
            for b, i in enumerate(group):
                ids[b, : lengths[i]] = torch.tensor(suffixes[i].ids)
                mask[b, plen : plen + lengths[i]] = 1
            batch_cache = DynamicCache(
                ddp_cache_data=[(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)) for k, v in kv],
                config=lm.model.config,
            )
            pos_ids = torch.arange(plen, plen + width, device=dev).unsqueeze(0).expand(B, -1)
            hidden = body(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                position_ids=pos_ids,
                use_cache=True,
                **{ckw: batch_cache},
            ).last_hidden_state
            meter.forward(B, sum(lengths[i] for i in group))
            _gather_logprobs(path, hidden, ids, group, starts, lengths, out)
    return out


def next_token_logprobs(
    lm: Any,
    prompts: Sequence[list[int]],
    meter: CostMeter,
    *,
    batch_tokens: int = 4096,
    max_batch: int = 64,
) -> np.ndarray:
    """log-softmax of the next-token distribution after each prompt -> (n, V) float32."""
    import torch

    dev = lm.device
    path = logits_path(lm)
    body = path.body
    pid = pad_id(lm.tokenizer)
    lengths = [len(p) for p in prompts]
    if min(lengths, default=1) < 1:
        raise ValueError("empty prompt")
    out: list[Any] = [None] * len(prompts)
    with torch.inference_mode():
        for group in _batches(lengths, batch_tokens, max_batch):
            ids, mask = right_pad(prompts, group, pid)
            hidden = body(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
            meter.forward(len(group), sum(lengths[i] for i in group))
            last = torch.tensor([lengths[i] - 1 for i in group], device=dev)
            h = hidden[torch.arange(len(group), device=dev), last]
            lp = torch.log_softmax(path.logits(h), dim=-1).cpu().numpy()
            for b, i in enumerate(group):
                out[i] = lp[b]
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
