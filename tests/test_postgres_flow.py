"""The whole job on PostgreSQL, through the CLI: init, db upgrade, editorial → render → send
(one process, then `--workers 2`) → schedule, against a real SMTP server on loopback."""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import REPO
from tests.postgres import SERVER
from tests.schedule_helpers import service_thread, wait_until
from wip_mailer import db
from wip_mailer.db import utcnow
from wip_mailer.settings import load_settings

pytestmark = pytest.mark.postgres


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """An empty database on the local server (no schema: `init` makes it)."""
    name = f"wip_flow_{secrets.token_hex(5)}"
    try:
        admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not usable: {type(exc).__name__}: {exc}")
    try:
        yield f"{SERVER}/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


def ok(result) -> str:
    assert result.exit_code == 0, (result.output, result.stderr)
    return result.stdout


def test_init_upgrade_edit_render_send_and_schedule_on_postgresql(cli, workdir, monkeypatch, smtp_server,
                                                                  empty_pg_url) -> None:
    monkeypatch.setenv("WIP_MAILER_DATABASE_URL", empty_pg_url)
    monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("WIP_MAILER_JOURNAL_DIR", str(workdir / "journal"))
    ok(cli("init", "--demo"))
    engine = db.make_engine(empty_pg_url)
    assert engine.dialect.name == "postgresql" and db.current_revision(engine) == db.SCHEMA_HEAD
    assert "0701" in ok(cli("db", "upgrade")) or db.current_revision(engine) == db.SCHEMA_HEAD

    # Editorial and render
    ok(cli("editions", "create", "2026-11", "--title", "Novembre-Dicembre 2026", "--start", "2026-11-01",
           "--end", "2026-12-31"))
    ok(cli("import", str(REPO / "examples" / "edition-2026-11.md"), "--edition", "2026-11"))
    ok(cli("items", "approve", "--all", "--edition", "2026-11", "--by", "test"))
    ok(cli("lists", "sync", str(REPO / "subscribers" / "lists.toml")))
    ok(cli("subscribers", "import", str(REPO / "subscribers" / "example-import.csv"),
           "--list", "partner-internazionali"))
    ok(cli("check", "2026-11"))
    ok(cli("preview", "2026-11", "--out", str(workdir / "p.html"), "--text", str(workdir / "p.txt")))
    assert "Novembre" in (workdir / "p.html").read_text(encoding="utf-8")

    # Send, in this process
    summary = json.loads(ok(cli("send", "2026-11", "--list", "partner-internazionali", "--yes", "--json")))
    assert summary["status"] == "finished" and summary["sent"] > 0 and summary["in_doubt"] == 0
    first = smtp_server.received_by_address()
    assert len(first) == summary["sent"] and set(first.values()) == {1}
    rows = json.loads(ok(cli("campaigns", "list", "--json")))
    assert [row["status"] for row in rows] == ["finished"]
    status = ok(cli("campaigns", "status", str(summary["campaign_id"])))
    assert f"relays: 127.0.0.1:{smtp_server.port} {summary['sent']} sent" in status

    # Send with two worker processes
    ok(cli("editions", "create", "2026-12", "--title", "Dicembre 2026", "--start", "2026-12-01",
           "--end", "2026-12-31"))
    ok(cli("import", str(REPO / "examples" / "edition-2026-11.md"), "--edition", "2026-12"))
    ok(cli("items", "approve", "--all", "--edition", "2026-12", "--by", "test"))
    second = json.loads(ok(cli("send", "2026-12", "--list", "partner-internazionali", "--workers", "2",
                               "--yes", "--json")))
    assert second["status"] == "finished" and second["sent"] == summary["sent"]

    # Schedule a third edition; the scheduler sends it through the same code path
    ok(cli("editions", "create", "2027-01", "--title", "Gennaio 2027", "--start", "2027-01-01",
           "--end", "2027-01-31"))
    ok(cli("import", str(REPO / "examples" / "edition-2026-11.md"), "--edition", "2027-01"))
    ok(cli("items", "approve", "--all", "--edition", "2027-01", "--by", "test"))
    at = (utcnow() + timedelta(seconds=2)).isoformat(timespec="seconds")
    ok(cli("schedule", "add", "2027-01", "--at", at, "--list", "partner-internazionali"))
    settings = dataclasses.replace(load_settings(), scheduler_poll_seconds=0.2)
    with service_thread(engine, settings):
        assert wait_until(lambda: len(smtp_server.messages) == 3 * summary["sent"], timeout=60)
    assert set(smtp_server.received_by_address().values()) == {3}  # each edition once to each person
    rows = json.loads(ok(cli("campaigns", "list", "--json")))
    assert [row["status"] for row in rows] == ["finished"] * 3
    with engine.connect() as connection:
        editions = dict(connection.exec_driver_sql("SELECT slug, status FROM edition").all())
    assert editions == {"2026-11": "sent", "2026-12": "sent", "2027-01": "sent"}
    engine.dispose()
