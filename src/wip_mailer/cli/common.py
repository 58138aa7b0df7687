"""What every command shares: the app context, error handling, JSON output."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import click

from wip_mailer.errors import DatabaseError, WipMailerError

if TYPE_CHECKING:  # imported where used: a command that needs no database does not load SQLAlchemy
    from sqlalchemy import Engine
    from sqlalchemy.exc import DBAPIError

    from wip_mailer.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    """Lazily loaded settings and database for one CLI invocation."""

    debug: bool = False
    _engine: Engine | None = field(default=None, repr=False)

    @cached_property
    def settings(self) -> Settings:
        from wip_mailer.settings import load_settings

        return load_settings(warn=warn)

    @property
    def engine(self) -> Engine:
        """The existing database at the current schema (commands other than `init`)."""
        if self._engine is None:
            from wip_mailer import db

            self._engine = db.open_database(self.settings.database_url)
        return self._engine


pass_app = click.make_pass_decorator(App, ensure=True)


class WipGroup(click.Group):
    """A group whose errors become one line on stderr (tracebacks only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WipMailerError as exc:
            if _debug(ctx):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # The reader went away (`wip-mailer items list | head`): stop quietly, as cat does.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(1)
        except Exception as exc:
            if _debug(ctx):
                raise
            database_error = _as_database_error(exc)
            if database_error is not None:
                # Never the SQL nor its parameters (subscribers' addresses): one sentence instead.
                from wip_mailer import db

                click.echo(f"Error: {db.explain_database_error(database_error, _database_url(ctx))}",
                           err=True)
                ctx.exit(DatabaseError.exit_code)
            click.echo(
                f"Error: unexpected {type(exc).__name__}: {exc}. "
                "Run again with --debug for the details.",
                err=True,
            )
            ctx.exit(1)


def lazy_module(name: str) -> ModuleType:
    """The module ``name``, executed on its first attribute access (importlib's LazyLoader):
    a command group names the library modules its commands use, and a command that reads
    only (`items list`) does not pay for the ORM that the writing commands load."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


class LazyCommand(NamedTuple):
    """Where a command lives (``wip_mailer.cli.<module>.<attribute>``) and its short help."""

    module: str
    attribute: str
    short_help: str

    def load(self) -> click.Command:
        command = getattr(importlib.import_module(f"wip_mailer.cli.{self.module}"), self.attribute)
        assert isinstance(command, click.Command), self
        return command


class LazyGroup(WipGroup):
    """A WipGroup whose commands are imported only when one is run or shows its help.

    ``wip-mailer --help`` lists them from the short helps in ``lazy_commands``.
    """

    def __init__(self, *args: Any, lazy_commands: Mapping[str, LazyCommand] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            self.commands[cmd_name] = self.lazy_commands[cmd_name].load()
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:
                if self.commands[name].hidden:
                    continue
                text = self.commands[name].get_short_help_str(limit)
            else:
                # shortened exactly as click shortens a loaded command's help
                text = click.Command(name, help=self.lazy_commands[name].short_help).get_short_help_str(limit)
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _as_database_error(exc: Exception) -> DBAPIError | None:
    if "sqlalchemy" not in sys.modules:  # nothing loaded it, so it cannot be one of its errors
        return None
    from sqlalchemy.exc import DBAPIError

    return exc if isinstance(exc, DBAPIError) else None


def _database_url(ctx: click.Context) -> str | None:
    root = ctx.find_root()
    app = root.obj if isinstance(root.obj, App) else None
    settings = app.__dict__.get("settings") if app is not None else None  # only if already loaded
    return getattr(settings, "database_url", None)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    app = root.obj if isinstance(root.obj, App) else None
    return bool(app and app.debug)


def warn(message: str) -> None:
    """A warning on stderr, one line: the command goes on."""
    click.echo(f"Warning: {message}", err=True)


def json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=json_default))


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def confirm_or_abort(question: str, assume_yes: bool) -> None:
    """Ask before a destructive step; refuse cleanly when nobody can answer."""
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{question} Pass --yes to confirm when not running interactively.")
    if not click.confirm(question, default=False):
        raise click.Abort()
