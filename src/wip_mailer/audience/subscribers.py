"""Subscribers: adding, removing, showing, listing, exporting; GDPR access and erasure."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from wip_mailer.audience.addresses import (
    normalise_country,
    normalise_email,
    normalise_language,
    normalise_tags,
)
from wip_mailer.audience.bounces import bounce_history
from wip_mailer.audience.confirmation import ConfirmationRequest, send_confirmations
from wip_mailer.audience.consent import Actor, EventKind, JoinOutcome, join_list, record_event, unsubscribe
from wip_mailer.audience.csv_export import EXPORT_COLUMNS, export_csv
from wip_mailer.audience.lists import get_list
from wip_mailer.audience.segments import segment_filter
from wip_mailer.audience.suppression import suppress, suppression_reason
from wip_mailer.db import session_scope, utcnow
from wip_mailer.errors import InvalidInputError, NotFoundError, StateError
from wip_mailer.fields import check_single_line
from wip_mailer.models import (
    ConsentEvent,
    Delivery,
    InboundMessage,
    MailingList,
    Membership,
    Subscriber,
)
from wip_mailer.settings import Settings

__all__ = ["EXPORT_COLUMNS", "Profile", "add_subscriber", "erase_subscriber", "export_csv",
           "export_personal_data", "find_subscriber", "iter_subscribers", "remove_subscriber",
           "show_subscriber"]



@dataclass(frozen=True)
class Profile:
    """Optional subscriber fields; None leaves a field as it is."""

    name: str | None = None
    language: str | None = None
    organisation: str | None = None
    country: str | None = None
    tags: Sequence[str] | None = None
    attributes: dict[str, Any] | None = None

    def normalised(self) -> Profile:
        if self.name is not None:
            check_single_line("subscriber name", self.name)  # it goes into the To: header
        for key, value in (self.attributes or {}).items():
            check_single_line("attribute name", str(key), show=True)
            if isinstance(value, str):
                check_single_line(f"value of the attribute {key!r}", value)
        return Profile(
            name=None if self.name is None else " ".join(self.name.split()),
            language=None if self.language is None else normalise_language(self.language),
            organisation=None if self.organisation is None else " ".join(self.organisation.split()),
            country=None if not self.country else normalise_country(self.country),
            tags=None if self.tags is None else normalise_tags(list(self.tags)),
            attributes=self.attributes,
        )


@dataclass
class AddResult:
    email: str
    created: bool
    outcomes: dict[str, JoinOutcome] = field(default_factory=dict)
    confirmations_sent: int = 0


def find_subscriber(session: Session, email: str) -> Subscriber:
    address = _lookup_form(email)
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if subscriber is None:
        raise NotFoundError(f"There is no subscriber {address}.")
    return subscriber


def _lookup_form(email: str) -> str:
    """The stored form of an address typed by an admin (tolerating one we could not validate)."""
    try:
        return normalise_email(email)
    except InvalidInputError:
        return email.strip().lower()


def _apply_profile(subscriber: Subscriber, profile: Profile) -> None:
    for key in ("name", "language", "organisation", "country"):
        value = getattr(profile, key)
        if value is not None:
            setattr(subscriber, key, value)
    if profile.tags is not None:
        subscriber.tags = sorted(set(subscriber.tags) | set(profile.tags))
    if profile.attributes:
        subscriber.attributes = {**subscriber.attributes, **profile.attributes}


def add_subscriber(engine: Engine, settings: Settings, email: str, list_names: Sequence[str], *,
                   profile: Profile = Profile(), confirmed: bool = False, source: str = "cli") -> AddResult:
    """Add (or update) a subscriber and put them on lists, then send confirmation emails.

    On a double opt-in list the membership stays pending until the link in the emailed
    confirmation is followed, unless ``confirmed`` says the admin holds proof of consent.
    """
    address = normalise_email(email)
    profile = profile.normalised()
    requests: list[ConfirmationRequest] = []
    with session_scope(engine) as session:
        reason = suppression_reason(session, address)
        if reason is not None:
            raise StateError(f"{address} is on the suppression list ({reason}) and cannot be added.")
        lists = [get_list(session, name) for name in list_names]
        subscriber = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
        created = subscriber is None
        if subscriber is None:
            subscriber = Subscriber(email=address, language=lists[0].language if lists else "it")
        _apply_profile(subscriber, profile)
        subscriber.updated_at = utcnow()
        session.add(subscriber)
        session.flush()
        assert subscriber.id is not None
        result = AddResult(email=address, created=created)
        actor = Actor(source=source, text_version=settings.consent_version)
        for mailing_list in lists:
            outcome = join_list(session, subscriber, mailing_list, confirmed=confirmed, actor=actor)
            result.outcomes[mailing_list.name] = outcome
        # A pending membership (new or not) gets a (fresh) confirmation email.
        for mailing_list in lists:
            membership = session.exec(select(Membership).where(
                Membership.subscriber_id == subscriber.id, Membership.list_id == mailing_list.id)).one()
            if membership.status == "pending":
                assert mailing_list.id is not None
                result.outcomes[mailing_list.name] = JoinOutcome.PENDING
                requests.append(ConfirmationRequest(
                    subscriber.id, mailing_list.id, address, subscriber.name, subscriber.language,
                    mailing_list.name, mailing_list.description))
    result.confirmations_sent = send_confirmations(settings, requests)
    return result


def remove_subscriber(session: Session, email: str, list_name: str | None, *, source: str = "cli") -> bool:
    """Unsubscribe on the person's behalf (a request by phone or email); history is kept."""
    subscriber = find_subscriber(session, email)
    list_id = get_list(session, list_name).id if list_name else None
    assert subscriber.id is not None
    return unsubscribe(session, subscriber.id, list_id, source=source)


def _memberships(session: Session, subscriber_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        sa.select(col(MailingList.name), col(Membership.status), col(Membership.subscribed_at),
                  col(Membership.confirmed_at), col(Membership.unsubscribed_at))
        .join(MailingList, col(MailingList.id) == col(Membership.list_id))
        .where(col(Membership.subscriber_id) == subscriber_id)
        .order_by(col(MailingList.name))
    )
    return [
        {"list": name, "status": status, "subscribed_at": sub, "confirmed_at": conf, "unsubscribed_at": unsub}
        for name, status, sub, conf, unsub in rows
    ]


def _profile_dict(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "language": subscriber.language,
        "organisation": subscriber.organisation,
        "country": subscriber.country,
        "tags": subscriber.tags,
        "attributes": subscriber.attributes,
        "status": subscriber.status,
        "created_at": subscriber.created_at,
        "updated_at": subscriber.updated_at,
    }


def _consent_events(session: Session, subscriber_id: int) -> list[dict[str, Any]]:
    list_names = dict(session.execute(sa.select(col(MailingList.id), col(MailingList.name))).all())
    events = session.exec(select(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber_id)
                          .order_by(col(ConsentEvent.at), col(ConsentEvent.id))).all()
    return [{"kind": e.kind, "list": list_names.get(e.list_id) if e.list_id else None, "at": e.at,
             "source": e.source, "ip": e.ip, "user_agent": e.user_agent, "text_version": e.text_version}
            for e in events]


def show_subscriber(session: Session, email: str) -> dict[str, Any]:
    """The subscriber's fields, status, memberships and history (consent events, bounces)."""
    subscriber = find_subscriber(session, email)
    assert subscriber.id is not None
    info = _profile_dict(subscriber)
    info["memberships"] = _memberships(session, subscriber.id)
    info["suppressed"] = suppression_reason(session, subscriber.email)
    info["history"] = _consent_events(session, subscriber.id)
    info["bounces"] = bounce_history(session, subscriber.email)
    return info


def export_personal_data(session: Session, email: str) -> dict[str, Any]:
    """Everything held on a person (GDPR art. 15): profile, memberships, consent, deliveries."""
    subscriber = find_subscriber(session, email)
    assert subscriber.id is not None
    list_names = dict(session.execute(sa.select(col(MailingList.id), col(MailingList.name))).all())
    deliveries = session.exec(select(Delivery).where(Delivery.subscriber_id == subscriber.id)
                              .order_by(col(Delivery.id))).all()
    return {
        "subscriber": _profile_dict(subscriber),
        "memberships": _memberships(session, subscriber.id),
        "consent_events": _consent_events(session, subscriber.id),
        "bounces": bounce_history(session, subscriber.email),
        "deliveries": [
            {"campaign_id": d.campaign_id, "list": list_names.get(d.list_id) if d.list_id else None,
             "email": d.email, "state": d.state, "attempts": d.attempts, "sent_at": d.sent_at,
             "last_reply": d.last_reply}
            for d in deliveries
        ],
        "suppressed": suppression_reason(session, subscriber.email),
    }


@dataclass(frozen=True)
class EraseReport:
    email: str
    found: bool
    deliveries_blanked: int


def erase_subscriber(session: Session, email: str, *, source: str = "cli") -> EraseReport:
    """Delete a person's data (GDPR art. 17) and keep only a hashed suppression entry.

    Memberships and consent events go with the subscriber row (database cascade); an
    anonymous ``erase`` event (no subscriber, no address) records that erasure happened.
    Dispatch-ledger rows keep their state but lose the address; so do the bounces and
    complaints received about them. An address we hold
    nothing on is suppressed all the same, so a later import cannot add it.
    """
    address = _lookup_form(email)
    if session.get_bind().dialect.name == "sqlite":
        # Zero the freed pages, so the deleted rows cannot be read back from the file.
        session.execute(sa.text("PRAGMA secure_delete = ON"))
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    blanked = 0
    if subscriber is not None:
        blanked = session.execute(
            sa.update(Delivery).where(col(Delivery.subscriber_id) == subscriber.id).values(email="")
        ).rowcount  # type: ignore[attr-defined]
        # Bounces and complaints about them keep their kind and date, not the address or the bytes.
        session.execute(sa.update(InboundMessage).where(col(InboundMessage.subscriber_id) == subscriber.id)
                        .values(recipients=[], raw=None))
        session.execute(sa.delete(Subscriber).where(col(Subscriber.id) == subscriber.id))
        session.expunge(subscriber)
    record_event(session, None, None, EventKind.ERASE, Actor(source=source))
    suppress(session, address, "erased")
    return EraseReport(email=address, found=subscriber is not None, deliveries_blanked=blanked)


def iter_subscribers(session: Session, *, list_name: str | None = None, status: str | None = None,
                     segment: str | None = None) -> Iterator[dict[str, Any]]:
    """Subscribers (on ``list_name`` when given, with that list's membership status), streamed."""
    columns = [col(Subscriber.email), col(Subscriber.name), col(Subscriber.language),
               col(Subscriber.organisation), col(Subscriber.country), col(Subscriber.tags)]
    if list_name:
        mailing_list = get_list(session, list_name)
        query = (sa.select(*columns, col(Membership.status))
                 .join(Membership, col(Membership.subscriber_id) == col(Subscriber.id))
                 .where(col(Membership.list_id) == mailing_list.id))
        status_column: Any = col(Membership.status)
    else:
        query = sa.select(*columns, col(Subscriber.status))
        status_column = col(Subscriber.status)
    if status:
        query = query.where(status_column == status)
    if segment:
        query = query.where(segment_filter(segment, session.get_bind().dialect.name))
    query = query.order_by(col(Subscriber.email)).execution_options(yield_per=2000)
    for email, name, language, organisation, country, tags, row_status in session.execute(query):
        yield {"email": email, "name": name, "language": language, "organisation": organisation,
               "country": country, "tags": tags, "status": row_status}
