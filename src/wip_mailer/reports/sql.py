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
    """The part after the '@' ('' for an erased address). Addresses are stored lower-case
    (audience normalises them), so no lower(): per row it would cost a third of the scan."""
    if dialect == "postgresql":
        return sa.func.split_part(email, "@", 2)
    return sa.func.substr(email, sa.func.instr(email, "@") + 1)


def whole_second(dialect: str, moment: Any) -> ColumnElement[Any]:
    """The timestamp cut to its second: SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' (naive UTC),
    whose first 19 characters are the second (a string cut, far cheaper than julianday)."""
    if dialect == "postgresql":
        return sa.func.date_trunc("second", moment)
    return sa.func.substr(moment, 1, 19)


def seconds_between(dialect: str, start: Any, end: Any) -> ColumnElement[float]:
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", end - start), sa.Float)
    return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0


def count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def relay_column(settings_relay: str) -> ColumnElement[str]:
    """The relay a delivery went through: its ``relay`` column, or the single configured
    relay for rows that name none (sent before relays were recorded, or not sent)."""
    return sa.func.coalesce(DELIVERY.c.relay, sa.literal(settings_relay))
