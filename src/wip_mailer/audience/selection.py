"""Choosing who receives a send: lists plus an optional segment, once per address.

CONTRACT (used by dispatch): ``select_recipients`` streams one ``Recipient`` per address;
``recipients_query`` is the same selection as one SQL query (to count it, or to insert from
it), ``count_recipients`` its size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlmodel import Session, col, select

from wip_mailer.audience.segments import segment_filter
from wip_mailer.audience.suppression import not_suppressed
from wip_mailer.errors import NotFoundError
from wip_mailer.models import (
    MailingList,
    Membership,
    MembershipStatus,
    Subscriber,
    SubscriberStatus,
)


@dataclass(frozen=True)
class Recipient:
    subscriber_id: int
    email: str
    name: str
    language: str
    list_id: int  # the list this copy is sent for (its unsubscribe link leaves that list)


def resolve_lists(session: Session, names: Sequence[str]) -> list[MailingList]:
    lists = []
    for name in names:
        found = session.exec(select(MailingList).where(MailingList.name == name)).first()
        if found is None:
            raise NotFoundError(f"There is no list named {name!r}.")
        lists.append(found)
    return lists


def recipients_query(session: Session, list_names: Sequence[str], segment: str | None = None,
                     where: Sequence[sa.ColumnElement[bool]] = ()) -> sa.Select[Any]:
    """The selection as one SQL query, in subscriber order: active members of any of the lists
    matching ``segment``, once per address (``list_id``: the lowest of their lists), never a
    suppressed, unsubscribed, bounced or complained one. ``where`` adds conditions on
    ``subscriber`` (dispatch's: not already sent this edition).

    Columns: subscriber_id, email, name, language, list_id. The freeze inserts from it and the
    confirmation counts it without a row leaving the database.
    """
    lists = resolve_lists(session, list_names)
    bind = session.get_bind()
    condition = segment_filter(segment, bind.dialect.name) if segment and segment.strip() else None
    memberships = (
        sa.select(col(Membership.subscriber_id), func.min(col(Membership.list_id)).label("list_id"))
        .where(col(Membership.list_id).in_([lst.id for lst in lists]))
        .where(col(Membership.status) == MembershipStatus.ACTIVE)
        .group_by(col(Membership.subscriber_id))
        .subquery("chosen")
    )
    query = (
        sa.select(col(Subscriber.id).label("subscriber_id"), col(Subscriber.email), col(Subscriber.name),
                  col(Subscriber.language), memberships.c.list_id)
        .join(memberships, memberships.c.subscriber_id == col(Subscriber.id))
        .where(col(Subscriber.status) == SubscriberStatus.ACTIVE)
        .where(not_suppressed(col(Subscriber.email)), *where)
        .order_by(col(Subscriber.id))
    )
    if condition is not None:
        query = query.where(condition)
    return query


def count_recipients(session: Session, list_names: Sequence[str], segment: str | None = None,
                     where: Sequence[sa.ColumnElement[bool]] = ()) -> int:
    """How many ``select_recipients`` would yield: one aggregate query."""
    selection = recipients_query(session, list_names, segment, where).order_by(None).subquery()
    return session.execute(sa.select(func.count()).select_from(selection)).scalar_one()


def select_recipients(
    session: Session, list_names: Sequence[str], segment: str | None = None,
    where: Sequence[sa.ColumnElement[bool]] = (),
) -> Iterator[Recipient]:
    """``recipients_query``'s rows as ``Recipient``s, streamed from the database."""
    query = recipients_query(session, list_names, segment, where).execution_options(yield_per=2000)
    for row in session.execute(query):
        yield Recipient(row.subscriber_id, row.email, row.name, row.language, row.list_id)
