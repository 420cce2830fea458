"""Number and table formatting for the report."""

from __future__ import annotations

import math
from typing import Any


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{nd}f}"


def _secs(x: float) -> str:
    if x >= 3600 * 24:
        return f"{x:,.0f} s ({x / 86400:.1f} d)"
    if x >= 3600:
        return f"{x:,.0f} s ({x / 3600:.1f} h)"
    if x >= 100:
        return f"{x:,.0f} s"
    return f"{x:.2f} s"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)
