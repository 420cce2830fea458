"""The InfluenceNetwork: a small ReLU MLP over a pair (or point) of sentence embeddings.

Paper layout (default): input `[e_i, 0, e_j]`, `Linear(2d+1 -> 100) -> ReLU -> Linear(100 -> 1)`.
Also: the plain `[e_i, e_j]` layout, a pointwise layout `[e_i]`, any depth / widths, and the
similarity-aware options of docs/weights.md (cosine input feature, output cosine term,
low-rank bilinear term).

Everything runs in factorised form. With `W_0 = [W_a | w_sep | W_b | w_cos]`,

    W_0 [e_i; 0; e_j; cos_ij] + b_0 = (W_a e_i + b_0) + W_b e_j + w_cos * cos_ij

so a batch of (i, j) index pairs gathers rows of the two first-layer projections and the
(pairs x features) tensor is never built — not in training and not in prediction.
`forward_features` runs the same network on an explicit feature matrix; it exists as the
reference the factorised path is tested against, and as the "materialised" side of the bench.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from nncift.errors import InputError
from nncift.weights import (  # check_embeddings: re-exported, its home is nncift.weights
    NetworkWeights,
    check_embedding_model,
    check_embeddings,
    read_network,
    write_network,
)

LAYOUTS = ("paper", "concat", "pointwise")
# Guards the cosine against zero vectors; a zero embedding gets cosine 0 with everything.
_COS_EPS = 1e-12


def _unit(e: torch.Tensor) -> torch.Tensor:
    return e / e.norm(dim=1, keepdim=True).clamp_min(_COS_EPS)


class InfluenceNetwork(nn.Module):
    """A ReLU MLP scoring pairs `(e_i, e_j)` (or points `e_i`) of `d`-dim embeddings.

    embedding_dim: d. hidden_sizes: widths of the hidden layers; `()` gives a linear model.
    input_layout: "paper" (`[e_i, 0, e_j]`), "concat" (`[e_i, e_j]`) or "pointwise" (`[e_i]`).
    cosine_feature: append `cos(e_i, e_j)` as a last input feature (pairwise only).
    output_cosine: add `c * cos(e_i, e_j)` to the output (pairwise only).
    bilinear_rank: r > 0 adds `(U e_i) . (V e_j)` with U, V of shape (r, d) (pairwise only).

    The network works in the *scaled* label space; the estimator owns the label scaling.
    Parameters are float32.
    """

    def __init__(
        self,
        embedding_dim: int,
        *,
        hidden_sizes: tuple[int, ...] = (100,),
        input_layout: str = "paper",
        cosine_feature: bool = False,
        output_cosine: bool = False,
        bilinear_rank: int = 0,
    ) -> None:
        super().__init__()
        if input_layout not in LAYOUTS:
            raise InputError(f"input_layout must be one of {LAYOUTS}, got {input_layout!r}")
        if embedding_dim < 1:
            raise InputError(f"embedding_dim must be positive, got {embedding_dim}")
        hidden_sizes = tuple(int(h) for h in hidden_sizes)
        if any(h < 1 for h in hidden_sizes) or len(hidden_sizes) > 4:
            # The weight format allows 1..5 linear layers.
            raise InputError(f"hidden_sizes must be 0-4 positive widths, got {hidden_sizes}")
        pointwise = input_layout == "pointwise"
        if pointwise and (cosine_feature or output_cosine or bilinear_rank):
            raise InputError("cosine and bilinear terms need a pairwise layout, not 'pointwise'")
        if bilinear_rank < 0:
            raise InputError(f"bilinear_rank must be >= 0, got {bilinear_rank}")
        d = int(embedding_dim)
        self.embedding_dim = d
        self.hidden_sizes = hidden_sizes
        self.input_layout = input_layout
        self.cosine_feature = bool(cosine_feature)
        self.pointwise = pointwise
        in0 = {"paper": 2 * d + 1, "concat": 2 * d, "pointwise": d}[input_layout]
        in0 += int(self.cosine_feature)
        sizes = [in0, *hidden_sizes, 1]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.cosine_weight = nn.Parameter(torch.zeros(1)) if output_cosine else None
        if bilinear_rank:
            # Small init: the bilinear term starts near zero and grows only if it helps.
            g = torch.Generator().manual_seed(0)
            std = 0.1 / d**0.5
            self.bilinear_u: nn.Parameter | None = nn.Parameter(
                torch.randn(bilinear_rank, d, generator=g) * std
            )
            self.bilinear_v: nn.Parameter | None = nn.Parameter(
                torch.randn(bilinear_rank, d, generator=g) * std
            )
        else:
            self.bilinear_u = self.bilinear_v = None

    # -- structure -------------------------------------------------------------------------
    def linear(self, k: int) -> nn.Linear:
        """The k-th linear layer (negative k counts from the end)."""
        layer = self.layers[k]
        assert isinstance(layer, nn.Linear)
        return layer

    @property
    def kind(self) -> str:
        return "pointwise" if self.pointwise else "pairwise"

    @property
    def needs_cosine(self) -> bool:
        return self.cosine_feature or self.cosine_weight is not None

    def _first_blocks(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Split W_0 into (W_a (h, d), W_b (h, d) or None, w_cos (h,) or None)."""
        w = self.linear(0).weight
        d = self.embedding_dim
        if self.pointwise:
            return w[:, :d], None, None
        start_b = d + 1 if self.input_layout == "paper" else d  # skip the dead separator
        w_cos = w[:, start_b + d] if self.cosine_feature else None
        return w[:, :d], w[:, start_b : start_b + d], w_cos

    def project_rows(self, e: torch.Tensor) -> torch.Tensor:
        """P = e W_a^T + b_0: (n, d) -> (n, h_0)."""
        w_a, _, _ = self._first_blocks()
        return e @ w_a.T + self.linear(0).bias

    def project_cols(self, e: torch.Tensor) -> torch.Tensor:
        """Q = e W_b^T: (n, d) -> (n, h_0)."""
        _, w_b, _ = self._first_blocks()
        if w_b is None:
            raise InputError("a pointwise network has no column projection")
        return e @ w_b.T

    def _head(self, z: torch.Tensor) -> torch.Tensor:
        """Layers 1..L-1 on first-layer pre-activations z (..., h_0) -> (...,)."""
        if len(self.layers) == 1:
            return z[..., 0]  # a linear network: no ReLU anywhere
        for layer in self.layers[1:]:
            z = layer(torch.relu(z))
        return z[..., 0]

    def _extras(self, ei: torch.Tensor, ej: torch.Tensor, cos: torch.Tensor | None) -> torch.Tensor:
        """Output terms beyond the MLP for aligned rows ei, ej (B, d) -> (B,)."""
        out = torch.zeros(ei.shape[0], dtype=ei.dtype, device=ei.device)
        if self.cosine_weight is not None and cos is not None:
            out = out + self.cosine_weight * cos
        if self.bilinear_u is not None and self.bilinear_v is not None:
            out = out + ((ei @ self.bilinear_u.T) * (ej @ self.bilinear_v.T)).sum(dim=1)
        return out

    # -- factorised forward ----------------------------------------------------------------
    def forward_pairs(
        self, rows_e: torch.Tensor, cols_e: torch.Tensor, i: torch.Tensor, j: torch.Tensor
    ) -> torch.Tensor:
        """Scaled predictions for pairs (i[k], j[k]).

        rows_e (M, d), cols_e (N, d) float32; i, j (B,) int64 -> (B,).

        Gathers embedding rows and projects them (same as gathering rows of P = E W_a^T + b_0);
        cost O(B d h), independent of M and N, and nothing of size B x (2d+1) exists.
        """
        ei = rows_e.index_select(0, i)  # (B, d)
        ej = cols_e.index_select(0, j)  # (B, d)
        z = self.project_rows(ei) + self.project_cols(ej)  # (B, h0)
        cos = None
        if self.needs_cosine:
            cos = (_unit(ei) * _unit(ej)).sum(dim=1)  # (B,)
            _, _, w_cos = self._first_blocks()
            if w_cos is not None:
                z = z + cos[:, None] * w_cos[None, :]
        return self._head(z) + self._extras(ei, ej, cos)

    def forward_points(self, e: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Scaled pointwise predictions: e (M, d), i (B,) int64 -> (B,)."""
        return self._head(self.project_rows(e.index_select(0, i)))

    def forward(
        self,
        rows_e: torch.Tensor,
        cols_e: torch.Tensor | None,
        i: torch.Tensor,
        j: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.pointwise:
            return self.forward_points(rows_e, i)
        if cols_e is None or j is None:
            raise InputError("a pairwise network needs column embeddings and column indices")
        return self.forward_pairs(rows_e, cols_e, i, j)

    @torch.no_grad()
    def predict_matrix(
        self, rows_e: torch.Tensor, cols_e: torch.Tensor, *, chunk_elems: int = 1 << 24
    ) -> torch.Tensor:
        """Scaled predictions for every pair: rows_e (M, d), cols_e (N, d) -> (M, N).

        P (M, h) and Q (N, h) are computed once; each block of rows then costs O(rows N h).
        """
        p = self.project_rows(rows_e)  # (M, h0)
        q = self.project_cols(cols_e)  # (N, h0)
        _, _, w_cos = self._first_blocks()
        ru = _unit(rows_e) if self.needs_cosine else None
        cu = _unit(cols_e) if self.needs_cosine else None
        bu = rows_e @ self.bilinear_u.T if self.bilinear_u is not None else None  # (M, r)
        bv = cols_e @ self.bilinear_v.T if self.bilinear_v is not None else None  # (N, r)
        m, n = p.shape[0], q.shape[0]
        out = torch.empty((m, n), dtype=p.dtype, device=p.device)
        # Bound the (rows, N, h0) pre-activation block to about `chunk_elems` floats.
        step = max(1, chunk_elems // max(1, n * p.shape[1]))
        for s in range(0, m, step):
            e = min(m, s + step)
            z = p[s:e, None, :] + q[None, :, :]  # (b, N, h0)
            cos = ru[s:e] @ cu.T if ru is not None and cu is not None else None  # (b, N)
            if w_cos is not None and cos is not None:
                z = z + cos[..., None] * w_cos
            blk = self._head(z)  # (b, N)
            if self.cosine_weight is not None and cos is not None:
                blk = blk + self.cosine_weight * cos
            if bu is not None and bv is not None:
                blk = blk + bu[s:e] @ bv.T
            out[s:e] = blk
        return out

    # -- materialised reference ----------------------------------------------------------------
    def build_features(self, ei: torch.Tensor, ej: torch.Tensor | None = None) -> torch.Tensor:
        """The explicit input features of aligned pairs (B, in_0), as in the paper's code."""
        if self.pointwise:
            return ei
        if ej is None:
            raise InputError("a pairwise network needs column embeddings")
        parts = [ei]
        if self.input_layout == "paper":
            parts.append(torch.zeros(ei.shape[0], 1, dtype=ei.dtype, device=ei.device))
        parts.append(ej)
        if self.cosine_feature:
            parts.append((_unit(ei) * _unit(ej)).sum(dim=1, keepdim=True))
        return torch.cat(parts, dim=1)

    def forward_features(
        self, x: torch.Tensor, ei: torch.Tensor | None = None, ej: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Plain (non-factorised) forward on features x (B, in_0) -> (B,).

        ei, ej (B, d) are needed only for the output cosine / bilinear terms.
        """
        z = self.linear(0)(x)
        out = self._head(z)
        if ei is not None and ej is not None and not self.pointwise:
            cos = (_unit(ei) * _unit(ej)).sum(dim=1) if self.cosine_weight is not None else None
            out = out + self._extras(ei, ej, cos)
        return out

    # -- export ------------------------------------------------------------------------------
    def to_weights(
        self,
        *,
        embedding_model: str,
        label_scale: float = 1.0,
        label_offset: float = 0.0,
        label_name: str | None = None,
        extra_metadata: dict[str, str] | None = None,
    ) -> NetworkWeights:
        """The validated `nncift.weights.NetworkWeights` of this network (float32 copies),
        for `nncift.weights.write_network` or `nncift.PairwiseScorer.from_network`."""
        layers = [
            (
                np.ascontiguousarray(self.linear(k).weight.detach().cpu().numpy(), np.float32),
                np.ascontiguousarray(self.linear(k).bias.detach().cpu().numpy(), np.float32),
            )
            for k in range(len(self.layers))
        ]
        bilinear = None
        if self.bilinear_u is not None and self.bilinear_v is not None:
            bilinear = (
                np.ascontiguousarray(self.bilinear_u.detach().cpu().numpy(), dtype=np.float32),
                np.ascontiguousarray(self.bilinear_v.detach().cpu().numpy(), dtype=np.float32),
            )
        meta = dict(extra_metadata or {})
        return NetworkWeights(
            layers,
            kind=self.kind,
            input_layout=self.input_layout,
            embedding_dim=self.embedding_dim,
            embedding_model=embedding_model,
            label_scale=float(label_scale),
            label_offset=float(label_offset),
            cosine_feature=self.cosine_feature,
            cosine_weight=None if self.cosine_weight is None else float(self.cosine_weight.item()),
            bilinear=bilinear,
            label_name=label_name,
            extra_metadata=meta,
        )

    def export(
        self,
        path: str | os.PathLike[str],
        *,
        embedding_model: str,
        label_scale: float = 1.0,
        label_offset: float = 0.0,
        label_name: str | None = None,
        extra_metadata: dict[str, str] | None = None,
    ) -> None:
        """Write the weight file of docs/weights.md (safetensors, float32) via `nncift.weights`."""
        net = self.to_weights(
            embedding_model=embedding_model,
            label_scale=label_scale,
            label_offset=label_offset,
            label_name=label_name,
            extra_metadata=extra_metadata,
        )
        write_network(path, net)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[InfluenceNetwork, NetworkWeights]:
        """Read a weight file into a torch network; returns (network, NetworkWeights).

        The file is validated by `nncift.weights.read_network`. Used for on-GPU prediction;
        the Rust scorer is the fast CPU path.
        """
        w = read_network(path)
        return cls.from_weights(w), w

    @classmethod
    def from_weights(cls, w: NetworkWeights) -> InfluenceNetwork:
        """Build a torch network from validated `nncift.weights.NetworkWeights`."""
        net = cls(
            w.embedding_dim,
            hidden_sizes=tuple(w.hidden_sizes),
            input_layout=w.input_layout,
            cosine_feature=w.cosine_feature,
            output_cosine=w.cosine_weight is not None,
            bilinear_rank=0 if w.bilinear is None else int(w.bilinear[0].shape[0]),
        )
        state: dict[str, torch.Tensor] = {}
        for k, (wk, bk) in enumerate(w.layers):
            state[f"layers.{k}.weight"] = torch.from_numpy(np.array(wk, dtype=np.float32))
            state[f"layers.{k}.bias"] = torch.from_numpy(np.array(bk, dtype=np.float32))
        if w.cosine_weight is not None:
            state["cosine_weight"] = torch.tensor([w.cosine_weight], dtype=torch.float32)
        if w.bilinear is not None:
            state["bilinear_u"] = torch.from_numpy(np.array(w.bilinear[0], dtype=np.float32))
            state["bilinear_v"] = torch.from_numpy(np.array(w.bilinear[1], dtype=np.float32))
        net.load_state_dict(state)
        return net


__all__ = ["LAYOUTS", "InfluenceNetwork", "check_embedding_model", "check_embeddings"]
