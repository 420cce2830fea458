"""What one `nncift select` run is asked to do: the methods it knows and `SelectOptions`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from nncift.distributed.cluster import RaySettings
from nncift.embed import DEFAULT_EMBEDDER
from nncift.valuation import ValuationOptions

#: Valuation methods `run_select` knows. `embedding`: selection on the cosine similarity of
#: sentence embeddings (the strong cheap baseline); `rds`: the same on RDS+ features, the base
#: LM's position-weighted mean-pooled hidden states (Ivison et al. 2025; `nncift.lm_features`);
#: `random`: a seeded uniform sample; the influence functions (`delift`, `delift-se`, `less`, `selectit`) run through NN-CIFT (label
#: the u-block, train the network, predict the rest) or exactly with `exact=True`.
METHODS = ("embedding", "rds", "random", "delift", "delift-se", "less", "selectit")
#: Methods that select on cosine similarities of item vectors (no influence labels).
COSINE_METHODS = ("embedding", "rds")
#: What the network of an influence method reads for an item (`ValuationOptions.features`):
#: the sentence embeddings, the LM's RDS+ features, or both concatenated.
FEATURES = ("minilm", "lm", "both")


@dataclass(frozen=True)
class SelectOptions:
    """Options of one selection run (the paper's defaults where it has any)."""

    budget: float = 0.3
    method: str = "embedding"
    objective: str = "auto"
    embedder: str = DEFAULT_EMBEDDER
    seed: int = 0
    device: str | None = None
    batch_size: int = 64
    cache_dir: str | None = None
    #: Extra keyword arguments for `nncift.selection.select` (optimizer, mode, eta, ...).
    selection: dict[str, Any] = field(default_factory=dict)
    #: NN-CIFT / influence-function settings (u, exact, lm, network) for the influence methods.
    valuation: ValuationOptions | None = None
    #: Run on Ray (docs/scaling.md): labels on Ray workers, prediction in row shards, and
    #: partition-and-merge selection one part per task. None = this machine only.
    ray: RaySettings | None = None


def valuation_options(options: SelectOptions) -> ValuationOptions:
    """The run's valuation settings; method, seed and embedder always come from `options`."""
    base = options.valuation or ValuationOptions()
    return replace(base, method=options.method, seed=options.seed, embedder=options.embedder)
