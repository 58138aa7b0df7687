"""A throw-away PostgreSQL database for the tests that need one (the server is shared)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from wip_mailer import db

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    """A fresh database on the local PostgreSQL at the current schema, dropped afterwards."""
    name = f"wip_test_{secrets.token_hex(5)}"
    try:
        admin = sa.create_engine(f"{SERVER}/test", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # no server or no psycopg here: say so (CI turns this into a failure)
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not usable: {type(exc).__name__}: {exc}")
    engine = db.create_database(f"{SERVER}/{name}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()
