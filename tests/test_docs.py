"""The README documents every command: each `wip-mailer ...` command appears in a command table."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from wip_mailer.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def command_paths(command: click.Command, path: tuple[str, ...] = ("wip-mailer",)) -> list[str]:
    """`wip-mailer group command` for every command the CLI has, walking groups recursively
    (through list_commands/get_command: the top-level group loads its commands lazily)."""
    if not isinstance(command, click.Group):
        return [" ".join(path)]
    found = []
    context = click.Context(command)
    for name in sorted(command.list_commands(context)):
        sub = command.get_command(context, name)
        if sub is not None and not sub.hidden:
            found += command_paths(sub, (*path, name))
    return found


def table_rows() -> str:
    return "\n".join(line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("|"))


COMMANDS = command_paths(main)


def test_the_cli_has_commands_to_document() -> None:
    assert "wip-mailer check" in COMMANDS and "wip-mailer subscribers export-data" in COMMANDS
    assert len(COMMANDS) > 30  # nested groups walked, not only the top level


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_a_readme_command_table(command: str) -> None:
    # the whole name, not a prefix of a longer one ("schedule" is not "scheduler")
    assert re.search(re.escape(f"`{command}") + r"(?![\w-])", table_rows()), (
        f"README.md has no command-table row naming `{command}`"
    )
