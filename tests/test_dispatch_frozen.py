"""A sender frozen past its lease (SIGSTOP), taken over by a second process, then woken (SIGCONT):
nobody gets two copies, nobody is lost but the in-doubt ones, and the stale process says why it stopped."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.conftest import TEST_SECRET
from tests.dispatch_helpers import deliveries, make_audience, make_edition, start_campaign
from tests.smtp_server import SmtpTestServer
from wip_mailer.settings import Settings

LEASE_SECONDS = 2.0
RECIPIENTS = 1500


def start_sender(settings: Settings, database_url: str, workdir: Path, campaign_id: int
                 ) -> subprocess.Popen[str]:
    env = {**os.environ, "WIP_MAILER_SECRET_KEY": TEST_SECRET, "WIP_MAILER_DATABASE_URL": database_url,
           "WIP_MAILER_SMTP_PORT": str(settings.smtp_port), "WIP_MAILER_JOURNAL_DIR": settings.journal_dir,
           "WIP_MAILER_LEASE_SECONDS": str(LEASE_SECONDS), "WIP_MAILER_SMTP_CONNECTIONS": "3"}
    return subprocess.Popen([sys.executable, "-m", "wip_mailer", "campaigns", "resume", str(campaign_id),
                             "--json"], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition, what: str, seconds: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def holds_a_write(database: Engine) -> bool:
    """Whether some process holds a write transaction open on the database right now."""
    if database.dialect.name == "sqlite":
        path = database.url.database
        assert path
        try:
            with sqlite3.connect(path, timeout=0.05) as connection:
                connection.execute("BEGIN IMMEDIATE")
                connection.rollback()
        except sqlite3.OperationalError:
            return True
        return False
    with database.connect() as connection:
        return bool(connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%%'").scalar())


def freeze_outside_a_write(process: subprocess.Popen[str], database: Engine) -> None:
    """SIGSTOP the sender at a moment it holds no database transaction.

    A process frozen in the middle of a write holds the database (SQLite's write lock,
    PostgreSQL's row locks) until it wakes: every writer waits for it, which is a fault of
    its own (see the README), not the one this test is about.
    """
    for _ in range(50):
        process.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
        if not holds_a_write(database):
            return
        process.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("the sender was always in the middle of a write")


@pytest.fixture(params=["engine", "pg_engine"], ids=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue(request.param)


def test_a_sender_frozen_past_its_lease_wakes_and_sends_nothing_twice(
        database: Engine, settings: Settings, smtp_server: SmtpTestServer, workdir: Path) -> None:
    settings = dataclasses.replace(settings, smtp_port=smtp_server.port, journal_dir=str(workdir / "journal"))
    url = database.url.render_as_string(hide_password=False)
    make_edition(database)
    emails = make_audience(database, RECIPIENTS)
    campaign_id = start_campaign(database)
    smtp_server.faults.data_delay_seconds = 0.005  # a relay that takes a little while per message

    frozen = start_sender(settings, url, workdir, campaign_id)
    try:
        wait_for(lambda: len(smtp_server.messages) >= 150, "the first sender made no progress")
        freeze_outside_a_write(frozen, database)  # Ctrl-Z, a paused VM, a suspended laptop
        time.sleep(LEASE_SECONDS + 0.8)  # past its lease
        at_freeze = len(smtp_server.messages)

        successor = start_sender(settings, url, workdir, campaign_id)
        wait_for(lambda: len(smtp_server.messages) >= at_freeze + 300, "the successor made no progress")
        frozen.send_signal(signal.SIGCONT)  # it wakes while its successor is sending
        _, stale_err = frozen.communicate(timeout=60)
        _, err = successor.communicate(timeout=120)
    finally:
        for process in (frozen,):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()

    assert successor.returncode == 0, err
    assert frozen.returncode == 1, stale_err
    assert "lost its lease" in stale_err and "stopped without sending anything more" in stale_err
    time.sleep(0.1)
    received = smtp_server.received_by_address()
    assert max(received.values()) == 1  # nobody twice
    ledger = deliveries(database)
    in_doubt = {email for email, row in ledger.items() if row.state == "in_doubt"}
    assert len(in_doubt) <= 3  # at most the message on each of the frozen sender's connections
    assert all(email in received for email in emails if email not in in_doubt)  # nobody else lost
    assert {row.state for email, row in ledger.items() if email not in in_doubt} == {"sent"}
