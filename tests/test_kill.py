"""`nncift select` killed (SIGKILL) during embedding, labelling, training, selection and
writing, then rerun; an unwritable cache folder and a full disk. The scenarios live in
tests/faults.py (shared with scripts/reliability.py and docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from faults import SCENARIOS, Scenario, session_workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> Path:
    return session_workdir(tmp_path_factory, tiny_lm_dir)


@pytest.mark.parametrize(
    "scenario",
    [s for s in SCENARIOS if s.category in ("kill", "disk")],
    ids=lambda s: s.run.__name__,
)
def test_fault_scenario(scenario: Scenario, workdir: Path) -> None:
    result = scenario.run(workdir)
    assert result["ok"], f"{scenario.name}: lost {result['lost']} ({result['what_the_tool_did']})"
    assert result["lost"] == "nothing"
