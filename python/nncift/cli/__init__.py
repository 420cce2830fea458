"""The `nncift` command line: a thin Click layer over the Python API.

Each subcommand lives in its own module under `nncift.cli` and only parses options,
calls the API and prints; anything a command does, the API can do.
"""

from __future__ import annotations

from nncift.cli.main import main

__all__ = ["main"]
