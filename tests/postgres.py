"""A throw-away PostgreSQL database for tests that need one (the server is shared)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from wip_mailer import db


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    """A throw-away PostgreSQL database (other helpers share the server)."""
    admin_url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            name = f"wip_audience_{uuid.uuid4().hex[:10]}"
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # the server is absent on this machine
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not usable: {exc}")
    engine = db.create_database(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}"')
        admin.dispose()
