"""Dispatch against a real SMTP server (aiosmtpd on loopback) and a real SQLite file."""

from __future__ import annotations

import dataclasses
import threading
import time
from email import message_from_bytes
from email.policy import default

import pytest
from sqlalchemy import update
from sqlmodel import select

from tests.dispatch_helpers import (
    SLUG,
    deliveries,
    make_audience,
    make_edition,
    preflight_with,
    rendered_edition,
    send,
    start_campaign,
)
from wip_mailer.audience import suppress
from wip_mailer.db import session_scope
from wip_mailer.dispatch import SendRequest, campaign_status, list_campaigns, resume_campaign, send_edition
from wip_mailer.dispatch.ratelimit import Pacer, parse_rate
from wip_mailer.errors import DeliveryError, NotFoundError, StateError
from wip_mailer.lease import holder as lease_holder
from wip_mailer.models import (
    Campaign,
    Edition,
    Membership,
    MembershipStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from wip_mailer.tokens import Purpose, read_token


def test_500_subscribers_get_exactly_one_personal_message_each(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 500, names=["Ada Rossi", "Zoë Müller", "Jean-Luc O'Neil", ""])
    summary = send(engine, send_settings)
    assert (summary.sent, summary.failed, summary.deferred, summary.in_doubt, summary.status) == (
        500, 0, 0, 0, "finished")
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)
    ledger = deliveries(engine)
    for received in smtp_server.messages:
        assert len(received.rcpt_tos) == 1  # one envelope recipient per message
        message = message_from_bytes(received.data, policy=default)
        address = received.rcpt_tos[0]
        row = ledger[address]
        assert message["To"].addresses[0].addr_spec == address
        for header in ("From", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
                       "List-Unsubscribe-Post"):
            assert message[header], header
        assert message["Message-ID"] == f"<{row.message_id}>"
        assert received.mail_from.startswith(f"bounces+{row.id}-")
        url = message["List-Unsubscribe"].split(">")[0].lstrip("<")
        claims = read_token(send_settings.secret_key, Purpose.UNSUBSCRIBE, url.rpartition("/")[2])
        assert claims.subscriber_id == row.subscriber_id  # the link unsubscribes this reader
        text, body = message.get_body(("plain",)), message.get_body(("html",))
        assert text is not None and body is not None
        assert url in text.get_content() and f'href="{url}"' in body.get_content()
    assert {d.state for d in ledger.values()} == {"sent"}
    with session_scope(engine) as session:
        campaign = session.exec(select(Campaign)).one()
        edition = session.exec(select(Edition)).one()
    assert campaign.status == "finished" and campaign.summary["sent"] == 500
    assert lease_holder(engine, f"campaign:{campaign.id}") is None  # released
    assert edition.status == "sent"


def test_dkim_signed_copies_verify_at_the_receiver(engine, send_settings, smtp_server, tmp_path) -> None:
    import base64
    import shutil
    import subprocess

    import dkim

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test DKIM key")
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    settings = dataclasses.replace(send_settings, dkim_key_file=str(key), dkim_selector="wip",
                                   dkim_domain="example.org")
    make_edition(engine)
    make_audience(engine, 40, names=["Ada Rossi", "Zoë Müller"])
    assert send(engine, settings).sent == 40

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"wip._domainkey.example.org." else None

    assert len(smtp_server.messages) == 40
    for received in smtp_server.messages:
        assert dkim.verify(received.data, dnsfunc=dnsfunc), received.rcpt_tos


def test_faults_leave_every_address_sent_once_retried_or_failed(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 60)
    gone, full_once, later, data_once = emails[3], emails[10], emails[20], emails[30]
    faults = smtp_server.faults
    faults.rcpt_replies = {gone: ["550 5.1.1 No such user"], full_once: ["451 4.2.2 Try later", "250 OK"],
                           later: ["450 4.7.1 Greylisted", "450 4.7.1 Greylisted", "250 OK"]}
    faults.data_replies = {data_once: ["451 4.3.0 Temporary failure", "250 OK"]}
    faults.close_after_messages = 12  # a 421 mid-session
    faults.drop_after_messages = 25  # a connection dropped after the final dot, without a reply
    faults.data_delay_seconds = 0.01  # slow replies
    summary = send(engine, dataclasses.replace(send_settings, smtp_connections=2))
    assert faults.close_after_messages is None and faults.drop_after_messages is None  # both fired
    received = smtp_server.received_by_address()
    ledger = deliveries(engine)
    # After the final dot the client cannot tell a server that hung up before storing from one
    # that hung up after: the message is in doubt, never resent (here the server had not stored it).
    in_doubt = [email for email, row in ledger.items() if row.state == "in_doubt"]
    assert len(in_doubt) == 1 and in_doubt[0] not in received
    assert received == {email: 1 for email in emails if email not in (gone, *in_doubt)}  # none twice
    assert ledger[gone].state == "failed" and ledger[gone].last_reply == "550 5.1.1 No such user"
    for email in (full_once, data_once):
        assert ledger[email].state == "sent" and ledger[email].attempts == 2
    assert ledger[later].state == "sent" and ledger[later].attempts == 3
    assert (summary.sent, summary.failed, summary.deferred, summary.in_doubt) == (58, 1, 0, 1)
    with session_scope(engine) as session:  # the hard bounce is suppressed for good
        assert session.exec(select(Subscriber).where(Subscriber.email == gone)).one().status == "bounced"
        assert session.exec(select(Suppression)).one().reason == "bounced"


def test_a_policy_rejection_fails_without_suppressing(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 5)
    smtp_server.faults.rcpt_replies = {emails[0]: ["550 5.7.1 Message refused by policy"]}
    assert send(engine, send_settings).failed == 1
    with session_scope(engine) as session:
        assert session.exec(select(Suppression)).all() == []


def test_deferred_until_the_deadline_then_failed(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 3)
    smtp_server.faults.rcpt_replies = {emails[1]: ["452 4.2.2 Mailbox full"]}
    settings = dataclasses.replace(send_settings, retry_base_seconds=0.05, retry_deadline_seconds=0.5)
    summary = send(engine, settings)
    row = deliveries(engine)[emails[1]]
    assert row.state == "failed" and row.attempts >= 3
    assert row.last_reply.startswith(f"gave up after {row.attempts} attempts")
    assert row.last_reply.endswith("452 4.2.2 Mailbox full")
    assert (summary.sent, summary.failed) == (2, 1)
    assert smtp_server.handler.rcpt_seen.count(emails[1]) == row.attempts


def test_a_refused_sender_pauses_the_campaign(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    make_audience(engine, 5)
    settings = dataclasses.replace(send_settings, bounce_address="", sender="blocked@example.org")

    class RefuseSender:
        async def handle_MAIL(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
            return "550 5.7.1 Sender not allowed"

    smtp_server.handler.handle_MAIL = RefuseSender().handle_MAIL  # type: ignore[attr-defined]
    with pytest.raises(DeliveryError) as caught:
        send(engine, settings)
    assert "refuses the sender blocked@example.org: 550 5.7.1 Sender not allowed" in str(caught.value)
    assert "resume it with `wip-mailer campaigns resume 1`" in str(caught.value)
    assert {d.state for d in deliveries(engine).values()} == {"queued"}  # nothing lost, nothing failed
    with session_scope(engine) as session:
        assert session.exec(select(Campaign)).one().status == "paused"


def test_unsubscribing_mid_campaign_is_honoured(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 40)
    leaver, bouncer = emails[30], emails[35]
    settings = dataclasses.replace(send_settings, smtp_connections=1, rate_per_second=15)
    thread = threading.Thread(target=send, args=(engine, settings))
    thread.start()
    while len(smtp_server.messages) < 5:
        time.sleep(0.01)
    with session_scope(engine) as session:
        subscriber = session.exec(select(Subscriber).where(Subscriber.email == leaver)).one()
        session.execute(update(Membership).where(Membership.subscriber_id == subscriber.id)  # type: ignore[arg-type]
                        .values(status=MembershipStatus.UNSUBSCRIBED))
        suppress(session, bouncer, "complained", "FBL report")
    thread.join()
    received = smtp_server.received_by_address()
    assert leaver not in received and bouncer not in received
    assert len(received) == 38
    ledger = deliveries(engine)
    assert ledger[leaver].state == "skipped" and "unsubscribed" in ledger[leaver].last_reply
    assert ledger[bouncer].state == "skipped" and "complained" in ledger[bouncer].last_reply


def test_a_second_send_of_a_running_campaign_is_refused(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 30)
    smtp_server.faults.data_delay_seconds = 0.03
    settings = dataclasses.replace(send_settings, smtp_connections=1)
    thread = threading.Thread(target=send, args=(engine, settings))
    thread.start()
    while len(smtp_server.messages) < 3:
        time.sleep(0.01)
    with pytest.raises(StateError, match="is being sent right now by campaign 1"):
        send(engine, settings)
    with pytest.raises(StateError, match="Campaign 1 is being sent right now by"):
        resume_campaign(engine, settings, 1)
    thread.join()
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)
    with pytest.raises(StateError, match="nothing to send"):  # everyone already has this edition
        send(engine, settings)


def test_a_paused_campaign_must_be_resumed_not_restarted(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 10)
    with session_scope(engine) as session:
        campaign = Campaign(edition_id=1, status="paused", audience={"lists": ["main"], "list_ids": [1]},
                            subject="S", body_html=rendered_edition().html, body_text=rendered_edition().text,
                            recipient_count=0)
        session.add(campaign)
    with pytest.raises(StateError) as caught:
        send(engine, send_settings)
    assert str(caught.value) == (
        "Edition '2024-01' has an unfinished campaign 1, which is paused: resume it with "
        "`wip-mailer send 2024-01 --resume` (or `wip-mailer campaigns resume 1`).")
    assert smtp_server.messages == [] and emails


def test_a_second_campaign_only_reaches_those_not_yet_sent(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    first = make_audience(engine, 10, "italian")
    send(engine, send_settings, lists=("italian",))
    second = make_audience(engine, 5, "english", start=100)
    with session_scope(engine) as session:  # one reader is on both lists
        reader = session.exec(select(Subscriber).where(Subscriber.email == first[0])).one()
        session.add(Membership(subscriber_id=reader.id, list_id=2))
    summary = send(engine, send_settings, lists=("english",))
    assert summary.sent == 5
    assert smtp_server.received_by_address() == dict.fromkeys(first + second, 1)


def test_dry_run_builds_everything_and_sends_nothing(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    make_audience(engine, 20, names=["Ada", "Eve\r\nBcc: all@example.com"])
    summary = send(engine, send_settings, dry_run=True)
    assert (summary.status, summary.recipients, summary.failed) == ("dry-run", 20, 10)
    assert summary.bytes_built > 20_000 * 0 and "contains a line break" in summary.notes[0]
    assert smtp_server.messages == [] and list_campaigns(engine) == []


def test_a_name_with_a_line_break_fails_that_delivery_only(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 4, names=["Ada", "Eve\nBcc: all@example.com"])
    summary = send(engine, send_settings)
    assert (summary.sent, summary.failed) == (2, 2)
    assert "Bcc" not in b"".join(m.data for m in smtp_server.messages).decode()
    assert "contains a line break" in deliveries(engine)[emails[1]].last_reply


def test_test_copies_are_marked_and_touch_no_campaign(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    make_audience(engine, 3)
    summary = send(engine, send_settings, test_to=("editor@example.org", "boss@example.org"))
    assert (summary.status, summary.sent) == ("test", 2)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == ["boss@example.org", "editor@example.org"]
    for received in smtp_server.messages:
        assert message_from_bytes(received.data, policy=default)["Subject"].startswith("[TEST] ")
    assert list_campaigns(engine) == []
    with session_scope(engine) as session:
        assert session.exec(select(Edition)).one().status == "ready"
    assert send(engine, send_settings, lists=(), test_to=("editor@example.org",)).sent == 1  # no list needed


def test_blocking_preflight_refuses_and_warnings_are_shown(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    make_audience(engine, 3)
    blocked = preflight_with(rendered_edition(), blocking=["the HTML is 130 KB, over the 100 KB budget"])
    with pytest.raises(StateError, match="cannot be sent: the HTML is 130 KB"):
        send_edition(engine, send_settings, SendRequest(SLUG, ("main",)), preflight=blocked)
    notes: list[str] = []

    class Notes:
        def start(self, total: int, done: int) -> None: ...
        def update(self, done: int) -> None: ...
        def note(self, text: str) -> None: notes.append(text)
        def stop(self) -> None: ...

    warned = preflight_with(rendered_edition(), warnings=["item 4 has a placeholder link"])
    send_edition(engine, send_settings, SendRequest(SLUG, ("main",)), preflight=warned, progress=Notes())
    assert notes[0] == "Warning: item 4 has a placeholder link"
    assert len(smtp_server.messages) == 3


def test_unknown_list_or_edition(engine, send_settings) -> None:
    make_edition(engine)
    with pytest.raises(NotFoundError, match="There is no list named 'nope'"):
        send(engine, send_settings, lists=("nope",))
    with pytest.raises(NotFoundError, match="There is no edition with slug 'x'"):
        send(engine, send_settings, slug="x")


def test_declined_confirmation_sends_nothing(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    make_audience(engine, 7)
    asked: list[int] = []
    summary = send_edition(engine, send_settings, SendRequest(SLUG, ("main",)),
                           confirm=lambda n: asked.append(n) or False,  # type: ignore[func-returns-value]
                           preflight=preflight_with(rendered_edition()))
    assert asked == [7] and summary.status == "not-confirmed"
    assert smtp_server.messages == [] and list_campaigns(engine) == []


def test_campaign_status_lists_the_problems(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 5)
    smtp_server.faults.rcpt_replies = {emails[2]: ["550 5.1.1 Unknown user"]}
    send(engine, send_settings)
    status = campaign_status(engine, 1)
    assert status["counts"]["sent"] == 4 and status["counts"]["failed"] == 1
    assert status["problems"] == [{"email": emails[2], "state": "failed", "attempts": 1,
                                   "last_reply": "550 5.1.1 Unknown user", "next_attempt_at": None}]
    assert status["summary"]["failed"] == 1


def test_pacer_spaces_messages_to_the_rate() -> None:
    now = [0.0]
    pacer = Pacer(per_second=10, clock=lambda: now[0])
    delays = [pacer.delay() for _ in range(30)]
    assert delays[:10] == [0.0] * 10  # a burst of one second's worth
    assert delays[10] == pytest.approx(0.1) and delays[29] == pytest.approx(2.0)
    hourly = Pacer(per_hour=3600, clock=lambda: now[0])
    assert [hourly.delay() for _ in range(3)] == [0.0, pytest.approx(1.0), pytest.approx(2.0)]
    assert parse_rate("50/s") == 50 and parse_rate("120/min") == 2 and parse_rate("7200/h") == 2
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate("fast")


def test_rate_limit_slows_the_send(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    make_audience(engine, 30)
    started = time.monotonic()
    send(engine, send_settings, rate_per_second=20.0)
    # 30 messages at 20/s with a one-second burst: at least half a second. (A bound, not a timing test.)
    assert time.monotonic() - started >= 0.5
    assert len(smtp_server.messages) == 30


def test_subscriber_status_changes_mid_send_are_skipped(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 4)
    campaign_id = start_campaign(engine)  # the recipients are frozen; then a status changes
    with session_scope(engine) as session:
        session.execute(update(Subscriber).where(Subscriber.email == emails[0])  # type: ignore[arg-type]
                        .values(status=SubscriberStatus.BOUNCED))
    summary = resume_campaign(engine, send_settings, campaign_id)
    assert (summary.sent, summary.skipped) == (3, 1)
    assert emails[0] not in smtp_server.received_by_address()
