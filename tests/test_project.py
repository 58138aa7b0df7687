"""The project as a new user meets it: the README's Quick start runs as written; CI's skip rule."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import REPO, needs_ci_service


def quick_start_commands() -> list[str]:
    """The command lines of the README's Quick start block, comments removed (as .ci/run reads them)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^#+ *Quick start\n(.*?)^```[a-z]*\n(.*?)^```", text, re.M | re.S)
    assert section, "the README has no Quick start code block"
    lines = [re.sub(r"[ \t]+#.*", "", line).strip() for line in section.group(2).splitlines()]
    return [line for line in lines if line]


def test_the_quick_start_has_two_commands_that_run_as_written() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    for command in commands:
        program = command.split()[0]
        assert program.startswith("./"), f"{command!r} should run a file of the project"
        path = REPO / program
        assert path.is_file(), f"{program} does not exist"
        assert os.access(path, os.X_OK), (
            f"{program} is not executable: a fresh clone says 'Permission denied'")
        assert path.read_text(encoding="utf-8").startswith("#!"), f"{program} has no interpreter line"


def test_ci_runs_the_quick_start_from_the_readme_and_the_linters() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "README.md" in ci and 'eval "$command"' in ci  # the lines themselves, not a copy of them
    assert "ruff check" in ci and "mypy" in ci


@pytest.mark.postgres
def test_a_test_marked_for_a_service_is_one_ci_may_not_skip(request: pytest.FixtureRequest) -> None:
    assert needs_ci_service(request.node)


def test_a_test_without_a_service_may_skip_on_ci(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    assert not needs_ci_service(request.node)
