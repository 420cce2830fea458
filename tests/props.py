"""Shared pieces of the hypothesis property tests (tests/test_props_*.py).

Every property test runs in the default test command, so each one is bounded (a fixed
number of examples) and reproducible: `derandomize=True` draws the same examples on every
run, no example database is written, and there is no per-example deadline (the machines
running the suite are shared and their timings are noisy).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def bounded(max_examples: int) -> Any:
    """The settings of one property test: `max_examples` fixed, derandomized examples."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


#: Text that is awkward for a loader: raw line and paragraph separators that `str.splitlines`
#: splits on but JSON may carry unescaped, a BOM in the middle, NUL, combining marks,
#: right-to-left text, emoji beyond the BMP, whitespace-only strings.
ODD_TEXT = [
    "",
    " ",
    "\t\n",
    "\u2028",
    "\u2029",
    "\x85",
    "\x1c\x1d\x1e",
    "\x0b\x0c",
    "\ufeffbom inside",
    "\x00nul",
    "e\u0301\u0301",
    "\u05e9\u05dc\u05d5\u05dd",
    "\U0001f600\U0001f468\u200d\U0001f469",
    "a\r\nb\rc\nd",
    '"quoted", with, commas',
    "\\u0041 not an escape",
    "NA",
    "null",
]

#: Any text without lone surrogates (which no encoding of a file can carry), mostly short.
texts = st.one_of(
    st.text(max_size=24),
    st.sampled_from(ODD_TEXT),
    # Runs of odd characters: separators, controls, BOM, combining marks, a CR LF pair.
    st.lists(st.sampled_from(ODD_TEXT[1:]), max_size=4).map("".join),
    # Long strings: one repeated character keeps generation cheap.
    st.builds(
        lambda c, k: c * k,
        st.sampled_from(["x", "\u00e9", "\U0001f600", " "]),
        st.integers(1_000, 60_000),
    ),
)
