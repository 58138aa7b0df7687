import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel, select

from wip_mailer import db
from wip_mailer.errors import DatabaseError
from wip_mailer.models import Edition


def test_sqlite_runs_in_wal_mode_with_foreign_keys(engine) -> None:
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_migrations_match_the_models(engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_upgrade_from_first_revision_keeps_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO edition (slug, title, language, status, meta, created_at, updated_at) "
            "VALUES ('2023-11', 'Novembre-Dicembre 2023', 'it', 'sent', '{}', "
            "'2023-11-01 08:00:00', '2023-11-01 08:00:00')"
        )
    before, after = db.upgrade(engine)
    assert (before, after) == ("0001", db.head_revision())
    with db.session_scope(engine) as session:
        edition = session.exec(select(Edition)).one()
    assert edition.slug == "2023-11"
    assert edition.created_at == datetime(2023, 11, 1, 8, tzinfo=UTC)


def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    url = f"sqlite:///{path}"
    db.create_database(url)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(DatabaseError, match="made by a newer wip-mailer"):
        db.open_database(url)


def test_missing_database_tells_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as caught:
        db.open_database(f"sqlite:///{tmp_path / 'absent.db'}")
    assert str(caught.value) == f"No database at {tmp_path / 'absent.db'}: run `wip-mailer init` first."


def test_utc_column_refuses_naive_datetimes(engine) -> None:
    with pytest.raises(Exception, match="naive datetime"), db.session_scope(engine) as session:
        session.add(Edition(slug="x", title="x", created_at=datetime(2024, 1, 1)))
        session.flush()
