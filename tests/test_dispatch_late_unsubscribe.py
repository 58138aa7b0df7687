"""A late unsubscribe wins: one-click POSTs arriving while a real send runs. Nobody is mailed
after their POST returned, except a message whose SMTP transaction had already begun."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import Engine

from tests.conftest import TEST_SECRET
from tests.dispatch_helpers import deliveries, make_audience, make_edition, start_campaign
from tests.smtp_server import SmtpTestServer, free_port
from wip_mailer.audience import unsubscribe_url
from wip_mailer.settings import Settings

RECIPIENTS = 1500
UNSUBSCRIBERS = 200


def test_one_click_posts_during_a_send_stop_their_messages(
        engine: Engine, settings: Settings, smtp_server: SmtpTestServer, workdir: Path) -> None:
    port = free_port()
    settings = dataclasses.replace(settings, base_url=f"http://127.0.0.1:{port}")
    env = {**os.environ, "WIP_MAILER_SECRET_KEY": TEST_SECRET,
           "WIP_MAILER_DATABASE_URL": settings.database_url, "WIP_MAILER_SMTP_PORT": str(smtp_server.port),
           "WIP_MAILER_JOURNAL_DIR": str(workdir / "journal"),
           "WIP_MAILER_BASE_URL": settings.base_url, "WIP_MAILER_SMTP_CONNECTIONS": "3"}
    make_edition(engine)
    emails = make_audience(engine, RECIPIENTS)
    campaign_id = start_campaign(engine)
    rows = deliveries(engine)
    # People late in the queue, so that most of them are claimed but not yet sent when they leave.
    leaving = emails[600::4][:UNSUBSCRIBERS]
    urls = {email: unsubscribe_url(settings, rows[email].subscriber_id, rows[email].list_id)
            for email in leaving}
    smtp_server.faults.data_delay_seconds = 0.004

    web = subprocess.Popen([sys.executable, "-m", "wip_mailer", "serve", "--port", str(port)], cwd=workdir,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sender = None
    try:
        with httpx.Client(base_url=settings.base_url, timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and web.poll() is None, "serve did not start"
                time.sleep(0.05)
            sender = subprocess.Popen([sys.executable, "-m", "wip_mailer", "campaigns", "resume",
                                       str(campaign_id), "--json"], cwd=workdir, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            while len(smtp_server.messages) < 300:
                assert sender.poll() is None, sender.communicate()
                time.sleep(0.005)

            def leave(email: str) -> tuple[str, float, int]:
                response = client.post(urls[email], data={"List-Unsubscribe": "One-Click"})
                return email, time.time(), response.status_code

            with ThreadPoolExecutor(16) as pool:
                returned = list(pool.map(leave, leaving))
        _, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err
    finally:
        web.terminate()
        web.wait(10)
        if sender is not None and sender.poll() is None:
            sender.kill()

    assert {status for _, _, status in returned} == {200}
    returned_at = {email: at for email, at, _ in returned}
    late = [(message.rcpt_tos[0], message.mail_at - returned_at[message.rcpt_tos[0]])
            for message in smtp_server.messages
            if message.rcpt_tos[0] in returned_at and message.mail_at > returned_at[message.rcpt_tos[0]]]
    assert late == []  # nobody's SMTP transaction began after their POST had returned
    ledger = deliveries(engine)
    skipped = [email for email in leaving if ledger[email].state == "skipped"]
    assert len(skipped) >= UNSUBSCRIBERS // 2  # the test really raced the send
    assert all(ledger[email].state == "sent" for email in emails if email not in leaving)
    assert smtp_server.received_by_address().keys() == {e for e in emails if ledger[e].state == "sent"}
