"""Database failures reach the user as one sentence: no SQL, no parameters (subscribers' addresses)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from wip_mailer import db

ADDRESS = "bob.private@example.org"


def _assert_one_clean_sentence(stderr: str) -> None:
    assert stderr.startswith("Error: ") and stderr.count("\n") == 1, stderr
    for leak in ("SQL:", "INSERT", "SELECT", "PRAGMA", "parameters", "@example.org", "sqlalche.me",
                 "OperationalError", "unexpected"):
        assert leak not in stderr, stderr


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a process of its own (in-process, SQLite could reuse the test's
    earlier read-write file handles)."""
    return subprocess.run([sys.executable, "-m", "wip_mailer", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


@pytest.fixture
def populated(cli, engine, workdir: Path) -> Path:
    """A database with a list and 300 subscribers, its WAL folded into the file and closed."""
    assert cli("lists", "create", "stampa", "--no-double-opt-in").exit_code == 0
    source = workdir / "people.csv"
    source.write_text("email,name\n" + "".join(f"reader{n:04d}@example.org,Lettore {n} con un nome lungo\n"
                                               for n in range(300)), encoding="utf-8")
    assert cli("subscribers", "import", str(source), "--list", "stampa").exit_code == 0
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    path = workdir / "wip.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def _immutable(path: Path, on: bool) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


@pytest.fixture
def read_only(populated: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The database file made read-only for real: immutable (chattr +i, which stops root too)
    where the file system allows it, else SQLite's own read-only open (mode=ro)."""
    if _immutable(populated, True):
        try:
            yield populated
        finally:
            _immutable(populated, False)
        return
    monkeypatch.setenv("WIP_MAILER_DATABASE_URL", f"sqlite:///file:{populated}?mode=ro&uri=true")
    yield populated


def test_a_read_only_database_gets_one_sentence(read_only: Path) -> None:
    result = _run("subscribers", "add", ADDRESS, "--list", "stampa", "--confirmed")
    assert result.returncode == 1
    _assert_one_clean_sentence(result.stderr)
    assert result.stderr == (f"Error: The database file {read_only} is read-only: check the permissions of "
                             "the file and its folder (or a read-only mount); nothing was changed.\n")
    listed = _run("subscribers", "list", "--list", "stampa")  # reading still works
    assert listed.returncode == 0 and listed.stdout.count("\n") == 300


def test_a_damaged_header_gets_one_sentence(populated: Path) -> None:
    with populated.open("r+b") as handle:
        handle.write(b"this is no database header" * 4)
    for args in (("editions", "list"), ("subscribers", "add", ADDRESS, "--list", "stampa")):
        result = _run(*args)
        assert result.returncode == 1
        _assert_one_clean_sentence(result.stderr)
        assert result.stderr == (f"Error: The database {populated} is damaged (it is not a SQLite database "
                                 "file): restore it from a backup (see README, \"Backup and restore\").\n")


def test_damaged_pages_in_the_middle_get_one_sentence(populated: Path) -> None:
    size = populated.stat().st_size
    with populated.open("r+b") as handle:
        handle.seek(size // 4)
        handle.write(b"\xff" * (size // 2))
    for result in (_run("subscribers", "list"), _run("subscribers", "add", ADDRESS, "--list", "stampa")):
        assert result.returncode == 1
        _assert_one_clean_sentence(result.stderr)
        assert result.stderr == (f"Error: The database {populated} is damaged: restore it from a backup "
                                 "(see README, \"Backup and restore\").\n")


def test_a_database_path_that_cannot_be_opened_gets_one_sentence(cli, workdir: Path, monkeypatch) -> None:
    folder = workdir / "not-a-file.db"
    folder.mkdir()
    monkeypatch.setenv("WIP_MAILER_DATABASE_URL", f"sqlite:///{folder}")
    result = cli("editions", "list")
    assert result.exit_code == 1
    _assert_one_clean_sentence(result.stderr)
    assert result.stderr.startswith(f"Error: The database file {folder} cannot be opened")


def test_a_locked_database_is_explained_without_the_sql(populated: Path) -> None:
    url = f"sqlite:///{populated}"
    holder = sqlite3.connect(populated, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    impatient = sa.create_engine(url, connect_args={"timeout": 0})
    try:
        with pytest.raises(DBAPIError) as caught, impatient.begin() as connection:
            connection.execute(sa.text("UPDATE subscriber SET name = :name WHERE email = :email"),
                               {"name": "x", "email": ADDRESS})
    finally:
        holder.rollback()
        holder.close()
        impatient.dispose()
    sentence = str(db.explain_database_error(caught.value, url))
    assert sentence.startswith(f"The database {populated} is locked")
    assert "UPDATE" not in sentence and ADDRESS not in sentence


@pytest.mark.postgres
def test_postgresql_failures_are_explained_without_sql_or_values(pg_engine) -> None:
    url = pg_engine.url.render_as_string(hide_password=False)
    insert = sa.text("INSERT INTO mailing_list (name, description, language, double_opt_in, public, "
                     "created_at) VALUES (:name, :description, 'it', true, false, now())")
    with pytest.raises(DBAPIError) as read_only, pg_engine.begin() as connection:
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        connection.execute(insert, {"name": "stampa", "description": ADDRESS})
    sentence = str(db.explain_database_error(read_only.value, url))
    assert sentence.startswith("The database postgresql+psycopg://postgres@127.0.0.1:5432/wip_test_")
    assert "is read-only" in sentence and "INSERT" not in sentence and ADDRESS not in sentence

    with pg_engine.begin() as connection:
        connection.execute(insert, {"name": "stampa", "description": ""})
    with pytest.raises(DBAPIError) as duplicate, pg_engine.begin() as connection:
        connection.execute(insert, {"name": "stampa", "description": ADDRESS})
    sentence = str(db.explain_database_error(duplicate.value, url))  # its DETAIL line names the value
    assert "refused the operation (UniqueViolation, SQLSTATE 23505)" in sentence
    assert "stampa" not in sentence and "INSERT" not in sentence
