"""`FunctionSpec`: how to build an influence function, everything but the data.

One description serves every place a function is built: `nncift.labelling.label` (for
`nncift label` and the valuer of `nncift select`) and the Ray workers of
`nncift.distributed.labels`, which receive it pickled and build their own copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FunctionSpec:
    """An influence function by name and settings.

    method: delift, delift-se, less or selectit. settings: the function's own settings
    (e.g. DELIFT's ``max_example_tokens``, LESS's ``proj_dim``). lm / dtype / max_length:
    the causal LM of the LM methods ('default', a folder or a hub id). embedder: DELIFT (SE)'s
    embedder.
    """

    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    lm: str = "default"
    dtype: str = "auto"
    max_length: int = 2048
    embedder: str = "default"

    @property
    def needs_lm(self) -> bool:
        """True for the methods that run a causal LM (all but DELIFT (SE))."""
        return self.method != "delift-se"

    def load_lm(self, device: str = "auto") -> Any:
        """The spec's causal LM on `device` (an `nncift.lm.LM`)."""
        from nncift.lm import load_lm

        return load_lm(self.lm, device=device, dtype=self.dtype, max_length=self.max_length)

    def build(
        self,
        pool: Any,
        targets: Any | None,
        device: str = "auto",
        *,
        lm: Any = None,
        pool_embeddings: np.ndarray | None = None,
        target_embeddings: np.ndarray | None = None,
    ) -> Any:
        """The influence function over `pool` (and `targets`; None: pool x pool).

        lm: an LM already loaded (else the spec's LM is loaded on `device`).
        pool_embeddings / target_embeddings: (n, d) float32 embeddings already computed, for
        DELIFT (SE) (else it embeds the texts with `embedder`).
        """
        from nncift.influence import make

        kw = dict(self.settings)
        if not self.needs_lm:
            if pool_embeddings is not None:
                kw.update(pool_embeddings=pool_embeddings, target_embeddings=target_embeddings)
            return make(self.method, pool, targets, embed_model=self.embedder, **kw)
        model = lm if lm is not None else self.load_lm(device)
        return make(self.method, pool, targets, lm=model, **kw)


__all__ = ["FunctionSpec"]
