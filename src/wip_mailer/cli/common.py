"""What every command shares: the app context, error handling, JSON output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import Any, TypeVar

import click
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from wip_mailer import db
from wip_mailer.errors import DatabaseError, WipMailerError
from wip_mailer.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    """Lazily loaded settings and database for one CLI invocation."""

    debug: bool = False
    _engine: Engine | None = field(default=None, repr=False)

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @property
    def engine(self) -> Engine:
        """The existing database at the current schema (commands other than `init`)."""
        if self._engine is None:
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
        except DBAPIError as exc:
            # Never the SQL nor its parameters (subscribers' addresses): one sentence instead.
            if _debug(ctx):
                raise
            click.echo(f"Error: {db.explain_database_error(exc, _database_url(ctx))}", err=True)
            ctx.exit(DatabaseError.exit_code)
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
            click.echo(
                f"Error: unexpected {type(exc).__name__}: {exc}. "
                "Run again with --debug for the details.",
                err=True,
            )
            ctx.exit(1)


def _database_url(ctx: click.Context) -> str | None:
    root = ctx.find_root()
    app = root.obj if isinstance(root.obj, App) else None
    settings = app.__dict__.get("settings") if app is not None else None  # only if already loaded
    return settings.database_url if isinstance(settings, Settings) else None


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    app = root.obj if isinstance(root.obj, App) else None
    return bool(app and app.debug)


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
