"""The CLI's error funnel: users' problems are one line, bugs keep their traceback."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from nncift.cli.group import user_errors
from nncift.errors import InputError, NnciftError


def _command(exc: BaseException) -> click.Command:
    @click.command()
    @user_errors
    def cmd() -> None:
        raise exc

    return cmd


@pytest.mark.parametrize(
    "exc",
    [
        InputError("--budget must be > 0"),
        NnciftError("the extension refused it"),
        FileNotFoundError("pool.jsonl: no such file"),
        PermissionError("out/: permission denied"),
        IsADirectoryError("out.jsonl is a folder"),
    ],
)
def test_user_errors_are_one_line(exc: BaseException) -> None:
    r = CliRunner().invoke(_command(exc))
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert r.output == f"Error: {exc}\n"


@pytest.mark.parametrize("exc", [ValueError("a bug"), MemoryError(), KeyError("k"), TypeError()])
def test_bugs_are_not_swallowed(exc: BaseException) -> None:
    r = CliRunner().invoke(_command(exc))
    assert r.exception is exc  # raised through: a traceback, not "Error: ..."
    assert "Error:" not in r.output
