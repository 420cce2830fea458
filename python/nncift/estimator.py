"""`InfluenceEstimator`: train an InfluenceNetwork on a few labelled pairs, predict the rest.

scikit-learn's estimator contract: `__init__` only stores parameters, `get_params` /
`set_params` read and write them (so `sklearn.base.clone` works), `fit` returns `self`,
learned state ends in `_`, `random_state` is resolved in `fit`.

Where the parts live: `nncift.settings` (EstimatorSettings, the variants), `nncift.labels`
(PairLabels, label files, input checks), `nncift.model_selection` (the held-out split, the
rank score and the one-standard-error rules), `nncift.training` (one network's training
loop and the closed-form fits). This module is the estimator: `fit` as named steps, then
`predict` and `export`. The names callers used from here are re-exported.

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

import dataclasses
import inspect
import logging
import os
from typing import Any

import numpy as np

from nncift.errors import InputError
from nncift.labels import PairLabels, _check_embeddings, _check_labels, _index_array, read_labels
from nncift.model_selection import _nan_inf, _nested_split, _RankScorer, select_one_se
from nncift.settings import (
    AUTO_CANDIDATES,
    AUTO_RULES,
    CLOSED_FORM,
    DEFAULT_MAX_STEPS,
    VARIANTS,
    EstimatorSettings,
    settings_for,
)
from nncift.training import (
    _Data,
    _forward_idx,
    _refit_closed_form,
    _train_one,
    _Trained,
    step_budget,
)

log = logging.getLogger(__name__)

NO_SIGNAL_MESSAGE = (
    "the labels carried no learnable signal on held-out items: no candidate ranked held-out "
    "items better than a constant beyond noise, so the network predicts one value and ranks "
    "nothing; the selection falls back to the true labels of the labelled items and the "
    "seeded tie order for the rest. Label more items (raise --u), or use --exact"
)


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

    # -- scikit-learn parameters ---------------------------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The `__init__` parameters, sorted (as scikit-learn's BaseEstimator lists them)."""
        sig = inspect.signature(cls.__init__)
        return sorted(
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every `__init__` parameter by name, as stored (scikit-learn's contract).

        deep: also list the parameters of parameters that are estimators themselves, as
        `name__param` (none are today: `settings` is a frozen dataclass, replaced whole).
        """
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> InfluenceEstimator:
        """Set `__init__` parameters by name (`name__param` for a nested estimator); returns
        self. Like `__init__`, stores only: values are checked by the next `fit`."""
        valid = self._get_param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise InputError(
                    f"invalid parameter {name!r} for InfluenceEstimator; valid parameters: {valid}"
                )
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            inner = getattr(self, name)
            if not hasattr(inner, "set_params"):
                raise InputError(
                    f"parameter {name!r} ({type(inner).__name__}) has no nested parameters; "
                    f"set {name}= to a new value instead"
                )
            inner.set_params(**sub_params)
        return self

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

        Steps: check the inputs, resolve the settings and the seed, hold out items (stop /
        selection halves), fit the label scaling, train every candidate, score them on the
        selection half, choose one (variant="auto"), store the learned state.
        """
        import torch

        er, ec, lab, square = self._check_fit_inputs(
            row_embeddings, col_embeddings, labels, rows, cols
        )
        pointwise = self.kind == "pointwise"
        base = self._base_settings(pointwise)
        seed = self._resolve_random_state()
        auto = self.variant == "auto"
        train_idx, stop_idx, val_idx = self._hold_out(
            lab, base, np.random.default_rng(seed), pointwise, square, auto
        )
        offset, scale = self._fit_label_scaling(lab.values[train_idx], base)
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
        results = self._train_candidates(names, base, data, seed)
        preds, mse, rank = self._score_candidates(names, results, data, val_idx, square)
        chosen = (
            self._choose(names, preds, mse, rank, data, val_idx, base.auto_rule, square)
            if auto
            else names[0]
        )
        self._store_result(names, results, chosen, data, mse, refit=base.refit and len(val_idx) > 0)
        return self

    def _check_fit_inputs(
        self, row_embeddings: Any, col_embeddings: Any, labels: Any, rows: Any, cols: Any
    ) -> tuple[np.ndarray, np.ndarray, PairLabels, bool]:
        """(row embeddings, column embeddings, labels, square) checked against each other."""
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
        return er, ec, lab, square

    def _base_settings(self, pointwise: bool) -> EstimatorSettings:
        """`settings` (the paper's by default) with the input layout the labels need."""
        base = self.settings or EstimatorSettings()
        if pointwise:
            return dataclasses.replace(base, input_layout="pointwise")
        if base.input_layout == "pointwise":
            raise InputError("input_layout 'pointwise' needs kind='pointwise'")
        return base

    def _resolve_random_state(self) -> int:
        """The seed of this fit (`random_state`, or a fresh one), stored as `random_state_`."""
        seed = (
            int(np.random.SeedSequence().generate_state(1)[0])
            if self.random_state is None
            else int(self.random_state)
        )
        self.random_state_ = seed
        return seed

    def _hold_out(
        self,
        lab: PairLabels,
        base: EstimatorSettings,
        rng: np.random.Generator,
        pointwise: bool,
        square: bool,
        auto: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(training, early-stopping, selection) pair indices of the nested held-out split;
        stores the held-out items and their halves."""
        if auto and base.val_fraction == 0:
            raise InputError(
                'variant="auto" chooses among its candidates on held-out items, and '
                "val_fraction=0 holds out none; set val_fraction > 0 (e.g. 0.2), or choose a "
                "variant (e.g. 'paper' or 'cosine-linear')"
            )
        split = _nested_split(lab, base, rng, pointwise, square, min_held_out=2 if auto else 1)
        train_idx, stop_idx, val_idx = split.train_idx, split.stop_idx, split.sel_idx
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
        self.val_rows_, self.val_cols_ = split.rows, split.cols
        self.stop_rows_, self.stop_cols_ = split.stop_rows, split.stop_cols
        self.sel_rows_, self.sel_cols_ = split.sel_rows, split.sel_cols
        self.n_stop_pairs_ = int(len(stop_idx))
        self.n_val_pairs_ = int(len(val_idx))
        return train_idx, stop_idx, val_idx

    def _fit_label_scaling(
        self, y_train: np.ndarray, base: EstimatorSettings
    ) -> tuple[float, float]:
        """(offset, scale) of `label_scaling`, from the training labels only."""
        if np.ptp(y_train) == 0:
            raise InputError(
                "the training labels (after holding out validation items) have a single value"
            )
        if base.label_scaling == "standard":
            offset, scale = float(y_train.mean()), float(y_train.std())
        elif base.label_scaling == "minmax":
            offset, scale = float(y_train.min()), float(np.ptp(y_train))
        else:
            offset, scale = 0.0, 1.0
        self.label_offset_, self.label_scale_ = offset, scale
        return offset, scale

    def _train_candidates(
        self, names: tuple[str, ...], base: EstimatorSettings, data: _Data, seed: int
    ) -> dict[str, _Trained]:
        """Train every candidate variant; candidate k is seeded with seed + k."""
        import torch

        results: dict[str, _Trained] = {}
        for k, name in enumerate(names):
            st = settings_for(name, base)
            torch.manual_seed(seed + k)
            results[name] = _train_one(name, st, data, seed + k, self.progress)
        return results

    def _score_candidates(
        self,
        names: tuple[str, ...],
        results: dict[str, _Trained],
        data: _Data,
        val_idx: np.ndarray,
        square: bool,
    ) -> tuple[dict[str, np.ndarray], dict[str, float | None], _RankScorer | None]:
        """Score every candidate on the selection half (items that neither trained nor
        stopped it): MSE, and the rank score a selection depends on.

        Returns (predictions, MSE, the rank scorer or None without selection pairs)."""
        import torch

        lab = data.lab
        pointwise = data.cols_e is None
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
        return preds, mse, rank

    def _choose(
        self,
        names: tuple[str, ...],
        preds: dict[str, np.ndarray],
        mse: dict[str, float | None],
        rank: _RankScorer | None,
        data: _Data,
        val_idx: np.ndarray,
        auto_rule: str,
        square: bool,
    ) -> str:
        """variant="auto": the candidate `auto_rule` keeps by rank score (by MSE when no
        held-out column has enough rows to rank)."""
        if rank is not None and rank.usable:
            chosen, self.candidates_se_ = rank.choose(
                list(names), preds, mse, one_se=auto_rule == "one-se"
            )
            return chosen
        # No held-out column has 5 rows: no ranking to score. Say so, choose by MSE.
        self.criterion_ = "mse (too few held-out items per column for a rank score)"
        log.warning("auto: too few held-out items per column to score rankings; chose by MSE")
        lab = data.lab
        errors = {n: (preds[n] - data.y_scaled[val_idx]) ** 2 for n in names}
        if auto_rule == "one-se":
            chosen, self.candidates_se_ = select_one_se(
                list(names),
                errors,
                lab.rows[val_idx],
                None if data.cols_e is None else lab.cols[val_idx],
                square=square,
            )
            return chosen
        return min(names, key=lambda n: _nan_inf(mse[n]))

    def _store_result(
        self,
        names: tuple[str, ...],
        results: dict[str, _Trained],
        chosen: str,
        data: _Data,
        mse: dict[str, float | None],
        refit: bool,
    ) -> None:
        """Refit the closed-form proxies on all labelled pairs (`refit`), keep every
        candidate's network and the chosen one's state."""
        self.no_signal_ = bool(self.variant == "auto" and chosen == "constant")
        if self.no_signal_:
            # The CLIs print it and record it in the manifest; the API has no_signal_.
            log.info("auto chose the constant: %s", NO_SIGNAL_MESSAGE)
        if refit:
            for n in names:
                if n in CLOSED_FORM:
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
        from nncift.weights import check_embeddings

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
        """The Rust `nncift.scorer.PairwiseScorer` for the fitted network, built in memory once."""
        from nncift.scorer import PairwiseScorer

        if self._scorer is None:
            self._scorer = PairwiseScorer.from_network(
                self.network_.to_weights(
                    embedding_model=self.embedding_model,
                    label_scale=self.label_scale_,
                    label_offset=self.label_offset_,
                    label_name=self.label_name,
                    extra_metadata=self.metadata(),
                )
            )
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
    "select_one_se",
    "settings_for",
    "step_budget",
]
