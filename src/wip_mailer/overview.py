"""Read-only overviews of the desk and the audience, for the list and show commands.

Reading needs none of the ORM: loading SQLModel, pydantic and models.py's mapped tables
costs a command more than twice what SQLAlchemy Core does, far more than the queries. So
the tables are named here as lightweight ``sa.table`` clauses with only the columns read
(tests/test_overview.py checks each against models.py), queried with Core on a plain
connection, and the results are the dicts the commands print or give as JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection

from wip_mailer.db import UTCDateTime
from wip_mailer.errors import NotFoundError
from wip_mailer.statuses import ItemStatus, MembershipStatus

MAILING_LIST = sa.table(
    "mailing_list", sa.column("id", sa.Integer), sa.column("name", sa.String),
    sa.column("description", sa.String), sa.column("language", sa.String),
    sa.column("double_opt_in", sa.Boolean), sa.column("public", sa.Boolean),
    sa.column("created_at", UTCDateTime()),
)
MEMBERSHIP = sa.table("membership", sa.column("list_id", sa.Integer), sa.column("status", sa.String))
EDITION = sa.table(
    "edition", sa.column("id", sa.Integer), sa.column("slug", sa.String), sa.column("title", sa.String),
    sa.column("language", sa.String), sa.column("period_start", sa.Date), sa.column("period_end", sa.Date),
    sa.column("status", sa.String), sa.column("subject", sa.String), sa.column("meta", sa.JSON),
)
SECTION = sa.table(
    "section", sa.column("id", sa.Integer), sa.column("edition_id", sa.Integer), sa.column("name", sa.String),
    sa.column("position", sa.Integer), sa.column("intro_md", sa.String),
)
ITEM = sa.table(
    "item", sa.column("id", sa.Integer), sa.column("edition_id", sa.Integer),
    sa.column("section_id", sa.Integer), sa.column("title", sa.String), sa.column("date_label", sa.String),
    sa.column("start_date", sa.Date), sa.column("end_date", sa.Date), sa.column("position", sa.Integer),
    sa.column("status", sa.String),
)
TABLES = (MAILING_LIST, MEMBERSHIP, EDITION, SECTION, ITEM)

_MEMBER_STATES = (MembershipStatus.ACTIVE, MembershipStatus.PENDING, MembershipStatus.UNSUBSCRIBED)


# --- reading order (shared with editorial, which orders ORM items the same way) -----------

class Orderable(Protocol):
    @property
    def id(self) -> int | None: ...
    @property
    def position(self) -> int | None: ...
    @property
    def start_date(self) -> date | None: ...
    @property
    def end_date(self) -> date | None: ...


T = TypeVar("T", bound=Orderable)


def order_items(items: Iterable[T]) -> list[T]:
    """The editor's order: positioned items by position; each item without a position
    goes in before the first positioned item that starts later (no start date: last)."""
    items = list(items)
    placed = sorted((i for i in items if i.position is not None), key=lambda i: (i.position, i.id or 0))
    loose = sorted(
        (i for i in items if i.position is None),
        key=lambda i: (_sort_day(i) is None, _sort_day(i) or date.min, i.id or 0),
    )
    ordered: list[T] = []
    for item in placed:
        while loose and (day := _sort_day(loose[0])) is not None and (
            (other := _sort_day(item)) is not None and day < other
        ):
            ordered.append(loose.pop(0))
        ordered.append(item)
    return ordered + loose


def _sort_day(item: Orderable) -> date | None:
    return item.start_date or item.end_date


# --- lists ------------------------------------------------------------------------------------

def list_summaries(connection: Connection) -> list[dict[str, Any]]:
    """Every list, by name, with its member counts."""
    counts = _member_counts(connection)
    rows = connection.execute(sa.select(MAILING_LIST).order_by(MAILING_LIST.c.name))
    return [_describe_list(row, counts.get(row.id, {})) for row in rows]


def list_summary(connection: Connection, name: str) -> dict[str, Any]:
    row = connection.execute(sa.select(MAILING_LIST).where(MAILING_LIST.c.name == name)).first()
    if row is None:
        raise NotFoundError(f"There is no list named {name!r}.")
    return _describe_list(row, _member_counts(connection, row.id).get(row.id, {}))


def _member_counts(connection: Connection, list_id: int | None = None) -> dict[int, dict[str, int]]:
    """{list id: {membership status: count}}."""
    where = () if list_id is None else (MEMBERSHIP.c.list_id == list_id,)
    return _counts_by_status(connection, MEMBERSHIP.c.list_id, MEMBERSHIP.c.status, *where)


def _counts_by_status(connection: Connection, key: sa.ColumnElement[int], status: sa.ColumnElement[str],
                      *where: sa.ColumnElement[bool]) -> dict[int, dict[str, int]]:
    """{key: {status: count}}, counted by the database."""
    counts: dict[int, dict[str, int]] = {}
    for owner, state, count in connection.execute(
            sa.select(key, status, sa.func.count()).where(*where).group_by(key, status)):
        counts.setdefault(owner, {})[state] = count
    return counts


def _describe_list(row: sa.Row[Any], counts: dict[str, int]) -> dict[str, Any]:
    return {
        "name": row.name, "description": row.description, "language": row.language,
        "double_opt_in": row.double_opt_in, "public": row.public,
        "members": {s.value: counts.get(s, 0) for s in _MEMBER_STATES},
        "created_at": row.created_at,
    }


# --- editions, sections, items ------------------------------------------------------------------

def _edition(connection: Connection, slug: str) -> sa.Row[Any]:
    row = connection.execute(sa.select(EDITION).where(EDITION.c.slug == slug)).first()
    if row is None:
        raise NotFoundError(f"There is no edition with slug '{slug}'.")
    return row


def _status_counts(statuses: Iterable[str]) -> dict[str, int]:
    counts = {status.value: 0 for status in ItemStatus}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts


def editions(connection: Connection) -> list[dict[str, Any]]:
    """Every edition, newest slug first, with its item counts."""
    counts = _counts_by_status(connection, ITEM.c.edition_id, ITEM.c.status)
    result = []
    for row in connection.execute(sa.select(EDITION).order_by(EDITION.c.slug.desc())):
        by_status = counts.get(row.id, {})
        result.append({"slug": row.slug, "title": row.title, "status": row.status,
                       "period_start": row.period_start, "period_end": row.period_end,
                       "items": sum(by_status.values()), "approved": by_status.get(ItemStatus.APPROVED, 0)})
    return result


def _sections_with_items(connection: Connection, edition_id: int, statuses: Sequence[str] | None = None
                         ) -> list[tuple[sa.Row[Any], list[sa.Row[Any]]]]:
    """Every section in order with its items in reading order (all items, or ``statuses``)."""
    query = sa.select(ITEM).where(ITEM.c.edition_id == edition_id)
    if statuses is not None:
        query = query.where(ITEM.c.status.in_(list(statuses)))
    by_section: dict[int, list[sa.Row[Any]]] = {}
    for item in connection.execute(query):
        by_section.setdefault(item.section_id, []).append(item)
    sections = connection.execute(sa.select(SECTION).where(SECTION.c.edition_id == edition_id)
                                  .order_by(SECTION.c.position, SECTION.c.id))
    return [(section, order_items(by_section.get(section.id, []))) for section in sections]


def edition_summary(connection: Connection, slug: str) -> dict[str, Any]:
    """An edition: its details, item counts by status, and its sections with their counts."""
    edition = _edition(connection, slug)
    grouped = _sections_with_items(connection, edition.id)
    return {
        "slug": edition.slug, "title": edition.title, "language": edition.language,
        "period_start": edition.period_start, "period_end": edition.period_end,
        "status": edition.status, "subject": edition.subject,
        "items": _status_counts(item.status for _, items in grouped for item in items),
        "sections": [
            {"name": section.name, "position": section.position, "items": len(items),
             "approved": sum(1 for i in items if i.status == ItemStatus.APPROVED),
             "intro_md": section.intro_md}
            for section, items in grouped
        ],
        "meta": dict(edition.meta or {}),
    }


def item_summary(item: Any, section: str) -> dict[str, Any]:
    """What `items list` shows of an item (an ORM item or a row)."""
    return {
        "id": item.id, "title": item.title, "date_label": item.date_label,
        "start": item.start_date, "end": item.end_date, "section": section,
        "position": item.position, "status": item.status,
    }


def edition_items(connection: Connection, slug: str, statuses: Sequence[str] | None = None
                  ) -> list[dict[str, Any]]:
    """An edition's items in reading order (section order, then position)."""
    edition = _edition(connection, slug)
    return [item_summary(item, section.name)
            for section, items in _sections_with_items(connection, edition.id, statuses) for item in items]


def section_summaries(connection: Connection, slug: str) -> list[dict[str, Any]]:
    """Each section of an edition in order, with its item count."""
    edition = _edition(connection, slug)
    return [{"name": section.name, "position": section.position, "items": len(items),
             "intro": bool(section.intro_md)}
            for section, items in _sections_with_items(connection, edition.id)]
