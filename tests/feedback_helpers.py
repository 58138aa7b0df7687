"""The world the bounce fixtures (tests/data/bounces/) were written for.

The fixtures carry VERP addresses and Message-IDs signed with FIXTURE_SECRET for
campaign 7, deliveries 101-112; the mailto unsubscribe carries the unsubscribe token of
subscriber 13 on list 1. ``fixture_world`` builds exactly those rows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sqlalchemy import Engine, insert

from wip_mailer.db import session_scope, utcnow
from wip_mailer.models import Campaign, Delivery, Edition, MailingList, Membership, Subscriber
from wip_mailer.settings import Settings

BOUNCES = Path(__file__).resolve().parent / "data" / "bounces"
FIXTURE_SECRET = "fixture-secret-key-0123456789abcdef"

# fixture file -> (kind, address, delivery id)
EXPECTED = {
    "postfix.eml": ("hard", "anna.rossi@example.net", 101),
    "exim.eml": ("hard", "bruno.bianchi@example.net", 102),
    "sendmail.eml": ("hard", "carla.verdi@example.com", 103),
    "qmail.eml": ("hard", "dario.neri@example.net", 104),
    "office365.eml": ("hard", "elena.gallo@contoso.example", 105),
    "gmail.eml": ("hard", "fabio.costa.x@gmail.com", 106),
    "amazon-ses.eml": ("hard", "giulia.ferri@example.com", 107),
    "rfc3464.eml": ("hard", "ivo.moretti@no-such-host.example", 108),
    "mailbox-full.eml": ("soft", "laura.conti@example.net", 109),
    "delay.eml": ("delay", "marco.fontana@example.net", 110),
    "out-of-office.eml": ("auto-reply", None, 111),
    "arf-yahoo.eml": ("complaint", "olga.marino@yahoo.example", 112),
    "mailto-unsubscribe.eml": ("unsubscribe", None, None),
}
SUBSCRIBERS = [
    "anna.rossi@example.net", "bruno.bianchi@example.net", "carla.verdi@example.com",
    "dario.neri@example.net", "elena.gallo@contoso.example", "fabio.costa.x@gmail.com",
    "giulia.ferri@example.com", "ivo.moretti@no-such-host.example", "laura.conti@example.net",
    "marco.fontana@example.net", "nadia.ricci@example.com", "olga.marino@yahoo.example",
    "paolo.sala@example.net",
]  # subscriber ids 1-13; subscriber n got delivery 100 + n


def fixture_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, secret_key=FIXTURE_SECRET, bounce_address="bounces@example.org",
                               sender="Work in Progress <newsletter@example.org>")


def fixture_world(engine: Engine) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        session.add(Edition(id=1, slug="2026-12", title="Dicembre 2026"))
        session.add(MailingList(id=1, name="main"))
        session.flush()
        session.add(Campaign(id=7, edition_id=1, audience={"lists": ["main"]}, status="finished",
                             recipient_count=12))
        session.execute(insert(Subscriber), [
            {"id": n, "email": email, "name": "", "tags": [], "attributes": {}, "status": "active",
             "created_at": now, "updated_at": now} for n, email in enumerate(SUBSCRIBERS, 1)])
        session.execute(insert(Membership), [
            {"subscriber_id": n, "list_id": 1, "status": "active", "subscribed_at": now}
            for n in range(1, len(SUBSCRIBERS) + 1)])
        session.flush()
        session.execute(insert(Delivery), [
            {"id": 100 + n, "campaign_id": 7, "subscriber_id": n, "list_id": 1, "email": email,
             "state": "sent", "attempts": 1, "last_reply": "250 OK", "updated_at": now, "sent_at": now}
            for n, email in enumerate(SUBSCRIBERS[:12], 1)])
