"""`--estimator auto` against a fixed estimator on the real DELIFT matrices.

For the designs `nncift select` can default to (active, block; spread where the budget allows it) at 1%, 2% and
5% of the full matrix's LM tokens, 5 seeds: the estimator `nncift.effects.choose_effects`
picks from the labels alone (held-out labelled pool items), and the within-target Spearman on
unlabelled pairs of its prediction, of `additive+cos` and of `additive+cos-eb`. Prints one
JSON line per seed and design, then the means (docs/valuation.md, "What nncift select uses").

    python benches/valuation_auto.py        # ~3 min per matrix on 2 cores
    python benches/valuation_auto.py --matrices mixed --features lm
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import valuation as V  # noqa: E402
from nncift import designs as D  # noqa: E402
from nncift import effects as E  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--matrices", default="chatterbot,mixed")
    ap.add_argument("--features", choices=("minilm", "lm", "both"), default="minilm")
    args = ap.parse_args(argv)
    args.cache = None
    for mx in V.real_matrices(args):
        if mx.function == "delift":
            run_matrix(mx)
    return 0


def run_matrix(mx: V.Matrix) -> None:
    m, n = mx.values.shape
    rows_out = []
    for frac in (0.01, 0.02, 0.05):
        budget = frac * mx.full_cost
        for seed in range(5):
            designs = {"active": V.active_design(mx, budget, seed)}
            blk = D.block_for_budget(m, n, budget=budget, cost=mx.cost, seed=seed)
            designs["block"] = (blk, mx.values[blk.rows, blk.cols])
            try:
                d = D.spread_for_budget(m, n, budget=budget, cost=mx.cost, seed=seed)
                designs["spread"] = (d, mx.values[d.rows, d.cols])
            except Exception:  # an InputError: the spread does not fit this budget
                pass
            for name, (d, vals) in designs.items():
                unlabelled = np.ones((m, n), bool)
                unlabelled[d.rows, d.cols] = False
                kw = {"n_rows": m, "n_cols": n, "row_features": mx.row_features,
                      "col_features": mx.col_features}  # fmt: skip
                choice = E.choose_effects(E.EFFECT_NAMES, d.rows, d.cols, vals, seed=seed, **kw)
                row = {"matrix": mx.name, "features": mx.features, "fraction": frac,
                       "seed": seed, "design": name, "chosen": choice.chosen}  # fmt: skip
                for est in sorted({choice.chosen, "additive+cos", "additive+cos-eb"}):
                    fitted = E.fit_effects(est, d.rows, d.cols, vals, **kw)
                    pred = E.predict_all(fitted, m, n).astype(np.float64)
                    row[est] = V.within_target(pred, mx.values, unlabelled)
                row["auto"] = row[choice.chosen]
                print(json.dumps(row), flush=True)
                rows_out.append(row)
    groups = collections.defaultdict(list)
    for r in rows_out:
        groups[(r["fraction"], r["design"])].append(r)
    for (frac, name), rs in sorted(groups.items()):
        mean = {k: float(np.mean([r[k] for r in rs])) for k in ("auto", "additive+cos",
                                                                   "additive+cos-eb")}  # fmt: skip
        chosen = dict(collections.Counter(r["chosen"] for r in rs))
        print(f"{mx.name} {mx.features} {frac:.0%} {name}: auto {mean['auto']:.3f}, additive+cos "
              f"{mean['additive+cos']:.3f}, additive+cos-eb {mean['additive+cos-eb']:.3f}; "
              f"auto chose {chosen}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
