"""What subscribers do themselves through signed links: leave, confirm, choose lists, join.

Each function checks the token first (tampered, unknown or wrong-purpose tokens raise
``InvalidTokenError`` and change nothing) and returns a small view for the web page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, or_, select

from wip_mailer.audience.addresses import normalise_email
from wip_mailer.audience.confirmation import ConfirmationRequest, send_confirmations
from wip_mailer.audience.consent import (
    Actor,
    EventKind,
    JoinOutcome,
    confirm_membership,
    join_list,
    unsubscribe,
)
from wip_mailer.audience.links import preferences_url
from wip_mailer.audience.suppression import is_suppressed
from wip_mailer.db import session_scope, utcnow
from wip_mailer.errors import NotFoundError
from wip_mailer.fields import check_single_line
from wip_mailer.models import (
    ConsentEvent,
    MailingList,
    Membership,
    MembershipStatus,
    Subscriber,
    SubscriberStatus,
)
from wip_mailer.settings import Settings
from wip_mailer.tokens import Purpose, TokenClaims, read_token


@dataclass(frozen=True)
class Visitor:
    """Where a web request came from, for the consent record."""

    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class UnsubscribeView:
    email: str
    list_name: str | None  # None: every list
    subscribed: bool  # still on that list (or on any list)
    preferences_url: str
    changed: bool = False


@dataclass(frozen=True)
class ListChoice:
    list_id: int
    name: str
    description: str
    status: str | None  # membership status, None when not a member


@dataclass(frozen=True)
class PreferencesView:
    email: str
    choices: list[ListChoice]
    saved: bool = False


@dataclass(frozen=True)
class ConfirmView:
    email: str
    list_name: str
    confirmed: bool  # already active on that list


class ListNotPublicError(NotFoundError):
    """The subscribe form names a list that does not exist or is not offered to the public."""


# At most one confirmation email a day to one address from the subscribe form, whatever
# the rate limits let through: a bot cannot turn the form into a mail bomb.
CONFIRMATION_INTERVAL = timedelta(days=1)


def _claims(settings: Settings, purpose: Purpose, token: str) -> TokenClaims:
    max_age = settings.confirm_days * 86400 if purpose is Purpose.CONFIRM else None
    return read_token(settings.require_secret_key(), purpose, token, max_age_seconds=max_age)


def unsubscribe_claims(settings: Settings, token: str) -> TokenClaims:
    """Verify an unsubscribe token without the database; raises ``InvalidTokenError``."""
    return _claims(settings, Purpose.UNSUBSCRIBE, token)


def no_longer_listed() -> NotFoundError:
    return NotFoundError("This address is no longer in our lists; nothing more will be sent to it.")


def _subscriber(session: Session, claims: TokenClaims) -> Subscriber:
    subscriber = session.get(Subscriber, claims.subscriber_id)
    if subscriber is None:
        raise no_longer_listed()
    return subscriber


def _on_list(session: Session, subscriber_id: int, list_id: int | None) -> bool:
    query = select(Membership.id).where(Membership.subscriber_id == subscriber_id,
                                        col(Membership.status) != MembershipStatus.UNSUBSCRIBED)
    if list_id is not None:
        query = query.where(Membership.list_id == list_id)
    return session.exec(query).first() is not None


def _list_name(session: Session, list_id: int | None) -> str | None:
    if list_id is None:
        return None
    mailing_list = session.get(MailingList, list_id)
    return mailing_list.name if mailing_list else None


def unsubscribe_view(session: Session, settings: Settings, token: str) -> UnsubscribeView:
    """What the unsubscribe page shows; changes nothing (mail scanners follow links)."""
    claims = _claims(settings, Purpose.UNSUBSCRIBE, token)
    subscriber = _subscriber(session, claims)
    return UnsubscribeView(subscriber.email, _list_name(session, claims.list_id),
                           _on_list(session, claims.subscriber_id, claims.list_id),
                           preferences_url(settings, claims.subscriber_id, claims.list_id))


def unsubscribe_by_token(session: Session, settings: Settings, token: str, *, source: str,
                         visitor: Visitor) -> UnsubscribeView:
    """Leave the list the message was sent for, at once; repeating it is harmless."""
    claims = _claims(settings, Purpose.UNSUBSCRIBE, token)
    subscriber = _subscriber(session, claims)
    changed = unsubscribe(session, claims.subscriber_id, claims.list_id, source=source,
                          ip=visitor.ip, user_agent=visitor.user_agent, campaign_id=claims.campaign_id)
    return UnsubscribeView(subscriber.email, _list_name(session, claims.list_id), False,
                           preferences_url(settings, claims.subscriber_id, claims.list_id), changed)


def confirm_view(session: Session, settings: Settings, token: str) -> ConfirmView:
    """What the confirmation page shows before its button is pressed; changes nothing (link
    scanners such as Safe Links fetch every link in a message)."""
    claims = _claims(settings, Purpose.CONFIRM, token)
    if claims.list_id is None:
        raise NotFoundError("This confirmation link names no list.")
    subscriber = _subscriber(session, claims)
    membership = session.exec(select(Membership.status).where(
        Membership.subscriber_id == claims.subscriber_id, Membership.list_id == claims.list_id)).first()
    if membership is None:
        raise NotFoundError("This subscription no longer exists; please subscribe again.")
    return ConfirmView(subscriber.email, _list_name(session, claims.list_id) or "",
                       membership == MembershipStatus.ACTIVE)


def confirm_by_token(session: Session, settings: Settings, token: str, visitor: Visitor) -> str:
    """Activate the pending membership the confirmation link names; returns the list name."""
    claims = _claims(settings, Purpose.CONFIRM, token)
    if claims.list_id is None:
        raise NotFoundError("This confirmation link names no list.")
    actor = Actor("confirmation link", visitor.ip, visitor.user_agent, settings.consent_version)
    confirm_membership(session, claims.subscriber_id, claims.list_id, actor)
    return _list_name(session, claims.list_id) or ""


def _choices(session: Session, subscriber_id: int) -> list[ListChoice]:
    """The subscriber's lists (past and present) and the public ones."""
    statuses = dict(session.exec(select(Membership.list_id, Membership.status)
                                 .where(Membership.subscriber_id == subscriber_id)).all())
    lists = session.exec(select(MailingList).where(or_(col(MailingList.public),
                                                       col(MailingList.id).in_(list(statuses))))
                         .order_by(col(MailingList.name))).all()
    return [ListChoice(lst.id or 0, lst.name, lst.description, statuses.get(lst.id or 0)) for lst in lists]


def preferences_view(session: Session, settings: Settings, token: str) -> PreferencesView:
    claims = _claims(settings, Purpose.PREFERENCES, token)
    subscriber = _subscriber(session, claims)
    return PreferencesView(subscriber.email, _choices(session, claims.subscriber_id))


def save_preferences(session: Session, settings: Settings, token: str, chosen: set[int],
                     visitor: Visitor) -> PreferencesView:
    """Join the chosen lists and leave the others among those offered.

    The signed link proves the address, so joining from here needs no further confirmation.
    """
    claims = _claims(settings, Purpose.PREFERENCES, token)
    subscriber = _subscriber(session, claims)
    actor = Actor("preferences page", visitor.ip, visitor.user_agent, settings.consent_version)
    for choice in _choices(session, claims.subscriber_id):
        member = choice.status in (MembershipStatus.ACTIVE, MembershipStatus.PENDING)
        if choice.list_id in chosen and choice.status != MembershipStatus.ACTIVE:
            mailing_list = session.get(MailingList, choice.list_id)
            assert mailing_list is not None
            join_list(session, subscriber, mailing_list, confirmed=True, actor=actor)
        elif choice.list_id not in chosen and member:
            unsubscribe(session, claims.subscriber_id, choice.list_id, source="preferences page",
                        ip=visitor.ip, user_agent=visitor.user_agent)
    session.flush()
    return PreferencesView(subscriber.email, _choices(session, claims.subscriber_id), saved=True)


def public_lists(session: Session) -> list[MailingList]:
    return list(session.exec(select(MailingList).where(col(MailingList.public))
                             .order_by(col(MailingList.name))).all())


def find_public_list(session: Session, list_name: str) -> MailingList:
    found = session.exec(select(MailingList).where(MailingList.name == list_name,
                                                   col(MailingList.public))).first()
    if found is None:
        raise ListNotPublicError(f"There is no public list named {list_name!r}.")
    return found


def _recently_asked(session: Session, subscriber_id: int) -> bool:
    """Whether a confirmation was requested for this address within the last day (every
    ``request`` event sent one)."""
    since = utcnow() - CONFIRMATION_INTERVAL
    return session.exec(select(ConsentEvent.id).where(
        ConsentEvent.subscriber_id == subscriber_id, ConsentEvent.kind == EventKind.REQUEST,
        col(ConsentEvent.at) >= since)).first() is not None


def subscribe_from_form(engine: Engine, settings: Settings, email: str, name: str, list_name: str,
                        visitor: Visitor) -> bool:
    """The public subscribe form: a pending membership and a confirmation email; True when
    one was sent.

    The answer is the same whether or not the address is known or suppressed, so the form
    reveals nothing about who is subscribed. A second request for an address within a day
    sends nothing (the first email's link still works).
    """
    address = normalise_email(email)
    check_single_line("name", name)
    requests: list[ConfirmationRequest] = []
    with session_scope(engine) as session:
        mailing_list = find_public_list(session, list_name)
        if is_suppressed(session, address):
            return False
        subscriber = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
        if subscriber is None:
            subscriber = Subscriber(email=address, name=" ".join(name.split())[:200],
                                    language=mailing_list.language, status=SubscriberStatus.PENDING)
            session.add(subscriber)
            session.flush()
        elif subscriber.status in ("bounced", "complained") or _recently_asked(session, subscriber.id or 0):
            return False
        subscriber.updated_at = utcnow()
        actor = Actor("subscribe form", visitor.ip, visitor.user_agent, settings.consent_version)
        outcome = join_list(session, subscriber, mailing_list, confirmed=False, actor=actor)
        if outcome is JoinOutcome.PENDING:  # new or still pending: (re)send the link
            assert subscriber.id is not None and mailing_list.id is not None
            requests.append(ConfirmationRequest(subscriber.id, mailing_list.id, address, subscriber.name,
                                                subscriber.language, mailing_list.name,
                                                mailing_list.description))
    return send_confirmations(settings, requests) > 0
