"""Model selection on held-out items: the nested held-out split (`_nested_split`: an
early-stopping half and a model-selection half), the rank score (`_RankScorer`: Spearman
within held-out columns) with `variant="auto"`'s one-standard-error rule on it, the
MSE-based one-standard-error rule `select_one_se`, and the delete-one-item jackknife they
share. Pure NumPy: no torch, no training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from nncift.errors import InputError
from nncift.labels import PairLabels
from nncift.settings import EstimatorSettings

log = logging.getLogger(__name__)

# Fewest Q4-like validation pairs worth validating on alone (see EstimatorSettings.val_pairs).
_MIN_BOTH_PAIRS = 50
# Fewest rows in a held-out column for its Spearman to count toward the rank score
# (the jackknife of a Spearman over 3-4 values swings wildly).
_MIN_GROUP = 5
# Most jackknife units per side (items beyond it are pooled into this many groups).
_MAX_JACKKNIFE_UNITS = 40


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


def _nan_inf(x: float | None) -> float:
    return float("inf") if x is None else float(x)


__all__ = ["select_one_se"]
