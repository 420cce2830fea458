"""RDS+ item features: the base LM's own hidden states, position-weighted mean-pooled.

Ivison et al. 2025 ("Large-Scale Data Selection for Instruction Tuning", arXiv 2503.01807)
found that cosine similarity of these features (their **RDS+**) beats LESS and the other
influence-style selectors when selecting from millions of items. For an item whose formatted
text has tokens 1..L (the BOS, if the model has one, is token 1), with final-layer hidden
states ``h_1..h_L`` (after the model's final norm, as ``hidden_states[-1]`` of transformers)::

    v = sum_i w_i h_i,   w_i = i / sum_j j        (SGPT's position-weighted mean)
    feature = v / ||v||_2

so later tokens - the response, which has read the whole prompt - weigh more. One forward
pass per item; items are batched by a token budget with right padding, masked out (padding
never reaches a real token of a causal LM, so a batch gives the features of its items alone,
up to float rounding).

Text of an item (`template`): ``plain`` (default) is the project's LM format for an item,
as DELIFT's in-context examples and LESS's training sequences use it: ``prompt + "\\n" +
response``, started as every nncift sequence starts (`_lm.start_sequence`: the tokenizer's own
BOS, if any); ``chat`` renders the item with the tokenizer's chat template (user prompt,
assistant response), as Ivison et al. format items in Tulu's chat format.

Longer texts than the context (`max_length`, capped by the LM's own) are cut from the left
(the project's rule: the end of the response survives, and it carries the most weight); the
BOS stays first. How many were cut is returned in `LMFeaturizer.last_stats["truncated"]`.

Cache: features are stored like sentence embeddings (`nncift.embed.EmbeddingCache`, the same
folder layout and atomic shards under ``cache_dir/embeddings/``), keyed by the LM's identity,
`POOLING_VERSION`, the template, the context length and the dtype (the folder) and the sha256
of the formatted text (the shard rows). A rerun, or a pool that grew, runs the LM only on
texts not stored yet; a run that finds everything stored loads no LM weights at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nncift.errors import InputError

log = logging.getLogger(__name__)

#: The pooling recorded in manifests and cache keys. Bump the version when the numbers a
#: feature would have change (weights, layer, normalisation, text format).
POOLING = "position-weighted-mean"
POOLING_VERSION = 1
TEMPLATES = ("plain", "chat")
#: Padded tokens per forward batch and sequences per batch (memory bound on a CPU).
BATCH_TOKENS = 8192
MAX_BATCH = 32


def position_weights(mask: Any) -> Any:
    """Weights (B, L) float32 of the real tokens: the i-th real token of a row gets i / sum.

    mask: (B, L) 0/1 attention mask (any padding side); padded positions get weight 0.
    """
    import torch

    m = mask.to(torch.float32)
    w = torch.cumsum(m, dim=1) * m  # 1..L on the real tokens
    return w / w.sum(dim=1, keepdim=True).clamp(min=1.0)


def pool_hidden(hidden: Any, mask: Any) -> Any:
    """Position-weighted mean of `hidden` (B, L, H) over the real tokens -> (B, H) float32,
    L2-normalised."""
    import torch

    w = position_weights(mask).to(hidden.device)  # (B, L)
    v = torch.einsum("bl,blh->bh", w, hidden.float())  # (B, H)
    return torch.nn.functional.normalize(v, dim=1)


def lm_identity(lm: Any) -> str:
    """A stable id of an LM's weights for cache keys: `lm` is a name (alias, folder, hub id)
    or a loaded `nncift.lm.LM`. A local folder is named by its resolved path and a digest of
    its config and weight-file sizes (an edited folder is a new model), as embedders are."""
    from nncift.lm import DEFAULT_LM_ALIASES, DEFAULT_LM_NAME

    if isinstance(lm, (str, Path)):
        name = str(lm)
        if name in DEFAULT_LM_ALIASES:
            return DEFAULT_LM_NAME
        path = Path(name).expanduser()
        folder = str(path) if path.is_dir() else None
    else:
        name = str(lm.name)
        folder = (lm.source or {}).get("path")
    if not folder:
        return name
    path = Path(folder)
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"local:{path.resolve()}#{digest.hexdigest()[:12]}"


def format_texts(
    tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], template: str = "plain"
) -> list[str]:
    """The text the LM reads for each item (see the module docstring)."""
    if template not in TEMPLATES:
        raise InputError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    if template == "plain":
        return [p + "\n" + r for p, r in zip(prompts, responses, strict=True)]
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("the LM's tokenizer has no chat template; use template 'plain'")
    return [
        str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                tokenize=False,
            )
        )
        for p, r in zip(prompts, responses, strict=True)
    ]


def token_ids(tokenizer: Any, text: str, template: str, keep: int) -> tuple[list[int], bool]:
    """Ids of a formatted text, started as nncift starts sequences and cut from the left to
    `keep` tokens -> (ids, whether it was cut)."""
    from nncift.influence._lm import cut_left, encode, start_sequence

    if template == "chat":  # the template writes its own specials (and a BOS if it has one)
        ids = start_sequence(tokenizer, tokenizer(text, add_special_tokens=False).input_ids)
    else:
        ids = encode(tokenizer, text, first=True)
    if len(ids) <= keep:
        return ids, False
    return cut_left(tokenizer, ids, keep), True


class LMFeaturizer:
    """RDS+ features of instruction items (see the module docstring).

    Args:
        lm: "default" (the packaged SmolLM2-135M-Instruct), a local folder, a hub id, or a
            loaded `nncift.lm.LM`.
        device, dtype: as for `nncift.lm.load_lm` (default: a GPU when present; float32 on
            a CPU).
        max_length: cap on the tokens of one item (also capped by the LM's context).
        template: ``plain`` or ``chat`` (module docstring).
        batch_tokens, max_batch: padded tokens and sequences per forward batch.
        cache_dir: cache root (default `$NNCIFT_CACHE` or ``~/.cache/nncift``);
            ``use_cache=False`` disables it.
        progress: show a progress bar while the LM runs.
    """

    def __init__(
        self,
        lm: Any = "default",
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int = 1024,
        template: str = "plain",
        batch_tokens: int = BATCH_TOKENS,
        max_batch: int = MAX_BATCH,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        progress: bool = True,
    ) -> None:
        if template not in TEMPLATES:
            raise InputError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}")
        if max_length < 8:
            raise InputError(f"max_length must be >= 8 tokens, got {max_length}")
        if batch_tokens < 1 or max_batch < 1:
            raise InputError("batch_tokens and max_batch must be >= 1")
        self.lm_spec = lm
        self.device = device
        self.dtype = dtype
        self.max_length = int(max_length)
        self.template = template
        self.batch_tokens = int(batch_tokens)
        self.max_batch = int(max_batch)
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.progress = progress
        self._lm: Any = None if isinstance(lm, (str, Path)) else lm
        self._shell: Any = None
        #: Facts about the last `features` call, for manifests: texts, cached, computed,
        #: truncated, tokens (of the computed texts), forward_seconds, dimension.
        self.last_stats: dict[str, Any] = {}

    # ---- the LM, loaded only when a text is not cached -----------------------------------

    def _meta(self) -> Any:
        """The LM if loaded, else a weightless shell (tokenizer, config, context length)."""
        if self._lm is not None:
            return self._lm
        if self._shell is None:
            from nncift.lm_probe import lm_shell

            self._shell = lm_shell(
                str(self.lm_spec), device=self.device, dtype=self.dtype, max_length=self.max_length
            )
        return self._shell

    def _model(self) -> Any:
        if self._lm is None:
            from nncift.lm import load_lm

            self._lm = load_lm(
                str(self.lm_spec), device=self.device or "auto", dtype=self.dtype or "auto",
                max_length=self.max_length, progress=self.progress,
            )  # fmt: skip
        return self._lm

    @property
    def context(self) -> int:
        """Most tokens of one item: `max_length` capped by the LM's context."""
        return min(self.max_length, int(self._meta().max_length))

    @property
    def model_id(self) -> str:
        """What the features depend on: LM, pooling, template, context and dtype."""
        meta = self._meta()
        dt = str(meta.dtype).removeprefix("torch.")
        return (
            f"rds+:{lm_identity(self.lm_spec)}:{POOLING}-v{POOLING_VERSION}:{self.template}"
            f":ctx{self.context}:{dt}"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-friendly settings for manifests."""
        meta = self._meta()
        return {
            "lm": meta.name,
            "pooling": POOLING,
            "pooling_version": POOLING_VERSION,
            "template": self.template,
            "max_length": self.context,
            "dtype": str(meta.dtype).removeprefix("torch."),
            "device": str(meta.device),
            "model_id": self.model_id,
        }

    # ---- features ---------------------------------------------------------------------------

    def features(self, items: Any) -> np.ndarray:
        """RDS+ features of `items` (``.prompts`` / ``.responses``) -> (n, H) float32, rows
        L2-normalised. Cached texts skip the LM."""
        return self.features_of(list(items.prompts), list(items.responses))

    def pending(self, items: Any) -> dict[str, Any]:
        """What `features(items)` would run, without running the LM (for plans): the token
        lengths of the texts not cached yet (one forward each, duplicates once), how many are
        cached, how many would be cut, and the feature dimension."""
        from nncift.embed import EmbeddingCache, _text_keys, default_cache_dir

        meta = self._meta()
        texts = format_texts(meta.tokenizer, items.prompts, items.responses, self.template)
        seqs = [token_ids(meta.tokenizer, t, self.template, self.context) for t in texts]
        keys = _text_keys(texts)
        found = np.zeros(len(texts), dtype=bool)
        if self.use_cache:
            root = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
            found, _ = EmbeddingCache(root, self.model_id).lookup(keys)
        uniq: dict[bytes, int] = {}
        for i in np.flatnonzero(~found):
            uniq.setdefault(bytes(keys[i]), int(i))
        return {
            "lengths": [len(seqs[i][0]) for i in uniq.values()],
            "cached": int(found.sum()),
            "truncated": int(sum(cut for _, cut in seqs)),
            "dimension": int(meta.model.config.hidden_size),
        }

    def features_of(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """As `features`, from parallel lists of prompts and responses."""
        from nncift.embed import EmbeddingCache, _text_keys, default_cache_dir

        if len(prompts) != len(responses):
            raise InputError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            raise InputError("no items to compute LM features for")
        meta = self._meta()
        tok = meta.tokenizer
        texts = format_texts(tok, prompts, responses, self.template)
        keep = self.context
        seqs = [token_ids(tok, t, self.template, keep) for t in texts]
        truncated = sum(cut for _, cut in seqs)
        keys = _text_keys(texts)
        cache = None
        if self.use_cache:
            root = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
            cache = EmbeddingCache(root, self.model_id)
        # Under the cache folder's inter-process lock where the cache has one (as the
        # embedder does): a second process waits, then finds what the first stored.
        locked = getattr(cache, "locked", None)
        with locked() if locked is not None else contextlib.nullcontext():
            out, found, seconds, tokens = self._lookup_or_compute(cache, keys, seqs)
        if truncated:
            log.warning(
                "%d of %d items are longer than %d tokens and were cut from the left for LM "
                "features", truncated, len(texts), keep,
            )  # fmt: skip
        self.last_stats = {
            "texts": len(texts),
            "cached": int(found.sum()),
            "computed": int((~found).sum()),
            "truncated": int(truncated),
            "tokens": tokens,
            "forward_seconds": round(seconds, 4),
            "dimension": int(out.shape[1]),
        }
        return np.ascontiguousarray(out, dtype=np.float32)

    def _lookup_or_compute(
        self, cache: Any, keys: np.ndarray, seqs: list[tuple[list[int], bool]]
    ) -> tuple[np.ndarray, np.ndarray, float, int]:
        """Cached rows, and the LM's features of the rest (stored) -> (features (n, H),
        found mask (n,), forward seconds, tokens run)."""
        found = np.zeros(len(keys), dtype=bool)
        out: np.ndarray | None = None
        if cache is not None:
            found, out = cache.lookup(keys)
        todo = np.flatnonzero(~found)
        seconds, tokens = 0.0, 0
        if len(todo):
            uniq: dict[bytes, int] = {}
            for i in todo:
                uniq.setdefault(bytes(keys[i]), int(i))
            first = np.fromiter(uniq.values(), dtype=np.int64)
            t0 = time.perf_counter()
            new = self._forward([seqs[i][0] for i in first])
            seconds = time.perf_counter() - t0
            tokens = int(sum(len(seqs[i][0]) for i in first))
            if out is None:
                out = np.zeros((len(keys), new.shape[1]), dtype=np.float32)
            row_of = {k: r for r, k in enumerate(uniq)}
            for i in todo:
                out[i] = new[row_of[bytes(keys[i])]]
            if cache is not None:
                cache.store(keys[first], new)
        assert out is not None
        return out, found, seconds, tokens

    def _forward(self, seqs: list[list[int]]) -> np.ndarray:
        """Pooled, normalised features of token sequences -> (n, H) float32."""
        import torch

        from nncift.influence._lm import _batches, pad_id, right_pad
        from nncift.progress import bar

        lm = self._model()
        model = lm.model
        body = getattr(model, getattr(model, "base_model_prefix", "model"), None)
        if body is None:
            body = model.get_decoder()
        pid = pad_id(lm.tokenizer)
        dev = lm.device
        lengths = [len(s) for s in seqs]
        out = np.zeros((len(seqs), int(model.config.hidden_size)), dtype=np.float32)
        with bar(enabled=self.progress) as progress, torch.inference_mode():
            task = progress.add_task(f"LM features with {lm.name}", total=len(seqs))
            for group in _batches(lengths, self.batch_tokens, self.max_batch):
                ids, mask = right_pad(seqs, group, pid)
                hidden = body(
                    input_ids=ids.to(dev), attention_mask=mask.to(dev)
                ).last_hidden_state  # (B, L, H), after the final norm
                feats = pool_hidden(hidden, mask.to(dev)).cpu().numpy()  # (B, H)
                out[group] = feats
                progress.advance(task, len(group))
        return out


def lm_features(items: Any, lm: Any = "default", **kwargs: Any) -> np.ndarray:
    """RDS+ features of `items` -> (n, H) float32, L2-normalised (see `LMFeaturizer`)."""
    return LMFeaturizer(lm, **kwargs).features(items)


__all__ = [
    "POOLING",
    "POOLING_VERSION",
    "TEMPLATES",
    "LMFeaturizer",
    "format_texts",
    "lm_features",
    "lm_identity",
    "pool_hidden",
    "position_weights",
    "token_ids",
]
