"""Operator control of campaigns from any process: pause, cancel, an edition stuck in sending,
and reading a campaign's state (whether its sender is alive, interrupted or gone).

A running send is asked to stop through ``campaign.stop_request``, which its runner polls
every second; everything that changes a campaign nobody is sending first takes the
campaign's lease, so it cannot race a `campaigns resume`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from wip_mailer.db import session_scope, utcnow
from wip_mailer.dispatch import ledger
from wip_mailer.dispatch.campaign import ACTIVE, campaign_lease
from wip_mailer.editorial import get_edition, set_edition_status
from wip_mailer.errors import NotFoundError, StateError
from wip_mailer.lease import LEASE, Holder, live_holder
from wip_mailer.models import Campaign, CampaignStatus, Delivery, DeliveryState, Edition, EditionStatus
from wip_mailer.settings import Settings

STOP_WAIT_SECONDS = 30.0  # a sender finishes its messages in flight well within this
CANCELLED_REPLY = "skipped: the campaign was cancelled (`wip-mailer campaigns cancel`)"


# --- who is sending ----------------------------------------------------------------------

def live_sender(connection: sa.Connection | Engine, campaign_id: int) -> Holder | None:
    """The process sending the campaign now, or None (nobody; or its lease expired, or its
    process is gone from this host). With workers (``workers``), one of those holding rows."""
    single = live_holder(connection, f"campaign:{campaign_id}")
    if single is not None:
        return single
    workers = live_workers(connection, campaign_id)
    return live_holder(connection, f"worker:{workers[0]}") if workers else None


def live_workers(connection: sa.Connection | Engine, campaign_id: int) -> list[str]:
    """The live workers holding claimed rows of the campaign (their tokens)."""
    if isinstance(connection, Engine):
        with connection.connect() as own:
            return live_workers(own, campaign_id)
    alive, _ = ledger.claimants(connection, campaign_id)
    return sorted(token for token in alive
                  if live_holder(connection, f"worker:{token}") is not None)


def relay_counts(connection: sa.Connection | Session, campaign_id: int) -> dict[str, int]:
    """Messages sent through each relay (``WIP_MAILER_SMTP_RELAYS``)."""
    return {relay or "?": number for relay, number in connection.execute(
        sa.select(col(Delivery.relay), sa.func.count())
        .where(col(Delivery.campaign_id) == campaign_id, col(Delivery.state) == DeliveryState.SENT)
        .group_by(col(Delivery.relay)).order_by(col(Delivery.relay)))}


def _last_activity(session: Session, campaign_id: int) -> Any:
    return session.execute(sa.select(sa.func.max(col(Delivery.updated_at)))
                           .where(col(Delivery.campaign_id) == campaign_id)).scalar()


GMAIL_COMPLAINT_LIMIT = 0.003  # Gmail's sender guidelines: keep spam reports below 0.3%


def _bounce_counts(session: Session, campaign_id: int, counts: dict[str, int]) -> dict[str, Any]:
    """Hard and soft bounces (at send time and read back later) and complaints, with their rates:
    bounces over the messages handed over (sent + failed), complaints over those sent."""
    from wip_mailer.models import BounceEvent

    found: dict[str, int] = {kind: number for kind, number in session.execute(
        sa.select(col(BounceEvent.kind), sa.func.count(sa.distinct(col(BounceEvent.delivery_id))))
        .join(Delivery, col(Delivery.id) == col(BounceEvent.delivery_id))
        .where(col(Delivery.campaign_id) == campaign_id).group_by(col(BounceEvent.kind)))}
    handed_over = counts.get("sent", 0) + counts.get("failed", 0)
    hard, soft, complaints = found.get("hard", 0), found.get("soft", 0), found.get("complaint", 0)
    return {"hard": hard, "soft": soft, "complaints": complaints,
            "hard_rate": hard / handed_over if handed_over else 0.0,
            "soft_rate": soft / handed_over if handed_over else 0.0,
            "complaint_rate": complaints / counts["sent"] if counts.get("sent") else 0.0,
            "complaint_limit": GMAIL_COMPLAINT_LIMIT}


def _campaign_row(session: Session, campaign: Campaign, slug: str) -> dict[str, Any]:
    assert campaign.id is not None
    counts = ledger.state_counts(session, campaign.id)
    sender = live_sender(session.connection(), campaign.id)
    interrupted = campaign.status == CampaignStatus.SENDING and sender is None
    return {
        "id": campaign.id, "edition": slug, "status": campaign.status,
        "lists": campaign.audience.get("lists", []), "segment": campaign.audience.get("segment"),
        "recipients": campaign.recipient_count, "counts": counts,
        "bounces": _bounce_counts(session, campaign.id, counts),
        "created_at": campaign.created_at, "started_at": campaign.started_at,
        "finished_at": campaign.finished_at,
        "sender": str(sender) if sender else None,
        "workers": live_workers(session.connection(), campaign.id),
        "relays": relay_counts(session, campaign.id),
        "sender_lease_until": sender.expires_at if sender else None,
        # "sending" in the database, but its sender is gone: `campaigns resume` takes over.
        "interrupted": interrupted,
        "last_activity_at": _last_activity(session, campaign.id) if interrupted else None,
    }


# --- pause and cancel ----------------------------------------------------------------------

def _load(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError(f"There is no campaign {campaign_id}.")
    return campaign


def _ask_sender_to_stop(engine: Engine, campaign_id: int, request: str, wait: float) -> None:
    """Ask the live sender to stop and wait until it has given the campaign back."""
    with engine.begin() as connection:
        connection.execute(sa.update(Campaign).where(col(Campaign.id) == campaign_id)
                           .values(stop_request=request))
    deadline = time.monotonic() + wait
    while live_sender(engine, campaign_id) is not None:
        if time.monotonic() > deadline:
            raise StateError(f"Campaign {campaign_id}'s sender has not stopped within {wait:.0f} s; "
                             "it will stop after its messages in flight: look again with "
                             f"`wip-mailer campaigns status {campaign_id}`.")
        time.sleep(0.1)


def _settle_alone(engine: Engine, settings: Settings, campaign_id: int, status: CampaignStatus,
                  reply: str | None = None) -> None:
    """With the lease held: settle a dead sender's rows, then store ``status`` (and skip the
    rows never sent when cancelling)."""
    lease = campaign_lease(engine, settings, campaign_id)
    if lease.acquire() is not None:
        raise StateError(f"Campaign {campaign_id} is being sent right now by another process; try again.")
    try:
        ledger.recover_orphans(engine, campaign_id, Path(settings.journal_dir))
    except BaseException:
        lease.release()
        raise

    def store(connection: sa.Connection) -> None:
        if reply is not None:
            connection.execute(
                sa.update(Delivery)
                .where(col(Delivery.campaign_id) == campaign_id,
                       col(Delivery.state).in_([DeliveryState.QUEUED, DeliveryState.DEFERRED]))
                .values(state=DeliveryState.SKIPPED, last_reply=reply, next_attempt_at=None, worker=None,
                        updated_at=utcnow()))
        values: dict[str, Any] = {"status": status, "stop_request": None}
        if status == CampaignStatus.CANCELLED:
            values["finished_at"] = utcnow()
        connection.execute(sa.update(Campaign).where(col(Campaign.id) == campaign_id).values(**values))

    lease.release(then=store)


def pause_campaign(engine: Engine, settings: Settings, campaign_id: int, *,
                   wait: float = STOP_WAIT_SECONDS) -> dict[str, Any]:
    """`campaigns pause`: the sender (in any process, on any host) finishes its messages in
    flight and stops; an interrupted campaign is simply marked paused."""
    with session_scope(engine) as session:
        status = _load(session, campaign_id).status
    if status == CampaignStatus.PAUSED:
        raise StateError(f"Campaign {campaign_id} is already paused; resume it with "
                         f"`wip-mailer campaigns resume {campaign_id}`.")
    if status != CampaignStatus.SENDING:
        raise StateError(f"Campaign {campaign_id} is {status}; only a campaign being sent can be paused.")
    # Asked even when nobody holds rows right now: idle workers must not claim meanwhile.
    _ask_sender_to_stop(engine, campaign_id, "pause", wait)
    with session_scope(engine) as session:
        still_sending = _load(session, campaign_id).status == CampaignStatus.SENDING
    if still_sending:  # nobody was sending it (interrupted), or its sender died meanwhile
        _settle_alone(engine, settings, campaign_id, CampaignStatus.PAUSED)
    return campaign_status(engine, campaign_id)


def cancel_campaign(engine: Engine, settings: Settings, campaign_id: int, *,
                    wait: float = STOP_WAIT_SECONDS) -> dict[str, Any]:
    """`campaigns cancel`: stop the campaign for good. Its queued and deferred deliveries
    become ``skipped``; what was sent stays sent; it can never be resumed."""
    with session_scope(engine) as session:
        status = _load(session, campaign_id).status
    if status not in ACTIVE:
        raise StateError(f"Campaign {campaign_id} is {status}; only a campaign being sent or paused "
                         "can be cancelled.")
    if status == CampaignStatus.SENDING:
        _ask_sender_to_stop(engine, campaign_id, "cancel", wait)
    _settle_alone(engine, settings, campaign_id, CampaignStatus.CANCELLED, CANCELLED_REPLY)
    with session_scope(engine) as session:
        campaign = _load(session, campaign_id)
        edition = session.get(Edition, campaign.edition_id)
        if edition is not None and edition.status == EditionStatus.SENDING:
            sent = ledger.edition_was_sent(session, campaign.edition_id)
            set_edition_status(session, edition, EditionStatus.SENT if sent else EditionStatus.READY)
    return campaign_status(engine, campaign_id)


# --- an edition stuck in sending ----------------------------------------------------------

def return_edition(session: Session, slug: str, status: str) -> Edition:
    """`editions set-status`: the editorial status change, after closing the campaigns of an
    edition stuck in ``sending`` by a send that failed before any message went out.

    A campaign that handed any message to the server (sent, in doubt, being sent) must be
    resumed instead; one whose lease a live sender holds is left alone.
    """
    edition = get_edition(session, slug)
    if edition.status == EditionStatus.SENDING and status != EditionStatus.SENT:
        _cancel_unsent_campaigns(session, edition, status)
    return set_edition_status(session, edition, status)


def _cancel_unsent_campaigns(session: Session, edition: Edition, target: str) -> None:
    assert edition.id is not None
    handed_over = (DeliveryState.SENT, DeliveryState.IN_DOUBT, DeliveryState.SENDING)
    now = utcnow()
    for campaign in session.exec(select(Campaign).where(Campaign.edition_id == edition.id,
                                                        col(Campaign.status).in_(ACTIVE))).all():
        started = ledger.state_counts(session, campaign.id)  # type: ignore[arg-type]
        handed = sum(started[state] for state in handed_over)
        if handed:
            raise StateError(
                f"Edition '{edition.slug}' cannot become {target}: campaign {campaign.id} has already handed "
                f"{handed} message(s) to the mail server; finish it with `wip-mailer campaigns resume "
                f"{campaign.id}`.")
        live_sender = sa.exists().where(LEASE.c.name == f"campaign:{campaign.id}", LEASE.c.expires_at >= now)
        closed = session.execute(
            sa.update(Campaign)
            .where(col(Campaign.id) == campaign.id, col(Campaign.status).in_(ACTIVE), ~live_sender)
            .values(status=CampaignStatus.CANCELLED, finished_at=now,
                    summary={**campaign.summary, "status": CampaignStatus.CANCELLED.value, "notes": [
                        f"Cancelled when the edition went back to {target}: nothing was sent."]})
            .execution_options(synchronize_session=False))
        if getattr(closed, "rowcount", 0) != 1:
            raise StateError(f"Edition '{edition.slug}' is being sent right now by campaign {campaign.id}; "
                             f"it cannot become {target}.")
        session.expire(campaign)


# --- reading campaigns --------------------------------------------------------------------

def list_campaigns(engine: Engine) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        rows = session.execute(
            sa.select(Campaign, col(Edition.slug)).join(Edition, col(Edition.id) == col(Campaign.edition_id))
            .order_by(col(Campaign.id))
        ).all()
        return [_campaign_row(session, campaign, slug) for campaign, slug in rows]


def campaign_status(engine: Engine, campaign_id: int, problems: int = 50) -> dict[str, Any]:
    """A campaign's progress and, for the deliveries not sent, their last reply."""
    from wip_mailer.models import Delivery, DeliveryState

    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise NotFoundError(f"There is no campaign {campaign_id}.")
        edition = session.get(Edition, campaign.edition_id)
        row = _campaign_row(session, campaign, edition.slug if edition else "?")
        row["summary"] = campaign.summary
        troubled = session.exec(
            select(Delivery).where(Delivery.campaign_id == campaign_id,
                                   col(Delivery.state).in_([DeliveryState.FAILED, DeliveryState.DEFERRED,
                                                            DeliveryState.IN_DOUBT]))
            .order_by(col(Delivery.id)).limit(problems)
        ).all()
        row["problems"] = [{"email": d.email, "state": d.state, "attempts": d.attempts,
                            "last_reply": d.last_reply, "next_attempt_at": d.next_attempt_at}
                           for d in troubled]
        return row
