"""DELIFT (SE): cosine similarity of sentence embeddings, any block of ``K[pool, target]``.

Model-independent and cheap: one embedding per item, then a matrix product. The embedded
text is the project's canonical ``prompt + "\\n##Answer: " + response`` (the same text the
InfluenceNetwork sees), embedded with `nncift.embed.embed_texts`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nncift.errors import InputError
from nncift.influence.base import CostMeter, PairwiseInfluence, TextItems, as_index

#: Largest full matrix `full()` builds at once (float32 bytes); larger ones go block by block.
FULL_MATRIX_BYTES = 1 << 30


def _texts(items: Any) -> list[str]:
    texts = getattr(items, "texts", None)
    if texts is None:
        texts = [
            p + "\n##Answer: " + r for p, r in zip(items.prompts, items.responses, strict=False)
        ]
    return list(texts)


def _normalised(e: np.ndarray, what: str) -> np.ndarray:
    e = np.asarray(e)
    if e.ndim != 2:
        raise InputError(f"{what} embeddings must be 2-D (n, d), got shape {e.shape}")
    e = e.astype(np.float32, copy=False)
    if not np.isfinite(e).all():
        raise InputError(f"{what} embeddings contain NaN or inf")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InputError(f"{what} embeddings contain an all-zero row; cosine is undefined")
    return np.ascontiguousarray(e / norms, dtype=np.float32)


class DeliftSE(PairwiseInfluence):
    """Cosine of embeddings: ``K[i, j] = <e_i, e_j>`` with L2-normalised rows.

    Args:
        pool, targets: items (targets None -> pool x pool). Optional when embeddings given.
        embed_model: embedder name for `nncift.embed.embed_texts` (default "default").
        pool_embeddings, target_embeddings: precomputed ``(n, d)`` float32 embeddings
            (normalised here), used instead of embedding the texts.
        embed_kwargs: extra arguments of `embed_texts` (``use_cache=False``, ``device=``...).
    """

    name = "delift-se"

    def __init__(
        self,
        pool: Any | None = None,
        targets: Any | None = None,
        *,
        embed_model: str = "default",
        pool_embeddings: np.ndarray | None = None,
        target_embeddings: np.ndarray | None = None,
        embed_kwargs: dict[str, Any] | None = None,
        lm: Any | None = None,  # accepted and ignored: DELIFT (SE) is model-independent
    ) -> None:
        if pool is None:
            if pool_embeddings is None:
                raise InputError("DELIFT (SE) needs pool items or pool embeddings")
            pool = TextItems([""] * len(pool_embeddings), [""] * len(pool_embeddings))
        if targets is None and target_embeddings is not None:
            targets = TextItems([""] * len(target_embeddings), [""] * len(target_embeddings))
        super().__init__(pool, targets)
        self.embed_model = embed_model
        self.embed_kwargs = dict(embed_kwargs or {})
        self._ep = _normalised(pool_embeddings, "pool") if pool_embeddings is not None else None
        self._et = (
            _normalised(target_embeddings, "target") if target_embeddings is not None else None
        )
        if self._ep is not None and len(self._ep) != len(self.pool):
            raise InputError(f"{len(self._ep)} pool embeddings for {len(self.pool)} pool items")
        if self._et is not None and len(self._et) != len(self.targets):
            raise InputError(f"{len(self._et)} target embeddings for {len(self.targets)} targets")

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "embed_model": self.embed_model}

    def _embeddings(self, meter: CostMeter | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self._ep is None:
            from nncift.embed import embed_texts

            texts = _texts(self.pool)
            self._ep = _normalised(
                embed_texts(texts, model=self.embed_model, **self.embed_kwargs), "pool"
            )
            if meter is not None:
                meter.cost.embed_texts += len(texts)
        if self.square:
            self._et = self._ep
        elif self._et is None:
            from nncift.embed import embed_texts

            texts = _texts(self.targets)
            self._et = _normalised(
                embed_texts(texts, model=self.embed_model, **self.embed_kwargs), "target"
            )
            if meter is not None:
                meter.cost.embed_texts += len(texts)
        if self._ep.shape[1] != self._et.shape[1]:
            raise InputError(
                f"pool embeddings are {self._ep.shape[1]}-d, "
                f"target embeddings {self._et.shape[1]}-d"
            )
        return self._ep, self._et

    def _block(
        self, rows: np.ndarray, cols: np.ndarray, meter: CostMeter
    ) -> tuple[np.ndarray, dict[str, Any]]:
        ep, et = self._embeddings(meter)
        return ep[rows] @ et[cols].T, {}  # (r, d) @ (d, c) -> (r, c) float32

    def full(self, rows: Any = None, cols: Any = None) -> np.ndarray:
        """The whole matrix (or ``rows x cols``) in one product when it fits in memory.

        Above `FULL_MATRIX_BYTES` it is refused: use `block` on tiles, or
        `nncift.influence.store.compute_labels`, which streams tiles to disk.
        """
        r = as_index(rows, len(self.pool), "row (pool)")
        c = as_index(cols, len(self.targets), "column (target)")
        need = 4 * r.size * c.size
        if need > FULL_MATRIX_BYTES:
            raise InputError(
                f"a {r.size} x {c.size} float32 matrix needs {need / 2**30:.1f} GiB; compute it "
                "in tiles (nncift.influence.store.compute_labels) instead"
            )
        return self.block(r, c).values


__all__ = ["DeliftSE"]
