"""Quadrant evaluation of a predicted influence matrix against baselines (paper §4.2, done right).

Given the full true matrix K (M, N) — available for cheap labels such as DELIFT-SE, or for a
benchmark — and a u-split, every predictor is scored per quadrant Q1..Q4 with MSE, MAE,
Spearman rank correlation and the top-k overlap per row (k = 10 and k = 1% of the
quadrant's columns). Baselines are computed the same way, from the Q1 labels only:

- zero:      predict 0 (the paper's baseline);
- constant:  the mean of the Q1 labels;
- random:    a seeded draw from the Q1 label distribution (label vs. noise — the reference
             scripts compared prediction vs. noise);
- additive:  row mean + column mean - grand mean over Q1 (unseen items fall back to the
             grand mean, so on Q4 it equals `constant`);
- cosine:    cos(e_i, e_j) rescaled by a least-squares line fitted on Q1.

Selection quality judges the subset picked from predicted values on the true values: top-k
(k = v*M rows with the highest mean predicted utility over the columns) as the share of the
true optimum's utility it reaches, and facility location (greedy, `nncift.selection.select`)
on the predicted kernel as the share of the true-kernel FL value it reaches.

Pairwise matrices only; pointwise labels need no quadrants (Q1 / rest).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nncift.errors import InputError
from nncift.split import QUADRANTS, USplit

log = logging.getLogger(__name__)

BASELINES = ("zero", "constant", "random", "additive", "cosine")
METRICS = ("mse", "mae", "spearman", "top10", "top1pct")


# ---------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------
def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), float64 (n,)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    # Boundaries of runs of equal values; each run gets the mean of its positions.
    edges = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [len(x)]))
    avg = (starts + ends - 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(pred: np.ndarray, true: np.ndarray) -> float:
    """Spearman rank correlation of two flat arrays; NaN when either is constant."""
    a, b = _ranks(np.ravel(pred).astype(np.float64)), _ranks(np.ravel(true).astype(np.float64))
    a -= a.mean()
    b -= b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / den) if den > 0 else float("nan")


def topk_overlap(pred: np.ndarray, true: np.ndarray, k: int) -> float:
    """Mean over rows of |top-k(pred row) ∩ top-k(true row)| / k; pred, true (m, n)."""
    m, n = true.shape
    k = min(max(1, k), n)
    if m == 0 or n == 0:
        return float("nan")
    # Ties in pred break to the lowest index (stable sort on the negated values).
    tp = np.argsort(-pred, axis=1, kind="stable")[:, :k]
    tt = np.argsort(-true, axis=1, kind="stable")[:, :k]
    hits = [len(np.intersect1d(tp[r], tt[r], assume_unique=True)) for r in range(m)]
    return float(np.mean(hits) / k)


def block_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MSE, MAE, Spearman, top-10 and top-1% row overlap of a block; pred, true (m, n)."""
    if true.size == 0:
        return {k: float("nan") for k in METRICS}
    diff = pred.astype(np.float64) - true.astype(np.float64)
    n = true.shape[1]
    return {
        "mse": float(np.mean(diff**2)),
        "mae": float(np.mean(np.abs(diff))),
        "spearman": spearman(pred, true),
        "top10": topk_overlap(pred, true, 10),
        "top1pct": topk_overlap(pred, true, max(1, int(round(0.01 * n)))),
    }


# ---------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------
def cosine_matrix(rows_e: np.ndarray, cols_e: np.ndarray) -> np.ndarray:
    """cos(e_i, e_j) for all pairs: (M, d), (N, d) -> (M, N) float32."""
    r = rows_e / np.clip(np.linalg.norm(rows_e, axis=1, keepdims=True), 1e-12, None)
    c = cols_e / np.clip(np.linalg.norm(cols_e, axis=1, keepdims=True), 1e-12, None)
    return np.asarray(r @ c.T, dtype=np.float32)


def baseline_predictions(
    labels: np.ndarray,
    split: USplit,
    rows_e: np.ndarray,
    cols_e: np.ndarray,
    *,
    random_state: int = 0,
) -> dict[str, np.ndarray]:
    """Each baseline's (M, N) float32 prediction, fitted on the Q1 labels only."""
    r_in, c_in = split.quadrant("Q1")
    q1 = labels[np.ix_(r_in, c_in)].astype(np.float64)
    mu = float(q1.mean())
    m, n = labels.shape
    rng = np.random.default_rng(random_state)
    row_eff = np.full(m, 0.0)
    col_eff = np.full(n, 0.0)
    row_eff[r_in] = q1.mean(axis=1) - mu
    col_eff[c_in] = q1.mean(axis=0) - mu
    cos = cosine_matrix(rows_e, cols_e)
    x = cos[np.ix_(r_in, c_in)].ravel().astype(np.float64)
    a, b = np.polyfit(x, q1.ravel(), 1) if np.ptp(x) > 0 else (0.0, mu)
    return {
        "zero": np.zeros((m, n), np.float32),
        "constant": np.full((m, n), mu, np.float32),
        "random": rng.choice(q1.ravel(), size=(m, n)).astype(np.float32),
        "additive": (mu + row_eff[:, None] + col_eff[None, :]).astype(np.float32),
        "cosine": (a * cos + b).astype(np.float32),
    }


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
@dataclass
class EvaluationReport:
    """Per-quadrant metrics of each predictor; `quadrants[q][predictor][metric]`."""

    quadrants: dict[str, dict[str, dict[str, float]]]
    selection: dict[str, dict[str, float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"info": self.info, "quadrants": self.quadrants, "selection": self.selection}

    def write_json(self, path: str | os.PathLike[str]) -> None:
        from nncift.io import write_json_atomic

        write_json_atomic(path, _finite(self.to_dict()))

    def predictors(self) -> list[str]:
        return list(next(iter(self.quadrants.values())).keys())

    def rich_table(self, title: str = "Quadrant evaluation") -> Any:
        """A rich Table: one row per (quadrant, predictor); the best MSE per quadrant in bold."""
        from rich.table import Table

        t = Table(title=title)
        for col in ("quadrant", "predictor", "MSE", "MAE", "Spearman", "top-10", "top-1%"):
            t.add_column(col, justify="right" if col not in ("quadrant", "predictor") else "left")
        for q, preds in self.quadrants.items():
            best = min(preds, key=lambda p: _inf(preds[p]["mse"]))
            for p, mt in preds.items():
                style = "bold" if p == best else None
                t.add_row(
                    q,
                    p,
                    f"{mt['mse']:.5f}",
                    f"{mt['mae']:.4f}",
                    _fmt(mt["spearman"]),
                    _fmt(mt["top10"]),
                    _fmt(mt["top1pct"]),
                    style=style,
                )
            t.add_section()
        return t


def _inf(x: float) -> float:
    return float("inf") if not math.isfinite(x) else x


def _fmt(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.3f}"


def _finite(obj: Any) -> Any:
    """JSON has no NaN: replace non-finite floats by None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def evaluate_quadrants(
    predictions: dict[str, np.ndarray] | np.ndarray,
    labels: np.ndarray,
    split: USplit,
    rows_e: np.ndarray,
    cols_e: np.ndarray | None = None,
    *,
    baselines: bool = True,
    select_fraction: float = 0.1,
    random_state: int = 0,
) -> EvaluationReport:
    """Score predicted matrices and the baselines per quadrant.

    predictions: {name: (M, N)} or a single (M, N) array (named "network"), label units.
    labels: the true (M, N) matrix (every quadrant labelled). split: the u-split used in
    training. rows_e (M, d), cols_e (N, d) embeddings (None: square, cols = rows) — for the
    cosine baseline. select_fraction: v for the top-k selection-quality check.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or (labels.shape[0], labels.shape[1]) != (split.n_rows, split.n_cols):
        raise InputError(
            f"labels of shape {labels.shape} do not match the split "
            f"({split.n_rows} x {split.n_cols})"
        )
    if not np.all(np.isfinite(labels)):
        raise InputError(
            f"labels contain {int((~np.isfinite(labels)).sum())} NaN or infinite values"
        )
    cols_e = rows_e if cols_e is None else cols_e
    if rows_e.shape[0] != labels.shape[0] or cols_e.shape[0] != labels.shape[1]:
        raise InputError(
            f"labels are {labels.shape} but there are {rows_e.shape[0]} row and "
            f"{cols_e.shape[0]} column embeddings"
        )
    preds = {"network": predictions} if isinstance(predictions, np.ndarray) else dict(predictions)
    for name, p in preds.items():
        if p.shape != labels.shape:
            raise InputError(f"prediction {name!r} has shape {p.shape}, labels {labels.shape}")
    if baselines:
        preds.update(baseline_predictions(labels, split, rows_e, cols_e, random_state=random_state))
    quads: dict[str, dict[str, dict[str, float]]] = {}
    for q in QUADRANTS:
        r, c = split.quadrant(q)
        true = labels[np.ix_(r, c)]
        quads[q] = {name: block_metrics(p[np.ix_(r, c)], true) for name, p in preds.items()}
    selection = {name: selection_quality(p, labels, select_fraction) for name, p in preds.items()}
    fl = fl_selection_quality(preds, labels, select_fraction)
    for name, val in fl.items():
        selection[name]["fl_ratio"] = val
    info = {
        "u": split.u,
        "seed": split.seed,
        "n_rows": split.n_rows,
        "n_cols": split.n_cols,
        "square": split.square,
        "select_fraction": select_fraction,
        "quadrant_sizes": {
            q: [len(split.quadrant(q)[0]), len(split.quadrant(q)[1])] for q in QUADRANTS
        },
    }
    return EvaluationReport(quads, selection, info)


def selection_quality(pred: np.ndarray, true: np.ndarray, fraction: float) -> dict[str, float]:
    """Top-k selection by predicted mean utility, judged on the true values.

    k = max(1, round(fraction * M)) rows with the highest predicted row mean are chosen;
    returns the true utility they reach relative to the best true top-k (1.0 = optimal) and
    the overlap of the two subsets. Facility location: `fl_selection_quality`.
    """
    m = true.shape[0]
    k = max(1, int(round(fraction * m)))
    pu = pred.mean(axis=1)
    tu = true.astype(np.float64).mean(axis=1)
    chosen = np.argsort(-pu, kind="stable")[:k]
    best = np.argsort(-tu, kind="stable")[:k]
    # Shift so the worst item is 0: the ratio is then invariant to a label offset.
    base = tu.min()
    opt = float((tu[best] - base).sum())
    got = float((tu[chosen] - base).sum())
    return {
        "topk_utility_ratio": got / opt if opt > 0 else float("nan"),
        "topk_overlap": len(np.intersect1d(chosen, best)) / k,
    }


def _fl_value(kernel: np.ndarray, chosen: np.ndarray) -> float:
    """f(A) = sum over columns of max over chosen rows; kernel (M, N), non-negative."""
    return float(kernel[chosen].max(axis=0).sum()) if len(chosen) else 0.0


def fl_selection_quality(
    preds: dict[str, np.ndarray], true: np.ndarray, fraction: float
) -> dict[str, float]:
    """Facility location chosen on each predicted kernel, judged on the true kernel.

    Kernels are shifted to be non-negative (FL needs s >= 0): predicted by their own minimum,
    true by its minimum. Returns f_true(A_pred) / f_true(A_true) per predictor, where both
    subsets have k = round(fraction * M) rows and A_true is greedy FL on the true kernel
    (1.0 = as good as selecting with the real labels). Empty if `nncift.selection` is absent.
    """
    try:
        from nncift.selection import select
    except ImportError:
        log.info("nncift.selection not available: facility-location quality skipped")
        return {}
    k = max(1, int(round(fraction * true.shape[0])))
    t = (true - true.min()).astype(np.float32)

    def pick(kernel: np.ndarray) -> np.ndarray:
        res = select("fl", budget=k, kernel=kernel, mode="dense", stop_if_zero_gain=False)
        return np.asarray(res.indices, dtype=np.int64)

    best = _fl_value(t, pick(t))
    out = {}
    for name, p in preds.items():
        pk = (p - p.min()).astype(np.float32)
        if not np.any(pk > 0):
            out[name] = float("nan")  # a constant prediction gives FL nothing to choose by
            continue
        out[name] = _fl_value(t, pick(pk)) / best if best > 0 else float("nan")
    return out


# ---------------------------------------------------------------------------------------
# fit + evaluate, sweeps, plots
# ---------------------------------------------------------------------------------------
def fit_and_evaluate(
    labels: np.ndarray,
    rows_e: np.ndarray,
    cols_e: np.ndarray | None = None,
    *,
    u: float = 0.05,
    seed: int = 0,
    settings: Any = None,
    variant: str = "paper",
    embedding_model: str = "unknown",
    progress: bool = False,
    device: str = "auto",
    baselines: bool = True,
) -> tuple[EvaluationReport, Any]:
    """Split with (u, seed), train an InfluenceEstimator on Q1 only, evaluate all quadrants.

    labels: the full true (M, N) matrix; only its Q1 block is shown to the estimator.
    Returns (report, fitted estimator).
    """
    from nncift.estimator import InfluenceEstimator
    from nncift.split import u_split

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"full labels must be a 2-D (M, N) matrix, got shape {labels.shape}")
    square = cols_e is None
    sp = u_split(labels.shape[0], None if square else labels.shape[1], u=u, seed=seed)
    if square and labels.shape[0] != labels.shape[1]:
        raise InputError(
            f"a square (pool x pool) evaluation needs an (M, M) matrix, got {labels.shape}"
        )
    r, c = sp.quadrant("Q1")
    est = InfluenceEstimator(
        settings,
        variant=variant,
        random_state=seed,
        progress=progress,
        embedding_model=embedding_model,
        device=device,
    ).fit(rows_e, cols_e, labels[np.ix_(r, c)], rows=r, cols=c, extra_metadata=sp.to_metadata())
    pred = est.predict(rows_e, cols_e)
    rep = evaluate_quadrants(
        {"network": pred}, labels, sp, rows_e, cols_e, baselines=baselines, random_state=seed
    )
    rep.info.update(
        {
            "variant": est.variant_,
            "candidates_val_mse": est.candidates_,
            "best_epoch": est.best_epoch_,
        }
    )
    return rep, est


def sweep(
    labels: np.ndarray,
    rows_e: np.ndarray,
    cols_e: np.ndarray | None,
    *,
    us: Sequence[float] = (0.05,),
    archs: Sequence[tuple[int, ...]] | None = None,
    seeds: Sequence[int] = (0,),
    settings: Any = None,
    variant: str = "paper",
    embedding_model: str = "unknown",
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Fit and evaluate over a grid of u, hidden sizes and seeds.

    Returns one record per run: {"u", "arch", "seed", "n_params", "variant", "mse": {q: {pred: x}},
    "spearman": {q: {pred: x}}}.
    """
    import dataclasses

    from nncift.estimator import EstimatorSettings

    base = settings or EstimatorSettings()
    out = []
    for arch in archs if archs is not None else [base.hidden_sizes]:
        st = dataclasses.replace(base, hidden_sizes=tuple(arch))
        for u in us:
            for seed in seeds:
                rep, est = fit_and_evaluate(
                    labels,
                    rows_e,
                    cols_e,
                    u=u,
                    seed=seed,
                    settings=st,
                    variant=variant,
                    embedding_model=embedding_model,
                )
                rec = {
                    "u": u,
                    "arch": list(arch),
                    "seed": seed,
                    "n_params": int(sum(p.numel() for p in est.network_.parameters())),
                    "variant": est.variant_,
                    "mse": {
                        q: {p: m["mse"] for p, m in d.items()} for q, d in rep.quadrants.items()
                    },
                    "spearman": {
                        q: {p: m["spearman"] for p, m in d.items()}
                        for q, d in rep.quadrants.items()
                    },
                }
                out.append(rec)
                if on_result is not None:
                    on_result(rec)
    return out


def _mean_std(
    records: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any], q: str, pred: str
) -> tuple[list[Any], list[float], list[float]]:  # noqa: E501
    groups: dict[Any, list[float]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r["mse"][q][pred])
    xs = sorted(groups)
    return xs, [float(np.mean(groups[x])) for x in xs], [float(np.std(groups[x])) for x in xs]


def plot_error_vs_u(
    records: list[dict[str, Any]],
    path: str | os.PathLike[str],
    predictors: Sequence[str] = ("network", "constant", "cosine"),
) -> None:
    """Paper Fig. 2: MSE per quadrant versus u (mean ± std over seeds), PNG."""
    _plot(records, path, lambda r: r["u"], "u (labelled fraction of items)", predictors, logx=True)


def plot_error_vs_size(
    records: list[dict[str, Any]],
    path: str | os.PathLike[str],
    predictors: Sequence[str] = ("network", "constant", "cosine"),
) -> None:
    """Paper Fig. 4: MSE per quadrant versus network size (parameter count), PNG."""
    _plot(records, path, lambda r: r["n_params"], "network parameters", predictors, logx=True)


def _plot(
    records: list[dict[str, Any]],
    path: str | os.PathLike[str],
    key: Callable[[dict[str, Any]], Any],
    xlabel: str,
    predictors: Sequence[str],
    logx: bool,
) -> None:
    if not records:
        raise InputError("no sweep results to plot")
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    from nncift.io import atomic_path

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
    for ax, q in zip(axes, QUADRANTS, strict=True):
        for pred in predictors:
            if pred not in records[0]["mse"][q]:
                continue
            xs, mu, sd = _mean_std(records, key, q, pred)
            ax.errorbar(xs, mu, yerr=sd, marker="o", capsize=3, label=pred)
        ax.set_title(q)
        ax.set_xlabel(xlabel)
        if logx:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MSE")
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_sweep_json(records: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    from nncift.io import write_json_atomic

    write_json_atomic(Path(path), _finite(records))


__all__ = [
    "BASELINES",
    "METRICS",
    "EvaluationReport",
    "baseline_predictions",
    "block_metrics",
    "cosine_matrix",
    "evaluate_quadrants",
    "fit_and_evaluate",
    "plot_error_vs_size",
    "plot_error_vs_u",
    "selection_quality",
    "spearman",
    "sweep",
    "topk_overlap",
    "write_sweep_json",
]
