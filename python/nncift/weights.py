"""Read and write InfluenceNetwork weight files (format version 1, see docs/weights.md).

The file is safetensors (never pickle): the linear layers of a ReLU MLP in torch
`nn.Linear` layout plus string metadata. `NetworkWeights` is the one carrier of a network:
building one validates it with the Rust validator (`nncift._core`, the same code that
checks every file the scorer loads), `write_network` writes it, `read_network` reads it and
`nncift.PairwiseScorer.from_network` scores with it.

    net = NetworkWeights([(W0, b0), (W1, b1)], kind="pairwise", input_layout="paper",
                         embedding_dim=384, embedding_model="sentence-transformers/all-MiniLM-L6-v2")
    write_network(path, net)
    net = read_network(path)   # NetworkWeights, validated
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nncift import _core
from nncift.errors import InputError

FORMAT = "nncift-influence-network"
FORMAT_VERSION = 1


class WeightFileError(InputError):
    """A weight file (or in-memory weights) that breaks the format contract."""


def _as_f32(name: str, arr: object, ndim: int) -> np.ndarray:
    """`arr` as a C-contiguous float32 array of `ndim` dimensions (floating input only)."""
    a = np.asarray(arr)
    if a.dtype != np.float32:
        if not np.issubdtype(a.dtype, np.floating):
            raise WeightFileError(
                f"invalid InfluenceNetwork weights: {name} must be a float32 array, "
                f"got dtype {a.dtype}"
            )
        a = a.astype(np.float32)
    if a.ndim != ndim:
        raise WeightFileError(
            f"invalid InfluenceNetwork weights: {name} must have {ndim} dimension(s), "
            f"got shape {a.shape}"
        )
    return np.ascontiguousarray(a)


@dataclass(frozen=True)
class NetworkWeights:
    """A validated InfluenceNetwork (construction raises WeightFileError for a bad one).

    layers: [(W_k (out_k, in_k) float32, b_k (out_k,) float32), ...], 1 to 5 layers,
        `out_{L-1} == 1`; `in_0` follows from `input_layout`, `embedding_dim` and
        `cosine_feature` (docs/weights.md). Floating arrays are stored as C-contiguous
        float32.
    cosine_weight: the output cosine coefficient `c`, or None.
    bilinear: (U (r, d) float32, V (r, d) float32) for the term `(U e_i) . (V e_j)`, or None.
    extra_metadata: free-form strings written with the file (not the format's own keys).
    """

    layers: list[tuple[np.ndarray, np.ndarray]]
    kind: str
    input_layout: str
    embedding_dim: int
    embedding_model: str
    label_scale: float = 1.0
    label_offset: float = 0.0
    cosine_feature: bool = False
    cosine_weight: float | None = None
    bilinear: tuple[np.ndarray, np.ndarray] | None = None
    label_name: str | None = None
    extra_metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise types (frozen: set through object.__setattr__), then run the one
        # validator of the format, in Rust.
        conv = [
            (_as_f32(f"layers.{k}.weight", w, 2), _as_f32(f"layers.{k}.bias", b, 1))
            for k, (w, b) in enumerate(self.layers)
        ]
        bil = self.bilinear
        if bil is not None:
            bil = (_as_f32("bilinear.u", bil[0], 2), _as_f32("bilinear.v", bil[1], 2))
        values = {
            "layers": conv,
            "kind": str(self.kind),
            "input_layout": str(self.input_layout),
            "embedding_dim": int(self.embedding_dim),
            "embedding_model": str(self.embedding_model),
            "label_scale": float(self.label_scale),
            "label_offset": float(self.label_offset),
            "cosine_feature": bool(self.cosine_feature),
            "cosine_weight": None if self.cosine_weight is None else float(self.cosine_weight),
            "bilinear": bil,
            "label_name": None if self.label_name is None else str(self.label_name),
            "extra_metadata": {str(k): str(v) for k, v in self.extra_metadata.items()},
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        if self.embedding_dim < 0:  # 0 reaches the validator; a negative one cannot cross
            raise WeightFileError(
                "invalid InfluenceNetwork weights: embedding_dim must be a positive integer, "
                f"got {self.embedding_dim}"
            )
        try:
            _core.check_network(self)
        except ValueError as exc:
            raise WeightFileError(f"invalid {exc}") from None

    @property
    def hidden_sizes(self) -> list[int]:
        """Output sizes of every layer but the last."""
        return [int(w.shape[0]) for w, _ in self.layers[:-1]]

    @property
    def input_dim(self) -> int:
        """`in_0`, the width of the first layer's input."""
        return int(self.layers[0][0].shape[1])


def write_network(path: str | os.PathLike[str], net: NetworkWeights) -> None:
    """Write a network atomically as a format-1 safetensors file.

    `net` was validated when it was built, so a trainer can never write a file the
    scorer would refuse.
    """
    from safetensors.numpy import save

    from nncift.io import atomic_path

    tensors: dict[str, np.ndarray] = {}
    for k, (w, b) in enumerate(net.layers):
        tensors[f"layers.{k}.weight"] = w
        tensors[f"layers.{k}.bias"] = b
    if net.cosine_weight is not None:
        tensors["output.cosine_weight"] = np.array([net.cosine_weight], dtype=np.float32)
    if net.bilinear is not None:
        tensors["bilinear.u"], tensors["bilinear.v"] = net.bilinear
    metadata = dict(net.extra_metadata)
    metadata.update(
        {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "kind": net.kind,
            "input_layout": net.input_layout,
            "cosine_feature": "true" if net.cosine_feature else "false",
            "embedding_dim": str(net.embedding_dim),
            "embedding_model": net.embedding_model,
            # repr() of a Python float round-trips exactly and parses as a Rust f64.
            "label_scale": repr(float(net.label_scale)),
            "label_offset": repr(float(net.label_offset)),
            "hidden_sizes": json.dumps(net.hidden_sizes),
        }
    )
    if net.label_name is not None:
        metadata["label_name"] = net.label_name
    data = save(tensors, metadata=metadata)
    # Written by Python, not by safetensors' own file writer: a full disk then raises an
    # OSError naming the file (save_file raised a SafetensorError the CLI showed as a crash).
    with atomic_path(path, suffix=".safetensors") as tmp:
        tmp.write_bytes(data)


def read_network(path: str | os.PathLike[str]) -> NetworkWeights:
    """Load and validate a weight file (in Rust; never unpickles).

    Raises WeightFileError (an NnciftError and ValueError) naming the problem for a
    missing, truncated or corrupt file, an unknown format_version, a missing key or
    tensor, an unknown tensor, a non-float32 or non-finite weight, or shapes that do not
    chain.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: no such weight file")
    try:
        fields = _core.read_network(os.fspath(path))
    except ValueError as exc:
        raise WeightFileError(str(exc)) from None
    return NetworkWeights(**fields)


def check_embedding_model(
    meta: dict[str, str], embedding_model: str | None, *, what: str = "embeddings"
) -> None:
    """Refuse embeddings from another embedder than the one a network was trained with.

    meta: the weight file's metadata (``embedding_model``). embedding_model: the id of the
    embedder of the inputs; None, or an unknown id in the weight file, skips the check.
    Callers that embed run it before embedding, so a wrong model fails before the work.
    """
    want_m = meta.get("embedding_model")
    if (
        embedding_model is not None
        and want_m not in (None, "", "unknown")
        and embedding_model != want_m
    ):
        raise InputError(
            f"{what} come from embedding model {embedding_model!r} but the network was trained "
            f"with {want_m!r}; re-embed with the same model"
        )


def check_embeddings(
    meta: dict[str, str],
    embeddings: np.ndarray,
    embedding_model: str | None = None,
    *,
    what: str = "embeddings",
) -> None:
    """Refuse embeddings that do not come from the model a network was trained with.

    The one check of inputs against a weight file (`train`, `estimate`, `evaluate` and the
    estimator all call it; torch-free, so the lean install can run it). meta: the weight file's metadata. embeddings: (n, d).
    embedding_model: the id of the embedder that produced `embeddings`, when known (None
    skips the name check).
    """
    want_d = meta.get("embedding_dim")
    if embeddings.ndim != 2:
        raise InputError(f"{what} must be a 2-D (n, d) array, got shape {embeddings.shape}")
    if want_d is not None and int(want_d) != embeddings.shape[1]:
        raise InputError(
            f"{what} have dimension {embeddings.shape[1]} but the network was trained on "
            f"{want_d}-dimensional embeddings from {meta.get('embedding_model', '?')!r}"
        )
    check_embedding_model(meta, embedding_model, what=what)


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "NetworkWeights",
    "WeightFileError",
    "check_embedding_model",
    "check_embeddings",
    "read_network",
    "write_network",
]
