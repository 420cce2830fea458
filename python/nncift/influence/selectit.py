"""SelectIT: self-reflection scores — the LM rates each sample 1-5 under K prompts.

Levels (Liu et al. 2024, as summarised in method.md):

* **token**: for rating prompt k, take the next-token probabilities of "1".."5" (ids looked
  up in the model's own tokenizer, in context, each required to be a single token),
  renormalise them over the five, and score ``(argmax + 1) * mean_{j != argmax}(p_max - p_j)``:
  the rating, discounted when the model hesitates between ratings.
* **sentence**: ``mean_k(S_k) / (1 + alpha * std_k(S_k))`` over the K prompts (alpha = 0.2,
  population std): a rating that depends on the wording of the prompt is discounted.
* **model**: with several LMs, their sentence scores are averaged with weights proportional
  to parameter count.

Higher is better; selection takes the top-k (`nncift.influence.top_k`), not the bottom-k
the reference scripts kept. An empty response is rated like any other sample (the prompt
says "(empty)"); a sample longer than the context is cut from the left (recorded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nncift.errors import InputError
from nncift.influence._lm import encode, next_token_logprobs
from nncift.influence.base import CostMeter, PointwiseInfluence

#: K = 5 rating prompts (paraphrases in the spirit of SelectIT's). `{sample}` is replaced.
RATING_PROMPTS = (
    "Rate how good the response is as an answer to the instruction, on a scale from 1 (very "
    "poor) to 5 (excellent). Reply with a single digit.\n\n{sample}",
    "Here is an instruction and a response. How helpful, correct and complete is the "
    "response? Give a score from 1 to 5, where 5 is best. Answer with one number only.\n\n{sample}",
    "You are judging training data for an assistant. Score the quality of this "
    "instruction-response pair from 1 (useless) to 5 (perfect). Output only the score.\n\n{sample}",
    "{sample}\n\nOn a scale of 1 to 5, how well does the response follow the instruction? "
    "Respond with a single digit between 1 and 5.",
    "Evaluate the following sample. Would it be a valuable example for teaching an AI "
    "assistant? Rate it from 1 (not at all) to 5 (extremely valuable); reply with the digit "
    "only.\n\n{sample}",
)
DIGITS = ("1", "2", "3", "4", "5")
_MARK = "\u241fSAMPLE\u241f"  # a placeholder no real text contains


def sample_text(prompt: str, response: str) -> str:
    return f"Instruction: {prompt}\nResponse: {response if response.strip() else '(empty)'}"


def token_scores(digit_logprobs: np.ndarray) -> np.ndarray:
    """Token-level SelectIT scores from log-probs of "1".."5": (n, 5) -> (n,) float64.

    Probabilities are renormalised over the five digits first.
    """
    lp = np.asarray(digit_logprobs, dtype=np.float64)
    lp = lp - lp.max(axis=1, keepdims=True)
    p = np.exp(lp)
    p /= p.sum(axis=1, keepdims=True)
    top = p.argmax(axis=1)  # ties -> the lower rating
    pmax = p[np.arange(len(p)), top]
    gap = (pmax[:, None] - p).sum(axis=1) / (p.shape[1] - 1)
    return (top + 1) * gap


def sentence_scores(token_level: np.ndarray, alpha: float = 0.2) -> np.ndarray:
    """Sentence-level scores from token scores ``(n, K)`` -> (n,): mean / (1 + alpha * std)."""
    s = np.asarray(token_level, dtype=np.float64)
    return s.mean(axis=1) / (1.0 + alpha * s.std(axis=1))


def digit_token_ids(tokenizer: Any, context: str) -> list[int]:
    """Ids of "1".."5" as the token that follows `context`, from the tokenizer itself.

    Each digit appended to `context` must add exactly one token and leave the context's
    tokens unchanged; otherwise the probabilities of the next token would not be the
    probabilities of the digit, and an error names the digit and what it became.
    """
    base = encode(tokenizer, context)
    ids = []
    for d in DIGITS:
        full = encode(tokenizer, context + d)
        if full[: len(base)] != base or len(full) != len(base) + 1:
            extra = full[len(base) :] if full[: len(base)] == base else full[-3:]
            raise InputError(
                f"the tokenizer does not encode the rating {d!r} as one token after the prompt "
                f"(got ids {extra}); SelectIT needs single-token ratings"
            )
        ids.append(full[-1])
    if len(set(ids)) != len(ids):
        raise InputError(f"ratings 1-5 share token ids {ids}")
    return ids


class _Template:
    """One rating prompt rendered for an LM: token ids before/after the sample, digit ids."""

    def __init__(self, lm: Any, prompt: str, chat: bool) -> None:
        tok = lm.tokenizer
        body = prompt.replace("{sample}", _MARK)
        if chat:
            text = tok.apply_chat_template(
                [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
            )
            pre, post = str(text).split(_MARK)
            candidates = [post]
        else:
            pre, post = body.split(_MARK)
            # A plain prompt ends with a cue; whether the digit follows ":" or ": " depends on
            # how the tokenizer treats spaces, so try both and keep the one that is single-token.
            candidates = [post + "\nRating: ", post + "\nRating:"]
        last: InputError | None = None
        for cand in candidates:
            try:
                self.digit_ids = digit_token_ids(tok, cand)
                post = cand
                break
            except InputError as exc:
                last = exc
        else:
            assert last is not None
            raise last
        self.pre = encode(tok, pre, first=True)
        self.post = encode(tok, post)


class SelectIT(PointwiseInfluence):
    """SelectIT pointwise quality score of each pool item (see module docstring).

    Args:
        pool: items with ``.prompts`` / ``.responses``.
        lm: an `nncift.lm.LM` (default: the packaged SmolLM2-135M-Instruct); or
        lms: several LMs for the model level (weighted by parameter count).
        prompts: the K rating prompts, each containing ``{sample}``.
        alpha: the sentence-level uncertainty weight (0.2 in the paper).
        chat_template: "auto" (use the model's chat template when it has one), "always"
            (refuse a model without one), or "never" (plain text ending in "Rating:").
        max_sample_tokens: cap on the sample inside a rating prompt (cut from the left).
    """

    name = "selectit"

    def __init__(
        self,
        pool: Any,
        *,
        lm: Any | None = None,
        lms: Sequence[Any] | None = None,
        prompts: Sequence[str] = RATING_PROMPTS,
        alpha: float = 0.2,
        chat_template: str = "auto",
        max_sample_tokens: int = 512,
        batch_tokens: int = 4096,
        max_batch: int = 32,
    ) -> None:
        super().__init__(pool)
        if lm is not None and lms is not None:
            raise InputError("pass lm= or lms=, not both")
        if lms is None:
            if lm is None:
                from nncift.lm import load_lm

                lm = load_lm()
            lms = [lm]
        self.lms = list(lms)
        if not self.lms:
            raise InputError("SelectIT needs at least one language model")
        if not prompts or any("{sample}" not in p for p in prompts):
            raise InputError("every SelectIT rating prompt must contain '{sample}'")
        if not alpha >= 0:
            raise InputError(f"alpha must be >= 0, got {alpha}")
        if chat_template not in ("auto", "always", "never"):
            raise InputError(f"chat_template must be auto, always or never, got {chat_template!r}")
        if max_sample_tokens < 1:
            raise InputError(f"max_sample_tokens must be >= 1, got {max_sample_tokens}")
        self.prompts = tuple(prompts)
        self.alpha = float(alpha)
        self.chat_template = chat_template
        self.max_sample_tokens = int(max_sample_tokens)
        self.batch_tokens, self.max_batch = int(batch_tokens), int(max_batch)
        self._templates: list[list[_Template]] = []
        for m in self.lms:
            has = bool(getattr(m.tokenizer, "chat_template", None))
            if chat_template == "always" and not has:
                raise InputError(
                    f"{m.name}: the tokenizer has no chat template (chat_template='always')"
                )
            chat = has and chat_template != "never"
            self._templates.append([_Template(m, p, chat) for p in self.prompts])
        total = sum(m.n_params for m in self.lms)
        self.model_weights = np.array([m.n_params / total for m in self.lms], dtype=np.float64)

    def config(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "lms": [m.name for m in self.lms],
            "model_weights": self.model_weights.tolist(),
            "prompts": list(self.prompts),
            "alpha": self.alpha,
            "chat_template": self.chat_template,
            "max_sample_tokens": self.max_sample_tokens,
            "digit_token_ids": [[t.digit_ids for t in ts] for ts in self._templates],
        }

    def token_level(
        self, rows: np.ndarray, meter: CostMeter, model: int = 0
    ) -> tuple[np.ndarray, int]:
        """Token-level scores ``(len(rows), K)`` float64 for one LM, and the samples cut."""
        lm, temps = self.lms[model], self._templates[model]
        budget = lm.max_length
        cut = 0
        samples = []
        for i in rows.tolist():
            ids = encode(lm.tokenizer, sample_text(self.pool.prompts[i], self.pool.responses[i]))
            longest = max(len(t.pre) + len(t.post) for t in temps)
            keep = min(self.max_sample_tokens, budget - longest)
            if keep < 1:
                raise InputError(f"{lm.name}: a rating prompt alone exceeds max_length={budget}")
            if len(ids) > keep:
                cut += 1
                ids = ids[len(ids) - keep :]
            samples.append(ids)
        out = np.zeros((rows.size, len(temps)), dtype=np.float64)
        for k, t in enumerate(temps):
            seqs = [t.pre + s + t.post for s in samples]
            lp = next_token_logprobs(
                lm, seqs, meter, batch_tokens=self.batch_tokens, max_batch=self.max_batch
            )
            out[:, k] = token_scores(lp[:, t.digit_ids])
        return out, cut

    def _points(self, rows: np.ndarray, meter: CostMeter) -> tuple[np.ndarray, dict[str, Any]]:
        total = np.zeros(rows.size, dtype=np.float64)
        cuts = []
        for m in range(len(self.lms)):
            tl, cut = self.token_level(rows, meter, m)
            total += self.model_weights[m] * sentence_scores(tl, self.alpha)
            cuts.append(cut)
        return total.astype(np.float32), {"samples_cut": cuts}


__all__ = [
    "DIGITS",
    "RATING_PROMPTS",
    "SelectIT",
    "digit_token_ids",
    "sample_text",
    "sentence_scores",
    "token_scores",
]
