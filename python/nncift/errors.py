"""The exceptions nncift raises for user-facing problems.

`NnciftError` is the Rust extension's exception class, so errors raised in Rust and
in Python share one base class. `InputError` names a problem with something the user
handed in (a file, a column, an option); the CLI prints it without a traceback.
"""

from __future__ import annotations

from nncift._core import NnciftError


class InputError(NnciftError, ValueError):
    """A user input (file, schema, option value) that nncift cannot use."""


__all__ = ["InputError", "NnciftError"]
