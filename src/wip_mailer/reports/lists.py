"""How each list is doing, edition by edition: subscribers at each send, joins, leaves (by
channel), bounces and complaints, and the members by language and country.

A list's sends are the campaigns whose audience named it; its subscribers at a send are the
recipients who were on the list when the campaign started (someone on two lists got one
message, which counts for both). Periods: the row of a send covers the consent events from
its start to the next send's start (what happened after readers got that edition); a first
row holds what happened before the list's first send. Aggregate queries only: a few for all
lists, one per list.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection, Engine

from wip_mailer.errors import NotFoundError
from wip_mailer.reports.sql import (
    BOUNCE,
    CAMPAIGN,
    DELIVERY,
    EDITION,
    EVENT,
    LIST,
    MEMBERSHIP,
    SUBSCRIBER,
)

# Where a leave came from, by the consent event's source (written by web.py, feedback/,
# audience/selfservice.py and audience/bounces.py; anything else is an admin or an import).
LINK_SOURCES = ("one-click (RFC 8058)", "unsubscribe page")
MAILTO_SOURCES = ("mailto unsubscribe (List-Unsubscribe)",)
PREFERENCES_SOURCES = ("preferences page",)
CHANNELS = ("link", "mailto", "preferences", "complaint", "admin")
JOIN_KINDS = ("subscribe", "confirm")


def channel(source: Any) -> ColumnElement[str]:
    return sa.case((source.in_(LINK_SOURCES), "link"), (source.in_(MAILTO_SOURCES), "mailto"),
                   (source.in_(PREFERENCES_SOURCES), "preferences"),
                   (source.like("complaint (%"), "complaint"),
                   else_="admin")


def lists_report(engine: Engine, list_name: str | None = None) -> dict[str, Any]:
    """Every figure of ``lists report`` as plain JSON-ready values."""
    with engine.connect() as connection:
        query = sa.select(LIST.c.id, LIST.c.name, LIST.c.language).order_by(LIST.c.name)
        if list_name is not None:
            query = query.where(LIST.c.name == list_name)
        lists = connection.execute(query).all()
        if list_name is not None and not lists:
            raise NotFoundError(f"There is no list named {list_name!r}.")
        ids = [row.id for row in lists]
        sends = _sends(connection, {row.name: row.id for row in lists})
        bounces = _bounces(connection, ids)
        members = _members(connection, ids)
        people = _events_by_person(connection, ids)
        report = []
        for row in lists:
            list_sends = sends.get(row.id, [])
            periods = _periods(connection, row.id, [send["started"] for send in list_sends])
            editions = [_edition_row(None, periods.get(0, {}), {})]
            for index, send in enumerate(list_sends, start=1):
                editions.append(_edition_row(send, periods.get(index, {}),
                                             bounces.get((row.id, send["campaign_id"]), {})))
            report.append({"name": row.name, "language": row.language, **members.get(row.id, _no_members()),
                           **people.get(row.id, {"events_by_language": {}, "events_by_country": {}}),
                           "editions": editions})
    return {"lists": report}


_STARTED = sa.func.coalesce(CAMPAIGN.c.started_at, CAMPAIGN.c.created_at)


def _member_at_send() -> ColumnElement[bool]:
    """The delivery's subscriber was on the (joined) membership's list when the campaign started:
    someone on two lists gets one message, and it counts for both."""
    return sa.and_(MEMBERSHIP.c.subscriber_id == DELIVERY.c.subscriber_id,
                   MEMBERSHIP.c.subscribed_at <= _STARTED,
                   sa.or_(MEMBERSHIP.c.unsubscribed_at.is_(None), MEMBERSHIP.c.unsubscribed_at > _STARTED))


def _sends(connection: Connection, lists: dict[str, int]) -> dict[int, list[dict[str, Any]]]:
    """Each list's campaigns (those whose audience named it), oldest first, with the recipients
    who were on the list when the campaign started."""
    campaigns = connection.execute(
        sa.select(CAMPAIGN.c.id, _STARTED.label("started"), CAMPAIGN.c.audience, EDITION.c.slug,
                  EDITION.c.title)
        .join(EDITION, EDITION.c.id == CAMPAIGN.c.edition_id).order_by(_STARTED, CAMPAIGN.c.id)).all()
    recipients = {(list_id, campaign_id): number for list_id, campaign_id, number in connection.execute(
        sa.select(MEMBERSHIP.c.list_id, DELIVERY.c.campaign_id, sa.func.count())
        .select_from(DELIVERY.join(CAMPAIGN, CAMPAIGN.c.id == DELIVERY.c.campaign_id)
                     .join(MEMBERSHIP, _member_at_send()))
        .where(MEMBERSHIP.c.list_id.in_(list(lists.values())))
        .group_by(MEMBERSHIP.c.list_id, DELIVERY.c.campaign_id))}
    sends: dict[int, list[dict[str, Any]]] = {}
    for campaign_id, when, audience, slug, title in campaigns:  # one row per campaign, not per recipient
        for name in dict.fromkeys((audience or {}).get("lists", [])):
            if name in lists:
                sends.setdefault(lists[name], []).append({
                    "campaign_id": campaign_id, "edition": slug, "title": title, "started": when,
                    "recipients": recipients.get((lists[name], campaign_id), 0)})
    return sends


def _periods(connection: Connection, list_id: int, starts: list[datetime]) -> dict[int, dict[str, int]]:
    """Joins and leaves by channel in each period between the list's sends (one query)."""
    period: ColumnElement[int] = sa.literal(0)
    if starts:
        period = sa.case(*((EVENT.c.at < start, index) for index, start in enumerate(starts)),
                         else_=len(starts))
    what = sa.case((EVENT.c.kind.in_(JOIN_KINDS), "join"), else_=channel(EVENT.c.source))
    rows = connection.execute(
        sa.select(period.label("period"), what.label("what"), sa.func.count())
        .where(EVENT.c.list_id == list_id, EVENT.c.kind.in_((*JOIN_KINDS, "unsubscribe")))
        .group_by(period, what)).all()
    found: dict[int, dict[str, int]] = {}
    for index, name, number in rows:
        found.setdefault(int(index), {})[name] = number
    return found


def _bounces(connection: Connection, ids: list[int]) -> dict[tuple[int, int], dict[str, int]]:
    """Bounces and complaints about each campaign's messages to each list's members."""
    rows = connection.execute(
        sa.select(MEMBERSHIP.c.list_id, DELIVERY.c.campaign_id, BOUNCE.c.kind,
                  sa.func.count(sa.distinct(BOUNCE.c.delivery_id)))
        .select_from(BOUNCE.join(DELIVERY, DELIVERY.c.id == BOUNCE.c.delivery_id)
                     .join(CAMPAIGN, CAMPAIGN.c.id == DELIVERY.c.campaign_id)
                     .join(MEMBERSHIP, _member_at_send()))
        .where(MEMBERSHIP.c.list_id.in_(ids))
        .group_by(MEMBERSHIP.c.list_id, DELIVERY.c.campaign_id, BOUNCE.c.kind)).all()
    found: dict[tuple[int, int], dict[str, int]] = {}
    for list_id, campaign_id, kind, number in rows:
        found.setdefault((list_id, campaign_id), {})[kind] = number
    return found


def _members(connection: Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Members now by status, and the active ones by language and country (one query)."""
    rows = connection.execute(
        sa.select(MEMBERSHIP.c.list_id, MEMBERSHIP.c.status, SUBSCRIBER.c.language, SUBSCRIBER.c.country,
                  sa.func.count())
        .join(SUBSCRIBER, SUBSCRIBER.c.id == MEMBERSHIP.c.subscriber_id)
        .where(MEMBERSHIP.c.list_id.in_(ids))
        .group_by(MEMBERSHIP.c.list_id, MEMBERSHIP.c.status, SUBSCRIBER.c.language,
                  SUBSCRIBER.c.country)).all()
    found: dict[int, dict[str, Any]] = {}
    for list_id, status, language, country, number in rows:
        entry = found.setdefault(list_id, _no_members())
        entry["members"][status] = entry["members"].get(status, 0) + number
        if status == "active":
            _add(entry["active_by_language"], language or "?", number)
            _add(entry["active_by_country"], country or "?", number)
    return found


def _events_by_person(connection: Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Joins and leaves over the list's whole history, by the person's language and country."""
    what = sa.case((EVENT.c.kind.in_(JOIN_KINDS), "joins"), else_="leaves")
    rows = connection.execute(
        sa.select(EVENT.c.list_id, what, SUBSCRIBER.c.language, SUBSCRIBER.c.country, sa.func.count())
        .join(SUBSCRIBER, SUBSCRIBER.c.id == EVENT.c.subscriber_id)
        .where(EVENT.c.list_id.in_(ids), EVENT.c.kind.in_((*JOIN_KINDS, "unsubscribe")))
        .group_by(EVENT.c.list_id, what, SUBSCRIBER.c.language, SUBSCRIBER.c.country)).all()
    found: dict[int, dict[str, Any]] = {}
    for list_id, name, language, country, number in rows:
        entry = found.setdefault(list_id, {"events_by_language": {}, "events_by_country": {}})
        _add(entry["events_by_language"].setdefault(language or "?", {"joins": 0, "leaves": 0}), name, number)
        _add(entry["events_by_country"].setdefault(country or "?", {"joins": 0, "leaves": 0}), name, number)
    return found


def _edition_row(send: dict[str, Any] | None, period: dict[str, int],
                 bounces: dict[str, int]) -> dict[str, Any]:
    leaves = {name: period.get(name, 0) for name in CHANNELS}
    return {
        "campaign_id": send["campaign_id"] if send else None,
        "edition": send["edition"] if send else None,
        "title": send["title"] if send else None,
        "sent_at": send["started"].isoformat().replace("+00:00", "Z") if send else None,
        "subscribers_at_send": send["recipients"] if send else None,
        "joins": period.get("join", 0),
        "leaves": leaves,
        "leaves_total": sum(leaves.values()),
        "bounces": {"hard": bounces.get("hard", 0), "soft": bounces.get("soft", 0)},
        "complaints": bounces.get("complaint", 0),
    }


def _no_members() -> dict[str, Any]:
    return {"members": {}, "active_by_language": {}, "active_by_country": {}}


def _add(counts: dict[str, int], key: str, number: int) -> None:
    counts[key] = counts.get(key, 0) + number
