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


SYNTHETIC_DOMAINS = ("gmail.com", "outlook.com", "libero.it", "comune.torino.it", "yahoo.it", "lyon.fr",
                     "bordeaux.fr", "hotmail.com", "icloud.com", "gmx.de", "web.de", "orange.fr",
                     "alice.it", "tiscali.it", "pec.it", "unito.it", "polito.it", "regione.piemonte.it",
                     "esteri.it", "europa.eu")


def synthetic_campaign(engine: Engine, recipients: int, *, seed: int = 7) -> int:
    """A finished campaign of ``recipients`` deliveries written straight into the tables, as a
    long send leaves them: most sent at the first try, some after 4xx retries, a few failed,
    in doubt or skipped, over ~recipients/2000 s with a 60 s pause in the middle; hard and
    soft bounces, two complaints, one-click unsubscribes naming the campaign. Returns its id."""
    import random
    from datetime import timedelta

    from wip_mailer.models import BounceEvent, Campaign, ConsentEvent, Delivery, Edition

    rng = random.Random(seed)
    start = utcnow().replace(microsecond=0) - timedelta(days=1)
    last = len(SYNTHETIC_DOMAINS) - 1
    emails = [f"r{n:07d}@{SYNTHETIC_DOMAINS[min(int(rng.paretovariate(1.2)) - 1, last)]}"
              for n in range(recipients)]  # a few big domains, a long tail
    with session_scope(engine) as session:
        session.add(MailingList(name=f"synthetic-{seed}"))
        edition = Edition(slug=f"synthetic-{seed}", title="Synthetic", status="sent")
        session.add(edition)
        session.flush()
        campaign = Campaign(edition_id=edition.id, audience={"lists": [f"synthetic-{seed}"]},
                            status="finished", recipient_count=recipients, started_at=start, created_at=start,
                            finished_at=start + timedelta(seconds=recipients / 2000 + 120))
        session.add(campaign)
        session.flush()
        campaign_id = campaign.id
        assert campaign_id is not None
    now = utcnow()
    table = Subscriber.__table__  # type: ignore[attr-defined]
    rows, deliveries = [], []
    with engine.begin() as connection:
        connection.execute(insert(table), [
            {"email": e, "name": "", "language": "it", "country": "IT", "tags": [], "attributes": {},
             "created_at": now, "updated_at": now} for e in emails])
        wanted = set(emails)
        ids = {email: sid for email, sid in connection.execute(select(table.c.email, table.c.id))
               if email in wanted}
        for n, email in enumerate(emails):
            at = n / 2000 + (60 if n > recipients // 2 else 0)  # 2,000 a second, a pause halfway
            roll = rng.random()
            first = start + timedelta(seconds=at)
            state, attempts, sent = "sent", 1, first + timedelta(seconds=rng.uniform(0.01, 0.3))
            if roll < 0.08:  # deferred (451) once or twice, then sent
                attempts = rng.choice((2, 3))
                sent = first + timedelta(seconds=attempts * 30 + rng.uniform(0, 5))
            elif roll < 0.09:
                state, sent = "failed", None
            elif roll < 0.0905:
                state, sent = "in_doubt", None
            elif roll < 0.092:
                state, sent, first = "skipped", None, None
            deliveries.append({"campaign_id": campaign_id, "subscriber_id": ids[email], "list_id": None,
                               "email": email, "state": state, "attempts": attempts if first else 0,
                               "first_attempt_at": first, "sent_at": sent, "last_reply": "",
                               "updated_at": sent or first or now})
        delivery_table = Delivery.__table__  # type: ignore[attr-defined]
        for chunk in range(0, len(deliveries), 20000):
            connection.execute(insert(delivery_table), deliveries[chunk:chunk + 20000])
        written = connection.execute(select(delivery_table.c.id, delivery_table.c.state)
                                     .where(delivery_table.c.campaign_id == campaign_id)).all()
        for delivery_id, state in written:
            roll = rng.random()
            kind = ("hard" if state == "failed" and roll < 0.5 else "soft" if roll < 0.004
                    else "complaint" if roll < 0.00402 else None)
            if kind:
                rows.append({"delivery_id": delivery_id, "email_hash": f"{delivery_id:064d}", "kind": kind,
                             "diagnostic": "", "status": "5.1.1" if kind == "hard" else "",
                             "source": "smtp" if kind == "hard" else "dsn", "received_at": now})
        if rows:
            connection.execute(insert(BounceEvent.__table__), rows)  # type: ignore[attr-defined]
        leavers = rng.sample(sorted(ids.values()), max(1, recipients // 300))
        connection.execute(insert(ConsentEvent.__table__), [  # type: ignore[attr-defined]
            {"subscriber_id": sid, "list_id": None, "kind": "unsubscribe", "source": "one-click (RFC 8058)",
             "campaign_id": campaign_id, "at": start + timedelta(hours=rng.uniform(0, 240))}
            for sid in leavers])
    return campaign_id
