"""The freeze: one INSERT ... SELECT in the database writes exactly the recipients the selection
names (lists, segment, suppression, once per address) less those an earlier campaign of the
edition sent or may have sent, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from tests.dispatch_helpers import make_audience, make_edition, rendered_edition, start_campaign
from wip_mailer.audience import count_recipients, select_recipients, suppress
from wip_mailer.db import session_scope, utcnow
from wip_mailer.dispatch import SendRequest, ledger
from wip_mailer.dispatch.campaign import _start_campaign
from wip_mailer.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryState,
    MailingList,
    Membership,
    Subscriber,
)

SEGMENT = "not domain=skip.example"


def _audience(engine: Engine) -> dict[str, int]:
    """Two overlapping lists, a segment's worth of outsiders, a suppressed address."""
    make_audience(engine, 30, "main")
    make_audience(engine, 10, "extra", start=100)
    make_audience(engine, 5, "outsiders", domain="skip.example")
    with session_scope(engine) as session:
        ids = dict(session.execute(sa.select(Subscriber.email, Subscriber.id)).all())
        lists = dict(session.execute(sa.select(MailingList.name, MailingList.id)).all())
        both = [(f"reader{n:06d}@example.net", "extra") for n in range(20, 30)]  # on both lists
        outside = [(f"reader{n:06d}@skip.example", "main") for n in range(5)]  # the segment leaves out
        for email, name in both + outside:
            session.add(Membership(subscriber_id=ids[email], list_id=lists[name], status="active",
                                   subscribed_at=utcnow()))
        suppress(session, "reader000003@example.net", "manual")
    return ids


def _earlier_campaign(engine: Engine, ids: dict[str, int]) -> set[int]:
    """A finished campaign of the same edition; returns whom it sent (or may have sent) to."""
    states = {"reader000001@example.net": DeliveryState.SENT,
              "reader000002@example.net": DeliveryState.IN_DOUBT,
              "reader000021@example.net": DeliveryState.SENT,
              "reader000004@example.net": DeliveryState.FAILED,
              "reader000005@example.net": DeliveryState.SKIPPED}
    with session_scope(engine) as session:
        campaign = Campaign(edition_id=1, status=CampaignStatus.FINISHED, audience={}, subject="s",
                            body_html="h", body_text="t")
        session.add(campaign)
        session.flush()
        for email, state in states.items():
            session.add(Delivery(campaign_id=campaign.id, subscriber_id=ids[email], email=email, state=state))
    return {ids[e] for e, s in states.items() if s in (DeliveryState.SENT, DeliveryState.IN_DOUBT)}


def _check_freeze(engine: Engine) -> None:
    make_edition(engine)
    ids = _audience(engine)
    sent_before = _earlier_campaign(engine, ids)
    lists = ("main", "extra")
    with session_scope(engine) as session:
        expected = [(r.subscriber_id, r.list_id, r.email) for r in select_recipients(session, lists, SEGMENT)
                    if r.subscriber_id not in sent_before]
        counted = count_recipients(session, lists, SEGMENT, (ledger.not_already_sent(1),))
        assert ledger.edition_was_sent(session, 1)
    # 40 addresses on the lists, less the suppressed one and the 3 sent or in doubt before (a
    # failed or skipped delivery is tried again); no outsider, nobody twice.
    assert len(expected) == counted == 36
    assert len({subscriber for subscriber, _, _ in expected}) == 36

    with session_scope(engine) as session:
        resolved = [session.execute(sa.select(MailingList).where(MailingList.name == name)).scalar_one()
                    for name in lists]
        for mailing_list in resolved:
            session.expunge(mailing_list)
    campaign_id = _start_campaign(engine, 1, SendRequest("2024-01", lists, segment=SEGMENT), resolved,
                                  rendered_edition())
    with session_scope(engine) as session:
        frozen = session.execute(
            sa.select(Delivery.subscriber_id, Delivery.list_id, Delivery.email, Delivery.state,
                      Delivery.attempts)
            .where(Delivery.campaign_id == campaign_id).order_by(Delivery.id)).all()
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None and campaign.recipient_count == 36
    # In subscriber order (the ledger's ids follow it), each queued and not yet tried.
    assert [(s, li, e) for s, li, e, _, _ in frozen] == expected
    assert {(state, attempts) for *_, state, attempts in frozen} == {(DeliveryState.QUEUED, 0)}


def test_the_freeze_writes_exactly_the_selection_on_sqlite(engine) -> None:
    _check_freeze(engine)


@pytest.mark.postgres
def test_the_freeze_writes_exactly_the_selection_on_postgresql(pg_engine) -> None:
    _check_freeze(pg_engine)


def test_a_second_freeze_of_a_fully_sent_edition_finds_nobody(engine) -> None:
    make_edition(engine)
    make_audience(engine, 3)
    campaign_id = start_campaign(engine)
    with session_scope(engine) as session:
        session.execute(sa.update(Delivery).where(Delivery.campaign_id == campaign_id)
                        .values(state=DeliveryState.SENT))
        session.execute(sa.update(Campaign).values(status=CampaignStatus.FINISHED))
    with session_scope(engine) as session:
        assert count_recipients(session, ("main",), None, (ledger.not_already_sent(1),)) == 0
        assert count_recipients(session, ("main",)) == 3
