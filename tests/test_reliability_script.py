"""The bad-input catalogue of scripts/reliability.py (docs/reliability.md), its fast cases run
here: every refused input gives exit code != 0 and one `Error:` line (no traceback) through
the installed console script, and leaves no output file; every odd but valid one is written
back intact."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reliability.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nncift_reliability", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reliability() -> ModuleType:
    if not SCRIPT.is_file():
        pytest.skip("scripts/reliability.py is not in this tree (an installed wheel alone)")
    return _script()


def _assert_behaved(case: Any, o: Any) -> None:
    assert o.ok, f"{case.name}: {o.did} / lost: {o.lost}"
    if case.refused:
        assert o.did.startswith("exit ") and not o.did.startswith("exit 0")
        assert "Error:" in o.did and o.lost == "nothing (no output written)"
    else:
        assert o.did == "loaded/selected correctly" and o.lost == "nothing"


def test_the_fast_catalogue_is_refused_cleanly(reliability: ModuleType, tmp_path: Path) -> None:
    # In this process through Click's runner: the same command code, no interpreter start per
    # case (the script runs every case as a subprocess; a few do so below).
    cases = [c for c in reliability.cases() if c.fast]
    assert len(cases) >= 50  # the catalogue, not a sample of it
    for k, case in enumerate(cases):
        _assert_behaved(case, reliability.run_case(case, tmp_path / f"c{k}", in_process=True))


def test_one_case_per_category_through_the_console_script(
    reliability: ModuleType, tmp_path: Path
) -> None:
    firsts: dict[str, Any] = {}
    for case in reliability.cases():
        if case.fast:
            firsts.setdefault(case.category, case)
    assert len(firsts) >= 5
    for k, case in enumerate(firsts.values()):
        _assert_behaved(case, reliability.run_case(case, tmp_path / f"c{k}"))


def test_a_case_that_misbehaves_is_reported(reliability: ModuleType, tmp_path: Path) -> None:
    # The checker itself can fail: a valid pool expected to be refused is marked NOT OK.
    case = reliability.Case(
        "valid pool passed off as bad",
        "self-check",
        lambda i, o: reliability._select(reliability._jsonl(i / "p.jsonl", reliability.GOOD), o),
        "anything",
    )
    o = reliability.run_case(case, tmp_path / "c", in_process=True)
    assert not o.ok and "accepted" in o.did and "left behind" in o.lost


def test_npy_claims_beyond_the_file_are_refused_before_loading(tmp_path: Path) -> None:
    # Bugs found by the catalogue: a .npy header claiming (10^8, 10^8) float32 in a 200-byte
    # file made np.load allocate 35.5 PiB (MemoryError, a traceback through the CLI); an empty
    # labels .npy raised EOFError, which Click reported as a bare "Aborted!".
    from nncift.errors import InputError
    from nncift.io import check_npy_fits
    from nncift.labels import read_labels
    from nncift.provided_embeddings import load_provided_embeddings

    good = tmp_path / "good.npy"
    np.save(good, np.ones((12, 4), np.float32))
    check_npy_fits(good)  # a file that holds what it claims passes
    data = good.read_bytes()
    claim = tmp_path / "claim.npy"
    claim.write_bytes(data.replace(b"(12, 4), }" + b" " * 15, b"(100000000, 100000000), }"))
    with pytest.raises(InputError, match=r"claim\.npy: the header claims shape \(100000000, "):
        load_provided_embeddings(claim, [str(i) for i in range(12)])
    cut = tmp_path / "cut.npy"
    cut.write_bytes(data[:-1])
    with pytest.raises(InputError, match="192 bytes.* holds 191 bytes"):
        check_npy_fits(cut)
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.npy: not a plain numeric \.npy"):
        read_labels(empty)
