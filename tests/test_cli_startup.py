"""A command imports only what it uses: `--version` needs no database, `lists list` no renderer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from wip_mailer.cli import COMMANDS, main

HEAVY = ("sqlalchemy", "sqlmodel", "premailer", "mjml", "apscheduler", "starlette", "uvicorn",
         "aiosmtpd", "cssutils", "requests", "rich")

# Runs the real entry point in a fresh interpreter and prints which HEAVY packages it loaded.
WRAPPER = """
import json, runpy, sys
sys.argv = ["wip-mailer", *sys.argv[1:]]
try:
    runpy.run_module("wip_mailer", run_name="__main__")
except SystemExit:
    pass
heavy = set(json.loads(HEAVY))
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & heavy)))
"""


def loaded_by(*args: str, cwd: Path) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WIP_MAILER_")}
    environment["WIP_MAILER_DATABASE_URL"] = f"sqlite:///{cwd / 'wip.db'}"
    result = subprocess.run([sys.executable, "-c", WRAPPER.replace("HEAVY", repr(json.dumps(HEAVY))),
                             *args], cwd=cwd, env=environment, capture_output=True, text=True,
                            check=True, timeout=60)
    return json.loads(result.stdout.splitlines()[-1])


def test_version_and_help_load_no_database_renderer_web_or_scheduler(tmp_path: Path) -> None:
    assert loaded_by("--version", cwd=tmp_path) == []
    assert loaded_by("--help", cwd=tmp_path) == []


def test_list_and_show_commands_read_with_sqlalchemy_core_alone(engine, edition_2024: str,
                                                                workdir: Path) -> None:
    from wip_mailer import db
    from wip_mailer.audience import lists

    with db.session_scope(engine) as session:
        lists.create_list(session, "newsletter")
    for args in (("lists", "list"), ("lists", "show", "newsletter"), ("editions", "list"),
                 ("editions", "show", edition_2024), ("items", "list", "--edition", edition_2024),
                 ("sections", "list", "--edition", edition_2024)):
        # they did run against the database, without the ORM (SQLModel), renderer, web or scheduler
        assert loaded_by(*args, cwd=workdir) == ["sqlalchemy"], args


def test_a_command_that_writes_still_loads_the_orm(engine, edition_2024: str, workdir: Path) -> None:
    assert "sqlmodel" in loaded_by("items", "add", "--edition", edition_2024, "--title", "T", cwd=workdir)


def test_the_overview_tables_name_real_columns_of_the_same_type() -> None:
    """overview.py reads the tables without models.py: each column it names must exist there."""
    from sqlalchemy.types import TypeDecorator
    from sqlmodel import SQLModel

    from wip_mailer import models, overview

    assert models.Edition  # the tables are registered in SQLModel.metadata
    for light in overview.TABLES:
        table = SQLModel.metadata.tables[light.name]
        for column in light.columns:
            assert column.name in table.c, (light.name, column.name)
            real = table.c[column.name].type
            if isinstance(real, TypeDecorator) and not isinstance(column.type, TypeDecorator):
                real = real.impl_instance  # SQLModel's AutoString is a String
            assert isinstance(real, type(column.type)), (light.name, column.name, real)


def test_the_help_table_matches_each_commands_own_help() -> None:
    context = click.Context(main)
    assert sorted(main.list_commands(context)) == sorted(COMMANDS)
    for name, lazy in COMMANDS.items():
        command = main.get_command(context, name)
        assert command is not None and command.name == name
        assert lazy.short_help == command.get_short_help_str(limit=1000), name


def test_main_help_lists_every_command() -> None:
    result = subprocess.run([sys.executable, "-m", "wip_mailer", "--help"], capture_output=True,
                            text=True, check=True, timeout=60)
    for name in COMMANDS:
        assert f"\n  {name} " in result.stdout


def test_the_schema_head_opened_without_alembic_is_alembics_head() -> None:
    from wip_mailer import db

    assert db.head_revision() == db.SCHEMA_HEAD
