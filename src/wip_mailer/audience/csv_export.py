"""Exporting subscribers as CSV: everything a re-import needs, so that export → import into
an empty database → export gives the same file.

Columns: ``email, name, language, organisation, country, tags, status, suppressed,
consent`` and one ``attr.NAME`` per attribute any exported subscriber has (sorted).
``status`` is the membership's on ``--list`` (the subscriber's own without it, and always
when bounced or complained); ``suppressed`` is the suppression reason, if any; ``consent``
is the consent history as a JSON list (kind, time, source, IP...; the list's own events
with ``--list``). Attribute values that are not text are written as JSON. A cell that a
spreadsheet would run as a formula gets a leading ``'``, which the import removes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any, TextIO

import sqlalchemy as sa
from sqlmodel import Session, col, select

from wip_mailer.audience.csv_reader import escape_formula
from wip_mailer.audience.lists import get_list
from wip_mailer.audience.suppression import email_hash
from wip_mailer.models import ConsentEvent, Membership, Subscriber, SubscriberStatus, Suppression

EXPORT_COLUMNS = ("email", "name", "language", "organisation", "country", "tags", "status", "suppressed",
                  "consent")
_STICKY = (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)
_EVENT_FIELDS = ("source", "ip", "user_agent", "text_version", "detail")


def _attribute_cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _histories(session: Session, list_id: int | None) -> Iterator[tuple[str, str]]:
    """(email, consent JSON) per subscriber with events, in email order (streamed)."""
    query = (sa.select(col(Subscriber.email), col(ConsentEvent.kind), col(ConsentEvent.at),
                       *[getattr(ConsentEvent, name) for name in _EVENT_FIELDS])
             .join(Subscriber, col(Subscriber.id) == col(ConsentEvent.subscriber_id))
             .order_by(col(Subscriber.email), col(ConsentEvent.at), col(ConsentEvent.id))
             .execution_options(yield_per=2000))
    if list_id is not None:
        query = query.where(col(ConsentEvent.list_id) == list_id)
    email: str | None = None
    events: list[dict[str, Any]] = []
    for row in session.execute(query):
        if row[0] != email:
            if email is not None:
                yield email, json.dumps(events, ensure_ascii=False, separators=(",", ":"))
            email, events = row[0], []
        event = {"kind": row[1], "at": row[2].isoformat()}
        event.update({name: value for name, value in zip(_EVENT_FIELDS, row[3:], strict=True)
                      if value is not None})
        events.append(event)
    if email is not None:
        yield email, json.dumps(events, ensure_ascii=False, separators=(",", ":"))


def export_csv(session: Session, out: TextIO, *, list_name: str | None = None) -> int:
    """Write subscribers (members of ``list_name`` when given) as CSV; returns the rows written."""
    list_id = get_list(session, list_name).id if list_name else None
    columns = [col(Subscriber.email), col(Subscriber.name), col(Subscriber.language),
               col(Subscriber.organisation), col(Subscriber.country), col(Subscriber.tags),
               col(Subscriber.attributes), col(Subscriber.status)]
    query = sa.select(*columns)
    if list_id is not None:
        query = (sa.select(*columns, col(Membership.status))
                 .join(Membership, col(Membership.subscriber_id) == col(Subscriber.id))
                 .where(col(Membership.list_id) == list_id))
    query = query.order_by(col(Subscriber.email))
    names: set[str] = set()
    for (attributes,) in session.execute(sa.select(query.subquery().c.attributes)
                                         .execution_options(yield_per=2000)):
        names.update(attributes or {})
    attribute_names = sorted(names)
    suppressed = dict(session.exec(select(Suppression.email_hash, Suppression.reason)).all())
    histories = _histories(session, list_id)
    pending_history = next(histories, None)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*EXPORT_COLUMNS, *(f"attr.{name}" for name in attribute_names)])
    count = 0
    for row in session.execute(query.execution_options(yield_per=2000)):
        email, name, language, organisation, country, tags, attributes, status = row[:8]
        if list_id is not None and status not in _STICKY:
            status = row[8]
        while pending_history is not None and pending_history[0] < email:
            pending_history = next(histories, None)
        consent = ""
        if pending_history is not None and pending_history[0] == email:
            consent = pending_history[1]
        attributes = attributes or {}
        cells = [email, name, language, organisation, country, ",".join(tags), status,
                 suppressed.get(email_hash(email), ""), consent,
                 *(_attribute_cell(attributes[n]) if n in attributes else "" for n in attribute_names)]
        writer.writerow([escape_formula(cell) for cell in cells])
        count += 1
    return count
