"""Read and write InfluenceNetwork weight files (format version 1, see docs/weights.md).

The file is safetensors (never pickle): the linear layers of a ReLU MLP in torch
`nn.Linear` layout plus string metadata. This module is the Python half of the contract;
the Rust scorer (`nncift.PairwiseScorer`) validates every file the same way on load.

    write_network(path, [(W0, b0), (W1, b1)], kind="pairwise", input_layout="paper",
                  embedding_dim=384, embedding_model="sentence-transformers/all-MiniLM-L6-v2")
    net = read_network(path)   # NetworkWeights, validated
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nncift.errors import InputError

FORMAT = "nncift-influence-network"
FORMAT_VERSION = 1
MAX_LAYERS = 5
KINDS = ("pairwise", "pointwise")
LAYOUTS = ("paper", "concat", "pointwise")
# Metadata keys the format defines; any other key is kept as free-form extra metadata.
_KNOWN_KEYS = frozenset(
    {
        "format",
        "format_version",
        "kind",
        "input_layout",
        "cosine_feature",
        "embedding_dim",
        "embedding_model",
        "label_scale",
        "label_offset",
        "label_name",
        "hidden_sizes",
    }
)
_LAYER_RE = re.compile(r"^layers\.(0|[1-9][0-9]*)\.(weight|bias)$")
_OPTIONAL_TENSORS = frozenset({"output.cosine_weight", "bilinear.u", "bilinear.v"})


class WeightFileError(InputError):
    """A weight file (or in-memory weights) that breaks the format contract."""


@dataclass(frozen=True)
class NetworkWeights:
    """A validated InfluenceNetwork.

    layers: [(W_k (out_k, in_k) float32, b_k (out_k,) float32), ...], 1 to 5 layers,
        `out_{L-1} == 1`; `in_0` follows from `input_layout`, `embedding_dim` and
        `cosine_feature` (docs/weights.md).
    cosine_weight: the output cosine coefficient `c`, or None.
    bilinear: (U (r, d) float32, V (r, d) float32) for the term `(U e_i) . (V e_j)`, or None.
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

    @property
    def hidden_sizes(self) -> list[int]:
        """Output sizes of every layer but the last."""
        return [int(w.shape[0]) for w, _ in self.layers[:-1]]

    @property
    def input_dim(self) -> int:
        """`in_0`, the width of the first layer's input."""
        return expected_input_dim(self.input_layout, self.embedding_dim, self.cosine_feature)


def expected_input_dim(input_layout: str, embedding_dim: int, cosine_feature: bool) -> int:
    """`in_0` for a layout: paper 2d+1, concat 2d, pointwise d; +1 with the cosine feature."""
    base = {"paper": 2 * embedding_dim + 1, "concat": 2 * embedding_dim, "pointwise": embedding_dim}
    if input_layout not in base:
        raise WeightFileError(f"input_layout must be one of {LAYOUTS}, got {input_layout!r}")
    return base[input_layout] + (1 if cosine_feature else 0)


def _fail(msg: str) -> WeightFileError:
    return WeightFileError(f"invalid InfluenceNetwork weights: {msg}")


def _as_f32(name: str, arr: object, ndim: int) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype != np.float32:
        if not np.issubdtype(a.dtype, np.floating):
            raise _fail(f"{name} must be a float32 array, got dtype {a.dtype}")
        a = a.astype(np.float32)
    if a.ndim != ndim:
        raise _fail(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise _fail(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(a)


def _validate(net: NetworkWeights) -> None:
    """Check everything docs/weights.md promises; raise WeightFileError naming the problem."""
    if net.kind not in KINDS:
        raise _fail(f"kind must be one of {KINDS}, got {net.kind!r}")
    if net.input_layout not in LAYOUTS:
        raise _fail(f"input_layout must be one of {LAYOUTS}, got {net.input_layout!r}")
    if (net.kind == "pointwise") != (net.input_layout == "pointwise"):
        raise _fail(f"kind {net.kind!r} does not agree with input_layout {net.input_layout!r}")
    if not isinstance(net.embedding_dim, int) or net.embedding_dim < 1:
        raise _fail(f"embedding_dim must be a positive integer, got {net.embedding_dim!r}")
    for key, val in (("label_scale", net.label_scale), ("label_offset", net.label_offset)):
        if not math.isfinite(val):
            raise _fail(f"{key} must be a finite number, got {val!r}")
    if net.label_scale == 0.0:
        raise _fail("label_scale must be non-zero (it would make every prediction constant)")
    pointwise = net.kind == "pointwise"
    if pointwise and (net.cosine_feature or net.cosine_weight is not None or net.bilinear):
        raise _fail("cosine and bilinear terms need a pairwise network, not a pointwise one")
    n = len(net.layers)
    if not 1 <= n <= MAX_LAYERS:
        raise _fail(f"the network must have 1 to {MAX_LAYERS} linear layers, got {n}")
    expect_in = net.input_dim
    for k, (w, b) in enumerate(net.layers):
        if w.ndim != 2 or b.ndim != 1:
            raise _fail(f"layers.{k}: weight must be 2-D and bias 1-D")
        if w.shape[1] != expect_in:
            raise _fail(
                f"layers.{k}.weight has {w.shape[1]} input columns, expected {expect_in}"
                + (
                    f" (input_layout {net.input_layout!r}, embedding_dim {net.embedding_dim}"
                    f", cosine_feature {net.cosine_feature})"
                    if k == 0
                    else f" (the output size of layers.{k - 1})"
                )
            )
        if w.shape[0] < 1:
            raise _fail(f"layers.{k}.weight has no output rows")
        if b.shape != (w.shape[0],):
            raise _fail(f"layers.{k}.bias has shape {b.shape}, expected ({w.shape[0]},)")
        expect_in = w.shape[0]
    if expect_in != 1:
        raise _fail(f"the last layer must have 1 output, got {expect_in}")
    if net.cosine_weight is not None and not math.isfinite(net.cosine_weight):
        raise _fail("output.cosine_weight is not finite")
    if net.bilinear is not None:
        u, v = net.bilinear
        d = net.embedding_dim
        if u.ndim != 2 or u.shape != v.shape or u.shape[1] != d or u.shape[0] < 1:
            raise _fail(
                f"bilinear.u and bilinear.v must both have shape (r, {d}) with r >= 1, "
                f"got {u.shape} and {v.shape}"
            )


def write_network(
    path: str | os.PathLike[str],
    layers: list[tuple[np.ndarray, np.ndarray]],
    *,
    kind: str,
    input_layout: str,
    embedding_dim: int,
    embedding_model: str,
    label_scale: float = 1.0,
    label_offset: float = 0.0,
    cosine_feature: bool = False,
    cosine_weight: float | None = None,
    bilinear: tuple[np.ndarray, np.ndarray] | None = None,
    label_name: str | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> None:
    """Validate a network and write it atomically as a format-1 safetensors file.

    layers: [(W_k (out_k, in_k), b_k (out_k,)), ...] in torch `nn.Linear` layout; floating
        arrays are stored as float32 (C order). bilinear: (U (r, d), V (r, d)) or None.
    Raises WeightFileError (a ValueError and NnciftError) for weights that break the
    contract, so a trainer can never write a file the scorer would refuse.
    """
    from safetensors.numpy import save_file

    from nncift.io import atomic_path

    net = make_network(
        layers,
        kind=kind,
        input_layout=input_layout,
        embedding_dim=embedding_dim,
        embedding_model=embedding_model,
        label_scale=label_scale,
        label_offset=label_offset,
        cosine_feature=cosine_feature,
        cosine_weight=cosine_weight,
        bilinear=bilinear,
        label_name=label_name,
        extra_metadata=extra_metadata,
    )
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
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def make_network(
    layers: list[tuple[np.ndarray, np.ndarray]],
    *,
    kind: str,
    input_layout: str,
    embedding_dim: int,
    embedding_model: str,
    label_scale: float = 1.0,
    label_offset: float = 0.0,
    cosine_feature: bool = False,
    cosine_weight: float | None = None,
    bilinear: tuple[np.ndarray, np.ndarray] | None = None,
    label_name: str | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> NetworkWeights:
    """Build and validate a NetworkWeights from in-memory arrays (same arguments as
    `write_network`); arrays are converted to C-contiguous float32."""
    conv = [
        (_as_f32(f"layers.{k}.weight", w, 2), _as_f32(f"layers.{k}.bias", b, 1))
        for k, (w, b) in enumerate(layers)
    ]
    bil = None
    if bilinear is not None:
        bil = (_as_f32("bilinear.u", bilinear[0], 2), _as_f32("bilinear.v", bilinear[1], 2))
    extra = {str(k): str(v) for k, v in (extra_metadata or {}).items()}
    clash = sorted(_KNOWN_KEYS & extra.keys())
    if clash:
        raise _fail(f"extra_metadata may not set format keys {clash}; use the arguments")
    net = NetworkWeights(
        layers=conv,
        kind=kind,
        input_layout=input_layout,
        embedding_dim=int(embedding_dim),
        embedding_model=str(embedding_model),
        label_scale=float(label_scale),
        label_offset=float(label_offset),
        cosine_feature=bool(cosine_feature),
        cosine_weight=None if cosine_weight is None else float(cosine_weight),
        bilinear=bil,
        label_name=label_name,
        extra_metadata=extra,
    )
    _validate(net)
    return net


def _parse_float(meta: dict[str, str], key: str, default: float) -> float:
    if key not in meta:
        if key in ("label_scale", "label_offset"):
            raise _fail(f"missing metadata key {key!r}")
        return default
    try:
        return float(meta[key])
    except ValueError:
        raise _fail(f"metadata {key}={meta[key]!r} is not a number") from None


def read_network(path: str | os.PathLike[str]) -> NetworkWeights:
    """Load and validate a weight file; never unpickles.

    Raises WeightFileError (an NnciftError and ValueError) naming the problem for a
    missing, truncated or corrupt file, an unknown format_version, a missing key or
    tensor, an unknown tensor, a non-float32 or non-finite weight, or shapes that do not
    chain.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: no such weight file")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
    except WeightFileError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightFileError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        return _from_parts(meta, tensors)
    except WeightFileError as exc:
        raise WeightFileError(f"{path}: {exc}") from None


def _from_parts(meta: dict[str, str], tensors: dict[str, np.ndarray]) -> NetworkWeights:
    if meta.get("format") != FORMAT:
        raise _fail(f"metadata format must be {FORMAT!r}, got {meta.get('format')!r}")
    if "format_version" not in meta:
        raise _fail("missing metadata key 'format_version'")
    if meta["format_version"].strip() != str(FORMAT_VERSION):
        raise _fail(
            f"unknown format_version {meta['format_version']!r} (this nncift reads version "
            f"{FORMAT_VERSION}; a newer file needs a newer nncift)"
        )
    for key in ("kind", "input_layout", "embedding_dim", "embedding_model"):
        if key not in meta:
            raise _fail(f"missing metadata key {key!r}")
    cos_feat = meta.get("cosine_feature", "false")
    if cos_feat not in ("true", "false"):
        raise _fail(f"metadata cosine_feature must be 'true' or 'false', got {cos_feat!r}")
    try:
        dim = int(meta["embedding_dim"])
    except ValueError:
        raise _fail(f"embedding_dim {meta['embedding_dim']!r} is not an integer") from None
    for name, arr in tensors.items():
        if name not in _OPTIONAL_TENSORS and not _LAYER_RE.match(name):
            raise _fail(f"unknown tensor {name!r}")
        if arr.dtype != np.float32:
            raise _fail(f"tensor {name!r} has dtype {arr.dtype}, expected float32")
        if not np.all(np.isfinite(arr)):
            raise _fail(f"tensor {name!r} contains NaN or infinite values")
    n_layers = 0
    while f"layers.{n_layers}.weight" in tensors or f"layers.{n_layers}.bias" in tensors:
        n_layers += 1
    layer_names = {n for n in tensors if n.startswith("layers.")}
    expected = {f"layers.{k}.{p}" for k in range(n_layers) for p in ("weight", "bias")}
    if layer_names != expected or n_layers == 0:
        missing = sorted(expected - layer_names) or ["layers.0.weight"]
        extra = sorted(layer_names - expected)
        raise _fail(
            f"layer tensors must be layers.0..layers.L-1 each with weight and bias; "
            f"missing {missing}" + (f", unexpected {extra}" if extra else "")
        )
    layers = [(tensors[f"layers.{k}.weight"], tensors[f"layers.{k}.bias"]) for k in range(n_layers)]
    cw = tensors.get("output.cosine_weight")
    if cw is not None and cw.shape != (1,):
        raise _fail(f"output.cosine_weight must have shape (1,), got {cw.shape}")
    u, v = tensors.get("bilinear.u"), tensors.get("bilinear.v")
    if (u is None) != (v is None):
        raise _fail("bilinear.u and bilinear.v must be given together")
    extra_meta = {k: v for k, v in meta.items() if k not in _KNOWN_KEYS}
    net = NetworkWeights(
        layers=layers,
        kind=meta["kind"],
        input_layout=meta["input_layout"],
        embedding_dim=dim,
        embedding_model=meta["embedding_model"],
        label_scale=_parse_float(meta, "label_scale", 1.0),
        label_offset=_parse_float(meta, "label_offset", 0.0),
        cosine_feature=cos_feat == "true",
        cosine_weight=None if cw is None else float(cw[0]),
        bilinear=None if u is None or v is None else (u, v),
        label_name=meta.get("label_name"),
        extra_metadata=extra_meta,
    )
    _validate(net)
    return net


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "NetworkWeights",
    "WeightFileError",
    "expected_input_dim",
    "make_network",
    "read_network",
    "write_network",
]
