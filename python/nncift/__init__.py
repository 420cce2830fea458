"""nncift: learned, scalable influence estimation (NN-CIFT) and subset selection.

Heavy submodules (torch, transformers) are imported lazily so that `import nncift`
and the CLI's `--help` stay fast.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from nncift import objectives, selection
from nncift._core import __version__ as core_version
from nncift.errors import InputError, NnciftError
from nncift.scorer import PairwiseScorer, ScorerKernel
from nncift.selection import SelectionResult, select
from nncift.selection_plan import estimate_selection

try:
    __version__ = version("nncift")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = core_version

__all__ = [
    "InputError",
    "NnciftError",
    "PairwiseScorer",
    "ScorerKernel",
    "SelectionResult",
    "__version__",
    "core_version",
    "estimate_selection",
    "objectives",
    "select",
    "selection",
]
