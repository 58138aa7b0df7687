"""Dialect helpers for the report queries: the few expressions SQLite and PostgreSQL spell
differently (a domain, seconds between two timestamps, a Unix time)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement

from wip_mailer.models import (
    BounceEvent,
    Campaign,
    ConsentEvent,
    Delivery,
    Edition,
    MailingList,
    Membership,
    Subscriber,
)

DELIVERY: sa.Table = Delivery.__table__  # type: ignore[attr-defined]
BOUNCE: sa.Table = BounceEvent.__table__  # type: ignore[attr-defined]
EVENT: sa.Table = ConsentEvent.__table__  # type: ignore[attr-defined]
EDITION: sa.Table = Edition.__table__  # type: ignore[attr-defined]
CAMPAIGN: sa.Table = Campaign.__table__  # type: ignore[attr-defined]
LIST: sa.Table = MailingList.__table__  # type: ignore[attr-defined]
MEMBERSHIP: sa.Table = Membership.__table__  # type: ignore[attr-defined]
SUBSCRIBER: sa.Table = Subscriber.__table__  # type: ignore[attr-defined]


def domain(dialect: str, email: Any) -> ColumnElement[str]:
    """The part after the '@', lower-cased ('' for an erased address)."""
    if dialect == "postgresql":
        return sa.func.lower(sa.func.split_part(email, "@", 2))
    return sa.func.lower(sa.func.substr(email, sa.func.instr(email, "@") + 1))


def epoch(dialect: str, moment: Any) -> ColumnElement[float]:
    """Seconds since 1970 (UTC; SQLite keeps naive UTC)."""
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", moment), sa.Float)
    return (sa.func.julianday(moment) - 2440587.5) * 86400.0


def seconds_between(dialect: str, start: Any, end: Any) -> ColumnElement[float]:
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", end - start), sa.Float)
    return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0


def count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def relay_column(settings_relay: str) -> ColumnElement[str]:
    """The relay a delivery went through: its ``relay`` column where the ledger has one,
    otherwise the single configured relay for every row (the same query either way)."""
    if "relay" in DELIVERY.c:
        return sa.func.coalesce(DELIVERY.c.relay, sa.literal(settings_relay))
    return sa.literal(settings_relay)
