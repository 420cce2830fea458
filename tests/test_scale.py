"""Scale of input: a large jsonl pool loads with memory proportional to the data, a single
huge line is loaded intact, and line splitting follows JSON Lines (not str.splitlines)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from nncift.data import load_items

#: The child process: import nncift.data, note the peak RSS, load the pool, print both peaks.
#: The peak is VmHWM (KiB) of /proc/self/status, the high-water mark of this process's own
#: memory, so it includes every temporary the loader made. Not getrusage's ru_maxrss: Linux
#: carries the parent's RSS at fork across exec into it, so under a large pytest process
#: the child's "baseline" was the parent's size and the loads looked nearly free.
_MEASURE = """
import json, re, sys
from pathlib import Path
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
from nncift.data import load_items
base = hwm()
items = load_items(sys.argv[1])
print(json.dumps({"n": len(items), "last": items.ids[-1], "base_kib": base, "peak_kib": hwm()}))
"""


def write_pool(path: Path, n: int) -> Path:
    """`n` short prompt/response records (~128 bytes a line), with explicit ids."""
    line = '{"id": "r%d", "prompt": "Question %d: how do I do task %d?", "response": "%s"}\n'
    with path.open("w", encoding="utf-8") as fh:
        step = 100_000
        for start in range(0, n, step):
            fh.write(
                "".join(
                    line % (i, i, i * 7919 % 100_003, f"Answer {i}: step {i % 13}, then {i % 17}.")
                    for i in range(start, min(n, start + step))
                )
            )
    return path


def measure_load(path: Path) -> dict[str, int | str]:
    """Load `path` in a fresh interpreter; its item count, last id and peak RSS (KiB)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("peak RSS is read from /proc/self/status (Linux)")
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_memory_grows_in_proportion_to_the_pool(tmp_path: Path) -> None:
    # 1,000,000 lines (~120 MB) against 100,000: the growth over the import baseline must be
    # about ten-fold (1.5x slack), and the peak a bounded multiple of the file size. Measured
    # (2 cores): 1M lines, 118 MB file, 717 MiB over the baseline (6.4x the file: a Python
    # dict and five str objects per short record), loaded in ~6 s; 100k lines, 72 MiB.
    big, small = write_pool(tmp_path / "big.jsonl", 1_000_000), tmp_path / "small.jsonl"
    with big.open(encoding="utf-8") as src, small.open("w", encoding="utf-8") as dst:
        for _ in range(100_000):
            dst.write(src.readline())
    size_kib = big.stat().st_size / 1024
    m_small, m_big = measure_load(small), measure_load(big)
    assert (m_small["n"], m_small["last"]) == (100_000, "r99999")
    assert (m_big["n"], m_big["last"]) == (1_000_000, "r999999")
    grow_small = int(m_small["peak_kib"]) - int(m_small["base_kib"])
    grow_big = int(m_big["peak_kib"]) - int(m_big["base_kib"])
    slack_kib = 32 * 1024
    assert grow_big <= 1.5 * 10 * grow_small + slack_kib, (grow_small, grow_big)
    assert grow_big <= 8 * size_kib, (grow_big, size_kib)


def test_a_50_mb_line_is_loaded_intact(tmp_path: Path) -> None:
    # One record with a 50 MB response among ordinary ones: loaded, not refused, and the
    # loader's peak stays a small multiple of that line (the line, the parsed string, and the
    # content hash's copy), not unbounded.
    huge = "0123456789abcdef" * (50 * 2**20 // 16)
    path = tmp_path / "huge.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"prompt": "short one", "response": "ok"}) + "\n")
        fh.write(json.dumps({"prompt": "give me 50 MB", "response": huge}) + "\n")
        fh.write(json.dumps({"prompt": "short two", "response": "ok"}) + "\n")
    items = load_items(path)
    assert len(items) == 3 and items.prompts[1] == "give me 50 MB"
    assert items.responses[1] == huge
    m = measure_load(path)
    assert m["n"] == 3
    assert int(m["peak_kib"]) - int(m["base_kib"]) <= 5 * 50 * 1024, m


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_unicode_line_separators_inside_strings_are_text(tmp_path: Path, sep: str) -> None:
    # Bug found here: the jsonl reader split lines with str.splitlines, which also splits on
    # U+2028 / U+2029 / U+0085. JSON allows those raw inside a string (json.dumps with
    # ensure_ascii=False writes them so), and such a valid file was refused as malformed.
    path = tmp_path / "u.jsonl"
    rec = {"prompt": f"a{sep}b", "response": f"c{sep}d"}
    path.write_text(json.dumps(rec, ensure_ascii=False) + "\n", encoding="utf-8")
    items = load_items(path)
    assert (items.prompts, items.responses) == ([f"a{sep}b"], [f"c{sep}d"])


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_ending_and_a_bom(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "e.jsonl"
    lines = [json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) for i in range(3)]
    path.write_bytes(b"\xef\xbb\xbf" + newline.join(lines).encode() + newline.encode() * 2)
    assert load_items(path).prompts == ["p0", "p1", "p2"]
