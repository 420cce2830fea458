"""DELIFT: in-context utility of a pool example for a target, measured with a real LM.

For target t and pool example i (method.md)::

    U[i, t] = d(t | no example) - d(t | example i in the prompt)
    d       = || p_gt - 1 ||_2 / sqrt(T)

over the T response tokens of t, where ``p_gt[k]`` is the LM's probability of response
token k read from the logits of position k-1 (the next-token shift). Positive utility means
the example brings the model closer to the ground-truth answer.

Choices (docs/influence.md):

* The target's response is never truncated. The example (prompt + response, as one text)
  is cut from the left to `max_example_tokens`; the target's prompt is cut from the left to
  `max_prompt_tokens`; if a pair still exceeds `max_length`, the example is cut further
  for that pair only. Cuts are recorded in `Result.info`. A target whose response plus the
  fixed template text cannot fit is refused with an error naming it.
* An empty target response has no tokens to score: its utilities are defined as 0 (no LM
  passes are spent on it) and it is listed in ``info["empty_targets"]``.
* Raw utilities are returned. DELIFT min-max scales labels before training; scaling over a
  block would make a block depend on what else was computed, so it is the consumer's job.
* Cost savings (exact, no approximation): the no-example pass runs once per target and is
  cached; the example prefix runs once per pool item and its keys/values are shared by all
  the targets it is paired with (KV reuse); sequences are batched by token budget; only
  response positions go through the output layer.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nncift.errors import InputError
from nncift.influence._lm import (
    Seq,
    encode,
    prefix_response_logprobs,
    response_logprobs,
    supports_kv_reuse,
)
from nncift.influence.base import CostMeter, PairwiseInfluence

log = logging.getLogger(__name__)

#: DELIFT's prompts (method.md). The no-example query follows "Query:" after a space.
NO_EXAMPLE_HEADER = "Instruction: Please generate a response to the following query.\n\n\nQuery:"
EXAMPLE_HEADER = (
    "Instruction:\nUse the following example as a guide to answer the query in the same "
    "format and style, providing a clear and concise response.\n\n\nExample:\n"
)
EXAMPLE_TAIL = "\n\n\nQuery:\n"


@dataclass(frozen=True)
class DeliftConfig:
    """Settings of DELIFT. Lengths are in tokens of the LM's tokenizer.

    max_example_tokens: cap on an in-context example (its prompt and response), cut from
        the left so the example's answer survives.
    max_prompt_tokens: cap on the target's prompt, cut from the left.
    max_length: cap on a whole sequence; None uses the LM's `max_length`.
    kv_reuse: share each example prefix's keys/values across its targets (exact).
    batch_tokens: padded tokens per forward batch (memory bound).
    max_batch: sequences per forward batch.
    """

    max_example_tokens: int = 256
    max_prompt_tokens: int = 256
    max_length: int | None = None
    kv_reuse: bool = True
    batch_tokens: int = 4096
    max_batch: int = 32

    def __post_init__(self) -> None:
        for name in ("max_example_tokens", "max_prompt_tokens", "batch_tokens", "max_batch"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"DELIFT {name} must be >= 1, got {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 16:
            raise InputError(f"DELIFT max_length must be >= 16, got {self.max_length}")


def distance(logprobs: np.ndarray) -> float:
    """DELIFT's ``||p - 1||_2 / sqrt(T)`` from the T response-token log-probabilities.

    0 when the model is certain of every ground-truth token, 1 when it gives them zero
    probability. T = 0 (empty response) gives 0.
    """
    t = logprobs.size
    if t == 0:
        return 0.0
    p = np.exp(logprobs.astype(np.float64))
    return float(np.sqrt(np.sum((p - 1.0) ** 2) / t))


class Delift(PairwiseInfluence):
    """DELIFT pairwise utility ``U[pool, target]`` on a causal LM (see module docstring).

    Args:
        pool: items with ``.prompts`` / ``.responses`` (the candidate examples, rows).
        targets: the target items (columns); None for the pool x pool kernel.
        lm: an `nncift.lm.LM` (default: the packaged SmolLM2-135M-Instruct).
        config: a `DeliftConfig`, or keyword overrides of it.
    """

    name = "delift"

    def __init__(
        self,
        pool: Any,
        targets: Any | None = None,
        *,
        lm: Any | None = None,
        config: DeliftConfig | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(pool, targets)
        if lm is None:
            from nncift.lm import load_lm

            lm = load_lm()
        self.lm = lm
        self.cfg = config if config is not None else DeliftConfig(**overrides)
        if config is not None and overrides:
            raise InputError("pass either config= or keyword settings, not both")
        self.max_length = int(self.cfg.max_length or lm.max_length)
        tok = lm.tokenizer
        self._h0 = encode(tok, NO_EXAMPLE_HEADER, first=True)
        self._h1 = encode(tok, EXAMPLE_HEADER, first=True)
        self._tail = encode(tok, EXAMPLE_TAIL)
        self._kv = self.cfg.kv_reuse and supports_kv_reuse(lm.model)
        self._examples: dict[int, tuple[list[int], int]] = {}
        self._queries: dict[int, dict[str, Any]] = {}
        self._d0: dict[int, float] = {}

    def config(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "lm": self.lm.name,
            "lm_dtype": str(self.lm.dtype),
            **asdict(self.cfg),
            "max_length": self.max_length,
        }

    # ---- tokenisation and length policy -------------------------------------------------

    def _example(self, i: int) -> tuple[list[int], int]:
        """Pool item i as an in-context example: (ids cut to max_example_tokens, tokens cut)."""
        if i not in self._examples:
            text = self.pool.prompts[i] + "\n" + self.pool.responses[i]
            ids = encode(self.lm.tokenizer, text)
            cut = max(0, len(ids) - self.cfg.max_example_tokens)
            self._examples[i] = (ids[cut:], cut)
        return self._examples[i]

    def _query(self, t: int) -> dict[str, Any]:
        """Target t's prompt segments (both conditions) and response ids, cut to fit."""
        if t in self._queries:
            return self._queries[t]
        tok = self.lm.tokenizer
        prompt, response = self.targets.prompts[t], self.targets.responses[t]
        resp = encode(tok, response)
        q0 = encode(tok, " " + prompt + "\n")  # after "Query:" in the no-example prompt
        q1 = encode(tok, prompt + "\n")  # after "Query:\n" in the example prompt
        fixed = max(len(self._h0), len(self._h1) + len(self._tail)) + len(resp)
        budget = min(self.cfg.max_prompt_tokens, self.max_length - fixed)
        if budget < 1:
            raise InputError(
                f"target {t}: its response has {len(resp)} tokens, which with DELIFT's template "
                f"does not fit max_length={self.max_length}; responses are never truncated, so "
                "raise max_length or drop this item"
            )
        cut0, cut1 = max(0, len(q0) - budget), max(0, len(q1) - budget)
        # A prompt cut to nothing still leaves the "\n" before the response (start >= 1).
        q0, q1 = q0[cut0:] or encode(tok, "\n"), q1[cut1:] or encode(tok, "\n")
        entry = {"q0": q0, "q1": q1, "resp": resp, "prompt_cut": max(cut0, cut1)}
        self._queries[t] = entry
        return entry

    # ---- computation ----------------------------------------------------------------------

    def no_example_distances(self, cols: np.ndarray, meter: CostMeter) -> np.ndarray:
        """d(t | no example) for targets `cols` -> (len(cols),) float64; cached per target."""
        todo = [int(t) for t in dict.fromkeys(cols.tolist()) if int(t) not in self._d0]
        seqs, which = [], []
        for t in todo:
            q = self._query(t)
            if not q["resp"]:
                self._d0[t] = 0.0
                continue
            seqs.append(Seq(self._h0 + q["q0"] + q["resp"], len(self._h0) + len(q["q0"])))
            which.append(t)
        lps = response_logprobs(
            self.lm, seqs, meter, batch_tokens=self.cfg.batch_tokens, max_batch=self.cfg.max_batch
        )
        for t, lp in zip(which, lps, strict=False):
            self._d0[t] = distance(lp)
        return np.array([self._d0[int(t)] for t in cols], dtype=np.float64)

    def _block(
        self, rows: np.ndarray, cols: np.ndarray, meter: CostMeter
    ) -> tuple[np.ndarray, dict[str, Any]]:
        d0 = self.no_example_distances(cols, meter)
        queries = [self._query(int(t)) for t in cols]
        live = [j for j, q in enumerate(queries) if q["resp"]]
        d1 = np.zeros((rows.size, cols.size), dtype=np.float64)
        extra_cuts = 0
        for a, i in enumerate(rows.tolist()):
            ex, _ = self._example(i)
            prefix = self._h1 + ex + self._tail
            shared: list[int] = []
            solo: list[tuple[int, Seq]] = []
            for j in live:
                q = queries[j]
                over = len(prefix) + len(q["q1"]) + len(q["resp"]) - self.max_length
                if over <= 0:
                    shared.append(j)
                else:
                    # This pair only: cut the example further from the left.
                    extra_cuts += 1
                    pre = self._h1 + ex[over:] + self._tail
                    solo.append((j, Seq(pre + q["q1"] + q["resp"], len(pre) + len(q["q1"]))))
            kw = {"batch_tokens": self.cfg.batch_tokens, "max_batch": self.cfg.max_batch}
            suffixes = [
                Seq(queries[j]["q1"] + queries[j]["resp"], len(queries[j]["q1"])) for j in shared
            ]
            if self._kv and len(shared) > 1:
                lps = prefix_response_logprobs(self.lm, prefix, suffixes, meter, **kw)
            else:
                full = [Seq(prefix + s.ids, len(prefix) + s.start) for s in suffixes]
                lps = response_logprobs(self.lm, full, meter, **kw)
            lps_solo = response_logprobs(self.lm, [s for _, s in solo], meter, **kw) if solo else []
            for j, lp in zip(shared, lps, strict=False):
                d1[a, j] = distance(lp)
            for (j, _), lp in zip(solo, lps_solo, strict=False):
                d1[a, j] = distance(lp)
        values = d0[None, :] - d1
        empty = [int(cols[j]) for j, q in enumerate(queries) if not q["resp"]]
        values[:, [j for j, q in enumerate(queries) if not q["resp"]]] = 0.0
        info = {
            "example_tokens_cut": {
                int(i): self._example(int(i))[1] for i in rows if self._example(int(i))[1]
            },
            "prompt_tokens_cut": {
                int(cols[j]): q["prompt_cut"] for j, q in enumerate(queries) if q["prompt_cut"]
            },
            "pairs_with_extra_example_cut": extra_cuts,
            "empty_targets": empty,
            "kv_reuse": self._kv,
        }
        if empty:
            log.warning("DELIFT: %d target(s) with empty responses get utility 0", len(empty))
        return values.astype(np.float32), info


__all__ = [
    "EXAMPLE_HEADER",
    "EXAMPLE_TAIL",
    "NO_EXAMPLE_HEADER",
    "Delift",
    "DeliftConfig",
    "distance",
]
