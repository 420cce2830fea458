"""`InfluenceEstimator`: train an InfluenceNetwork on a few labelled pairs, predict the rest.

scikit-learn conventions: `__init__` only stores parameters, `fit` returns `self`, learned
state ends in `_`, `random_state` is resolved in `fit`.

Training (paper defaults: MSE, Adam, lr 1e-4, batch 64, one hidden layer of 100; the paper's
20 epochs over ~187k pairs are ~58k optimizer steps, so the budget is counted in steps,
`max_steps` = 50,000, whatever the size of the labelled block) with the fixes method.md asks for:

- held-out *items*, nested: a slice of the labelled rows and columns is removed from
  training and split in two halves. Pairs touching the "stop" half score early stopping
  (every `eval_every` steps, `patience` evaluations without improvement); pairs touching the
  "selection" half score the model choice and `val_mse_`, so the reported score comes from
  items that neither trained nor stopped the network. Random pairs of the training block
  would not reveal a network that memorises its training items — the failure measured on
  similarity-like labels. The best evaluation (including "before training") is kept.
- label scaling (standard or min-max) fitted on the training labels only and stored in the
  weight file (`value = raw * label_scale + label_offset`);
- seeds for the item split, the initialisation and the batch order;
- factorised batches of (i, j) indices: the pair tensor is never built.

Variants (`variant=`): "paper" (default, the paper's network), "concat", "cosine-feature",
"bilinear", "cosine-residual" (a cos + b + MLP, weight decay; starts at the cosine-linear fit),
"cosine-linear" and "constant" (closed-form proxies, still exported as networks), and "auto",
which fits the candidates and keeps, by default, the simplest one whose rank score on the
selection half (Spearman of predictions vs labels within each held-out column, averaged over
columns; over held-out items for pointwise labels) is within one standard error (over
held-out items) of the highest, MSE breaking ties. Selection uses only the order of the
values, and a constant has none (rank score 0): when the constant still wins, `no_signal_`
says the labels carried no learnable signal on held-out items.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nncift.errors import InputError

log = logging.getLogger(__name__)

VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {},
    "concat": {"input_layout": "concat"},
    "cosine-feature": {"cosine_feature": True},
    "bilinear": {"bilinear_rank": 16},
    "cosine-residual": {"output_cosine": True, "weight_decay": 1e-4, "lr": 1e-3},
    "cosine-linear": {"hidden_sizes": (), "output_cosine": True},
    "constant": {"hidden_sizes": ()},
}
# Fewest Q4-like validation pairs worth validating on alone (see EstimatorSettings.val_pairs).
_MIN_BOTH_PAIRS = 50
# Closed-form variants: fitted by least squares, no gradient steps.
_CLOSED_FORM = ("cosine-linear", "constant")
# In order of complexity (parameters): the "one-se" rule of `auto` prefers the earlier ones.
AUTO_CANDIDATES = ("constant", "cosine-linear", "paper", "cosine-residual", "bilinear")
AUTO_RULES = ("one-se", "min")
# The paper: ~187k pairs x 20 epochs at batch 64 = ~58k Adam steps.
DEFAULT_MAX_STEPS = 50_000
# Fewest optimizer steps between two evaluations when eval_every is None (an epoch of a
# small block is a few steps; evaluating that often makes patience meaningless).
_MIN_EVAL_EVERY = 100
# Fewest rows in a held-out column for its Spearman to count toward the rank score
# (the jackknife of a Spearman over 3-4 values swings wildly).
_MIN_GROUP = 5
# Most jackknife units per side (items beyond it are pooled into this many groups).
_MAX_JACKKNIFE_UNITS = 40
NO_SIGNAL_MESSAGE = (
    "the labels carried no learnable signal on held-out items: no candidate ranked held-out "
    "items better than a constant beyond noise, so the network predicts one value and ranks "
    "nothing; the selection falls back to the true labels of the labelled items and the "
    "seeded tie order for the rest. Label more items (raise --u), or use --exact"
)


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


# ---------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairLabels:
    """Labelled pairs as triples.

    rows (n,) int64; cols (n,) int64, all -1 for pointwise labels; values (n,) float64.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def pointwise(self) -> bool:
        return bool(len(self.cols) and np.all(self.cols < 0))

    @classmethod
    def from_block(
        cls, block: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None
    ) -> PairLabels:
        """A dense labelled block (m, n) whose entry [a, b] labels pair (rows[a], cols[b]).

        rows / cols default to 0..m-1 / 0..n-1. A 1-D block (m,) is pointwise labels of rows.
        """
        block = np.asarray(block)
        if not np.issubdtype(block.dtype, np.number):
            raise InputError(f"labels must be numeric, got dtype {block.dtype}")
        block = block.astype(np.float64)
        if block.ndim == 1:
            r = (
                np.arange(len(block), dtype=np.int64)
                if rows is None
                else _index_array(rows, "rows")
            )
            if len(r) != len(block):
                raise InputError(f"{len(block)} pointwise labels but {len(r)} row indices")
            return cls(r, np.full(len(r), -1, np.int64), block)
        if block.ndim != 2:
            raise InputError(f"a labelled block must be 1-D or 2-D, got shape {block.shape}")
        m, n = block.shape
        r = np.arange(m, dtype=np.int64) if rows is None else _index_array(rows, "rows")
        c = np.arange(n, dtype=np.int64) if cols is None else _index_array(cols, "cols")
        if len(r) != m or len(c) != n:
            raise InputError(
                f"labelled block has shape {block.shape} but {len(r)} row and {len(c)} "
                "column indices were given"
            )
        return cls(np.repeat(r, n), np.tile(c, m), block.reshape(-1))

    @classmethod
    def from_triples(cls, rows: Any, cols: Any, values: Any) -> PairLabels:
        r, c = _index_array(rows, "rows"), _index_array(cols, "cols")
        v = np.asarray(values)
        if not np.issubdtype(v.dtype, np.number):
            raise InputError(f"label values must be numeric, got dtype {v.dtype}")
        v = v.astype(np.float64).reshape(-1)
        if not (len(r) == len(c) == len(v)):
            raise InputError(f"triples have {len(r)} rows, {len(c)} cols and {len(v)} values")
        return cls(r, c, v)


def _index_array(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise InputError(f"{name} indices must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise InputError(f"{name} indices must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def read_labels(path: str | os.PathLike[str], rows: Any = None, cols: Any = None) -> PairLabels:
    """Read labels a user computed elsewhere; never unpickles.

    - `.npy`: a dense block (m, n) (with optional `rows`/`cols` index arrays), pointwise
      labels (m,), or triples (n, 3) when the file has exactly 3 columns and `rows`/`cols`
      are not given... ambiguous shapes are resolved by the index arguments.
    - `.npz`: keys `labels` (block) with optional `rows`, `cols`; or `row`, `col`, `value` triples.
    - `.parquet` / `.csv`: triples in columns (`row`|`i`, `col`|`j`, `value`|`label`|`score`);
      pointwise if there is no column column.
    """
    from nncift.io import load_npy

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such labels file")
    suf = p.suffix.lower()
    if suf == ".npy":
        arr = load_npy(p)
        return PairLabels.from_block(arr, rows, cols)
    if suf == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (ValueError, OSError) as exc:
            raise InputError(f"{p}: not a plain numeric .npz file ({exc})") from exc
        if "labels" in data:
            return PairLabels.from_block(
                data["labels"], data.get("rows", rows), data.get("cols", cols)
            )
        if {"row", "value"} <= data.keys():
            col = data.get("col", np.full(len(data["row"]), -1))
            return PairLabels.from_triples(data["row"], col, data["value"])
        raise InputError(
            f"{p}: .npz needs 'labels' (+ 'rows', 'cols') or 'row', 'col', 'value'; "
            f"has {sorted(data)}"
        )
    if suf in (".parquet", ".csv"):
        import polars as pl

        try:
            df = pl.read_parquet(p) if suf == ".parquet" else pl.read_csv(p)
        except Exception as exc:  # polars raises several error types for unreadable files
            raise InputError(f"{p}: cannot read ({exc})") from exc

        def pick(names: tuple[str, ...], required: bool) -> np.ndarray | None:
            for nm in names:
                if nm in df.columns:
                    return df[nm].to_numpy()
            if required:
                raise InputError(f"{p}: needs one of the columns {names}; has {df.columns}")
            return None

        r = pick(("row", "i", "pool"), True)
        v = pick(("value", "label", "score"), True)
        c = pick(("col", "j", "target"), False)
        assert r is not None and v is not None
        return PairLabels.from_triples(r, np.full(len(r), -1) if c is None else c, v)
    raise InputError(
        f"{p}: unsupported labels file type {suf!r} (use .npy, .npz, .parquet or .csv)"
    )


def _check_embeddings(e: Any, name: str) -> np.ndarray:
    a = np.asarray(e)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"{name} must be a non-empty (n, d) array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{name} must be floating point, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} contain NaN or infinite values")
    return a


def _check_labels(lab: PairLabels, n_rows: int, n_cols: int | None) -> None:
    if len(lab) == 0:
        raise InputError("no labelled pairs given")
    bad = ~np.isfinite(lab.values)
    if bad.any():
        k = int(np.argmax(bad))
        raise InputError(
            f"labels contain {int(bad.sum())} NaN or infinite values (first at pair "
            f"({int(lab.rows[k])}, {int(lab.cols[k])}))"
        )
    if lab.rows.min() < 0 or lab.rows.max() >= n_rows:
        raise InputError(
            f"row indices must be in [0, {n_rows}) to match the {n_rows} row embeddings; "
            f"got range [{lab.rows.min()}, {lab.rows.max()}]"
        )
    if n_cols is not None and (lab.cols.min() < 0 or lab.cols.max() >= n_cols):
        raise InputError(
            f"column indices must be in [0, {n_cols}) to match the {n_cols} column embeddings; "
            f"got range [{lab.cols.min()}, {lab.cols.max()}]"
        )
    if np.ptp(lab.values) == 0:
        raise InputError(
            f"labels have a single distinct value ({lab.values[0]!r}); there is nothing to learn"
        )


def _held_out_items(
    items: np.ndarray, frac: float, rng: np.random.Generator, what: str, least: int = 1
) -> np.ndarray:
    """Choose round(frac * |items|) (at least `least`, when 2 stay to train) items; int64."""
    k = max(1, int(round(frac * len(items))))
    if k < least and len(items) - least >= 2:
        k = least
    if len(items) - k < 2:
        raise InputError(
            f"too few labelled {what} ({len(items)}) to hold out a validation slice of "
            f"{k} and keep at least 2 for training; label more items or set val_fraction=0"
        )
    return np.sort(rng.choice(items, size=k, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class _Split:
    """Indices into the labels (int64) and held-out items of the nested split."""

    train_idx: np.ndarray
    stop_idx: np.ndarray  # pairs touching a stop item and no selection item
    sel_idx: np.ndarray  # pairs touching a selection item and no stop item
    rows: np.ndarray  # all held-out row items (stop + selection); items for a square kernel
    cols: np.ndarray
    stop_rows: np.ndarray
    stop_cols: np.ndarray
    sel_rows: np.ndarray
    sel_cols: np.ndarray


def _halves(held: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split held-out items into (stop, selection); selection gets the larger half."""
    perm = rng.permutation(held)
    k_stop = len(held) // 2
    return np.sort(perm[:k_stop]), np.sort(perm[k_stop:])


def _nested_split(
    lab: PairLabels,
    st: EstimatorSettings,
    rng: np.random.Generator,
    pointwise: bool,
    square: bool,
    min_held_out: int = 1,
) -> _Split:
    """Hold out `val_fraction` of the labelled items per side, split them stop / selection.

    Training pairs touch no held-out item. Stop pairs touch a stop item and no selection
    item; selection pairs the reverse (pairs touching both are used by neither). With
    `val_pairs="unseen-both"` each half keeps only the pairs whose row and column are both
    in it when there are at least 50 of them.
    """
    empty = np.empty(0, np.int64)
    if st.val_fraction == 0:
        return _Split(np.arange(len(lab)), empty, empty, *([empty] * 6))
    if pointwise:
        vr = _held_out_items(np.unique(lab.rows), st.val_fraction, rng, "items", min_held_out)
        vc = empty
    elif square:
        items = np.union1d(lab.rows, lab.cols)
        vr = vc = _held_out_items(items, st.val_fraction, rng, "items", min_held_out)
    else:
        vr = _held_out_items(np.unique(lab.rows), st.val_fraction, rng, "rows", min_held_out)
        vc = _held_out_items(np.unique(lab.cols), st.val_fraction, rng, "columns", min_held_out)
    sr, er = _halves(vr, rng)
    sc, ec = (sr, er) if square else _halves(vc, rng)
    held = np.isin(lab.rows, vr) | (False if pointwise else np.isin(lab.cols, vc))
    if held.all() or not held.any():
        raise InputError(
            f"too few labelled pairs ({len(lab)}) to hold out a validation slice of items "
            "and keep training pairs; label more pairs or set val_fraction=0"
        )
    touch_stop = np.isin(lab.rows, sr) | (False if pointwise else np.isin(lab.cols, sc))
    touch_sel = np.isin(lab.rows, er) | (False if pointwise else np.isin(lab.cols, ec))

    def narrow(mask: np.ndarray, r: np.ndarray, c: np.ndarray, what: str) -> np.ndarray:
        idx = np.flatnonzero(mask)
        if pointwise or not len(idx) or st.val_pairs != "unseen-both":
            return idx
        # Score only pairs whose row AND column are held out (Q4-like): a model that is
        # good on half-seen pairs (Q2 / Q3) can still lose to cosine on fully unseen ones.
        both = np.isin(lab.rows, r) & np.isin(lab.cols, c)
        if both.sum() >= _MIN_BOTH_PAIRS:
            return np.flatnonzero(both)
        log.info(
            "only %d %s pairs with both items held out; using all %d pairs that touch one",
            int(both.sum()),
            what,
            len(idx),
        )
        return idx

    return _Split(
        np.flatnonzero(~held),
        narrow(touch_stop & ~touch_sel, sr, sc, "early-stopping"),
        narrow(touch_sel & ~touch_stop, er, ec, "model-selection"),
        vr,
        vc,
        sr,
        sc,
        er,
        ec,
    )


# ---------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------
class InfluenceEstimator:
    """Learn an influence function from labelled pairs (or points) of embedded items.

    settings: EstimatorSettings (network and training), the paper's by default.
    variant: a name in VARIANTS, or "auto" (choose by the rank score on held-out items, with
        `settings.auto_rule`; refuses without held-out items).
        The variant's overrides are applied on top of `settings`.
    kind: "pairwise" or "pointwise".
    device: "auto" (CUDA when available), "cpu", "cuda", ...
    random_state: int seed, or None for a fresh random seed drawn in `fit`.
    progress: show a progress bar over optimizer steps.
    embedding_model: id of the embedder that produced the inputs (stored in the weights and
        checked by `predict` / evaluation when given).
    label_name: what the labels are ("delift", "delift-se", ...), stored in the weights.

    Learned attributes: network_ (InfluenceNetwork, on CPU), variant_, settings_,
    label_offset_, label_scale_, history_ (one dict per evaluation: step, epoch, train_mse,
    val_mse on the stop half), steps_ (optimizer steps taken), best_step_ / best_epoch_
    (the restored evaluation), val_mse_ / val_rank_ (MSE in scaled units / rank score on
    the selection half; None without validation), criterion_ (what the rank score is),
    candidates_ (variant -> selection-half MSE), candidates_rank_ (variant -> rank score;
    the constant's is 0), candidates_stop_mse_ (variant -> best early-stopping MSE),
    candidates_se_ (auto, one-se rule: variant -> jackknife SE over held-out items of its
    rank-score difference to the best), no_signal_ (auto chose the constant: the labels
    carried no learnable order on held-out items; see NO_SIGNAL_MESSAGE),
    candidate_networks_ / candidate_histories_ / candidate_steps_ (per variant),
    val_rows_, val_cols_ (held-out items), stop_rows_ / stop_cols_ and sel_rows_ /
    sel_cols_ (their early-stopping and model-selection halves), nested_ (the halves are
    disjoint), n_stop_pairs_, n_val_pairs_ (selection pairs), random_state_,
    embedding_dim_, n_train_pairs_.
    """

    def __init__(
        self,
        settings: EstimatorSettings | None = None,
        *,
        variant: str = "paper",
        kind: str = "pairwise",
        device: str = "auto",
        random_state: int | None = None,
        progress: bool = True,
        embedding_model: str = "unknown",
        label_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.variant = variant
        self.kind = kind
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.embedding_model = embedding_model
        self.label_name = label_name

    # -- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        row_embeddings: Any,
        col_embeddings: Any = None,
        labels: PairLabels | np.ndarray | None = None,
        *,
        rows: Any = None,
        cols: Any = None,
        extra_metadata: dict[str, str] | None = None,
    ) -> InfluenceEstimator:
        """Fit on labelled pairs.

        row_embeddings: (M, d) float32, pool items. col_embeddings: (N, d) float32 targets;
        None for a pool x pool kernel (columns are the rows' items) or pointwise labels.
        labels: PairLabels triples, or a dense block (m, n) whose [a, b] labels
        (rows[a], cols[b]) — rows / cols default to 0..m-1 / 0..n-1 — or (m,) pointwise labels.
        extra_metadata: strings stored in the weight file on `export` (e.g. the u-split).
        """
        import torch

        if self.kind not in ("pairwise", "pointwise"):
            raise InputError(f"kind must be 'pairwise' or 'pointwise', got {self.kind!r}")
        if labels is None:
            raise InputError("fit needs labels")
        er = _check_embeddings(row_embeddings, "row embeddings")
        square = col_embeddings is None
        ec = er if square else _check_embeddings(col_embeddings, "column embeddings")
        if ec.shape[1] != er.shape[1]:
            raise InputError(
                f"row embeddings are {er.shape[1]}-dim but column embeddings {ec.shape[1]}-dim"
            )
        lab = (
            labels if isinstance(labels, PairLabels) else PairLabels.from_block(labels, rows, cols)
        )
        pointwise = self.kind == "pointwise"
        if pointwise != lab.pointwise:
            raise InputError(
                f"kind={self.kind!r} but the labels are "
                f"{'pointwise' if lab.pointwise else 'pairwise'}"
            )
        _check_labels(lab, er.shape[0], None if pointwise else ec.shape[0])

        base = self.settings or EstimatorSettings()
        if pointwise:
            base = dataclasses.replace(base, input_layout="pointwise")
        elif base.input_layout == "pointwise":
            raise InputError("input_layout 'pointwise' needs kind='pointwise'")
        seed = (
            int(np.random.SeedSequence().generate_state(1)[0])
            if self.random_state is None
            else int(self.random_state)
        )
        self.random_state_ = seed
        rng = np.random.default_rng(seed)

        auto = self.variant == "auto"
        if auto and base.val_fraction == 0:
            raise InputError(
                'variant="auto" chooses among its candidates on held-out items, and '
                "val_fraction=0 holds out none; set val_fraction > 0 (e.g. 0.2), or choose a "
                "variant (e.g. 'paper' or 'cosine-linear')"
            )
        split = _nested_split(lab, base, rng, pointwise, square, min_held_out=2 if auto else 1)
        train_idx, stop_idx, val_idx = split.train_idx, split.stop_idx, split.sel_idx
        vr, vc = split.rows, split.cols
        if auto and (len(val_idx) == 0 or len(stop_idx) == 0):
            raise InputError(
                f'variant="auto" needs held-out items to stop training on and others to choose '
                f"on; {len(lab)} labelled pairs leave too few. Label more items, raise "
                "val_fraction, or choose a variant (e.g. 'paper' or 'cosine-linear')"
            )
        if len(val_idx) and not len(stop_idx):
            # One held-out item per side: it both stops and scores (not nested).
            log.info("too few held-out items to split; early stopping and val_mse_ share them")
            stop_idx = val_idx
        self.nested_ = bool(len(stop_idx)) and not np.array_equal(stop_idx, val_idx)
        self.stop_rows_, self.stop_cols_ = split.stop_rows, split.stop_cols
        self.sel_rows_, self.sel_cols_ = split.sel_rows, split.sel_cols
        self.n_stop_pairs_ = int(len(stop_idx))
        self.n_val_pairs_ = int(len(val_idx))
        y_train = lab.values[train_idx]
        if np.ptp(y_train) == 0:
            raise InputError(
                "the training labels (after holding out validation items) have a single value"
            )

        # Label scaling from training labels only.
        if base.label_scaling == "standard":
            offset, scale = float(y_train.mean()), float(y_train.std())
        elif base.label_scaling == "minmax":
            offset, scale = float(y_train.min()), float(np.ptp(y_train))
        else:
            offset, scale = 0.0, 1.0
        self.label_offset_, self.label_scale_ = offset, scale
        self.val_rows_, self.val_cols_ = vr, vc
        self.embedding_dim_ = int(er.shape[1])
        self.n_train_pairs_ = int(len(train_idx))
        self.square_ = square
        self._extra_metadata = dict(extra_metadata or {})

        device = self._resolve_device(torch)
        data = _Data(
            torch.from_numpy(er).to(device),
            None if pointwise else torch.from_numpy(ec).to(device),
            lab,
            train_idx,
            stop_idx,
            (lab.values - offset) / scale,
            device,
        )
        names: tuple[str, ...] = AUTO_CANDIDATES if auto else (self.variant,)
        if pointwise and auto:
            names = ("constant", "paper")
        results: dict[str, _Trained] = {}
        for k, name in enumerate(names):
            st = settings_for(name, base)
            torch.manual_seed(seed + k)
            results[name] = _train_one(name, st, data, seed + k, self.progress)
        # Score every candidate on the selection half (items that neither trained nor
        # stopped it): MSE, and the rank score a selection depends on.
        groups = lab.rows[val_idx] * 0 if pointwise else lab.cols[val_idx]
        self.criterion_ = (
            "spearman over held-out items"
            if pointwise
            else ("spearman within held-out columns, mean over columns")
        )
        preds: dict[str, np.ndarray] = {}
        mse: dict[str, float | None] = {}
        for n in names:
            if len(val_idx):
                with torch.no_grad():
                    p = _forward_idx(results[n].net, data, val_idx).double().cpu().numpy()
                preds[n] = p
                mse[n] = float(np.mean((p - data.y_scaled[val_idx]) ** 2))
            else:
                mse[n] = None
        self.candidates_: dict[str, float | None] = mse
        self.candidates_stop_mse_ = {n: r.best_val for n, r in results.items()}
        self.candidates_rank_: dict[str, float | None] = {n: None for n in names}
        self.candidates_se_: dict[str, float] = {}
        chosen = names[0]
        rank: _RankScorer | None = None
        if len(val_idx):
            rank = _RankScorer(
                data.y_scaled[val_idx],
                groups,
                lab.rows[val_idx],
                lab.cols[val_idx],
                pointwise,
                square,
            )
            for n in names:
                self.candidates_rank_[n] = rank.score(preds[n])
        if auto:
            if rank is not None and rank.usable:
                chosen, self.candidates_se_ = rank.choose(
                    list(names), preds, mse, one_se=base.auto_rule == "one-se"
                )
            else:
                # No held-out column has 5 rows: no ranking to score. Say so, choose by MSE.
                self.criterion_ = "mse (too few held-out items per column for a rank score)"
                log.warning(
                    "auto: too few held-out items per column to score rankings; chose by MSE"
                )
                errors = {n: (preds[n] - data.y_scaled[val_idx]) ** 2 for n in names}
                if base.auto_rule == "one-se":
                    chosen, self.candidates_se_ = select_one_se(
                        list(names),
                        errors,
                        lab.rows[val_idx],
                        None if pointwise else lab.cols[val_idx],
                        square=square,
                    )
                else:
                    chosen = min(names, key=lambda n: _nan_inf(mse[n]))
        self.no_signal_ = bool(auto and chosen == "constant")
        if self.no_signal_:
            # The CLIs print it and record it in the manifest; the API has no_signal_.
            log.info("auto chose the constant: %s", NO_SIGNAL_MESSAGE)
        if base.refit and len(val_idx):
            for n in names:
                if n in _CLOSED_FORM:
                    _refit_closed_form(results[n].net, n, data)
        self.candidate_networks_ = {n: r.net.cpu().eval() for n, r in results.items()}
        self.candidate_histories_ = {n: r.history for n, r in results.items()}
        self.candidate_steps_ = {n: r.steps for n, r in results.items()}
        res = results[chosen]
        self.variant_ = chosen
        self.settings_ = res.settings
        self.network_ = res.net.cpu().eval()
        self.history_ = res.history
        self.best_epoch_ = res.best_epoch
        self.best_step_ = res.best_step
        self.steps_ = res.steps
        self.val_mse_ = mse[chosen]
        self.val_rank_ = self.candidates_rank_[chosen]
        self._scorer: Any = None
        return self

    def _resolve_device(self, torch: Any) -> Any:
        dev = self.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            return torch.device(dev)
        except RuntimeError as exc:
            raise InputError(f"unknown device {self.device!r}: {exc}") from exc

    # -- prediction -------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise InputError("this InfluenceEstimator is not fitted yet; call fit first")

    def _check_inputs(self, e: Any, name: str, embedding_model: str | None) -> np.ndarray:
        a = _check_embeddings(e, name)
        meta = {"embedding_dim": str(self.embedding_dim_), "embedding_model": self.embedding_model}
        from nncift.network import check_embeddings

        check_embeddings(meta, a, embedding_model, what=name)
        return a

    def predict(
        self,
        row_embeddings: Any,
        col_embeddings: Any = None,
        *,
        embedding_model: str | None = None,
        use_rust: bool | None = None,
    ) -> np.ndarray:
        """Predicted labels (label units) for every pair: (M, N) float32; pointwise: (M,).

        col_embeddings None means a square kernel over the rows (pairwise) or pointwise.
        embedding_model: id of the embedder of the inputs, checked against the training one.
        use_rust: force (True) or avoid (False) the Rust scorer; None = Rust when the
        extension has `PairwiseScorer`, torch otherwise.
        """
        import torch

        self._check_fitted()
        er = self._check_inputs(row_embeddings, "row embeddings", embedding_model)
        pointwise = self.network_.pointwise
        ec = (
            er
            if col_embeddings is None
            else self._check_inputs(col_embeddings, "column embeddings", embedding_model)
        )
        scorer = self._rust_scorer() if use_rust is not False else None
        if use_rust and scorer is None:
            raise InputError(
                "the Rust scorer (nncift.PairwiseScorer) is not available in this build"
            )
        if scorer is not None:
            out = scorer.pointwise(er) if pointwise else scorer.score(er, ec)
            return np.asarray(out, dtype=np.float32)
        net = self.network_
        with torch.no_grad():
            tr = torch.from_numpy(er)
            if pointwise:
                raw = net.forward_points(tr, torch.arange(len(er)))
            else:
                raw = net.predict_matrix(tr, torch.from_numpy(ec))
        return (raw.numpy() * self.label_scale_ + self.label_offset_).astype(np.float32)

    def predict_pairs(self, row_embeddings: Any, col_embeddings: Any, i: Any, j: Any) -> np.ndarray:
        """Predicted labels for pairs (i[k], j[k]): (n,) float32 (torch, factorised)."""
        import torch

        self._check_fitted()
        er = self._check_inputs(row_embeddings, "row embeddings", None)
        ec = (
            er
            if col_embeddings is None
            else self._check_inputs(col_embeddings, "column embeddings", None)
        )
        ii, jj = _index_array(i, "rows"), _index_array(j, "cols")
        if len(ii) != len(jj):
            raise InputError(f"{len(ii)} row indices but {len(jj)} column indices")
        if len(ii) and (ii.min() < 0 or ii.max() >= len(er) or jj.min() < 0 or jj.max() >= len(ec)):
            raise InputError("pair indices out of range of the embeddings")
        with torch.no_grad():
            raw = self.network_.forward_pairs(
                torch.from_numpy(er),
                torch.from_numpy(ec),
                torch.from_numpy(ii),
                torch.from_numpy(jj),
            )
        return (raw.numpy() * self.label_scale_ + self.label_offset_).astype(np.float32)

    def _rust_scorer(self) -> Any:
        """The Rust `nncift.scorer.PairwiseScorer` for the fitted network, or None if not built."""
        try:
            from nncift.scorer import PairwiseScorer
        except ImportError:  # an extension built without the scorer
            return None
        if self._scorer is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "net.safetensors"
                self.export(path)
                self._scorer = PairwiseScorer.load(path)
        return self._scorer

    # -- export -----------------------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        """Extra metadata stored with the weights: variant, training facts and the u-split."""
        self._check_fitted()
        meta = {
            "variant": self.variant_,
            "random_state": str(self.random_state_),
            "best_epoch": str(self.best_epoch_),
            "steps": str(self.steps_),
            "best_step": str(self.best_step_),
            "no_signal": str(self.no_signal_).lower(),
            "n_train_pairs": str(self.n_train_pairs_),
            "label_scaling": self.settings_.label_scaling,
        }
        if self.val_mse_ is not None:
            meta["val_mse_scaled"] = repr(float(self.val_mse_))
        meta.update(self._extra_metadata)
        return meta

    def export(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted network to the weight format of docs/weights.md."""
        self._check_fitted()
        self.network_.export(
            path,
            embedding_model=self.embedding_model,
            label_scale=self.label_scale_,
            label_offset=self.label_offset_,
            label_name=self.label_name,
            extra_metadata=self.metadata(),
        )


def select_one_se(
    names: list[str],
    sq_errors: dict[str, np.ndarray],
    rows: np.ndarray,
    cols: np.ndarray | None = None,
    *,
    square: bool = False,
) -> tuple[str, dict[str, float]]:
    """The one-standard-error rule, with the noise estimated over held-out items.

    names: candidates, simplest first. sq_errors: candidate -> (n,) squared errors on the
    same n validation pairs (i, j) = (rows[k], cols[k]); cols None for pointwise labels;
    square: rows and columns index the same items (a pool x pool kernel).
    Best = the lowest validation MSE. For each candidate c, the mean difference
    mean(err_c - err_best) gets a delete-one-item jackknife standard error: pairs that share
    an item (as row or column) are correlated, so the items, not the pairs, are the units
    (square: deleting an item removes its row and its column; otherwise the row-item and
    the column-item jackknife variances add). c is acceptable if its mean difference is at
    most one SE; the first acceptable candidate in `names` order is returned, with
    {candidate: SE}. With fewer than 2 items on every side the lowest MSE wins.
    """
    mse = {n: float(np.mean(sq_errors[n])) for n in names}
    best = min(names, key=lambda n: mse[n] if np.isfinite(mse[n]) else float("inf"))
    sides: list[tuple[np.ndarray, np.ndarray | None]]
    if square and cols is not None:
        sides = [(rows, cols)]
    else:
        sides = [(rows, None)] + ([(cols, None)] if cols is not None else [])
    ses: dict[str, float] = {}
    chosen = None
    for n in names:
        d = sq_errors[n] - sq_errors[best]
        var, usable = 0.0, False
        for a, b in sides:
            v = _jackknife_var(d, a, b)
            if v is not None:
                var, usable = var + v, True
        if not usable:
            return best, {}
        ses[n] = float(np.sqrt(var))
        if chosen is None and np.isfinite(mse[n]) and float(d.mean()) <= ses[n]:
            chosen = n  # best itself always qualifies (d = 0), so chosen is set by then
    return (chosen or best), ses


def _avg_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata, 0-based); float64."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    counts = np.diff(np.r_[first, len(x)])
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.repeat(first + (counts - 1) / 2.0, counts)
    return r


def _spearman(p: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation (average ranks for ties); 0 when either side is constant."""
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return 0.0
    rp, ry = _avg_ranks(p), _avg_ranks(y)
    rp -= rp.mean()
    ry -= ry.mean()
    return float((rp @ ry) / np.sqrt((rp @ rp) * (ry @ ry)))


class _RankScorer:
    """The rank score of predictions on selection-half pairs, and auto's rule on it.

    y (n,) true (scaled) labels; groups (n,) the column of each pair (all 0 for pointwise
    labels); rows / cols (n,) the pair's items. Score = mean over groups (columns with at
    least 5 pairs and non-constant labels) of Spearman(pred, y) within the group: what a
    selection per target depends on. The standard error of a paired difference of scores
    is a delete-one-item jackknife (items pooled into at most 40 groups per side): deleting
    a row item removes its pairs from every column, deleting a column removes its group.
    """

    def __init__(
        self,
        y: np.ndarray,
        groups: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        pointwise: bool,
        square: bool,
    ) -> None:
        self.y = y
        _, inv = np.unique(groups, return_inverse=True)
        members = [np.flatnonzero(inv == g) for g in range(int(inv.max()) + 1 if len(inv) else 0)]
        self.members = [m for m in members if len(m) >= _MIN_GROUP and np.ptp(y[m]) > 0]
        self.usable = bool(self.members)
        # Jackknife sides: a boolean "pair touches unit u" matrix per side.
        self.sides: list[list[np.ndarray]] = []
        specs: list[tuple[np.ndarray, np.ndarray | None]]
        if pointwise:
            specs = [(rows, None)]
        elif square:
            specs = [(rows, cols)]
        else:
            specs = [(rows, None), (cols, None)]
        for a, b in specs:
            items = np.unique(a if b is None else np.concatenate([a, b]))
            if len(items) < 2:
                continue
            unit = np.arange(len(items)) % _MAX_JACKKNIFE_UNITS
            ua = unit[np.searchsorted(items, a)]
            ub = None if b is None else unit[np.searchsorted(items, b)]
            drops = [(ua == u) | (False if ub is None else ub == u) for u in np.unique(unit)]
            self.sides.append(drops)

    def _group_scores(
        self, pred: np.ndarray, drop: np.ndarray | None = None, base: np.ndarray | None = None
    ) -> np.ndarray:
        """Spearman per group (NaN for a group left unusable by `drop`); with `base`, only
        the groups `drop` touches are recomputed."""
        out = np.full(len(self.members), np.nan)
        for g, m in enumerate(self.members):
            if drop is not None:
                hit = drop[m]
                if base is not None and not hit.any():
                    out[g] = base[g]
                    continue
                m = m[~hit]
                if len(m) < _MIN_GROUP or np.ptp(self.y[m]) == 0:
                    continue
            out[g] = _spearman(pred[m], self.y[m])
        return out

    def score(self, pred: np.ndarray) -> float | None:
        """Mean within-group Spearman; None when no group is usable."""
        return float(np.mean(self._group_scores(pred))) if self.usable else None

    def choose(
        self,
        names: list[str],
        preds: dict[str, np.ndarray],
        mse: dict[str, float | None],
        one_se: bool,
    ) -> tuple[str, dict[str, float]]:
        """Highest rank score (lower MSE breaks ties), or with `one_se` the simplest
        candidate (first in `names`) within one jackknife SE of it; returns (name, {name: SE})."""
        base = {n: self._group_scores(preds[n]) for n in names}
        full = {n: float(np.mean(base[n])) for n in names}

        def key(n: str) -> tuple[float, float]:
            return (full[n], -_nan_inf(mse[n]))

        best = max(names, key=key)
        if not one_se:
            return best, {}
        reps: list[dict[str, np.ndarray]] = []
        for drops in self.sides:
            side = {}
            for n in names:
                vals = []
                for d in drops:
                    gs = self._group_scores(preds[n], d, base[n])
                    vals.append(float(np.nanmean(gs)) if np.isfinite(gs).any() else np.nan)
                side[n] = np.array(vals, dtype=np.float64)
            reps.append(side)
        ses: dict[str, float] = {}
        chosen = None
        best_sc = full[best]
        for n in names:
            var, usable = 0.0, False
            for side in reps:
                d = side[best] - side[n]
                if np.all(np.isfinite(d)) and len(d) >= 2:
                    k = len(d)
                    var += (k - 1) / k * float(np.sum((d - d.mean()) ** 2))
                    usable = True
            if not usable:
                return best, {}
            ses[n] = float(np.sqrt(var))
            if chosen is None and best_sc - full[n] <= ses[n]:
                chosen = n  # best itself always qualifies, so chosen is set by then
        return (chosen or best), ses


def _jackknife_var(d: np.ndarray, a: np.ndarray, b: np.ndarray | None) -> float | None:
    """Delete-one-item jackknife variance of mean(d).

    Pair k touches item a[k], and also b[k] when b is given (items index both sides).
    None with fewer than 2 items, or when deleting an item would leave no pairs.
    """
    items = np.unique(a if b is None else np.concatenate([a, b]))
    k = len(items)
    if k < 2:
        return None
    ia = np.searchsorted(items, a)
    s_k = np.bincount(ia, weights=d, minlength=k)
    n_k = np.bincount(ia, minlength=k).astype(np.float64)
    if b is not None:
        ib = np.searchsorted(items, b)
        diag = ia == ib  # a pair (x, x) touches its item once
        s_k += np.bincount(ib, weights=np.where(diag, 0.0, d), minlength=k)
        n_k += np.bincount(ib, weights=(~diag).astype(np.float64), minlength=k)
    rest = len(d) - n_k
    if np.any(rest <= 0):
        return None
    theta = (d.sum() - s_k) / rest
    return float((k - 1) / k * np.sum((theta - theta.mean()) ** 2))


# ---------------------------------------------------------------------------------------
# training internals
# ---------------------------------------------------------------------------------------
@dataclass
class _Data:
    rows_e: Any  # (M, d) float32 tensor on device
    cols_e: Any  # (N, d) or None (pointwise)
    lab: PairLabels
    train_idx: np.ndarray  # indices into lab
    stop_idx: np.ndarray  # early-stopping pairs (the stop half of the held-out items)
    y_scaled: np.ndarray  # (n,) float64, all labels scaled with the training fit
    device: Any


def _cosines(data: _Data, idx: np.ndarray) -> np.ndarray:
    r = data.rows_e.cpu().numpy()[data.lab.rows[idx]]
    c = data.cols_e.cpu().numpy()[data.lab.cols[idx]]
    nr = np.linalg.norm(r, axis=1).clip(1e-12)
    nc = np.linalg.norm(c, axis=1).clip(1e-12)
    return np.asarray(((r * c).sum(axis=1) / (nr * nc)), dtype=np.float64)


def _cosine_fit(data: _Data, idx: np.ndarray | None = None) -> tuple[float, float]:
    """Least-squares a, b with y_scaled ~ a cos + b on the pairs idx (default: training)."""
    idx = data.train_idx if idx is None else idx
    x = _cosines(data, idx)
    y = data.y_scaled[idx]
    if np.ptp(x) == 0:
        return 0.0, float(y.mean())
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


def _refit_closed_form(net: Any, name: str, data: _Data) -> None:
    """Refit a closed-form proxy in place on every labelled pair (held-out items included)."""
    import torch

    idx = np.arange(len(data.lab))
    a, b = (0.0, float(data.y_scaled.mean())) if name == "constant" else _cosine_fit(data, idx)
    with torch.no_grad():
        net.linear(0).bias.fill_(b)
        if net.cosine_weight is not None:
            net.cosine_weight.fill_(a)


def _val_mse(net: Any, data: _Data) -> float | None:
    import torch

    if len(data.stop_idx) == 0:
        return None
    with torch.no_grad():
        pred = _forward_idx(net, data, data.stop_idx).double().cpu().numpy()
    return float(np.mean((pred - data.y_scaled[data.stop_idx]) ** 2))


def _forward_idx(net: Any, data: _Data, idx: np.ndarray) -> Any:
    import torch

    i = torch.from_numpy(data.lab.rows[idx]).to(data.device)
    if net.pointwise:
        return net.forward_points(data.rows_e, i)
    j = torch.from_numpy(data.lab.cols[idx]).to(data.device)
    out = []
    # Bounded chunks so validation on a large block never allocates (n, h) at once.
    for s in range(0, len(idx), 1 << 16):
        out.append(
            net.forward_pairs(data.rows_e, data.cols_e, i[s : s + (1 << 16)], j[s : s + (1 << 16)])
        )
    return torch.cat(out) if out else torch.zeros(0, device=data.device)


@dataclass
class _Trained:
    net: Any
    history: list[dict[str, float]]
    best_epoch: int
    best_step: int
    steps: int  # optimizer steps taken
    best_val: float | None  # best early-stopping MSE (stop half, scaled)
    settings: EstimatorSettings


def step_budget(st: EstimatorSettings, n_train: int) -> tuple[int, int, int]:
    """(steps per epoch, step budget, steps between evaluations) for n_train pairs.

    The budget is `max_steps`, capped by `epochs` passes when `epochs` is set.
    """
    spe = max(1, -(-n_train // st.batch_size))
    budget = st.max_steps if st.epochs is None else min(st.max_steps, st.epochs * spe)
    every = st.eval_every if st.eval_every is not None else max(_MIN_EVAL_EVERY, spe)
    return spe, budget, every


def _train_one(
    name: str, st: EstimatorSettings, data: _Data, seed: int, progress: bool
) -> _Trained:
    """Train one variant: Adam steps up to the step budget, early stopping every
    `eval_every` steps on the stop half with `patience` evaluations; the best evaluation
    (step 0 included) is restored."""
    import torch

    from nncift.network import InfluenceNetwork

    d = int(data.rows_e.shape[1])
    net = InfluenceNetwork(
        d,
        hidden_sizes=st.hidden_sizes,
        input_layout=st.input_layout,
        cosine_feature=st.cosine_feature,
        output_cosine=st.output_cosine,
        bilinear_rank=st.bilinear_rank,
    ).to(data.device)
    if name in _CLOSED_FORM or name == "cosine-residual":
        # Closed-form fit: zero first-layer weights; bias (and cosine weight) by least squares.
        a, b = (
            _cosine_fit(data)
            if name != "constant"
            else (0.0, float(data.y_scaled[data.train_idx].mean()))
        )
        with torch.no_grad():
            if name in _CLOSED_FORM:
                net.linear(0).weight.zero_()
                net.linear(0).bias.fill_(b)
            else:
                # cosine-residual starts exactly at the cosine-linear fit: last layer zeroed.
                net.linear(-1).weight.zero_()
                net.linear(-1).bias.fill_(b)
            if net.cosine_weight is not None:
                net.cosine_weight.fill_(a)
        if name in _CLOSED_FORM:
            val = _val_mse(net, data)
            hist = [{"step": 0, "epoch": 0.0, "val_mse": _nan(val)}]
            return _Trained(net, hist, 0, 0, 0, val, st)

    params = [p for p in net.parameters() if p.requires_grad]
    opt = _Adam(params, lr=st.lr, weight_decay=st.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    tr = torch.from_numpy(data.train_idx)
    rows_all = torch.from_numpy(data.lab.rows).to(data.device)
    cols_all = torch.from_numpy(data.lab.cols).to(data.device)
    y_all = torch.from_numpy(data.y_scaled.astype(np.float32)).to(data.device)
    spe, budget, every = step_budget(st, len(tr))

    best_val = _val_mse(net, data)
    best_state = copy.deepcopy(net.state_dict())
    best_step, bad, step = 0, 0, 0
    history: list[dict[str, float]] = [
        {"step": 0, "epoch": 0.0, "train_mse": float("nan"), "val_mse": _nan(best_val)}
    ]
    bar = _progress(progress, budget, name)
    total, count, stop = 0.0, 0, False
    # A batch of 64 pairs is too small to split across threads: on a busy 2-core box two
    # threads ran 250 steps in 8.9 s, one thread in 0.2 s. Restored after training.
    threads = torch.get_num_threads()
    if data.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        while step < budget and not stop:
            net.train()
            perm = tr[torch.randperm(len(tr), generator=gen)].to(data.device)
            for s in range(0, len(perm), st.batch_size):
                bt = perm[s : s + st.batch_size]
                i = rows_all.index_select(0, bt)
                if net.pointwise:
                    pred = net.forward_points(data.rows_e, i)
                else:
                    pred = net.forward_pairs(
                        data.rows_e, data.cols_e, i, cols_all.index_select(0, bt)
                    )
                loss = torch.mean((pred - y_all.index_select(0, bt)) ** 2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                total += float(loss.detach()) * len(bt)
                count += len(bt)
                if step % every and step < budget:
                    continue
                net.eval()
                val = _val_mse(net, data)
                net.train()
                history.append(
                    {
                        "step": step,
                        "epoch": step / spe,
                        "train_mse": total / max(1, count),
                        "val_mse": _nan(val),
                    }
                )
                total, count = 0.0, 0
                if bar is not None:
                    bar[0].update(bar[1], completed=step, description=f"{name} val={_nan(val):.4g}")
                if val is None:
                    best_state, best_step = copy.deepcopy(net.state_dict()), step
                elif best_val is None or val < best_val:
                    best_val, best_state, best_step, bad = (
                        val,
                        copy.deepcopy(net.state_dict()),
                        step,
                        0,
                    )
                else:
                    bad += 1
                    if st.patience is not None and bad >= st.patience:
                        log.info("%s: early stop at step %d (best %d)", name, step, best_step)
                        stop = True
                if stop or step >= budget:
                    break
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar[0].stop()
    net.load_state_dict(best_state)
    net.eval()
    return _Trained(net, history, -(-best_step // spe), best_step, step, best_val, st)


class _Adam:
    """Adam (Kingma & Ba), with decoupled weight decay (AdamW) when weight_decay > 0.

    The same update as `torch.optim.Adam` / `AdamW` with their defaults (betas 0.9 / 0.999,
    eps 1e-8). Written out because constructing any `torch.optim` optimizer imports
    `torch._dynamo`, which costs 5-20 s of start-up on a small CPU box — longer than
    training the paper's network on a u = 0.05 block.
    """

    def __init__(
        self,
        params: list[Any],
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        import torch

        self.params = params
        self.lr, self.wd, self.betas, self.eps = lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v, strict=True):
                g = p.grad
                if g is None:  # e.g. the paper layout's dead separator column never has one
                    continue
                if self.wd > 0:
                    p.mul_(1.0 - self.lr * self.wd)
                m.mul_(b1).add_(g, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                denom = (v / c2).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-self.lr / c1)


def _nan_inf(x: float | None) -> float:
    return float("inf") if x is None else float(x)


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _progress(enabled: bool, total: int, name: str) -> tuple[Any, Any] | None:
    if not enabled or total == 0:
        return None
    from rich.progress import Progress

    p = Progress(transient=True)
    task = p.add_task(name, total=total)  # optimizer steps
    p.start()
    return p, task


__all__ = [
    "AUTO_CANDIDATES",
    "AUTO_RULES",
    "DEFAULT_MAX_STEPS",
    "NO_SIGNAL_MESSAGE",
    "VARIANTS",
    "EstimatorSettings",
    "InfluenceEstimator",
    "PairLabels",
    "read_labels",
    "settings_for",
    "step_budget",
]
