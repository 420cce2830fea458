"""`PairwiseScorer`: batched InfluenceNetwork predictions from exported weights, in Rust.

The first layer of the network factorises exactly, so the scorer precomputes
`P = E_rows W_a^T + b_0` and `Q = E_cols W_b^T` once and evaluates each pair as
`w . relu(P_i + Q_j) + b` in a fused multi-threaded kernel (deeper networks finish the
remaining layers per tile). Rows are pool items, columns targets (or pool items):
`K[i, j] = f(e_i, e_j)`.

    scorer = PairwiseScorer.load("net.safetensors")
    K = scorer.score(pool_emb, target_emb)              # (M, N) float32
    idx, val = scorer.topk(pool_emb, target_emb, k=10)  # (M, 10) int64 / float32
    value = scorer.aggregate(pool_emb, target_emb, how="mean-max", groups=task_of_target)
    kern = scorer.bind(pool_emb, pool_emb)              # ScorerKernel: entries on request
    res = nncift.select("fl", kernel_source=kern, budget=100)  # selection without the matrix

Inputs: C-contiguous float32 arrays are passed to Rust without a copy; float64 or
non-contiguous arrays are converted (one copy) here. All kernels release the GIL.
`n_jobs=0` or `-1` uses every core; results are bit-identical for any `n_jobs`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from nncift import _core
from nncift._core import ScorerKernel
from nncift.weights import NetworkWeights, check_embedding_model

AGGREGATES = ("mean", "max", "mean-max")


def _embeddings(name: str, arr: Any) -> np.ndarray:
    """(n, d) float32 C-contiguous view or copy of `arr`; clear errors for everything else."""
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) array of embeddings, got shape {a.shape}")
    if a.dtype != np.float32:
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{name} must be a float32 array, got dtype {a.dtype}")
        a = a.astype(np.float32)
    return np.ascontiguousarray(a)


def _n_jobs(n_jobs: int) -> int:
    if n_jobs < 0:
        # -1 = all cores, as in scikit-learn; other negatives are not meaningful here.
        if n_jobs == -1:
            return 0
        raise ValueError(f"n_jobs must be >= -1, got {n_jobs}")
    return int(n_jobs)


def _group_ids(groups: Any, n_cols: int) -> np.ndarray:
    """Map arbitrary group labels (one per column) to dense int64 ids 0..G-1."""
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n_cols:
        raise ValueError(f"groups must have one label per column ({n_cols}), got shape {g.shape}")
    _, inverse = np.unique(g, return_inverse=True)
    return np.ascontiguousarray(inverse.reshape(-1), dtype=np.int64)


class PairwiseScorer:
    """A validated InfluenceNetwork, ready to score (thread-safe, immutable).

    Build with `PairwiseScorer.load(path)` or `PairwiseScorer.from_network(NetworkWeights)`
    (or the shorthand `from_arrays(...)`); never call the constructor with a raw core object
    unless you built it yourself.
    """

    def __init__(self, core: _core.Scorer) -> None:
        self._core = core

    # ----------------------------------------------------------------- construction
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PairwiseScorer:
        """Load and validate a weight file (docs/weights.md).

        Raises NnciftError naming the problem for a missing, corrupt or truncated file, an
        unknown format_version, missing metadata, non-finite weights or mismatched shapes.
        """
        return cls(_core.Scorer.load(os.fspath(path)))

    @classmethod
    def from_network(cls, net: NetworkWeights, *, isa: str | None = None) -> PairwiseScorer:
        """From a validated `nncift.weights.NetworkWeights` (no file needed).

        `isa` ("avx512" / "avx2" / "generic") forces a kernel, for testing; default: the best
        this CPU has.
        """
        return cls(_core.Scorer.from_network(net, isa=isa))

    @classmethod
    def from_arrays(
        cls,
        layers: list[tuple[np.ndarray, np.ndarray]],
        *,
        embedding_dim: int,
        kind: str = "pairwise",
        input_layout: str = "paper",
        embedding_model: str = "",
        isa: str | None = None,
        **fields: Any,
    ) -> PairwiseScorer:
        """Build from in-memory weights: `layers` = [(W_k (out, in), b_k (out,)), ...] in torch
        `nn.Linear` layout (converted to float32); `fields` are the other `NetworkWeights`
        fields (label_scale, cosine_weight, bilinear, ...). A bad network raises
        WeightFileError (a ValueError). Shorthand for
        `from_network(NetworkWeights(layers, ...), isa=isa)`.
        """
        net = NetworkWeights(
            layers,
            kind=kind,
            input_layout=input_layout,
            embedding_dim=embedding_dim,
            embedding_model=embedding_model,
            **fields,
        )
        return cls.from_network(net, isa=isa)

    # ----------------------------------------------------------------- metadata
    @property
    def kind(self) -> str:
        """ "pairwise" or "pointwise"."""
        return str(self._core.kind)

    @property
    def input_layout(self) -> str:
        """ "paper", "concat" or "pointwise"."""
        return str(self._core.input_layout)

    @property
    def cosine_feature(self) -> bool:
        return bool(self._core.cosine_feature)

    @property
    def cosine_weight(self) -> float | None:
        return self._core.cosine_weight

    @property
    def bilinear_rank(self) -> int | None:
        return self._core.bilinear_rank

    @property
    def embedding_dim(self) -> int:
        return int(self._core.embedding_dim)

    @property
    def embedding_model(self) -> str:
        """Id of the embedder the network was trained with (check it matches yours)."""
        return str(self._core.embedding_model)

    @property
    def label_scale(self) -> float:
        return float(self._core.label_scale)

    @property
    def label_offset(self) -> float:
        return float(self._core.label_offset)

    @property
    def label_name(self) -> str | None:
        return self._core.label_name

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self._core.hidden_sizes)

    @property
    def depth(self) -> int:
        """Number of linear layers."""
        return int(self._core.depth)

    @property
    def isa(self) -> str:
        """Instruction set of the pair kernel on this CPU."""
        return str(self._core.isa)

    @property
    def metadata(self) -> dict[str, str]:
        """All metadata strings of the weight file."""
        return dict(self._core.metadata())

    def __repr__(self) -> str:
        return (
            f"PairwiseScorer(kind={self.kind!r}, input_layout={self.input_layout!r}, "
            f"embedding_dim={self.embedding_dim}, hidden_sizes={self.hidden_sizes}, "
            f"embedding_model={self.embedding_model!r})"
        )

    # ----------------------------------------------------------------- scoring
    def _pair(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.kind != "pairwise":
            raise ValueError("this is a pointwise network: use .pointwise(rows)")
        return _embeddings("rows", rows), _embeddings("cols", cols)

    def score(
        self, rows: Any, cols: Any, n_jobs: int = 0, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Dense predictions `(M, N)` float32 for rows `(M, d)` x cols `(N, d)`.

        A request whose result cannot fit in available memory raises NnciftError before
        allocating; use `topk`, `aggregate` or `bind(...).block(...)` instead, or pass
        `out=` a C-contiguous `(M, N)` float32 array (e.g. `numpy.lib.format.open_memmap`),
        which is filled in place and returned.
        """
        r, c = self._pair(rows, cols)
        if out is not None:
            if out.dtype != np.float32 or not out.flags.c_contiguous or not out.flags.writeable:
                raise ValueError("out must be a writeable C-contiguous float32 array")
            self._core.score_into(r, c, out, _n_jobs(n_jobs))
            return out
        return self._core.score(r, c, _n_jobs(n_jobs))

    def topk(self, rows: Any, cols: Any, k: int, n_jobs: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Per-row top-`k` columns without building the dense matrix.

        Returns `(indices (M, k) int64, values (M, k) float32)`, each row sorted by
        descending value, ties broken to the lowest column index. `1 <= k <= N`.
        """
        r, c = self._pair(rows, cols)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
            raise ValueError(f"k must be an integer, got {k!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return self._core.topk(r, c, int(k), _n_jobs(n_jobs))

    def aggregate(
        self,
        rows: Any,
        cols: Any,
        how: str = "mean",
        groups: Any = None,
        n_jobs: int = 0,
    ) -> np.ndarray:
        """Per-row aggregate over the columns, `(M,)` float32, without the dense matrix.

        how: "mean", "max", or "mean-max" (LESS: mean over the columns of each group, then
        the max over groups). groups: `(N,)` labels of any hashable dtype, one per column,
        required for "mean-max".
        """
        if how not in AGGREGATES:
            raise ValueError(f"how must be one of {AGGREGATES}, got {how!r}")
        r, c = self._pair(rows, cols)
        g = None
        if how == "mean-max":
            if groups is None:
                raise ValueError("how='mean-max' needs groups (one label per column)")
            g = _group_ids(groups, c.shape[0])
        return self._core.aggregate(r, c, how, g, _n_jobs(n_jobs))

    def pointwise(self, rows: Any, n_jobs: int = 0) -> np.ndarray:
        """Predictions `(M,)` float32 of a pointwise network for rows `(M, d)`."""
        if self.kind != "pointwise":
            raise ValueError("this is a pairwise network: use score / topk / aggregate")
        return self._core.pointwise(_embeddings("rows", rows), _n_jobs(n_jobs))

    def bind(self, rows: Any, cols: Any, n_jobs: int = 0) -> ScorerKernel:
        """Precompute the per-item factors of rows x cols once; the returned kernel computes
        any block on request (`.block(row_idx, col_idx)`, `.topk`, `.aggregate`, `.dense`)
        and is what the selection engine accepts as a kernel source (no M x N matrix)."""
        r, c = self._pair(rows, cols)
        return self._core.bind(r, c, _n_jobs(n_jobs))

    def block(
        self, rows: Any, cols: Any, row_idx: Any, col_idx: Any, n_jobs: int = 0
    ) -> np.ndarray:
        """`K[row_idx][:, col_idx]` `(len(row_idx), len(col_idx))` float32 (binds first; to
        request many blocks, call `bind` once and use its `.block`)."""
        ri = np.ascontiguousarray(np.asarray(row_idx, dtype=np.int64).reshape(-1))
        ci = np.ascontiguousarray(np.asarray(col_idx, dtype=np.int64).reshape(-1))
        return self.bind(rows, cols, n_jobs).block(ri, ci)

    def check_embedding_model(self, model: str | None) -> None:
        """Raise InputError when the embeddings come from a different model than the one the
        network was trained with (unknown ids on either side are not checked); the one check,
        `nncift.weights.check_embedding_model`, on this network's metadata."""
        check_embedding_model({"embedding_model": self.embedding_model or ""}, model)


__all__ = ["AGGREGATES", "PairwiseScorer", "ScorerKernel"]
