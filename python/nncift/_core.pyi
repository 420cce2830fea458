# Type stub for the Rust extension nncift._core. Keep in sync with rust/nncift-py/src.

from typing import Any, final

import numpy as _np
import numpy.typing as _npt

from nncift.weights import NetworkWeights

__all__ = [
    "NnciftError",
    "Scorer",
    "ScorerKernel",
    "__version__",
    "check_network",
    "greedi_plan",
    "read_network",
    "select_core",
    "tie_ranks",
]

__version__: str

class NnciftError(Exception): ...

# --- weight format (rust/nncift-py/src/weights.rs) ---

def check_network(net: NetworkWeights) -> None:
    """Validate with the core's validator; ValueError naming the broken rule."""
    ...

def read_network(path: str) -> dict[str, Any]:
    """Read and validate a weight file; the `NetworkWeights` fields as a dict."""
    ...

# --- scorer (rust/nncift-py/src/scorer.rs) ---

@final
class Scorer:
    @staticmethod
    def load(path: str) -> Scorer: ...
    @staticmethod
    def from_network(net: NetworkWeights, *, isa: str | None = None) -> Scorer: ...
    def score(
        self, rows: _npt.NDArray[_np.float32], cols: _npt.NDArray[_np.float32], n_jobs: int = 0
    ) -> _npt.NDArray[_np.float32]: ...
    def score_into(
        self,
        rows: _npt.NDArray[_np.float32],
        cols: _npt.NDArray[_np.float32],
        out: _npt.NDArray[_np.float32],
        n_jobs: int = 0,
    ) -> None: ...
    def topk(
        self,
        rows: _npt.NDArray[_np.float32],
        cols: _npt.NDArray[_np.float32],
        k: int,
        n_jobs: int = 0,
    ) -> tuple[_npt.NDArray[_np.int64], _npt.NDArray[_np.float32]]: ...
    def aggregate(
        self,
        rows: _npt.NDArray[_np.float32],
        cols: _npt.NDArray[_np.float32],
        how: str,
        groups: _npt.NDArray[_np.int64] | None = None,
        n_jobs: int = 0,
    ) -> _npt.NDArray[_np.float32]: ...
    def pointwise(
        self, rows: _npt.NDArray[_np.float32], n_jobs: int = 0
    ) -> _npt.NDArray[_np.float32]: ...
    def bind(
        self, rows: _npt.NDArray[_np.float32], cols: _npt.NDArray[_np.float32], n_jobs: int = 0
    ) -> ScorerKernel: ...
    def metadata(self) -> dict[str, str]: ...
    kind: str
    input_layout: str
    cosine_feature: bool
    embedding_dim: int
    embedding_model: str
    label_scale: float
    label_offset: float
    label_name: str | None
    cosine_weight: float | None
    bilinear_rank: int | None
    hidden_sizes: list[int]
    depth: int
    isa: str

@final
class ScorerKernel:
    n_rows: int
    n_cols: int
    shape: tuple[int, int]
    def block(
        self, rows: _npt.NDArray[_np.int64], cols: _npt.NDArray[_np.int64]
    ) -> _npt.NDArray[_np.float32]: ...
    def dense(self, n_jobs: int = 0) -> _npt.NDArray[_np.float32]: ...
    def topk(
        self, k: int, n_jobs: int = 0
    ) -> tuple[_npt.NDArray[_np.int64], _npt.NDArray[_np.float32]]: ...
    def aggregate(
        self, how: str, groups: _npt.NDArray[_np.int64] | None = None, n_jobs: int = 0
    ) -> _npt.NDArray[_np.float32]: ...

# --- selection (rust/nncift-py/src/select.rs) ---

def select_core(
    objective: str,
    count: int,
    *,
    kernel: _np.ndarray | None = None,
    embeddings: _np.ndarray | None = None,
    represented_embeddings: _np.ndarray | None = None,
    query_kernel: _np.ndarray | None = None,
    query_embeddings: _np.ndarray | None = None,
    private_kernel: _np.ndarray | None = None,
    private_embeddings: _np.ndarray | None = None,
    scores: _np.ndarray | None = None,
    quality_weight: float = 1.0,
    mode: str = "dense",
    knn: int = 10,
    optimizer: str = "lazy",
    epsilon: float = 0.01,
    eta: float = 1.0,
    nu: float = 1.0,
    lambda_: float = 0.5,
    costs: _np.ndarray | None = None,
    cost_budget: float | None = None,
    initial: _np.ndarray | None = None,
    stop_if_zero_gain: bool = False,  # = nncift.selection.STOP_IF_ZERO_GAIN_DEFAULT
    stop_if_negative_gain: bool = False,
    seed: int = 0,
    n_jobs: int = 0,
    cosine: str = "clip",
    greedi_parts: int = 0,
    greedi_local_factor: float = 2.0,
    kernel_source: object | None = None,
    tie_ranks: _npt.NDArray[_np.int64] | None = None,
) -> tuple[_np.ndarray, _np.ndarray, float, list[tuple[str, float]], str, str, int, str | None]:
    """Returns (indices, gains, objective, timings, mode, optimizer, evaluations, stop);
    stop is None when `count` items were chosen, else why not (zero_gain, negative_gain,
    cost_budget, exhausted)."""
    ...

def greedi_plan(
    n: int, parts: int, seed: int, count: int, local_factor: float = 2.0
) -> tuple[list[_npt.NDArray[_np.int64]], int]:
    """The parts `select(optimizer="greedi")` cuts (sorted int64 index arrays) and the
    per-part budget; a distributed driver uses them to reproduce a local run."""
    ...

def tie_ranks(n: int, seed: int) -> _npt.NDArray[_np.int64]:
    """The tie order `nncift.select(random_state=seed)` uses on `n` items: a permutation of 0..n; of two
    equal gains the item with the lower rank is chosen."""
    ...
