"""`InfluenceEstimator`: train an InfluenceNetwork on a few labelled pairs, predict the rest.

scikit-learn conventions: `__init__` only stores parameters, `fit` returns `self`, learned
state ends in `_`, `random_state` is resolved in `fit`.

Training (paper defaults: MSE, Adam, lr 1e-4, batch 64, 20 epochs, one hidden layer of 100)
with the fixes method.md asks for:

- early stopping on held-out *items*: a slice of the labelled rows and columns is removed
  from training, and the pairs that touch them form the validation set. Random pairs of the
  training block would not reveal a network that memorises its training items — the failure
  measured on similarity-like labels. The best epoch (including "before training") is kept.
- label scaling (standard or min-max) fitted on the training labels only and stored in the
  weight file (`value = raw * label_scale + label_offset`);
- seeds for the item split, the initialisation and the batch order;
- factorised batches of (i, j) indices: the pair tensor is never built.

Variants (`variant=`): "paper" (default, the paper's network), "concat", "cosine-feature",
"bilinear", "cosine-residual" (a cos + b + MLP, weight decay; starts at the cosine-linear fit),
"cosine-linear" and "constant" (closed-form proxies, still exported as networks), and "auto",
which fits the candidates and keeps, by default, the simplest one whose held-out-item
validation MSE is within one standard error (over held-out items) of the lowest — so the
estimator is never worse, on validation beyond its noise, than the cheapest proxy.
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


@dataclass(frozen=True)
class EstimatorSettings:
    """Network and training settings; the defaults are the paper's.

    hidden_sizes: hidden widths, (100,) in the paper; () = linear model.
    input_layout: "paper" ([e_i, 0, e_j]), "concat" ([e_i, e_j]) or "pointwise" ([e_i]).
    cosine_feature / output_cosine / bilinear_rank: the similarity-aware options (docs/weights.md).
    lr, epochs, batch_size: Adam learning rate 1e-4, 20 epochs, batches of 64 pairs.
    weight_decay: L2 penalty (AdamW-style decoupled), 0 in the paper.
    val_fraction: share of labelled items (rows and columns) held out for early stopping;
        0 disables validation and early stopping (the paper trains without validation).
    patience: epochs without validation improvement before stopping (None: never stop early).
    val_pairs: which pairs score validation: "unseen-both" (row and column both held out, like
        Q4; falls back to "unseen-any" below 50 such pairs) or "unseen-any" (any pair touching
        a held-out item, like Q2-Q4). Pairs touching a held-out item never train either way.
    label_scaling: "standard" (mean / std), "minmax" or "none"; fitted on training labels only.
    auto_rule: how variant="auto" chooses among its candidates (listed simplest first):
        "one-se" keeps the simplest candidate whose validation MSE exceeds the lowest by at
        most one standard error of that paired difference, estimated over the held-out items
        (a candidate must win by more than the validation noise); "min" keeps the lowest.
    refit: after validation, refit the closed-form proxies (constant, cosine-linear: nothing
        to early-stop) on all labelled pairs, held-out items included, as a final model is
        refitted after model selection. Networks keep their early-stopped weights; val_mse_
        stays the validation MSE of the fit on the training pairs.
    """

    hidden_sizes: tuple[int, ...] = (100,)
    input_layout: str = "paper"
    cosine_feature: bool = False
    output_cosine: bool = False
    bilinear_rank: int = 0
    lr: float = 1e-4
    epochs: int = 20
    batch_size: int = 64
    weight_decay: float = 0.0
    val_fraction: float = 0.2
    patience: int | None = 5
    label_scaling: str = "standard"
    val_pairs: str = "unseen-both"
    auto_rule: str = "one-se"
    refit: bool = True

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.epochs < 0 or self.batch_size < 1:
            raise InputError(
                f"lr must be > 0, epochs >= 0 and batch_size >= 1; got lr={self.lr}, "
                f"epochs={self.epochs}, batch_size={self.batch_size}"
            )
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
    items: np.ndarray, frac: float, rng: np.random.Generator, what: str
) -> np.ndarray:
    """Choose round(frac * |items|) (at least 1) distinct items to hold out; int64."""
    k = max(1, int(round(frac * len(items))))
    if len(items) - k < 2:
        raise InputError(
            f"too few labelled {what} ({len(items)}) to hold out a validation slice of "
            f"{k} and keep at least 2 for training; label more items or set val_fraction=0"
        )
    return np.sort(rng.choice(items, size=k, replace=False)).astype(np.int64)


# ---------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------
class InfluenceEstimator:
    """Learn an influence function from labelled pairs (or points) of embedded items.

    settings: EstimatorSettings (network and training), the paper's by default.
    variant: a name in VARIANTS, or "auto" (choose by held-out-item validation MSE, with
        `settings.auto_rule`).
        The variant's overrides are applied on top of `settings`.
    kind: "pairwise" or "pointwise".
    device: "auto" (CUDA when available), "cpu", "cuda", ...
    random_state: int seed, or None for a fresh random seed drawn in `fit`.
    progress: show a progress bar over epochs.
    embedding_model: id of the embedder that produced the inputs (stored in the weights and
        checked by `predict` / evaluation when given).
    label_name: what the labels are ("delift", "delift-se", ...), stored in the weights.

    Learned attributes: network_ (InfluenceNetwork, on CPU), variant_, settings_,
    label_offset_, label_scale_, history_ (per-epoch dicts), best_epoch_, val_mse_
    (scaled units, None without validation), candidates_ (auto: variant -> val MSE),
    candidates_se_ (auto, one-se rule: variant -> SE over held-out items of its val-MSE
    difference to the lowest), candidate_networks_ / candidate_histories_ (variant -> its
    trained network on CPU / its history),
    val_rows_, val_cols_ (held-out items), random_state_, embedding_dim_, n_train_pairs_.
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

        # Held-out items: for a square kernel rows and columns are the same items.
        s_val = base.val_fraction
        if s_val > 0:
            if pointwise:
                vr = _held_out_items(np.unique(lab.rows), s_val, rng, "items")
                vc = np.empty(0, np.int64)
                val_mask = np.isin(lab.rows, vr)
            elif square:
                items = np.union1d(lab.rows, lab.cols)
                vr = vc = _held_out_items(items, s_val, rng, "items")
                val_mask = np.isin(lab.rows, vr) | np.isin(lab.cols, vr)
            else:
                vr = _held_out_items(np.unique(lab.rows), s_val, rng, "rows")
                vc = _held_out_items(np.unique(lab.cols), s_val, rng, "columns")
                val_mask = np.isin(lab.rows, vr) | np.isin(lab.cols, vc)
            if val_mask.all() or not val_mask.any():
                raise InputError(
                    f"too few labelled pairs ({len(lab)}) to hold out a validation slice of items "
                    "and keep training pairs; label more pairs or set val_fraction=0"
                )
        else:
            vr = vc = np.empty(0, np.int64)
            val_mask = np.zeros(len(lab), bool)
        train_idx = np.flatnonzero(~val_mask)
        val_idx = np.flatnonzero(val_mask)
        if not pointwise and len(val_idx) and base.val_pairs == "unseen-both":
            # Score only pairs whose row AND column are held out (Q4-like): a model that is
            # good on half-seen pairs (Q2 / Q3) can still lose to cosine on fully unseen ones.
            both = np.isin(lab.rows, vr) & np.isin(lab.cols, vc)
            if both.sum() >= _MIN_BOTH_PAIRS:
                val_idx = np.flatnonzero(both)
            else:
                log.info(
                    "only %d validation pairs with both items held out; validating on all %d "
                    "pairs that touch a held-out item",
                    int(both.sum()),
                    len(val_idx),
                )
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
            val_idx,
            (lab.values - offset) / scale,
            device,
        )
        names: tuple[str, ...] = AUTO_CANDIDATES if self.variant == "auto" else (self.variant,)
        if pointwise and self.variant == "auto":
            names = ("constant", "paper")
        results: dict[
            str, tuple[float | None, Any, list[dict[str, float]], int, EstimatorSettings]
        ] = {}
        for k, name in enumerate(names):
            st = settings_for(name, base)
            torch.manual_seed(seed + k)
            net, hist, best_epoch, best_val = _train_one(name, st, data, seed + k, self.progress)
            results[name] = (best_val, net, hist, best_epoch, st)
        self.candidates_se_: dict[str, float] = {}
        if self.variant == "auto":
            self.candidates_ = {n: r[0] for n, r in results.items()}
            chosen = min(results, key=lambda n: _nan_inf(results[n][0]))
            if base.auto_rule == "one-se" and len(val_idx):
                errors = {}
                for n in names:
                    with torch.no_grad():
                        p = _forward_idx(results[n][1], data, val_idx).double().cpu().numpy()
                    errors[n] = (p - data.y_scaled[val_idx]) ** 2
                chosen, self.candidates_se_ = select_one_se(
                    list(names),
                    errors,
                    lab.rows[val_idx],
                    None if pointwise else lab.cols[val_idx],
                    square=square,
                )
        else:
            self.candidates_ = {names[0]: results[names[0]][0]}
            chosen = names[0]
        if base.refit and len(val_idx):
            for n in names:
                if n in _CLOSED_FORM:
                    _refit_closed_form(results[n][1], n, data)
        self.candidate_networks_ = {n: r[1].cpu().eval() for n, r in results.items()}
        self.candidate_histories_ = {n: r[2] for n, r in results.items()}
        best_val, net, hist, best_epoch, st = results[chosen]
        self.variant_ = chosen
        self.settings_ = st
        self.network_ = net.cpu().eval()
        self.history_ = hist
        self.best_epoch_ = best_epoch
        self.val_mse_ = best_val
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
    val_idx: np.ndarray
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

    if len(data.val_idx) == 0:
        return None
    with torch.no_grad():
        pred = _forward_idx(net, data, data.val_idx).double().cpu().numpy()
    return float(np.mean((pred - data.y_scaled[data.val_idx]) ** 2))


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


def _train_one(
    name: str, st: EstimatorSettings, data: _Data, seed: int, progress: bool
) -> tuple[Any, list[dict[str, float]], int, float | None]:
    """Train one variant; returns (network, history, best_epoch, best validation MSE)."""
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
            return net, [{"epoch": 0, "val_mse": val if val is not None else float("nan")}], 0, val

    params = [p for p in net.parameters() if p.requires_grad]
    opt = _Adam(params, lr=st.lr, weight_decay=st.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    tr = torch.from_numpy(data.train_idx)
    rows_all = torch.from_numpy(data.lab.rows).to(data.device)
    cols_all = torch.from_numpy(data.lab.cols).to(data.device)
    y_all = torch.from_numpy(data.y_scaled.astype(np.float32)).to(data.device)

    best_val = _val_mse(net, data)
    best_state = copy.deepcopy(net.state_dict())
    best_epoch, bad = 0, 0
    history: list[dict[str, float]] = [
        {"epoch": 0, "train_mse": float("nan"), "val_mse": _nan(best_val)}
    ]
    bar = _progress(progress, st.epochs, name)
    try:
        for epoch in range(1, st.epochs + 1):
            net.train()
            perm = tr[torch.randperm(len(tr), generator=gen)].to(data.device)
            total, count = 0.0, 0
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
                total += float(loss.detach()) * len(bt)
                count += len(bt)
            net.eval()
            val = _val_mse(net, data)
            history.append(
                {"epoch": epoch, "train_mse": total / max(1, count), "val_mse": _nan(val)}
            )
            if bar is not None:
                bar[0].update(bar[1], advance=1, description=f"{name} val={_nan(val):.4g}")
            if val is None:
                best_state, best_epoch = copy.deepcopy(net.state_dict()), epoch
                continue
            if best_val is None or val < best_val:
                best_val, best_state, best_epoch, bad = (
                    val,
                    copy.deepcopy(net.state_dict()),
                    epoch,
                    0,
                )
            else:
                bad += 1
                if st.patience is not None and bad >= st.patience:
                    log.info("%s: early stop at epoch %d (best %d)", name, epoch, best_epoch)
                    break
    finally:
        if bar is not None:
            bar[0].stop()
    net.load_state_dict(best_state)
    return net, history, best_epoch, best_val


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
    task = p.add_task(name, total=total)
    p.start()
    return p, task


__all__ = [
    "AUTO_CANDIDATES",
    "AUTO_RULES",
    "VARIANTS",
    "EstimatorSettings",
    "InfluenceEstimator",
    "PairLabels",
    "read_labels",
    "settings_for",
]
