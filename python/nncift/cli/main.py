"""The `nncift` entry point: the group from `nncift.cli.group` with every subcommand on it.

Subcommands are plain `click.command`s in their own modules; this is the one place that
adds them to the group.
"""

from __future__ import annotations

from nncift.cli.estimate_cmd import estimate_cmd
from nncift.cli.evaluate_cmd import evaluate_cmd
from nncift.cli.group import cli, user_errors
from nncift.cli.label_cmd import label_cmd
from nncift.cli.select_cmd import select_command
from nncift.cli.train_cmd import train_cmd

for _command in (select_command, label_cmd, train_cmd, estimate_cmd, evaluate_cmd):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="nncift")


__all__ = ["cli", "main", "user_errors"]
