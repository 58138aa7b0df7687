"""Builders for the report tests: an audience spread over several receiving domains, the
one-click link a received message carries, and DSN and ARF reports about received messages
(the bounce fixtures' layouts, tests/data/bounces/, addressed to our real VERP addresses)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from sqlalchemy import Engine, insert, select

from tests.smtp_server import ReceivedMessage
from wip_mailer.db import session_scope, utcnow
from wip_mailer.models import MailingList, Membership, Subscriber


def make_domains_audience(engine: Engine, per_domain: Mapping[str, int], list_name: str = "main", *,
                          languages: tuple[str, ...] = ("it", "en"),
                          countries: tuple[str, ...] = ("IT", "FR", "DE")) -> dict[str, int]:
    """Active subscribers of one list, ``per_domain[domain]`` at each domain: {email: id}."""
    now = utcnow()
    emails = [f"reader{n:05d}@{domain}" for domain, count in per_domain.items() for n in range(count)]
    with session_scope(engine) as session:
        mailing_list = MailingList(name=list_name)
        session.add(mailing_list)
        session.flush()
        session.execute(insert(Subscriber), [
            {"email": email, "name": f"Lettore {i}", "language": languages[i % len(languages)],
             "country": countries[i % len(countries)], "tags": [], "attributes": {},
             "created_at": now, "updated_at": now} for i, email in enumerate(emails)])
        table = Subscriber.__table__  # type: ignore[attr-defined]
        ids = {email: sid for email, sid in session.execute(
            select(table.c.email, table.c.id).where(table.c.email.in_(emails)))}
        session.execute(insert(Membership), [
            {"subscriber_id": ids[email], "list_id": mailing_list.id, "status": "active",
             "subscribed_at": now}
            for email in emails])
    return ids


def one_click_url(message: ReceivedMessage) -> str:
    """The https (here http on loopback) target of the message's List-Unsubscribe header."""
    header = str(message.message["List-Unsubscribe"])
    found = re.search(r"<(https?://[^>]+)>", header)
    assert found, header
    return found.group(1)


def dsn(message: ReceivedMessage, status: str, diagnostic: str) -> bytes:
    """An RFC 3464 delivery status notification about ``message``, sent to its VERP address."""
    verp, recipient = message.mail_from, message.rcpt_tos[0]
    original = message.message
    return (
        f"Return-Path: <>\r\nDelivered-To: {verp}\r\nDate: Thu, 3 Dec 2026 10:02:11 +0100\r\n"
        f"From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example.org>\r\nTo: {verp}\r\n"
        "Subject: Returned mail: see transcript\r\n"
        f"Message-ID: <dsn.{status}.{recipient}@relay.example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n"
        ' boundary="BOUNDARY"\r\n\r\n--BOUNDARY\r\n\r\nYour message could not be delivered.\r\n\r\n'
        "--BOUNDARY\r\ncontent-type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.example.org\r\n\r\n"
        f"Final-Recipient: rfc822;{recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        "--BOUNDARY\r\ncontent-type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <{verp}>\r\nMessage-ID: {original['Message-ID']}\r\nTo: <{recipient}>\r\n\r\n"
        "--BOUNDARY--\r\n").encode()


def arf(message: ReceivedMessage) -> bytes:
    """An ARF (RFC 5965) abuse report about ``message``, as a mailbox provider sends it."""
    verp, recipient = message.mail_from, message.rcpt_tos[0]
    original = message.message
    return (
        "Return-Path: <feedback@arf.mail.example>\r\nFrom: AntiSpam Feedback <feedback@arf.mail.example>\r\n"
        f"To: bounces@example.org\r\nSubject: FW: report\r\nDate: 3 Dec 2026 10:31:22 -0000\r\n"
        f"Message-ID: <arf.{recipient}@arf.mail.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report;\r\n boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\r\n"
        "--B\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nVersion: 1\r\n"
        f"Original-Mail-From: <{verp}>\r\nOriginal-Rcpt-To: <{recipient}>\r\n\r\n"
        f"--B\r\nContent-Type: message/rfc822\r\n\r\nReturn-Path: <{verp}>\r\n"
        f"Message-ID: {original['Message-ID']}\r\nTo: {recipient}\r\nSubject: Work in Progress\r\n\r\n"
        "Il numero.\r\n\r\n--B--\r\n").encode()
