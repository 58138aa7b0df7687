"""Exactly once under timing faults: slow final replies, hang-ups before and after the final dot."""

from __future__ import annotations

import dataclasses

from tests.dispatch_helpers import (
    SLUG,
    deliveries,
    make_audience,
    make_edition,
    preflight_with,
    rendered_edition,
    send,
)
from wip_mailer.db import session_scope
from wip_mailer.dispatch import SendRequest, send_edition
from wip_mailer.models import Campaign


def test_a_final_reply_later_than_the_timeout_leaves_one_copy_in_doubt(engine, send_settings,
                                                                        smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 6)
    smtp_server.faults.store_then_delay_seconds = 1.5  # the relay stores it, then answers too late
    settings = dataclasses.replace(send_settings, smtp_timeout=0.5, smtp_connections=2,
                                   retry_deadline_seconds=60)
    summary = send(engine, settings)
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)  # one copy each, no resend
    ledger = deliveries(engine)
    assert {row.state for row in ledger.values()} == {"in_doubt"}
    assert all(row.attempts == 1 for row in ledger.values())
    assert all("no reply after the end of the message" in row.last_reply for row in ledger.values())
    assert (summary.in_doubt, summary.failed, summary.sent, summary.status) == (6, 0, 0, "finished")


def test_a_hang_up_after_storing_leaves_one_copy_in_doubt(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 20)
    smtp_server.faults.store_then_drop = 3
    summary = send(engine, dataclasses.replace(send_settings, smtp_connections=1))
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)
    ledger = deliveries(engine)
    in_doubt = [email for email, row in ledger.items() if row.state == "in_doubt"]
    assert len(in_doubt) == 3 and summary.in_doubt == 3 and summary.sent == 17
    assert all(ledger[email].message_id for email in in_doubt)  # kept, for matching a later bounce


def test_a_hang_up_before_the_final_dot_is_retried_and_sent_once(engine, send_settings,
                                                                 smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 4)
    smtp_server.faults.drop_before_dot = 2
    # 8 MB: more than the client's socket buffers, so the server hangs up in the middle of the body.
    big = rendered_edition()
    big = dataclasses.replace(big, text=big.text + "\n" + "Riga di testo della newsletter.\n" * 260_000)
    summary = send_edition(engine, dataclasses.replace(send_settings, smtp_connections=1),
                           SendRequest(slug=SLUG, lists=("main",)), preflight=preflight_with(big))
    assert smtp_server.faults.drop_before_dot == 0  # both hang-ups happened
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)
    assert (summary.sent, summary.in_doubt, summary.failed) == (4, 0, 0)
    assert {row.attempts for row in deliveries(engine).values()} == {1}  # resent within the attempt


def test_in_doubt_messages_of_a_finished_campaign_can_be_resent(engine, send_settings, smtp_server,
                                                               cli, workdir, monkeypatch) -> None:
    make_edition(engine)
    emails = make_audience(engine, 10)
    smtp_server.faults.drop_after_messages = 4  # not stored, no reply: in doubt, and really missed
    first = send(engine, dataclasses.replace(send_settings, smtp_connections=1))
    assert (first.status, first.in_doubt, first.sent) == ("finished", 1, 9)
    missed = next(email for email, row in deliveries(engine).items() if row.state == "in_doubt")
    assert missed not in smtp_server.received_by_address()
    monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("WIP_MAILER_JOURNAL_DIR", send_settings.journal_dir)

    result = cli("campaigns", "resend-in-doubt", "1", "--yes")

    assert result.exit_code == 0, result.output
    assert "1 in-doubt message(s) queued again to be resent." in result.output
    assert "Campaign 1 finished: 10 sent" in result.output
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)  # only the in-doubt one went
    with session_scope(engine) as session:
        assert session.get(Campaign, 1).status == "finished"
    again = cli("campaigns", "resend-in-doubt", "1", "--yes")
    assert again.exit_code == 1 and "no message in doubt" in again.stderr

