"""InfluenceNetwork benchmarks: training speed / memory, and quadrant quality on real data.

    python benches/bench_network.py speed   [--m 2000] [--steps 1500] [--tile] [--no-predict] [--save]
    python benches/bench_network.py quality [--data sharegpt] [--n 2000] [--seeds 5] [--out DIR]
    python benches/bench_network.py table   [--us 0.01,0.05,0.1,0.2,0.4] [--seeds 5]
                                            [--epochs-at 0.2:8,0.4:2] [--render]

speed: factorised training (batches of (i, j) indices, rows of the first-layer projections
gathered per batch) against materialised training (the paper's approach: the concatenated
`[e_i, 0, e_j]` features of every labelled pair built up front, batches sliced from it), at
M = N = 2,000 and u = 0.05 / 0.4, d = 384; --tile adds "factorised-tile" (a batch of 64 pairs
taken as an 8 x 8 tile of labelled rows x columns, so the first layer projects 16 items; a
bench-only option, the estimator does not use it). Each configuration runs in its own subprocess so
its peak RSS is its own. Same network, same optimiser, same batch size; the outputs of both
paths are checked equal on one batch before timing.

quality: real items (a packaged data set), MiniLM embeddings (prompt + "\\n##Answer: " +
response), DELIFT-SE labels = cosine similarity of the embeddings, pool x pool (square), the
u-split, five seeds. Two label views:
  same-view  : labels are the cosine of the network's own input embeddings (DELIFT-SE exactly
               as the paper defines it; the cosine baseline is exact by construction);
  other-view : labels are the cosine of the *prompt-only* embeddings, inputs embed prompt +
               response (a similarity the inputs do not contain verbatim, as in the issue's
               calibration run).
Every variant and baseline is reported per quadrant (MSE, Spearman), mean and std over seeds,
plus the u sweep {0.01, 0.05, 0.1, 0.2, 0.4} and a network-size sweep, with the two plots.

delift: the real-LM rows of the reproduction (benches/reproduce.py, section 2): the stored
140 x 70 SmolLM2 DELIFT matrix on chatterbot (benches/data/chatterbot_labels_140x70.npz),
MiniLM inputs, u in {0.1, 0.2, 0.3}, seed 0; the paper's network with the old budget
(20 epochs of the Q1 block) and with the step budget (max_steps 50,000, early stopping
with patience), and `auto`; Q1-Q4 MSE / Spearman beside the constant / additive / cosine
baselines, steps taken and seconds. Writes docs/network_delift_chatterbot.json.

table: the five-seed table at every u (other-view labels, M = 2,000 by default). One JSON per
(u, seed, run) in --cache-dir, so an interrupted sweep resumes where it stopped. Per (u, seed):
the baselines, `cosine-feature`, and `auto` — whose candidates (constant, cosine-linear, paper,
cosine-residual, bilinear) are each evaluated too, so the rows "paper", "cosine-residual" and
"bilinear" are auto's candidates (same split and held-out items; torch seed = seed + the
candidate's position). `auto` is reported with its default one-SE rank rule and, from the same
candidates, with the lowest selection-half MSE (the pre-issue-14 criterion, "auto (min
rule)"). The cached runs predate the rank rule and the step budget. --epochs-at caps the
epochs at large u (the cap is recorded and rendered). --render merges the cached runs into
docs/network_quality.json ("u_table"), re-draws the two plots and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

D = 384


# ---------------------------------------------------------------------------------------
# speed
# ---------------------------------------------------------------------------------------
def _one_speed(mode: str, m: int, u: float, steps: int) -> dict[str, Any]:
    import torch
    from nncift.network import InfluenceNetwork
    from nncift.split import u_split
    from nncift.training import _Adam

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    e = rng.normal(size=(m, D)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sp = u_split(m, m, u=u, seed=0)
    i_all, j_all = sp.quadrant_pairs("Q1")
    n_pairs = len(i_all)
    et = torch.from_numpy(e)
    y = torch.from_numpy((e[i_all] * e[j_all]).sum(1).astype(np.float32))
    net = InfluenceNetwork(D)
    opt = _Adam([p for p in net.parameters()], lr=1e-4)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if mode == "materialised":
        # The paper's input: every labelled pair's [e_i, 0, e_j] built once, up front.
        x_all = net.build_features(et[torch.from_numpy(i_all)], et[torch.from_numpy(j_all)])
        input_bytes = x_all.numel() * 4 + y.numel() * 4
    elif mode == "factorised-tile":
        # A batch of 64 pairs = an 8 x 8 tile of (labelled rows) x (labelled columns): the
        # first layer projects 16 items instead of 64 + 64. Labels as the dense Q1 block.
        rin, cin = torch.from_numpy(sp.rows_in), torch.from_numpy(sp.cols_in)
        y_blk = et[rin] @ et[cin].T
        input_bytes = (rin.numel() + cin.numel()) * 8 + y_blk.numel() * 4 + et.numel() * 4
    else:
        it, jt = torch.from_numpy(i_all), torch.from_numpy(j_all)
        input_bytes = it.numel() * 8 * 2 + y.numel() * 4 + et.numel() * 4
    t_build = time.perf_counter() - t0
    # Both paths compute the same function.
    b0 = torch.arange(64)
    tr = int(np.sqrt(64))
    with torch.no_grad():
        if mode == "factorised-tile":
            a0, c0 = torch.arange(tr), torch.arange(tr)
            ref = net._head(
                net.project_rows(et[rin[a0]])[:, None, :] + net.project_cols(et[cin[c0]])[None]
            ).reshape(-1)
            ii, jj = rin[a0].repeat_interleave(tr), cin[c0].repeat(tr)
            want = net.forward_features(net.build_features(et[ii], et[jj]))
            correct = bool(torch.allclose(ref, want, rtol=1e-5, atol=1e-6)) and bool(
                torch.allclose(y_blk[a0][:, c0].reshape(-1), (et[ii] * et[jj]).sum(1), atol=1e-6)
            )
        elif mode == "materialised":
            ref = net.forward_features(x_all[b0])
        else:
            ref = net.forward_pairs(et, et, it[b0], jt[b0])
        if mode != "factorised-tile":
            want = net.forward_features(
                net.build_features(
                    et[torch.from_numpy(i_all[:64])], et[torch.from_numpy(j_all[:64])]
                )
            )
            correct = bool(torch.allclose(ref, want, rtol=1e-5, atol=1e-6))
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(n_pairs, generator=gen)
    t1 = time.perf_counter()
    done = 0
    n_r, n_c = len(sp.rows_in), len(sp.cols_in)
    perm_r = torch.randperm(n_r, generator=gen)
    perm_c = torch.randperm(n_c, generator=gen)
    for s in range(steps):
        b = perm[(s * 64) % max(1, n_pairs - 64) :][:64]
        if mode == "factorised-tile":
            a = perm_r[(s * tr) % max(1, n_r - tr) :][:tr]
            c = perm_c[((s // max(1, n_r // tr)) * tr) % max(1, n_c - tr) :][:tr]
            z = net.project_rows(et[rin[a]])[:, None, :] + net.project_cols(et[cin[c]])[None]
            pred = net._head(z).reshape(-1)
            loss = torch.mean((pred - y_blk[a][:, c].reshape(-1)) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += pred.numel()
            continue
        if mode == "materialised":
            pred = net.forward_features(x_all.index_select(0, b))
        else:
            pred = net.forward_pairs(et, et, it.index_select(0, b), jt.index_select(0, b))
        loss = torch.mean((pred - y.index_select(0, b)) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += len(b)
    t_train = time.perf_counter() - t1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    epoch_s = t_build + t_train / done * n_pairs
    return {
        "mode": mode,
        "M": m,
        "u": u,
        "labelled_pairs": n_pairs,
        "build_s": round(t_build, 3),
        "train_pairs_per_s": round(done / t_train),
        "one_epoch_s_incl_build": round(epoch_s, 2),
        "input_bytes": int(input_bytes),
        "peak_rss_growth_mb": round((peak - base_rss) / 1024, 1),  # ru_maxrss is KiB on Linux
        "correct": correct,
    }


def _predict_speed(m: int) -> dict[str, Any]:
    """All M x M pairs: materialised features (chunked), factorised torch, Rust scorer."""
    import tempfile

    import torch
    from nncift.network import InfluenceNetwork

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    e = rng.normal(size=(m, D)).astype(np.float32)
    et = torch.from_numpy(e)
    net = InfluenceNetwork(D).eval()
    out: dict[str, Any] = {"M": m, "pairs": m * m}
    with torch.no_grad():
        t = time.perf_counter()
        fact = net.predict_matrix(et, et).numpy()
        out["factorised_torch_s"] = round(time.perf_counter() - t, 3)
        # Materialised: build [e_i, 0, e_j] for a block of rows at a time (the full pair
        # tensor would be M*M*(2d+1)*4 bytes = 12 GB at M = 2,000).
        t = time.perf_counter()
        rows_per = 25
        mat = np.empty((m, m), np.float32)
        for s0 in range(0, m, rows_per):
            r = torch.arange(s0, min(m, s0 + rows_per))
            i = r.repeat_interleave(m)
            j = torch.arange(m).repeat(len(r))
            mat[s0 : s0 + len(r)] = (
                net.forward_features(net.build_features(et[i], et[j])).view(len(r), m).numpy()
            )
        out["materialised_torch_s"] = round(time.perf_counter() - t, 3)
    out["max_abs_diff_fact_vs_mat"] = float(np.abs(fact - mat).max())
    try:
        from nncift.scorer import PairwiseScorer

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "n.safetensors"
            net.export(path, embedding_model="bench")
            sc = PairwiseScorer.load(path)
            t = time.perf_counter()
            rust = sc.score(e, e)
            out["rust_scorer_s"] = round(time.perf_counter() - t, 3)
            out["max_abs_diff_rust_vs_mat"] = float(np.abs(rust - mat).max())
    except ImportError:
        out["rust_scorer_s"] = None
    return out


def speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    if not args.no_predict:
        pred = subprocess.run(
            [sys.executable, __file__, "_predict1", str(args.m)],
            capture_output=True,
            text=True,
            check=True,
        )
        print(pred.stdout.strip().splitlines()[-1], flush=True)
    out = []
    modes = ["factorised", "materialised"] + (["factorised-tile"] if args.tile else [])
    for u in (0.05, 0.4):
        for mode in modes:
            cmd = [sys.executable, __file__, "_speed1", mode, str(args.m), str(u), str(args.steps)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rec = json.loads(res.stdout.strip().splitlines()[-1])
            print(json.dumps(rec), flush=True)
            out.append(rec)
    if args.save:
        _save_speed(out, args)
    for u in (0.05, 0.4):
        f = next(r for r in out if r["u"] == u and r["mode"] == "factorised")
        m = next(r for r in out if r["u"] == u and r["mode"] == "materialised")
        print(
            f"u={u}: pairs/s factorised {f['train_pairs_per_s']} vs materialised "
            f"{m['train_pairs_per_s']} ({f['train_pairs_per_s'] / m['train_pairs_per_s']:.2f}x); "
            f"epoch incl. build {f['one_epoch_s_incl_build']} s vs {m['one_epoch_s_incl_build']} s "
            f"({m['one_epoch_s_incl_build'] / f['one_epoch_s_incl_build']:.1f}x); input memory "
            f"{f['input_bytes'] / 2**20:.1f} MiB vs {m['input_bytes'] / 2**20:.1f} MiB "
            f"({m['input_bytes'] / f['input_bytes']:.0f}x); peak RSS growth "
            f"{f['peak_rss_growth_mb']} vs {m['peak_rss_growth_mb']} MB"
        )
        t = next((r for r in out if r["u"] == u and r["mode"] == "factorised-tile"), None)
        if t is not None:
            print(
                f"u={u}: 8x8-tile batches {t['train_pairs_per_s']} pairs/s "
                f"({t['train_pairs_per_s'] / m['train_pairs_per_s']:.2f}x materialised)"
            )
    return out


def _save_speed(out: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Merge the training-speed records into docs/network_quality.json ("speed_training")
    and render their table into docs/network.md between the speed markers."""
    qpath = Path(args.out) / "network_quality.json"
    allres = json.loads(qpath.read_text()) if qpath.exists() else {}
    load = os.getloadavg()[0]
    allres["speed_training"] = {"steps": args.steps, "load_avg_1min_at_end": load, "runs": out}
    qpath.write_text(json.dumps(allres, indent=1))
    lines = [
        f"Training, M = N = {args.m}, d = {D}, batch 64, {args.steps} Adam steps, 1 torch "
        f"thread, each configuration in its own process (1-min load average at the end: "
        f"{load:.1f}).",
        "",
        "| u | labelled pairs | mode | pairs/s | vs materialised | build s | one epoch incl. "
        "build, s | input MiB | peak RSS growth MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out:
        m = next(x for x in out if x["u"] == r["u"] and x["mode"] == "materialised")
        lines.append(
            f"| {r['u']} | {r['labelled_pairs']:,} | {r['mode']} | {r['train_pairs_per_s']:,} "
            f"| {r['train_pairs_per_s'] / m['train_pairs_per_s']:.2f}x | {r['build_s']} "
            f"| {r['one_epoch_s_incl_build']} | {r['input_bytes'] / 2**20:.1f} "
            f"| {r['peak_rss_growth_mb']} |"
        )
    doc = Path(args.out) / "network.md"
    begin, end = "<!-- bench_network speed: begin -->", "<!-- bench_network speed: end -->"
    if doc.exists() and begin in doc.read_text():
        head, rest = doc.read_text().split(begin, 1)
        doc.write_text(head + begin + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1])


# ---------------------------------------------------------------------------------------
# quality
# ---------------------------------------------------------------------------------------
def _embeddings(name: str, n: int, cache: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    from nncift.data import load_named
    from nncift.embed import Embedder

    items = load_named(name, limit=n)
    emb = Embedder(progress=False, cache_dir=cache)
    return emb.embed(items.texts), emb.embed(items.prompts), emb.model_id


def _summ(vals: list[float]) -> list[float]:
    v = np.array([x for x in vals if x is not None and np.isfinite(x)])
    return [float(v.mean()), float(v.std())] if len(v) else [float("nan"), float("nan")]


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from nncift.estimator import EstimatorSettings
    from nncift.evaluation import (
        cosine_matrix,
        fit_and_evaluate,
        plot_error_vs_size,
        plot_error_vs_u,
        sweep,
    )

    full, prompt, model_id = _embeddings(args.data, args.n, args.cache)
    n = len(full)
    views = {
        "same-view": cosine_matrix(full, full),
        "other-view": cosine_matrix(prompt, prompt),
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"data": args.data, "n_items": n, "embedder": model_id, "views": {}}
    seeds = list(range(args.seeds))
    variants = [v for v in args.variants.split(",") if v]
    for view, lab in views.items():
        if args.views and view not in args.views.split(","):
            continue
        table: dict[str, dict[str, dict[str, list[float]]]] = {}
        chosen = []
        t0 = time.perf_counter()
        for var in variants:
            per: dict[str, dict[str, list[float]]] = {}
            for seed in seeds:
                rep, est = fit_and_evaluate(
                    lab, full, None, u=args.u, seed=seed, variant=var, embedding_model=model_id
                )
                if var == "auto":
                    chosen.append(est.variant_)
                for q, preds in rep.quadrants.items():
                    for p, mt in preds.items():
                        name = var if p == "network" else f"baseline:{p}"
                        if p != "network" and var != variants[0]:
                            continue  # baselines depend only on the split: record them once
                        d = per.setdefault(name, {}).setdefault(q, {"mse": [], "spearman": []})
                        d["mse"].append(mt["mse"])
                        d["spearman"].append(mt["spearman"])
            for name, qs in per.items():
                table[name] = {q: {k: _summ(v) for k, v in d.items()} for q, d in qs.items()}
            print(f"[{view}] {var} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        results["views"][view] = {"u": args.u, "table": table, "auto_chosen": chosen}
        if table:
            _print_table(view, table)
        if args.sweeps:
            st = EstimatorSettings()
            recs_u = sweep(
                lab,
                full,
                None,
                us=[float(x) for x in args.sweep_us.split(",")],
                seeds=seeds[: args.sweep_seeds],
                settings=st,
            )
            plot_error_vs_u(recs_u, out_dir / f"network_error_vs_u_{view}.png")
            archs = [(5,), (20,), (100,), (500,), (100, 100)]
            recs_a = sweep(
                lab,
                full,
                None,
                us=[args.u],
                archs=archs,
                seeds=seeds[: args.sweep_seeds],
                settings=st,
            )
            plot_error_vs_size(recs_a, out_dir / f"network_error_vs_size_{view}.png")
            results["views"][view]["sweep_u"] = recs_u
            results["views"][view]["sweep_arch"] = recs_a
    with open(out_dir / f"network_quality_{args.tag}.json", "w") as fh:
        json.dump(results, fh, indent=1, default=lambda x: None)
    return results


# ---------------------------------------------------------------------------------------
# the five-seed table at every u
# ---------------------------------------------------------------------------------------
_TABLE_ROWS = (
    "baseline:zero",
    "baseline:constant",
    "baseline:random",
    "baseline:additive",
    "baseline:cosine",
    "paper",
    "cosine-feature",
    "bilinear",
    "cosine-residual",
    "auto",
    "auto (min rule)",
)


def _ranks_fast(x: np.ndarray) -> np.ndarray:
    """Average ranks, as nncift.evaluation._ranks; ties get their mean rank whatever the sort
    order among them, so the faster unstable argsort gives identical values."""
    order = np.argsort(x)
    xs = x[order]
    edges = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [len(x)]))
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks - ranks.mean()


_TRUE_RANKS: dict[tuple[float, int, str], np.ndarray] = {}


def _quad_metrics(pred: np.ndarray, labels: np.ndarray, sp: Any) -> dict[str, dict[str, float]]:
    """MSE and Spearman per quadrant (Spearman = Pearson of average ranks, as
    nncift.evaluation.spearman; the true labels' ranks are computed once per split)."""
    from nncift.split import QUADRANTS

    out = {}
    for q in QUADRANTS:
        r, c = sp.quadrant(q)
        p, t = pred[np.ix_(r, c)].astype(np.float64), labels[np.ix_(r, c)].astype(np.float64)
        key = (sp.u, sp.seed, q)
        if key not in _TRUE_RANKS:
            if len(_TRUE_RANKS) > 8:
                _TRUE_RANKS.clear()
            _TRUE_RANKS[key] = _ranks_fast(t.ravel())
        tr = _TRUE_RANKS[key]
        if np.ptp(p) == 0:
            rho = float("nan")  # a constant prediction has no ranking
        else:
            pr = _ranks_fast(p.ravel())
            rho = float(pr @ tr / np.sqrt(float(pr @ pr) * float(tr @ tr)))
        out[q] = {"mse": float(np.mean((p - t) ** 2)), "spearman": rho}
    return out


def _predict_with(est: Any, net: Any, e: np.ndarray) -> np.ndarray:
    """Predictions of one of auto's candidate networks (Rust scorer, like est.predict)."""
    import copy

    other = copy.copy(est)
    other.network_ = net
    other._scorer = None
    return other.predict(e)


def _table_run(
    u: float, seed: int, run: str, lab: np.ndarray, e: np.ndarray, model_id: str, epochs: int
) -> list[dict[str, Any]]:
    """One (u, seed, run): run = "baselines", "cosine-feature" or "auto" (+ its candidates)."""
    import dataclasses

    from nncift.estimator import EstimatorSettings, InfluenceEstimator
    from nncift.evaluation import baseline_predictions
    from nncift.split import u_split

    sp = u_split(len(lab), None, u=u, seed=seed)
    if run == "baselines":
        preds = baseline_predictions(lab, sp, e, e, random_state=seed)
        return [
            {"name": f"baseline:{k}", "quadrants": _quad_metrics(p, lab, sp)}
            for k, p in preds.items()
        ]
    r, c = sp.quadrant("Q1")
    st = dataclasses.replace(EstimatorSettings(), epochs=epochs)
    t0 = time.perf_counter()
    est = InfluenceEstimator(
        st, variant=run, random_state=seed, progress=False, embedding_model=model_id
    ).fit(e, None, lab[np.ix_(r, c)], rows=r, cols=c)
    fit_s = time.perf_counter() - t0

    def rec(name: str, net: Any, hist: list[dict[str, float]], pred: np.ndarray) -> dict[str, Any]:
        # history_ has one entry per evaluation (step, epoch, val_mse on the stop half).
        best = min(range(len(hist)), key=lambda k: _nanbig(hist[k]["val_mse"]))
        return {
            "name": name,
            "variant": net_name.get(id(net), name),
            "epochs_cap": epochs,
            "epochs_run": float(hist[-1].get("epoch", 0.0)),
            "best_epoch": -(-int(hist[best].get("step", 0)) // max(1, _spe(st, est))),
            "steps": int(hist[-1].get("step", 0)),
            "quadrants": _quad_metrics(pred, lab, sp),
        }

    net_name = {id(n): k for k, n in est.candidate_networks_.items()}
    out = []
    if run == "auto":
        cands = {}
        for name, net in est.candidate_networks_.items():
            pred = est.predict(e) if net is est.network_ else _predict_with(est, net, e)
            cands[name] = rec(name, net, est.candidate_histories_[name], pred)
        vals = {k: (v if v is not None else float("inf")) for k, v in est.candidates_.items()}
        min_choice = min(vals, key=lambda k: vals[k])  # the lowest selection-half MSE
        common = {
            "candidates_val_mse": est.candidates_,
            "candidates_rank": est.candidates_rank_,
            "candidates_se": est.candidates_se_,
            "n_val_pairs": est.n_val_pairs_,
            "n_train_pairs": est.n_train_pairs_,
            "fit_s": round(fit_s, 1),
        }
        auto = dict(cands[est.variant_], name="auto", chosen=est.variant_, **common)
        auto_min = dict(cands[min_choice], name="auto (min rule)", chosen=min_choice, **common)
        out = [auto, auto_min] + [
            v for k, v in cands.items() if k in ("paper", "bilinear", "cosine-residual")
        ]
    else:
        rec1 = rec(run, est.network_, est.history_, est.predict(e))
        rec1.update(n_train_pairs=est.n_train_pairs_, fit_s=round(fit_s, 1))
        out = [rec1]
    return out


def _spe(st: Any, est: Any) -> int:
    """Optimizer steps per epoch of the estimator's training pairs."""
    return -(-est.n_train_pairs_ // st.batch_size)


def _nanbig(x: float) -> float:
    return float("inf") if x is None or not np.isfinite(x) else float(x)


def _epochs_at(spec: str) -> dict[float, int]:
    out = {}
    for part in filter(None, spec.split(",")):
        u, ep = part.split(":")
        out[float(u)] = int(ep)
    return out


def table(args: argparse.Namespace) -> None:
    from nncift.evaluation import cosine_matrix

    full, prompt, model_id = _embeddings(args.data, args.n, args.cache)
    lab = cosine_matrix(prompt, prompt)  # other-view DELIFT-SE labels
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    caps = _epochs_at(args.epochs_at)
    us = [float(x) for x in args.us.split(",")]
    t_all = time.perf_counter()
    # Seed-major: an interrupted sweep still has every u, with fewer seeds.
    for seed in range(args.seeds):
        for u in us:
            epochs = caps.get(u, 20)
            for run in ("baselines", "cosine-feature", "auto"):
                f = cache / f"u{u}_s{seed}_{run}_e{epochs}_n{args.n}.json"
                if f.exists():
                    continue
                t0 = time.perf_counter()
                recs = _table_run(u, seed, run, lab, full, model_id, epochs)
                meta = {"u": u, "seed": seed, "run": run, "n": len(full), "epochs": epochs}
                meta["wall_s"] = round(time.perf_counter() - t0, 1)
                tmp = f.with_suffix(".tmp")
                tmp.write_text(json.dumps({**meta, "records": recs}, default=lambda x: None))
                tmp.replace(f)
                print(
                    f"u={u} seed={seed} {run}: {meta['wall_s']} s "
                    f"(total {time.perf_counter() - t_all:.0f} s)",
                    flush=True,
                )
    if args.render:
        render_table(args)


def render_table(args: argparse.Namespace) -> None:
    from nncift.evaluation import plot_error_vs_u
    from nncift.split import n_in

    cache = Path(args.cache_dir)
    runs = [json.loads(f.read_text()) for f in sorted(cache.glob(f"u*_n{args.n}.json"))]
    caps = _epochs_at(args.epochs_at)
    runs = [r for r in runs if r["epochs"] == caps.get(r["u"], 20)]
    # Only (u, seed) with every run finished, so all rows average the same seeds.
    done = {(r["u"], r["seed"], r["run"]) for r in runs}
    runs = [
        r
        for r in runs
        if all((r["u"], r["seed"], k) in done for k in ("baselines", "cosine-feature", "auto"))
    ]
    us = sorted({r["u"] for r in runs})
    agg: dict[str, Any] = {}
    sweep_recs = []
    for u in us:
        per: dict[str, dict[str, dict[str, list[float]]]] = {}
        chosen: dict[str, list[str]] = {"auto": [], "auto (min rule)": []}
        steps: dict[str, list[int]] = {}
        seeds = sorted({r["seed"] for r in runs if r["u"] == u})
        q4: dict[str, dict[str, float]] = {}
        n_lab, n_train = n_in(args.n, u), 0
        for r in runs:
            if r["u"] != u:
                continue
            for rec in r["records"]:
                q4.setdefault(rec["name"], {})[str(r["seed"])] = rec["quadrants"]["Q4"]["mse"]
                n_train = rec.get("n_train_pairs", n_train)
                for q, mt in rec["quadrants"].items():
                    d = per.setdefault(rec["name"], {}).setdefault(q, {"mse": [], "spearman": []})
                    d["mse"].append(mt["mse"])
                    d["spearman"].append(mt["spearman"])
                if rec["name"] in chosen:
                    chosen[rec["name"]].append(rec["chosen"])
                if "steps" in rec:
                    steps.setdefault(rec["name"], []).append(rec["steps"])
        # Per-seed records for the error-vs-u plot (network = auto; baselines alongside).
        for seed in seeds:
            mse: dict[str, dict[str, float]] = {}
            for r in runs:
                if r["u"] != u or r["seed"] != seed:
                    continue
                for rec in r["records"]:
                    for q, mt in rec["quadrants"].items():
                        nm = rec["name"].removeprefix("baseline:")
                        mse.setdefault(q, {})[nm] = mt["mse"]
            if all("paper" in mse.get(q, {}) and "constant" in mse.get(q, {}) for q in mse):
                sweep_recs.append({"u": u, "seed": seed, "mse": mse})
        agg[str(u)] = {
            "epochs": caps.get(u, 20),
            "seeds": seeds,
            "table": {
                n: {q: {k: _summ(v) for k, v in d.items()} for q, d in qs.items()}
                for n, qs in per.items()
            },
            "auto_chosen": chosen,
            "max_steps_per_training": {n: max(v) for n, v in steps.items()},
            "n_seeds": {n: len(qs["Q4"]["mse"]) for n, qs in per.items()},
            "q4_per_seed": q4,
            "n_labelled_items": n_lab,
            "n_train_pairs": n_train,
        }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    qpath = Path(args.out) / "network_quality.json"
    allres = json.loads(qpath.read_text()) if qpath.exists() else {}
    allres["u_table"] = {
        "data": args.data,
        "n_items": args.n,
        "labels": "other-view DELIFT-SE: cosine of prompt-only MiniLM embeddings",
        "inputs": "MiniLM embeddings of prompt + response",
        "by_u": agg,
    }
    qpath.write_text(json.dumps(_no_nan(allres), indent=1))
    if sweep_recs:
        plot_error_vs_u(
            sweep_recs,
            Path(args.out) / "network_error_vs_u.png",
            predictors=("paper", "auto", "constant", "cosine"),
        )
    md = _table_markdown(agg, us)
    print(md)
    doc = Path(args.out) / "network.md"
    begin, end = "<!-- bench_network table: begin -->", "<!-- bench_network table: end -->"
    if doc.exists() and begin in doc.read_text():
        text = doc.read_text()
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        doc.write_text(head + begin + "\n" + md + "\n" + end + tail)
        print(f"rendered into {doc}")


def _no_nan(x: Any) -> Any:
    """NaN / inf -> None, so the JSON is standard (Spearman of a constant prediction is NaN)."""
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_no_nan(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _cell(ms: list[float], digits: int = 5) -> str:
    return "–" if not np.isfinite(ms[0]) else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def _table_markdown(agg: dict[str, Any], us: list[float]) -> str:
    from collections import Counter

    lines = [
        "Summary on Q4 (both items unseen): `auto` against the best baseline (the baseline "
        "with the lowest mean Q4 MSE at that u), per seed and on average.",
        "",
        "| u | labelled items | train pairs | epochs (max steps) | auto Q4 MSE | best baseline "
        "| its Q4 MSE | auto / best | seeds auto <= best (rel. 1e-6) | auto chose | auto (min rule) Q4 MSE "
        "| min rule chose |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for u in us:
        a = agg[str(u)]
        t = a["table"]
        if "auto" not in t:
            continue
        bases = [n for n in t if n.startswith("baseline:")]
        best = min(bases, key=lambda n: t[n]["Q4"]["mse"][0])
        per_a, per_b = a["q4_per_seed"]["auto"], a["q4_per_seed"][best]
        # float32 predictions of the same line as the float64 baseline: equal within 1e-6.
        wins = sum(per_a[k] <= per_b[k] * (1 + 1e-6) for k in per_a)
        ch = Counter(a["auto_chosen"]["auto"])
        chm = Counter(a["auto_chosen"]["auto (min rule)"])
        steps = max(a["max_steps_per_training"].values())
        lines.append(
            f"| {u} | {a['n_labelled_items']} | {a['n_train_pairs']:,} | {a['epochs']} "
            f"({steps:,}) | {_cell(t['auto']['Q4']['mse'])} | {best.removeprefix('baseline:')} "
            f"| {_cell(t[best]['Q4']['mse'])} "
            f"| {t['auto']['Q4']['mse'][0] / t[best]['Q4']['mse'][0]:.3f} "
            f"| {wins} / {len(per_a)} | "
            + ", ".join(f"{k} x{v}" for k, v in ch.most_common())
            + f" | {_cell(t['auto (min rule)']['Q4']['mse'])} | "
            + ", ".join(f"{k} x{v}" for k, v in chm.most_common())
            + " |"
        )
    for u in us:
        a = agg[str(u)]
        lines += [
            "",
            f"**u = {u}** ({a['n_labelled_items']} labelled items, {len(a['seeds'])} seeds, "
            f"epochs {a['epochs']}): MSE per quadrant and Q4 Spearman, mean ± std over seeds.",
            "",
            "| predictor | Q1 | Q2 | Q3 | Q4 | Q4 Spearman |",
            "|---|---|---|---|---|---|",
        ]
        for name in _TABLE_ROWS:
            qs = a["table"].get(name)
            if qs is None:
                continue
            cells = [_cell(qs[q]["mse"]) for q in ("Q1", "Q2", "Q3", "Q4")]
            nn = a["n_seeds"][name]
            tag = "" if nn == len(a["seeds"]) else f" ({nn} seeds)"
            lines.append(
                f"| {name}{tag} | " + " | ".join(cells) + f" | {_cell(qs['Q4']['spearman'], 3)} |"
            )
    return "\n".join(lines)


def _print_table(view: str, table: dict[str, Any]) -> None:
    print(f"\n## {view}: MSE (mean ± std) / Spearman per quadrant")
    print("| predictor | Q1 | Q2 | Q3 | Q4 | Q4 Spearman |")
    print("|---|---|---|---|---|---|")
    for name, qs in table.items():
        cells = [f"{qs[q]['mse'][0]:.5f} ± {qs[q]['mse'][1]:.5f}" for q in ("Q1", "Q2", "Q3", "Q4")]
        sp = qs["Q4"]["spearman"]
        print(f"| {name} | " + " | ".join(cells) + f" | {sp[0]:.3f} ± {sp[1]:.3f} |")


# ---------------------------------------------------------------------------------------
# delift: the reproduction's real-LM network-error rows, old budget vs step budget
# ---------------------------------------------------------------------------------------
def delift_rows(args: argparse.Namespace) -> dict[str, Any]:
    from nncift.embed import Embedder
    from nncift.estimator import EstimatorSettings
    from nncift.evaluation import fit_and_evaluate

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reproduce.config import DATA_DIR, FULL
    from reproduce.labels import _small_items

    with np.load(DATA_DIR / "chatterbot_labels_140x70.npz", allow_pickle=False) as z:
        K = np.asarray(z["delift"], dtype=np.float32)
    pool, tgt, _ = _small_items(FULL)
    emb = Embedder(progress=False, cache_dir=args.cache)
    pe, te = emb.embed(pool.texts), emb.embed(tgt.texts)
    lo, hi = float(K.min()), float(K.max())
    K01 = ((K - lo) / (hi - lo)).astype(np.float32)
    runs: dict[str, Any] = {}
    setups = {
        "paper, 20 epochs (old budget)": ("paper", EstimatorSettings(epochs=20)),
        "paper, step budget": ("paper", EstimatorSettings()),
        "auto": ("auto", EstimatorSettings()),
    }
    for u in [float(x) for x in args.us.split(",")]:
        for label, (variant, st) in setups.items():
            t0 = time.perf_counter()
            rep, est = fit_and_evaluate(
                K01, pe, te, u=u, seed=0, variant=variant, settings=st,
                embedding_model=emb.model_id,
            )  # fmt: skip
            secs = time.perf_counter() - t0
            q = rep.quadrants
            rec = {
                "u": u,
                "run": label,
                "variant": est.variant_,
                "steps": est.steps_,
                "best_step": est.best_step_,
                "no_signal": est.no_signal_,
                "val_rank": est.val_rank_,
                "candidates_rank": est.candidates_rank_,
                "candidate_steps": est.candidate_steps_,
                "seconds": secs,
                "quadrants": {
                    qq: {
                        p: {"mse": q[qq][p]["mse"], "spearman": q[qq][p].get("spearman")}
                        for p in ("network", "constant", "additive", "cosine")
                    }
                    for qq in ("Q1", "Q2", "Q3", "Q4")
                },
            }
            runs[f"{u}/{label}"] = rec
            qn = rec["quadrants"]
            print(
                f"u={u} {label:32s} -> {est.variant_:15s} steps {est.steps_:6d} "
                f"(best {est.best_step_:6d}) {secs:6.1f}s | Q2 {qn['Q2']['network']['mse']:.4f}"
                f"/{_nanbig(qn['Q2']['network']['spearman']):.3f} Q4 "
                f"{qn['Q4']['network']['mse']:.4f}/{_nanbig(qn['Q4']['network']['spearman']):.3f}"
                f" | const Q4 {qn['Q4']['constant']['mse']:.4f} cos Q4 "
                f"{qn['Q4']['cosine']['mse']:.4f}",
                flush=True,
            )
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average": os.getloadavg(),
        "threads": args.threads,
        "label_range": [lo, hi],
        "runs": runs,
    }
    path = Path(args.out) / "network_delift_chatterbot.json"
    path.write_text(json.dumps(_no_nan(out), indent=1))
    print(f"wrote {path}")
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_predict1":
        import torch

        torch.set_num_threads(1)
        print(json.dumps(_predict_speed(int(sys.argv[2]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_speed1":
        _, _, mode, m, u, steps = sys.argv
        import torch

        torch.set_num_threads(1)
        print(json.dumps(_one_speed(mode, int(m), float(u), int(steps))))
        return
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--m", type=int, default=2000)
    s.add_argument("--steps", type=int, default=1500)
    s.add_argument("--no-predict", action="store_true", help="skip the all-pairs prediction")
    s.add_argument("--tile", action="store_true", help="also time 8x8-tile batches")
    s.add_argument("--save", action="store_true", help="write JSON + table into --out docs")
    s.add_argument("--out", default="docs")
    q = sub.add_parser("quality")
    q.add_argument("--data", default="sharegpt")
    q.add_argument("--n", type=int, default=2000)
    q.add_argument("--u", type=float, default=0.05)
    q.add_argument("--seeds", type=int, default=5)
    q.add_argument("--sweep-seeds", type=int, default=2)
    q.add_argument("--variants", default="paper,cosine-feature,bilinear,cosine-residual,auto")
    q.add_argument("--views", default="")
    q.add_argument("--sweeps", action="store_true")
    q.add_argument("--tag", default="main", help="suffix of the results JSON file")
    q.add_argument("--cache", default=os.environ.get("NNCIFT_CACHE"))
    q.add_argument("--sweep-us", default="0.01,0.05,0.1,0.2,0.4")
    q.add_argument("--out", default="docs")
    t = sub.add_parser("table")
    t.add_argument("--data", default="sharegpt")
    t.add_argument("--n", type=int, default=2000)
    t.add_argument("--seeds", type=int, default=5)
    t.add_argument("--us", default="0.01,0.05,0.1,0.2,0.4")
    t.add_argument("--epochs-at", default="0.2:8,0.4:2", help="u:epochs caps (default 20)")
    t.add_argument("--cache", default=os.environ.get("NNCIFT_CACHE"))
    t.add_argument("--cache-dir", default=".nncift-cache/bench_network_table")
    t.add_argument("--render", action="store_true")
    t.add_argument("--render-only", action="store_true")
    t.add_argument("--out", default="docs")
    dl = sub.add_parser("delift")
    dl.add_argument("--us", default="0.1,0.2,0.3")
    dl.add_argument("--cache", default=os.environ.get("NNCIFT_CACHE"))
    dl.add_argument("--out", default="docs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared box)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.cmd == "speed":
        speed(args)
    elif args.cmd == "quality":
        quality(args)
    elif args.cmd == "delift":
        delift_rows(args)
    elif args.render_only:
        render_table(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
