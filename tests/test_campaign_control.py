"""Operator control of a running campaign from other processes: pause, cancel, and what is said
about a campaign whose sender was killed. Real processes, a real SMTP server."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRET
from tests.dispatch_helpers import SLUG, deliveries, make_audience, make_edition, send, start_campaign
from tests.smtp_server import SmtpTestServer
from wip_mailer.dispatch.ledger import stop_request
from wip_mailer.errors import StateError
from wip_mailer.settings import Settings


def environment(settings: Settings, smtp_server: SmtpTestServer, workdir: Path) -> dict[str, str]:
    return {**os.environ, "WIP_MAILER_SECRET_KEY": TEST_SECRET,
            "WIP_MAILER_DATABASE_URL": settings.database_url, "WIP_MAILER_SMTP_PORT": str(smtp_server.port),
            "WIP_MAILER_JOURNAL_DIR": str(workdir / "journal"),
            "WIP_MAILER_SMTP_CONNECTIONS": "3"}


def wip(env: dict[str, str], workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "wip_mailer", *args], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(env: dict[str, str], workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wip_mailer", *args], cwd=workdir, env=env, text=True,
                          capture_output=True, timeout=120)


def wait_for_messages(server: SmtpTestServer, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while len(server.messages) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the sender made no progress"
        time.sleep(0.005)


@pytest.fixture
def running(engine, settings, smtp_server, workdir):  # type: ignore[no-untyped-def]
    """A campaign of 1,500 being sent by a real `campaigns resume` process, 100 messages in."""
    make_edition(engine)
    emails = make_audience(engine, 1500)
    campaign_id = start_campaign(engine)
    smtp_server.faults.data_delay_seconds = 0.005
    env = environment(settings, smtp_server, workdir)
    sender = wip(env, workdir, "campaigns", "resume", str(campaign_id), "--json")
    wait_for_messages(smtp_server, 100, sender)
    yield campaign_id, emails, env, sender
    if sender.poll() is None:
        sender.kill()


def test_pause_from_another_process_stops_the_send_within_seconds(running, smtp_server, workdir,
                                                                  engine) -> None:
    campaign_id, emails, env, sender = running
    pausing = wip(env, workdir, "campaigns", "pause", str(campaign_id))
    deadline = time.monotonic() + 60
    while stop_request(engine, campaign_id) is None:  # the moment the pause is asked for
        assert time.monotonic() < deadline and pausing.poll() is None, pausing.communicate()
        time.sleep(0.005)
    asked_at = time.time()
    out, err = pausing.communicate(timeout=60)
    assert pausing.returncode == 0, err
    assert f"Campaign {campaign_id} of edition {SLUG}: paused" in out
    assert f"wip-mailer campaigns resume {campaign_id}" in out
    assert max(message.mail_at for message in smtp_server.messages) < asked_at + 5  # stopped within 5 s
    stdout, stderr = sender.communicate(timeout=30)
    assert sender.returncode == 130, stderr  # the sender reports a pause, as after Ctrl-C
    summary = json.loads(stdout)
    assert summary["status"] == "paused" and summary["in_doubt"] == 0 and summary["queued"] > 0
    assert any("campaigns pause" in note for note in summary["notes"])
    sent_at_pause = len(smtp_server.messages)
    time.sleep(1.5)
    assert len(smtp_server.messages) == sent_at_pause  # it really stopped
    assert {row.state for row in deliveries(engine).values()} == {"sent", "queued"}

    resumed = run(env, workdir, "campaigns", "resume", str(campaign_id))
    assert resumed.returncode == 0, resumed.stderr
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)  # nothing lost, nothing twice


def test_cancel_of_a_paused_campaign_skips_the_rest_and_it_never_resumes(running, smtp_server, workdir,
                                                                         engine) -> None:
    campaign_id, _, env, sender = running
    assert run(env, workdir, "campaigns", "pause", str(campaign_id)).returncode == 0
    sender.communicate(timeout=30)
    refused = run(env, workdir, "campaigns", "cancel", str(campaign_id))  # no terminal to ask
    assert refused.returncode == 2 and "--yes" in refused.stderr
    cancelled = run(env, workdir, "campaigns", "cancel", str(campaign_id), "--yes")
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"Campaign {campaign_id} of edition {SLUG}: cancelled" in cancelled.stdout
    ledger = deliveries(engine)
    sent = {email for email, row in ledger.items() if row.state == "sent"}
    assert sent == set(smtp_server.received_by_address())
    assert {row.state for email, row in ledger.items() if email not in sent} == {"skipped"}
    assert all("cancelled" in row.last_reply for email, row in ledger.items() if email not in sent)
    again = run(env, workdir, "campaigns", "resume", str(campaign_id))
    assert again.returncode == 1 and "is cancelled" in again.stderr
    assert len(smtp_server.messages) == len(sent)


def test_cancel_stops_a_running_send_first(running, smtp_server, workdir, engine) -> None:
    campaign_id, emails, env, sender = running
    cancelled = run(env, workdir, "campaigns", "cancel", str(campaign_id), "--yes")
    assert cancelled.returncode == 0, cancelled.stderr
    sender.communicate(timeout=30)
    received = smtp_server.received_by_address()
    assert max(received.values()) == 1 and len(received) < len(emails)
    assert {row.state for row in deliveries(engine).values()} == {"sent", "skipped"}


def test_after_kill_9_status_and_send_say_interrupted_and_resume_takes_over(
        running, smtp_server, workdir, engine, settings) -> None:
    campaign_id, emails, env, sender = running
    sender.send_signal(signal.SIGKILL)
    sender.wait()
    status = run(env, workdir, "campaigns", "status", str(campaign_id))
    assert status.returncode == 0, status.stderr
    assert f"Campaign {campaign_id} of edition {SLUG}: interrupted (its sender stopped after " \
        in status.stdout
    assert f"Resume it with `wip-mailer campaigns resume {campaign_id}`." in status.stdout
    with pytest.raises(StateError) as refused:
        send(engine, dataclasses.replace(settings, smtp_port=smtp_server.port))
    assert "was interrupted (its sender stopped)" in str(refused.value)
    assert f"`wip-mailer send {SLUG} --resume`" in str(refused.value)

    resumed = run(env, workdir, "send", SLUG, "--resume")  # takes over the dead sender's lease
    assert resumed.returncode == 0, resumed.stderr
    received = smtp_server.received_by_address()
    in_doubt = {email for email, row in deliveries(engine).items() if row.state == "in_doubt"}
    assert max(received.values()) == 1
    assert all(email in received for email in emails if email not in in_doubt)
