"""The figures of one campaign, from the ledger, the bounce records and the consent events.

A handful of aggregate queries: one scan of the ledger grouped by relay, domain, state,
retried, bounced and binned time to accept (a few thousand groups for 100,000 recipients),
from which the summary, the domains with their medians and the relays are summed; the
bounces by kind, the unsubscribes, the timeline. The database does the counting, Python
only adds up the groups it returns, never a row per recipient.
Nothing here tracks a reader: there are no opens or clicks to count, on purpose.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from wip_mailer.errors import NotFoundError
from wip_mailer.models import DeliveryState
from wip_mailer.reports.sql import (
    BOUNCE,
    CAMPAIGN,
    DELIVERY,
    EDITION,
    EVENT,
    count_if,
    domain,
    relay_column,
    seconds_between,
    whole_second,
)
from wip_mailer.settings import Settings

COMPLAINT_LIMIT = 0.003  # Gmail's and Yahoo's bulk-sender line: spam reports below 0.3%
UNSUBSCRIBE_WINDOW = timedelta(days=7)
MAX_BUCKETS = 240  # timeline points: one a second for a 4-minute send, wider buckets beyond
PAUSE_SECONDS = 30  # a stretch this long with nothing handed over is marked as a pause
OTHER_DOMAINS = 12  # the chart shows this many domains; the table and JSON show them all


def campaign_report(engine: Engine, settings: Settings, campaign_id: int) -> dict[str, Any]:
    """Every figure of ``campaigns report ID`` as plain JSON-ready values."""
    with engine.connect() as connection:
        head = connection.execute(
            sa.select(CAMPAIGN.c.id, CAMPAIGN.c.status, CAMPAIGN.c.recipient_count, CAMPAIGN.c.started_at,
                      CAMPAIGN.c.finished_at, CAMPAIGN.c.created_at, CAMPAIGN.c.audience,
                      EDITION.c.slug, EDITION.c.title, EDITION.c.language)
            .join(EDITION, EDITION.c.id == CAMPAIGN.c.edition_id).where(CAMPAIGN.c.id == campaign_id)
        ).mappings().first()
        if head is None:
            raise NotFoundError(f"There is no campaign {campaign_id}.")
        dialect = connection.dialect.name
        start: datetime = head["started_at"] or head["created_at"]
        groups = _ledger(connection, dialect, campaign_id, f"{settings.smtp_host}:{settings.smtp_port}")
        summary = _summary(groups)
        bounces = _bounces(connection, campaign_id)
        handed_over = summary["sent"] + summary["failed"]
        unsubscribes = _unsubscribes(connection, campaign_id, start)
        report = {
            "campaign": {"id": head["id"], "status": head["status"], "edition": head["slug"],
                         "title": head["title"], "language": head["language"],
                         "lists": list((head["audience"] or {}).get("lists", [])),
                         "recipients": head["recipient_count"], "started_at": _iso(head["started_at"]),
                         "finished_at": _iso(head["finished_at"])},
            "summary": summary,
            "bounces": bounces,
            "rates": {
                "hard_bounce": _rate(bounces["hard"], handed_over),
                "soft_bounce": _rate(bounces["soft"], handed_over),
                "complaint": _rate(bounces["complaints"], summary["sent"]),
                "complaint_limit": COMPLAINT_LIMIT,
                "complaint_over_limit": _rate(bounces["complaints"], summary["sent"]) >= COMPLAINT_LIMIT,
                "unsubscribe_7_days": _rate(unsubscribes["within_7_days"], summary["sent"]),
            },
            "unsubscribes": unsubscribes,
            "domains": _domains(groups),
            "relays": _relays(groups),
            "timeline": _timeline(connection, dialect, campaign_id),
        }
    return report


def _ledger(connection: Connection, dialect: str, campaign_id: int,
            configured_relay: str) -> list[Any]:
    """The one scan of the campaign's deliveries: counts by relay, domain, state, retried (more
    than one attempt), bounced (hard or soft, at send time or later) and, for messages sent,
    the time they took to be accepted in bins (1 ms under 10 s, 0.1 s under 10 minutes, 1 s
    beyond), from which the medians are read. Everything else is summed from these groups."""
    bounced = (sa.select(BOUNCE.c.delivery_id).where(BOUNCE.c.kind.in_(("hard", "soft")))
               .distinct().subquery())
    waited_ms = sa.cast(sa.func.round(seconds_between(dialect, DELIVERY.c.first_attempt_at,
                                                      DELIVERY.c.sent_at) * 1000), sa.Integer)
    per_row = (sa.select(
        relay_column(configured_relay).label("relay"), domain(dialect, DELIVERY.c.email).label("domain"),
        DELIVERY.c.state.label("state"), (DELIVERY.c.attempts > 1).label("retried"),
        bounced.c.delivery_id.is_not(None).label("bounced"), DELIVERY.c.attempts.label("attempts"),
        sa.case((DELIVERY.c.state == DeliveryState.SENT, waited_ms), else_=None).label("ms"))
        .select_from(DELIVERY.outerjoin(bounced, bounced.c.delivery_id == DELIVERY.c.id))
        .where(DELIVERY.c.campaign_id == campaign_id).subquery())
    ms = per_row.c.ms
    binned = sa.case((ms < 10_000, ms), (ms < 600_000, ms // 100 * 100), else_=ms // 1000 * 1000).label("bin")
    # the integer bin first: SQLite's sorter compares it fastest (a third quicker than domain first)
    keys = (binned, per_row.c.relay, per_row.c.domain, per_row.c.state, per_row.c.retried, per_row.c.bounced)
    return list(connection.execute(
        sa.select(*keys, sa.func.count(), sa.func.sum(per_row.c.attempts)).group_by(*keys)))


def _summary(groups: list[Any]) -> dict[str, int]:
    states: Counter[str] = Counter()
    retried: Counter[str] = Counter()
    attempts = 0
    for _, _, _, state, was_retried, _, number, tries in groups:
        states[state] += number
        retried[state] += number if was_retried else 0
        attempts += int(tries or 0)
    return {
        "recipients": sum(states.values()),
        "sent": states[DeliveryState.SENT],
        "in_doubt": states[DeliveryState.IN_DOUBT],
        "failed": states[DeliveryState.FAILED],
        # A message sent after one or more 4xx replies (or a dropped connection) before it.
        "deferred_then_sent": retried[DeliveryState.SENT],
        "deferred": states[DeliveryState.DEFERRED],  # still waiting for a retry
        "skipped": states[DeliveryState.SKIPPED],
        "queued": states[DeliveryState.QUEUED] + states[DeliveryState.SENDING],
        "attempts": attempts,
    }


def _bounces(connection: Connection, campaign_id: int) -> dict[str, Any]:
    """Deliveries with a bounce of each kind (one delivery counted once per kind), by source."""
    rows = connection.execute(
        sa.select(BOUNCE.c.kind, BOUNCE.c.source, sa.func.count(sa.distinct(BOUNCE.c.delivery_id)))
        .join(DELIVERY, DELIVERY.c.id == BOUNCE.c.delivery_id)
        .where(DELIVERY.c.campaign_id == campaign_id)
        .group_by(BOUNCE.c.kind, BOUNCE.c.source)).all()
    totals: dict[str, int] = {kind: number for kind, number in connection.execute(
        sa.select(BOUNCE.c.kind, sa.func.count(sa.distinct(BOUNCE.c.delivery_id)))
        .join(DELIVERY, DELIVERY.c.id == BOUNCE.c.delivery_id)
        .where(DELIVERY.c.campaign_id == campaign_id).group_by(BOUNCE.c.kind))}
    by_source: dict[str, dict[str, int]] = {}
    for kind, source, number in rows:
        by_source.setdefault(kind, {})[source or "unknown"] = number
    return {"hard": totals.get("hard", 0), "soft": totals.get("soft", 0),
            "complaints": totals.get("complaint", 0), "by_source": by_source}


def _unsubscribes(connection: Connection, campaign_id: int, start: datetime) -> dict[str, Any]:
    """Leaves attributed to the campaign: its unsubscribe link (or mailto) named it."""
    until = start + UNSUBSCRIBE_WINDOW
    rows = connection.execute(
        sa.select(EVENT.c.source, sa.func.count(), count_if(EVENT.c.at < until))
        .where(EVENT.c.campaign_id == campaign_id, EVENT.c.kind == "unsubscribe")
        .group_by(EVENT.c.source).order_by(EVENT.c.source)).all()
    return {"attributed": sum(r[1] for r in rows), "within_7_days": sum(r[2] for r in rows),
            "by_source": {source: number for source, number, _ in rows}}


def _domains(groups: list[Any]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    bins: dict[str, Counter[int]] = {}
    for waited, _, name, state, retried, bounced, number, _ in groups:
        row = rows.setdefault(name, {"domain": name or "(erased)", "recipients": 0, "accepted": 0,
                                     "deferred": 0, "deferred_then_accepted": 0, "failed": 0, "bounced": 0,
                                     "in_doubt": 0, "median_seconds_to_accept": None})
        row["recipients"] += number
        row["accepted"] += number if state == DeliveryState.SENT else 0
        row["deferred"] += number if state == DeliveryState.DEFERRED or (
            retried and state in (DeliveryState.SENT, DeliveryState.FAILED)) else 0
        row["deferred_then_accepted"] += number if retried and state == DeliveryState.SENT else 0
        row["failed"] += number if state == DeliveryState.FAILED else 0
        row["bounced"] += number if bounced else 0
        row["in_doubt"] += number if state == DeliveryState.IN_DOUBT else 0
        if state == DeliveryState.SENT and waited is not None:
            bins.setdefault(name, Counter())[int(waited)] += number
    for name, histogram in bins.items():
        rows[name]["median_seconds_to_accept"] = _median(histogram)
    return sorted(rows.values(), key=lambda row: (-int(row["recipients"]), str(row["domain"])))


def _median(histogram: Counter[int]) -> float:
    """The median of the binned times (milliseconds) in seconds: the middle value, or the mean
    of the middle two, as statistics.median would give on the values themselves."""
    total = sum(histogram.values())
    wanted = {(total + 1) // 2, total // 2 + 1}
    found: list[int] = []
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        while wanted and min(wanted) <= seen:
            wanted.discard(min(wanted))
            found.append(value)
        if not wanted:
            break
    return round(sum(found) / len(found) / 1000, 3)


def _relays(groups: list[Any]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for _, relay, _, state, retried, _, number, _ in groups:
        if state in (DeliveryState.QUEUED, DeliveryState.SKIPPED):
            continue  # never handed to a relay
        row = rows.setdefault(relay, {"relay": relay, "handed_over": 0, "sent": 0, "retried": 0, "failed": 0,
                                      "in_doubt": 0})
        row["handed_over"] += number
        row["sent"] += number if state == DeliveryState.SENT else 0
        row["retried"] += number if retried else 0
        row["failed"] += number if state == DeliveryState.FAILED else 0
        row["in_doubt"] += number if state == DeliveryState.IN_DOUBT else 0
    return [rows[name] for name in sorted(rows)]


def _timeline(connection: Connection, dialect: str, campaign_id: int) -> dict[str, Any]:
    """Messages accepted per second (first try, after a retry) and failures, in buckets;
    a stretch of PAUSE_SECONDS or more with nothing handed over is a pause. One query, grouped
    by the second of each message's outcome; wider buckets are summed from those seconds."""
    outcome_at = sa.func.coalesce(DELIVERY.c.sent_at, DELIVERY.c.updated_at)
    second = whole_second(dialect, outcome_at).label("second")
    retried = (DELIVERY.c.attempts > 1).label("retried")
    rows = connection.execute(
        sa.select(second, DELIVERY.c.state, retried, sa.func.count())
        .where(DELIVERY.c.campaign_id == campaign_id,
               DELIVERY.c.state.in_((DeliveryState.SENT, DeliveryState.FAILED)))
        .group_by(second, DELIVERY.c.state, retried)).all()
    if not rows:
        return {"start": None, "bucket_seconds": 1, "points": [], "pauses": [], "peak_per_second": 0.0}
    seconds = [(_as_epoch(moment), state, was_retried, number) for moment, state, was_retried, number in rows]
    first = min(moment for moment, _, _, _ in seconds)
    last = max(moment for moment, _, _, _ in seconds)
    width = max(1, (last - first) // MAX_BUCKETS + 1)
    buckets: dict[int, dict[str, int]] = {}
    for moment, state, was_retried, number in seconds:
        offset = (moment - first) // width * width
        point = buckets.setdefault(offset, {"offset_seconds": offset, "sent": 0, "sent_after_retry": 0,
                                            "failed": 0})
        key = "failed" if state == DeliveryState.FAILED else "sent_after_retry" if was_retried else "sent"
        point[key] += number
    points = [buckets[offset] for offset in sorted(buckets)]
    pauses = []
    for before, after in pairwise(points):
        gap = after["offset_seconds"] - before["offset_seconds"] - width
        if gap >= PAUSE_SECONDS:
            pauses.append({"from_seconds": before["offset_seconds"] + width, "seconds": gap})
    peak = max((p["sent"] + p["sent_after_retry"] + p["failed"]) / width for p in points)
    return {"start": _iso(datetime.fromtimestamp(first, UTC)), "bucket_seconds": width, "points": points,
            "pauses": pauses, "peak_per_second": peak}


def _as_epoch(moment: Any) -> int:
    """A whole second as the database gave it (SQLite: 'YYYY-MM-DD HH:MM:SS' in UTC)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


