"""What the estimator can train: `EstimatorSettings` (the paper's defaults), the named
variants and `settings_for`, the candidates of `variant="auto"` and their choice rules.

Shared by `training` (the loop reads the settings), `model_selection` (the held-out split
reads `val_fraction` / `val_pairs`) and `estimator`; it imports none of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nncift.errors import InputError

VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {},
    "concat": {"input_layout": "concat"},
    "cosine-feature": {"cosine_feature": True},
    "bilinear": {"bilinear_rank": 16},
    "cosine-residual": {"output_cosine": True, "weight_decay": 1e-4, "lr": 1e-3},
    "cosine-linear": {"hidden_sizes": (), "output_cosine": True},
    "constant": {"hidden_sizes": ()},
}
# Closed-form variants: fitted by least squares, no gradient steps.
CLOSED_FORM = ("cosine-linear", "constant")
# In order of complexity (parameters): the "one-se" rule of `auto` prefers the earlier ones.
AUTO_CANDIDATES = ("constant", "cosine-linear", "paper", "cosine-residual", "bilinear")
AUTO_RULES = ("one-se", "min")
# The paper: ~187k pairs x 20 epochs at batch 64 = ~58k Adam steps.
DEFAULT_MAX_STEPS = 50_000


@dataclass(frozen=True)
class EstimatorSettings:
    """Network and training settings; the defaults are the paper's.

    hidden_sizes: hidden widths, (100,) in the paper; () = linear model.
    input_layout: "paper" ([e_i, 0, e_j]), "concat" ([e_i, e_j]) or "pointwise" ([e_i]).
    cosine_feature / output_cosine / bilinear_rank: the similarity-aware options (docs/weights.md).
    lr, batch_size: Adam learning rate 1e-4, batches of 64 pairs (the paper's).
    max_steps: optimizer-step budget, 50,000 (the paper's 20 epochs over ~187k pairs are
        ~58k steps); a small labelled block gets as many epochs as fit in it.
    epochs: optional cap on passes over the training pairs (None: no cap, `max_steps`
        decides); training stops at whichever of the two comes first.
    eval_every: optimizer steps between two early-stopping evaluations (None: one epoch,
        but at least 100 steps); training always ends with an evaluation.
    weight_decay: L2 penalty (AdamW-style decoupled), 0 in the paper.
    val_fraction: share of labelled items (rows and columns) held out, split in an
        early-stopping half and a model-selection half; 0 disables validation and early
        stopping (the paper trains without validation; variant="auto" then refuses).
    patience: evaluations without improvement on the stop half before stopping (None: never
        stop early).
    val_pairs: which pairs score validation: "unseen-both" (row and column both held out, like
        Q4; falls back to "unseen-any" below 50 such pairs) or "unseen-any" (any pair touching
        a held-out item, like Q2-Q4). Pairs touching a held-out item never train either way.
    label_scaling: "standard" (mean / std), "minmax" or "none"; fitted on training labels only.
    auto_rule: how variant="auto" chooses among its candidates (listed simplest first), by
        their rank score on the selection half (Spearman within each held-out column,
        averaged over columns; the constant scores 0), MSE breaking ties: "one-se" keeps the
        simplest candidate whose rank score is below the highest by at most one standard
        error of that paired difference, estimated over the held-out items (a candidate must
        win by more than the noise); "min" keeps the highest.
    refit: after validation, refit the closed-form proxies (constant, cosine-linear: nothing
        to early-stop) on all labelled pairs, held-out items included, as a final model is
        refitted after model selection. Networks keep their early-stopped weights; val_mse_
        stays the selection-half MSE of the fit on the training pairs.
    """

    hidden_sizes: tuple[int, ...] = (100,)
    input_layout: str = "paper"
    cosine_feature: bool = False
    output_cosine: bool = False
    bilinear_rank: int = 0
    lr: float = 1e-4
    epochs: int | None = None
    batch_size: int = 64
    max_steps: int = DEFAULT_MAX_STEPS
    eval_every: int | None = None
    weight_decay: float = 0.0
    val_fraction: float = 0.2
    patience: int | None = 5
    label_scaling: str = "standard"
    val_pairs: str = "unseen-both"
    auto_rule: str = "one-se"
    refit: bool = True

    def __post_init__(self) -> None:
        if (
            self.lr <= 0
            or (self.epochs is not None and self.epochs < 0)
            or self.batch_size < 1
            or self.max_steps < 0
        ):
            raise InputError(
                f"lr must be > 0, epochs >= 0 (or None), batch_size >= 1 and max_steps >= 0; "
                f"got lr={self.lr}, epochs={self.epochs}, batch_size={self.batch_size}, "
                f"max_steps={self.max_steps}"
            )
        if self.eval_every is not None and self.eval_every < 1:
            raise InputError(f"eval_every must be >= 1 or None, got {self.eval_every}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.label_scaling not in ("standard", "minmax", "none"):
            raise InputError(
                f"label_scaling must be standard, minmax or none, got {self.label_scaling!r}"
            )
        if self.patience is not None and self.patience < 1:
            raise InputError(f"patience must be >= 1 or None, got {self.patience}")
        if self.val_pairs not in ("unseen-both", "unseen-any"):
            raise InputError(
                f"val_pairs must be 'unseen-both' or 'unseen-any', got {self.val_pairs!r}"
            )
        if self.weight_decay < 0:
            raise InputError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.auto_rule not in AUTO_RULES:
            raise InputError(f"auto_rule must be one of {AUTO_RULES}, got {self.auto_rule!r}")


def settings_for(variant: str, base: EstimatorSettings | None = None) -> EstimatorSettings:
    """Settings of a named variant, applied on top of `base` (default: the paper's)."""
    if variant not in VARIANTS:
        raise InputError(
            f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)} or 'auto'"
        )
    base = base or EstimatorSettings()
    over = dict(VARIANTS[variant])
    if base.input_layout == "pointwise":
        if variant not in ("paper", "constant"):
            raise InputError(f"variant {variant!r} needs pairwise labels")
        over["input_layout"] = "pointwise"
    return dataclasses.replace(base, **over)


__all__ = [
    "AUTO_CANDIDATES",
    "AUTO_RULES",
    "CLOSED_FORM",
    "DEFAULT_MAX_STEPS",
    "VARIANTS",
    "EstimatorSettings",
    "settings_for",
]
