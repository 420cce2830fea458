"""`nncift estimate`: predicted influence for every pair (or item) from a trained network."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click
import numpy as np

from nncift.cli.common import load_embeddings
from nncift.cli.group import user_errors
from nncift.cli.ray_options import ray_options, ray_settings
from nncift.manifest import Manifest

SUFFIXES = (".npy", ".parquet", ".npz")


def _check_disk(path: Path, nbytes: int) -> None:
    from nncift.errors import InputError

    free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    if nbytes > free:
        raise InputError(
            f"{path}: the output needs {nbytes / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB "
            "of disk is free; use --top-k or a smaller --limit"
        )


def _write_table(path: Path, columns: dict[str, Any]) -> None:
    import polars as pl

    from nncift.io import atomic_path

    with atomic_path(path, suffix=".parquet") as tmp:
        pl.DataFrame(columns).write_parquet(tmp)


@click.command("estimate")
@click.option(
    "--net", required=True, type=click.Path(dir_okay=False), help="Weight file (.safetensors)."
)
@click.option(
    "--pool",
    required=True,
    help="Pool (row) embeddings .npy (M, d), or a data file / builtin:NAME.",
)
@click.option(
    "--target",
    default=None,
    help="Target (column) embeddings .npy or data file; omit for pool x pool (pairwise nets).",
)
@click.option(
    "--top-k",
    "top_k",
    type=int,
    default=None,
    help="Keep the K best columns per row (no dense matrix).",
)
@click.option(
    "--aggregate",
    type=click.Choice(["mean", "max"]),
    default=None,
    help="One value per row: mean or max over the columns (no dense matrix).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output: .npy (dense (M, N) float32, written memory-mapped; or (M,) scores), "
    ".parquet (row, col, row_id, col_id, rank, score for --top-k; row, row_id, score for one value "
    "per row), or .npz (indices, values for --top-k).",
)
@click.option(
    "--embedder", default=None, help="Embedder for data files (default: the network's own)."
)
@click.option("--n-jobs", type=int, default=0, show_default=True, help="Threads (0 = all cores).")
@ray_options
@click.pass_context
@user_errors
def estimate_cmd(ctx: click.Context, **kw: Any) -> None:
    """Score every pool x target pair (or every pool item) with a trained InfluenceNetwork.

    With --ray the pool's rows are cut into shards scored by Ray tasks (Rust inside each);
    the output is the same as a local run.
    """
    from nncift.errors import InputError
    from nncift.io import atomic_path
    from nncift.scorer import PairwiseScorer

    ray = ray_settings(kw)
    quiet = bool(ctx.obj.get("quiet", False))
    out = Path(kw["out"])
    if out.suffix.lower() not in SUFFIXES:
        raise InputError(f"--out must end in one of {SUFFIXES}, got {out.name!r}")
    top_k, agg = kw["top_k"], kw["aggregate"]
    if top_k is not None and agg is not None:
        raise InputError("--top-k and --aggregate are alternatives; give one")
    if top_k is not None and top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {top_k}")
    if kw["n_jobs"] < -1:
        raise InputError(f"--n-jobs must be >= -1 (0 or -1: all cores), got {kw['n_jobs']}")
    man = Manifest("estimate", options=dict(kw, ray=None if ray is None else vars(ray)))
    man.add_input("net", kw["net"])
    scorer = PairwiseScorer.load(kw["net"])
    run = _Runner(scorer, kw["net"], kw["n_jobs"], ray, man)
    net_meta = {
        "embedding_dim": str(scorer.embedding_dim),
        "embedding_model": scorer.embedding_model,
    }
    rows, _, row_ids = load_embeddings(
        kw["pool"], kw["embedder"], man, "pool", quiet, network=net_meta
    )

    if scorer.kind == "pointwise":
        if kw["target"] or top_k is not None or agg is not None:
            raise InputError(
                "a pointwise network scores items: --target, --top-k and --aggregate do not apply"
            )
        with man.stage("score") as rec:
            scores = run("pointwise", rows)
            rec["items"] = len(scores)
        _write_per_row(out, scores, row_ids)
        man.results.update(shape=[len(scores)])
    else:
        if kw["target"]:
            cols, _, col_ids = load_embeddings(
                kw["target"], kw["embedder"], man, "target", quiet, network=net_meta
            )
        else:
            cols, col_ids = rows, row_ids
        m, n = len(rows), len(cols)
        if top_k is not None:
            if top_k > n:
                raise InputError(f"--top-k {top_k} is more than the {n} columns")
            with man.stage("topk") as rec:
                idx, val = run("topk", rows, cols, k=top_k)
                rec["pairs"] = m * n
            if out.suffix.lower() == ".npz":
                with atomic_path(out, suffix=".npz") as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, indices=idx, values=val)
            elif out.suffix.lower() == ".parquet":
                r = np.repeat(np.arange(m, dtype=np.int64), top_k)
                c = idx.reshape(-1)
                _write_table(
                    out,
                    {
                        "row": r,
                        "col": c,
                        "row_id": _ids(row_ids, r),
                        "col_id": _ids(col_ids, c),
                        "rank": np.tile(np.arange(1, top_k + 1, dtype=np.int32), m),
                        "score": val.reshape(-1),
                    },
                )
            else:
                raise InputError(
                    "--top-k writes .parquet (row, col, ids, rank, score) or .npz (indices, values)"
                )
            man.results.update(shape=[m, top_k])
        elif agg is not None:
            with man.stage("aggregate") as rec:
                scores = run(agg, rows, cols)
                rec["pairs"] = m * n
            _write_per_row(out, scores, row_ids)
            man.results.update(shape=[m])
        else:
            if out.suffix.lower() != ".npy":
                raise InputError(
                    "the dense matrix is written as .npy; use --top-k for .parquet / .npz"
                )
            nbytes = m * n * 4
            _check_disk(out, nbytes)
            with man.stage("score") as rec, atomic_path(out, suffix=".npy") as tmp:
                # Memory-mapped: the matrix goes straight to disk, never twice in memory.
                mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(m, n))
                run("dense", rows, cols, out=mm)
                mm.flush()
                del mm
                rec["pairs"] = m * n
            man.results.update(shape=[m, n])
    man.write(out.with_name(out.name + ".manifest.json"))
    if not quiet:
        click.echo(f"wrote {out} ({', '.join(str(s) for s in man.results['shape'])})")


class _Runner:
    """Scores locally (Rust threads) or on Ray shards (--ray), the same call either way."""

    def __init__(self, scorer: Any, path: str, n_jobs: int, ray: Any, man: Manifest) -> None:
        self.scorer, self.path, self.n_jobs, self.ray, self.man = scorer, path, n_jobs, ray, man

    def __call__(
        self, how: str, rows: np.ndarray, cols: np.ndarray | None = None, *, k: int = 0,
        out: np.ndarray | None = None,
    ) -> Any:  # fmt: skip
        if self.ray is not None:
            from nncift.distributed.shards import ShardStats, score_sharded

            st = ShardStats()
            res = score_sharded(self.ray, self.path, rows, cols, how=how, k=k, out=out, stats=st)
            self.man.results["ray"] = st.to_dict()
            return res
        s, n = self.scorer, self.n_jobs
        if how == "pointwise":
            return s.pointwise(rows, n_jobs=n)
        if how == "topk":
            return s.topk(rows, cols, k, n_jobs=n)
        if how == "dense":
            return s.score(rows, cols, n_jobs=n, out=out)
        return s.aggregate(rows, cols, how, n_jobs=n)


def _ids(ids: list[str] | None, index: np.ndarray) -> list[str]:
    if ids is None:
        return [str(i) for i in index.tolist()]
    return [ids[i] for i in index.tolist()]


def _write_per_row(out: Path, scores: np.ndarray, row_ids: list[str] | None) -> None:
    from nncift.errors import InputError
    from nncift.io import save_npy_atomic

    suffix = out.suffix.lower()
    if suffix == ".npy":
        save_npy_atomic(out, scores)
    elif suffix == ".parquet":
        r = np.arange(len(scores), dtype=np.int64)
        _write_table(out, {"row": r, "row_id": _ids(row_ids, r), "score": scores})
    else:
        raise InputError("one value per row is written as .npy or .parquet")
