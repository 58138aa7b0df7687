"""Crash safety with a real `wip-mailer` process: kill -9, Ctrl-C, resume; counted at the server."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import select

from tests.conftest import TEST_SECRET
from tests.dispatch_helpers import deliveries, make_audience, make_edition, start_campaign
from tests.smtp_server import SmtpTestServer
from wip_mailer.db import session_scope
from wip_mailer.dispatch import resume_campaign
from wip_mailer.lease import holder as lease_holder
from wip_mailer.models import Campaign
from wip_mailer.settings import Settings

CONNECTIONS = 3


@pytest.fixture
def crash_settings(settings: Settings, smtp_server: SmtpTestServer, workdir: Path) -> Settings:
    return dataclasses.replace(settings, smtp_port=smtp_server.port, smtp_timeout=5.0,
                               journal_dir=str(workdir / "journal"), smtp_connections=CONNECTIONS)


def start_sender(workdir: Path, settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "WIP_MAILER_SECRET_KEY": TEST_SECRET,
           "WIP_MAILER_DATABASE_URL": settings.database_url, "WIP_MAILER_SMTP_PORT": str(settings.smtp_port),
           "WIP_MAILER_JOURNAL_DIR": settings.journal_dir}
    return subprocess.Popen([sys.executable, "-m", "wip_mailer", *args], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(server: SmtpTestServer, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while len(server.messages) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the sender made no progress"
        time.sleep(0.005)


@pytest.mark.parametrize("keep_journal", [True, False], ids=["with-journal", "journal-lost"])
def test_kill_9_then_resume_sends_each_recipient_once(engine, crash_settings, smtp_server, workdir,
                                                     keep_journal: bool) -> None:
    make_edition(engine)
    emails = make_audience(engine, 300)
    campaign_id = start_campaign(engine)
    smtp_server.faults.data_delay_seconds = 0.01  # slow replies: the kill lands mid-campaign
    process = start_sender(workdir, crash_settings, "campaigns", "resume", str(campaign_id),
                           "--connections", str(CONNECTIONS))
    wait_for(smtp_server, 120, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(0.1)  # let the server finish the transactions that were in flight
    states = [d.state for d in deliveries(engine).values()]
    assert states.count("sending") > 0  # results were not all flushed: the hard case
    if not keep_journal:
        shutil.rmtree(crash_settings.journal_dir)
    claimed_at_kill = states.count("sending")

    summary = resume_campaign(engine, crash_settings, campaign_id)

    ledger = deliveries(engine)
    in_doubt = {email for email, row in ledger.items() if row.state == "in_doubt"}
    received = smtp_server.received_by_address()
    assert summary.status == "finished" and summary.in_doubt == len(in_doubt)
    assert all(received.get(email) == 1 for email in emails if email not in in_doubt)  # none lost, none twice
    assert all(received.get(email, 0) <= 1 for email in in_doubt)  # in doubt: never resent
    assert {row.state for email, row in ledger.items() if email not in in_doubt} == {"sent"}
    if keep_journal:
        assert len(in_doubt) <= CONNECTIONS  # at most the message in flight on each connection
        assert any("Settled the interrupted run" in note for note in summary.notes)
    else:
        assert len(in_doubt) == claimed_at_kill  # without the journal every claimed row is in doubt
        assert all("journal" in ledger[email].last_reply for email in in_doubt)


def test_resend_in_doubt_resends_them(engine, crash_settings, smtp_server, workdir) -> None:
    make_edition(engine)
    emails = make_audience(engine, 150)
    campaign_id = start_campaign(engine)
    smtp_server.faults.data_delay_seconds = 0.01
    process = start_sender(workdir, crash_settings, "campaigns", "resume", str(campaign_id))
    wait_for(smtp_server, 40, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    shutil.rmtree(crash_settings.journal_dir)  # make sure some rows are in doubt
    first = resume_campaign(engine, crash_settings, campaign_id)
    assert first.in_doubt > 0
    with session_scope(engine) as session:  # finished campaigns cannot be resumed; reopen to test the flag
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        campaign.status = "paused"
    second = resume_campaign(engine, crash_settings, campaign_id, resend_in_doubt=True)
    assert second.in_doubt == 0 and second.sent == 150
    assert set(smtp_server.received_by_address()) == set(emails)


def test_ctrl_c_finishes_in_flight_pauses_and_says_how_to_resume(engine, crash_settings, smtp_server,
                                                                   workdir) -> None:
    make_edition(engine)
    emails = make_audience(engine, 200)
    campaign_id = start_campaign(engine)
    smtp_server.faults.data_delay_seconds = 0.01
    process = start_sender(workdir, crash_settings, "campaigns", "resume", str(campaign_id), "--json")
    wait_for(smtp_server, 50, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["status"] == "paused" and summary["in_doubt"] == 0 and 50 <= summary["sent"] < 200
    ledger = deliveries(engine)
    assert sorted({row.state for row in ledger.values()}) == ["queued", "sent"]  # nothing left in flight
    assert len(smtp_server.messages) == summary["sent"]  # every message handed over was recorded
    with session_scope(engine) as session:
        campaign = session.exec(select(Campaign)).one()
        assert campaign.status == "paused" and lease_holder(engine, f"campaign:{campaign_id}") is None
        assert campaign.summary["sent"] == summary["sent"]

    process = start_sender(workdir, crash_settings, "campaigns", "resume", str(campaign_id))
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert f"Campaign {campaign_id} finished: 200 sent, 0 deferred, 0 failed, 0 skipped" in stdout
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)
