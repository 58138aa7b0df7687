"""Engine, sessions and schema migrations (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import DateTime, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from wip_mailer.errors import DatabaseError

if TYPE_CHECKING:  # the ORM loads with the first session: a command that only reads needs none
    from sqlmodel import Session

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The newest migration's revision (a test checks it against alembic's head). Opening a database
# already at it needs no alembic, which is a sixth of a command's start-up.
SCHEMA_HEAD = "0901"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, whatever the database keeps.

    SQLite drops the offset, so values are stored as naive UTC and given their
    timezone back on the way out; a naive value on the way in is a bug. (``combine`` sets
    or drops the timezone as ``replace(tzinfo=...)`` does, four times faster: that one
    parses its keywords, and an import converts a few hundred thousand values.)
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return datetime.combine(value, value.time()) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return datetime.combine(value, value.time(), UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_path(url: str) -> Path | None:
    """The file behind a sqlite URL, or None for other databases and in-memory SQLite.

    A URI filename (``sqlite:///file:/path/db?mode=ro&uri=true``) names the file after ``file:``.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    database = parsed.database
    if parsed.query.get("uri") in ("true", "1") and database.startswith("file:"):
        database = database[len("file:"):].split("?", 1)[0]
        if database.startswith("//"):  # file://host/path: only the local (empty) host is allowed
            database = "/" + database[2:].partition("/")[2]
    return Path(database)


class sha256_hex(FunctionElement[str]):  # named as the SQL function it is
    """SQL: the SHA-256 of a text (its UTF-8 bytes) as 64 hex digits, in the database, so a
    selection can be compared with hashed keys (the suppression list) in one statement."""

    type = sa.String()
    inherit_cache = True


@compiles(sha256_hex, "postgresql")
def _sha256_hex_postgresql(element: sha256_hex, compiler: Any, **kw: Any) -> str:
    return f"encode(sha256(convert_to({compiler.process(element.clauses, **kw)}, 'UTF8')), 'hex')"


@compiles(sha256_hex, "sqlite")
def _sha256_hex_sqlite(element: sha256_hex, compiler: Any, **kw: Any) -> str:
    return f"wip_sha256({compiler.process(element.clauses, **kw)})"  # registered on each connection


def _sqlite_sha256(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.create_function("wip_sha256", 1, _sqlite_sha256, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the sender
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")  # several processes may write (send, web, cli)
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable with WAL at commit boundaries
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the project's connection settings."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"The database URL {url!r} is not valid.") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    from wip_mailer.models import add_postgresql_options  # models import this module

    add_postgresql_options()
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError:
        raise DatabaseError(
            "PostgreSQL needs the postgres extra: pip install 'wip-mailer[postgres]'."
        ) from None


def _display(url: str) -> str:
    path = sqlite_path(url)
    return str(path) if path else make_url(url).render_as_string(hide_password=True)


# SQLite result codes (primary) by name; the extended ones start with these names.
_SQLITE_SENTENCES = {
    "SQLITE_READONLY": "The database file {where} is read-only: check the permissions of the file and "
                       "its folder (or a read-only mount); nothing was changed.",
    "SQLITE_CORRUPT": "The database {where} is damaged: restore it from a backup (see README, "
                      "\"Backup and restore\").",
    "SQLITE_NOTADB": "The database {where} is damaged (it is not a SQLite database file): restore it "
                     "from a backup (see README, \"Backup and restore\").",
    "SQLITE_BUSY": "The database {where} is locked by another process that kept it busy too long: "
                   "try again in a moment.",
    "SQLITE_LOCKED": "The database {where} is locked: try again in a moment.",
    "SQLITE_FULL": "The disk holding the database {where} is full: free some space and try again.",
    "SQLITE_CANTOPEN": "The database file {where} cannot be opened: check that it and its folder exist "
                       "and can be read and written.",
    "SQLITE_IOERR": "The database file {where} could not be read or written (an I/O error): check the "
                    "disk, then restore from a backup if the error stays (see README, \"Backup and "
                    "restore\").",
    "SQLITE_PERM": "The database file {where} cannot be opened with the permissions it has.",
}
# The same, found by the message when the driver gives no result code.
_SQLITE_MESSAGES = (
    ("readonly database", "SQLITE_READONLY"), ("malformed", "SQLITE_CORRUPT"),
    ("not a database", "SQLITE_NOTADB"), ("database is locked", "SQLITE_BUSY"),
    ("disk is full", "SQLITE_FULL"), ("unable to open", "SQLITE_CANTOPEN"), ("disk i/o", "SQLITE_IOERR"),
)
# PostgreSQL SQLSTATE classes and codes.
_PG_SENTENCES = {
    "25006": "The database {where} is read-only (a standby or a read-only transaction); nothing was changed.",
    "53100": "The disk of the database server for {where} is full: free some space and try again.",
    "55P03": "The database {where} is locked by another session: try again in a moment.",
    "40P01": "The database {where} stopped this change to end a deadlock: try again.",
    "XX001": "The database {where} is damaged: restore it from a backup (see README, \"Backup and "
             "restore\").",
    "XX002": "The database {where} is damaged (an index): restore it from a backup or REINDEX it "
             "(see README, \"Backup and restore\").",
}


def explain_database_error(exc: DBAPIError, url: str | None = None) -> DatabaseError:
    """One sentence for a database failure, without the SQL or its parameters (which hold
    subscribers' addresses), and without the driver's detail lines for the same reason."""
    where = _display(url) if url else "in use"
    orig = exc.orig
    name = str(getattr(orig, "sqlite_errorname", "") or "")
    if not name and isinstance(orig, sqlite3.Error):
        text = str(orig).lower()
        name = next((code for words, code in _SQLITE_MESSAGES if words in text), "")
    for code, sentence in _SQLITE_SENTENCES.items():
        if name == code or name.startswith(code + "_"):
            return DatabaseError(sentence.format(where=where))
    sqlstate = str(getattr(orig, "sqlstate", "") or getattr(orig, "pgcode", "") or "")
    if sqlstate in _PG_SENTENCES:
        return DatabaseError(_PG_SENTENCES[sqlstate].format(where=where))
    if sqlstate.startswith("08") or (isinstance(exc, OperationalError) and not sqlstate and not name):
        first_line = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        return DatabaseError(f"Cannot reach the database {where}: {first_line[:200]}.")
    return DatabaseError(
        f"The database {where} refused the operation ({type(orig).__name__}"
        f"{', SQLSTATE ' + sqlstate if sqlstate else ''}): run again with --debug for the details."
    )


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    config = _alembic_config(None)  # type: ignore[arg-type]
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    return {rev.revision for rev in script.walk_revisions()}


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Apply migrations up to ``revision``; returns (before, after)."""
    from alembic import command

    before = _checked_revision(engine)
    try:
        command.upgrade(_alembic_config(engine), revision)
    except DBAPIError as exc:
        url = engine.url.render_as_string(hide_password=False)
        reason = explain_database_error(exc, url)
        raise DatabaseError(f"The database could not be upgraded. {reason}") from None
    after = current_revision(engine)
    assert after is not None
    return before, after


def _checked_revision(engine: Engine) -> str | None:
    url = engine.url.render_as_string(hide_password=False)
    try:
        revision = current_revision(engine)
    except DBAPIError as exc:
        raise explain_database_error(exc, url) from None
    if revision is not None and revision not in _known_revisions():
        raise DatabaseError(
            f"The database {_display(url)} was made by a newer wip-mailer (schema {revision}); "
            "install that version or newer."
        )
    return revision


def _stamped_revision(engine: Engine) -> str | None:
    """The revision in alembic's table, read without alembic; None when it cannot be read
    (the slow path then explains why)."""
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


def create_database(url: str) -> Engine:
    """Create (or bring up to date) the database at ``url``; safe to repeat."""
    path = sqlite_path(url)
    if path is not None:
        folder = path.parent.resolve()
        if not folder.is_dir():
            raise DatabaseError(f"Cannot create the database {path}: folder {folder} does not exist.")
        if not os.access(folder, os.W_OK):
            raise DatabaseError(f"Cannot create the database {path}: folder {folder} is not writable.")
    engine = make_engine(url)
    upgrade(engine)
    return engine


def open_database(url: str) -> Engine:
    """Open an existing database at the current schema, or explain what to run."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise DatabaseError(f"No database at {path}: run `wip-mailer init` first.")
    engine = make_engine(url)
    if _stamped_revision(engine) == SCHEMA_HEAD:
        return engine
    revision = _checked_revision(engine)
    if revision is None and not inspect(engine).get_table_names():
        raise DatabaseError(f"The database {_display(url)} is empty: run `wip-mailer init` first.")
    if revision != head_revision():
        raise DatabaseError(
            f"The database {_display(url)} is at an older schema: run `wip-mailer db upgrade`."
        )
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    from sqlmodel import Session

    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# --- bulk statements for imports -----------------------------------------------------

BULK_CHUNK = 5000  # rows per bulk statement: large enough to amortise, small enough to stay light


def insert_many(session: Session, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """A bulk INSERT (executemany) of ``rows``, which all have the same keys.

    SQLAlchemy's executemany runs every column's bind processor for every row; here a
    value shared by the whole chunk (the timestamp, the status) is processed once, which
    halves the cost of an import. The statement is still compiled by SQLAlchemy for the
    connection's dialect, so this works on SQLite and PostgreSQL alike.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    keys = list(rows[0])
    cells = map(itemgetter(*keys), rows) if len(keys) > 1 else ((row[keys[0]],) for row in rows)
    given = dict(zip(keys, zip(*cells, strict=True), strict=True))  # key -> the column's values
    # A column that is None in every row is left to be NULL, unless it has a default: sqlite3
    # binds each None after a failed adapter look-up, which costs as much as binding a value.
    keys = [key for key, values in given.items()
            if values[0] is not None or values.count(None) < len(values)
            or table.c[key].default is not None or table.c[key].server_default is not None] or keys
    compiled = sa.insert(table).compile(dialect=dialect, column_keys=keys, for_executemany=True)
    order = list(compiled.positiontup or []) if dialect.positional else keys
    columns = [processed_column(table.c[key].type.dialect_impl(dialect).bind_processor(dialect), given[key],
                                is_json=isinstance(table.c[key].type, sa.JSON)) for key in order]
    params: Any = list(zip(*columns, strict=True))
    if not dialect.positional:
        params = [dict(zip(order, values, strict=True)) for values in params]
    connection.exec_driver_sql(str(compiled), params)


def processed_column(processor: Callable[[Any], Any] | None, values: Sequence[Any], *,
                     is_json: bool = False) -> Sequence[Any]:
    """One column's values made ready for the driver; a repeated value is processed once.

    In a JSON column (``is_json``), lists (tags: mostly empty or alike in an import) are
    remembered by their items, in order, so equal ones share one encoding, and so is the
    empty dict. A dict with items (attributes) is encoded on its own: an import's hold the
    other tool's ids, so they never repeat, and a key for each would cost a third of its
    encoding.
    """
    if processor is None:
        if isinstance(values[0], Enum):  # a status: as its value, which sqlite3 binds without
            return [v.value if isinstance(v, Enum) else v for v in values]  # an adapter look-up
        return values
    done: dict[Any, Any] = {None: None}
    if not is_json:  # timestamps, statuses: hashable
        try:
            for value in values:
                if value not in done:
                    done[value] = processor(value)
        except TypeError:  # an unhashable value (an array): each on its own
            return [None if value is None else processor(value) for value in values]
        return list(map(done.__getitem__, values))
    result: list[Any] = []
    append = result.append
    for value in values:
        key = value
        if isinstance(value, list):
            key = (list, *value)
        elif isinstance(value, dict):
            if value:
                append(processor(value))
                continue
            key = dict
        try:
            processed = done.get(key, _MISSING)
        except TypeError:  # nested lists: not worth a key
            append(processor(value))
            continue
        if processed is _MISSING:
            processed = done[key] = processor(value)
        append(processed)
    return result


_MISSING = object()


def among(column: sa.ColumnElement[Any], values: list[Any], dialect: str) -> sa.ColumnElement[bool]:
    """``column IN values`` for the thousands of values of an import chunk, as one bound
    parameter: SQLAlchemy's ``in_`` renders a parameter per value for every execution,
    which costs more than the look-up itself. ``values`` are plain strings or integers."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(None, values, type_=sa.ARRAY(column.type)))
    listed = sa.bindparam(None, json.dumps(values), type_=sa.String)
    elements = sa.func.json_each(listed).table_valued("value")
    return column.in_(sa.select(elements.c.value))


def group_by_keys(updates: list[dict[str, Any]], *,
                  key: str = "b_id") -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """executemany needs the same parameters in every row: group updates by changed fields
    (``key`` is the bound primary key, present in every update)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for update in updates:
        keys = tuple(sorted(k for k in update if k != key))
        groups.setdefault(keys, []).append(update)
    return groups
