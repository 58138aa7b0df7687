"""The figures of one campaign, from the ledger, the bounce records and the consent events.

A handful of aggregate queries (states, bounces, domains, the median time to accept,
relays, the timeline, unsubscribes): the database does the counting, Python only arranges
the rows it returns, so a report of 100,000 recipients costs what the queries cost.
Nothing here tracks a reader: there are no opens or clicks to count, on purpose.
"""

from __future__ import annotations

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
    epoch,
    relay_column,
    seconds_between,
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
        summary = _summary(connection, campaign_id)
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
            "domains": _domains(connection, dialect, campaign_id),
            "relays": _relays(connection, campaign_id, f"{settings.smtp_host}:{settings.smtp_port}"),
            "timeline": _timeline(connection, dialect, campaign_id),
        }
    return report


def _summary(connection: Connection, campaign_id: int) -> dict[str, int]:
    rows = connection.execute(
        sa.select(DELIVERY.c.state, sa.func.count(),
                  count_if(DELIVERY.c.attempts > 1), sa.func.coalesce(sa.func.sum(DELIVERY.c.attempts), 0))
        .where(DELIVERY.c.campaign_id == campaign_id).group_by(DELIVERY.c.state)).all()
    states = {state: number for state, number, _, _ in rows}
    retried = {state: number for state, _, number, _ in rows}
    return {
        "recipients": sum(states.values()),
        "sent": states.get(DeliveryState.SENT, 0),
        "in_doubt": states.get(DeliveryState.IN_DOUBT, 0),
        "failed": states.get(DeliveryState.FAILED, 0),
        # A message sent after one or more 4xx replies (or a dropped connection) before it.
        "deferred_then_sent": retried.get(DeliveryState.SENT, 0),
        "deferred": states.get(DeliveryState.DEFERRED, 0),  # still waiting for a retry
        "skipped": states.get(DeliveryState.SKIPPED, 0),
        "queued": states.get(DeliveryState.QUEUED, 0) + states.get(DeliveryState.SENDING, 0),
        "attempts": int(sum(attempts for _, _, _, attempts in rows)),
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


def _domains(connection: Connection, dialect: str, campaign_id: int) -> list[dict[str, Any]]:
    where = DELIVERY.c.campaign_id == campaign_id
    dom = domain(dialect, DELIVERY.c.email).label("domain")
    bounced = (sa.select(BOUNCE.c.delivery_id).where(BOUNCE.c.kind.in_(("hard", "soft")))
               .distinct().subquery())
    counts = connection.execute(
        sa.select(dom, sa.func.count(),
                  count_if(DELIVERY.c.state == DeliveryState.SENT),
                  count_if(sa.or_(DELIVERY.c.state == DeliveryState.DEFERRED,
                                  sa.and_(DELIVERY.c.attempts > 1,
                                          DELIVERY.c.state.in_((DeliveryState.SENT, DeliveryState.FAILED))))),
                  count_if(sa.and_(DELIVERY.c.state == DeliveryState.SENT, DELIVERY.c.attempts > 1)),
                  count_if(DELIVERY.c.state == DeliveryState.FAILED),
                  count_if(bounced.c.delivery_id.is_not(None)),
                  count_if(DELIVERY.c.state == DeliveryState.IN_DOUBT))
        .select_from(DELIVERY.outerjoin(bounced, bounced.c.delivery_id == DELIVERY.c.id))
        .where(where).group_by(dom)).all()
    medians = dict(_medians(connection, dialect, campaign_id))
    rows: list[dict[str, Any]] = [
        {"domain": name or "(erased)", "recipients": total, "accepted": sent, "deferred": deferred,
         "deferred_then_accepted": late, "failed": failed, "bounced": bounced_count, "in_doubt": in_doubt,
         "median_seconds_to_accept": medians.get(name)}
        for name, total, sent, deferred, late, failed, bounced_count, in_doubt in counts]
    rows.sort(key=lambda row: (-int(row["recipients"]), str(row["domain"])))
    return rows


def _medians(connection: Connection, dialect: str, campaign_id: int) -> list[tuple[str, float]]:
    """The median seconds from a message's first attempt to the server's 250, per domain
    (window functions: the middle one or two rows of each domain, averaged)."""
    dom = domain(dialect, DELIVERY.c.email)
    waited = seconds_between(dialect, DELIVERY.c.first_attempt_at, DELIVERY.c.sent_at)
    ranked = (sa.select(dom.label("domain"), waited.label("waited"),
                        sa.func.row_number().over(partition_by=dom, order_by=waited).label("position"),
                        sa.func.count().over(partition_by=dom).label("n"))
              .where(DELIVERY.c.campaign_id == campaign_id, DELIVERY.c.state == DeliveryState.SENT,
                     DELIVERY.c.first_attempt_at.is_not(None), DELIVERY.c.sent_at.is_not(None))
              .subquery())
    middle = sa.or_(ranked.c.position == (ranked.c.n + 1) // 2, ranked.c.position == (ranked.c.n + 2) // 2)
    return [(name, round(float(value), 3)) for name, value in connection.execute(
        sa.select(ranked.c.domain, sa.func.avg(ranked.c.waited)).where(middle).group_by(ranked.c.domain))]


def _relays(connection: Connection, campaign_id: int, configured: str) -> list[dict[str, Any]]:
    relay = relay_column(configured).label("relay")
    rows = connection.execute(
        sa.select(relay, sa.func.count(), count_if(DELIVERY.c.state == DeliveryState.SENT),
                  count_if(DELIVERY.c.attempts > 1), count_if(DELIVERY.c.state == DeliveryState.FAILED),
                  count_if(DELIVERY.c.state == DeliveryState.IN_DOUBT))
        .where(DELIVERY.c.campaign_id == campaign_id,
               DELIVERY.c.state.not_in((DeliveryState.QUEUED, DeliveryState.SKIPPED)))
        .group_by(relay).order_by(relay)).all()
    return [{"relay": name, "handed_over": total, "sent": sent, "retried": retried, "failed": failed,
             "in_doubt": in_doubt} for name, total, sent, retried, failed, in_doubt in rows]


def _timeline(connection: Connection, dialect: str, campaign_id: int) -> dict[str, Any]:
    """Messages accepted per second (first try, after a retry) and failures, in buckets;
    a stretch of PAUSE_SECONDS or more with nothing handed over is a pause."""
    done = DELIVERY.c.state.in_((DeliveryState.SENT, DeliveryState.FAILED))
    moment = sa.func.coalesce(DELIVERY.c.sent_at, DELIVERY.c.updated_at)
    where = sa.and_(DELIVERY.c.campaign_id == campaign_id, done)
    first, last = connection.execute(sa.select(sa.func.min(epoch(dialect, moment)),
                                               sa.func.max(epoch(dialect, moment))).where(where)).one()
    if first is None:
        return {"start": None, "bucket_seconds": 1, "points": [], "pauses": [], "peak_per_second": 0.0}
    first, last = float(first), float(last)
    width = max(1, int((last - first) // MAX_BUCKETS) + 1)
    bucket = sa.cast(sa.func.floor((epoch(dialect, moment) - first) / width), sa.Integer).label("bucket")
    rows = connection.execute(
        sa.select(bucket,
                  count_if(sa.and_(DELIVERY.c.state == DeliveryState.SENT, DELIVERY.c.attempts <= 1)),
                  count_if(sa.and_(DELIVERY.c.state == DeliveryState.SENT, DELIVERY.c.attempts > 1)),
                  count_if(DELIVERY.c.state == DeliveryState.FAILED))
        .where(where).group_by(bucket).order_by(bucket)).all()
    points = [{"offset_seconds": int(b) * width, "sent": s, "sent_after_retry": r, "failed": f}
              for b, s, r, f in rows]
    pauses = []
    for before, after in pairwise(points):
        gap = after["offset_seconds"] - before["offset_seconds"] - width
        if gap >= PAUSE_SECONDS:
            pauses.append({"from_seconds": before["offset_seconds"] + width, "seconds": gap})
    peak = max((p["sent"] + p["sent_after_retry"] + p["failed"]) / width for p in points)
    return {"start": _epoch_iso(first),
            "bucket_seconds": width, "points": points, "pauses": pauses, "peak_per_second": peak}


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _epoch_iso(seconds: float) -> str:
    return _iso(datetime.fromtimestamp(seconds, UTC).replace(microsecond=0)) or ""
