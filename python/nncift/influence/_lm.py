"""Shared LM machinery: tokenising segments, batched scoring of response tokens, KV reuse.

A scored sequence is a list of token ids plus the index where the response starts; the
probability of response token ``ids[k]`` is read from the logits at position ``k - 1``
(the next-token shift the reference scripts forgot). Only the hidden states of those
positions go through the output layer: for a 49k vocabulary that is most of the saving on
long prompts, and it bounds the memory of a batch (no ``(B, L, V)`` logits tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nncift.errors import InputError
from nncift.influence import CostMeter

#: Response positions pushed through the output layer at once (bounds a (n, V) float32 block).
_HEAD_CHUNK = 512


@dataclass
class Seq:
    """Token ids (int list) and the index of the first response token (>= 1)."""

    ids: list[int]
    start: int


def encode(tokenizer: Any, text: str, *, first: bool = False) -> list[int]:
    """Token ids of `text`. Only the first segment of a sequence gets the model's special
    tokens (e.g. Llama-2's BOS); an EOS some tokenizers append is stripped."""
    if not text:
        return []
    ids = list(tokenizer(text, add_special_tokens=first).input_ids)
    eos = getattr(tokenizer, "eos_token_id", None)
    if first and ids and eos is not None and ids[-1] == eos and len(ids) > 1:
        ids = ids[:-1]
    return ids


def pad_id(tokenizer: Any) -> int:
    """A harmless id for padded positions (masked out; any valid id works), so a tokenizer
    without a pad token is fine."""
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, int):
            return v
    return 0


def _body_and_head(model: Any) -> tuple[Any, Any, float | None]:
    """The decoder stack, the output layer and the logit soft-cap (Gemma-2) of a causal LM."""
    prefix = getattr(model, "base_model_prefix", "model")
    body = getattr(model, prefix, None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or head is None:
        raise InputError(f"{type(model).__name__}: not a causal LM with a separable output layer")
    cap = getattr(model.config, "final_logit_softcapping", None)
    return body, head, cap


def _token_logprobs(head: Any, cap: float | None, hidden: Any, targets: Any) -> Any:
    """log p(targets) from hidden states `hidden` (n, H) float -> (n,) float32."""
    import torch

    out = []
    for s in range(0, hidden.shape[0], _HEAD_CHUNK):
        logits = head(hidden[s : s + _HEAD_CHUNK]).float()  # (n, V)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        lp = torch.log_softmax(logits, dim=-1)
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

    model, dev = lm.model, lm.device
    body, head, cap = _body_and_head(model)
    pid = pad_id(lm.tokenizer)
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(seqs)
    for s in seqs:
        if s.start < 1:
            raise ValueError("a scored response needs at least one token before it")
    lengths = [len(s.ids) for s in seqs]
    with torch.inference_mode():
        for group in _batches(lengths, batch_tokens, max_batch):
            width = max(lengths[i] for i in group)
            ids = torch.full((len(group), width), pid, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for b, i in enumerate(group):
                ids[b, : lengths[i]] = torch.tensor(seqs[i].ids)
                mask[b, : lengths[i]] = 1
            hidden = body(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
            meter.forward(len(group), sum(lengths[i] for i in group))
            rows, pos, tgt = [], [], []
            for b, i in enumerate(group):
                s = seqs[i]
                k = torch.arange(s.start, lengths[i])
                rows.append(torch.full_like(k, b))
                pos.append(k - 1)  # next-token shift: position k-1 predicts token k
                tgt.append(ids[b, k])
            r, p, t = torch.cat(rows), torch.cat(pos), torch.cat(tgt)
            lp = _token_logprobs(head, cap, hidden[r.to(dev), p.to(dev)], t.to(dev)).cpu().numpy()
            offset = 0
            for i in group:
                n = lengths[i] - seqs[i].start
                out[i] = lp[offset : offset + n].astype(np.float32)
                offset += n
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

    model, dev = lm.model, lm.device
    body, head, cap = _body_and_head(model)
    pid = pad_id(lm.tokenizer)
    plen = len(prefix)
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(suffixes)
    if plen == 0:
        return response_logprobs(
            lm, suffixes, meter, batch_tokens=batch_tokens, max_batch=max_batch
        )
    lengths = [len(s.ids) for s in suffixes]
    with torch.inference_mode():
        pids = torch.tensor([list(prefix)], dtype=torch.long, device=dev)
        cache = DynamicCache(config=model.config)
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
                config=model.config,
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
            rows, pos, tgt = [], [], []
            for b, i in enumerate(group):
                k = torch.arange(suffixes[i].start, lengths[i])
                rows.append(torch.full_like(k, b))
                pos.append(k - 1)
                tgt.append(ids[b, k])
            r, p, t = torch.cat(rows), torch.cat(pos), torch.cat(tgt)
            lp = _token_logprobs(head, cap, hidden[r.to(dev), p.to(dev)], t.to(dev)).cpu().numpy()
            offset = 0
            for i in group:
                n = lengths[i] - suffixes[i].start
                out[i] = lp[offset : offset + n].astype(np.float32)
                offset += n
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

    model, dev = lm.model, lm.device
    body, head, cap = _body_and_head(model)
    pid = pad_id(lm.tokenizer)
    lengths = [len(p) for p in prompts]
    if min(lengths, default=1) < 1:
        raise ValueError("empty prompt")
    out: list[Any] = [None] * len(prompts)
    with torch.inference_mode():
        for group in _batches(lengths, batch_tokens, max_batch):
            width = max(lengths[i] for i in group)
            ids = torch.full((len(group), width), pid, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for b, i in enumerate(group):
                ids[b, : lengths[i]] = torch.tensor(prompts[i])
                mask[b, : lengths[i]] = 1
            hidden = body(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
            meter.forward(len(group), sum(lengths[i] for i in group))
            last = torch.tensor([lengths[i] - 1 for i in group], device=dev)
            h = hidden[torch.arange(len(group), device=dev), last]
            logits = head(h).float()
            if cap:
                logits = torch.tanh(logits / cap) * cap
            lp = torch.log_softmax(logits, dim=-1).cpu().numpy()
            for b, i in enumerate(group):
                out[i] = lp[b]
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
