"""Which modules a stage loads: rendering must not pull in the document importer."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(statement: str) -> list[str]:
    """The wip_mailer modules a fresh interpreter has loaded after ``statement``."""
    probe = f"{statement}; import sys; print(' '.join(m for m in sys.modules if m.startswith('wip_mailer')))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.split()


def test_rendering_does_not_load_the_importer() -> None:
    result = subprocess.run(
        [sys.executable, "-c",
         "import wip_mailer.render, sys; print('wip_mailer.intake.importer' in sys.modules)"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert result.stdout == "False\n"
    assert not [name for name in loaded_after("import wip_mailer.render") if ".intake" in name]


def test_the_text_tools_stand_alone() -> None:
    loaded = loaded_after("import wip_mailer.text")
    assert "wip_mailer.text.links" in loaded
    assert [name for name in loaded if name != "wip_mailer" and not name.startswith("wip_mailer.text")] == []


def test_the_core_stages_do_not_load_feedback() -> None:
    loaded = loaded_after("import wip_mailer.dispatch, wip_mailer.audience, wip_mailer.web, "
                          "wip_mailer.schedule")
    assert "wip_mailer.dispatch.ledger" in loaded
    assert [name for name in loaded if name.startswith("wip_mailer.feedback")] == []


def test_the_cli_loads_no_bounce_parser_until_asked() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import wip_mailer.cli, sys; print(sorted(m for m in sys.modules"
                               " if m.startswith(('flufl', 'wip_mailer.feedback'))))"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert result.stdout == "[]\n"
