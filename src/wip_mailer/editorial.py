"""The editorial desk: editions, their sections and items, and approval.

Only approved items go out. Items of an edition that is being sent, or was sent, can no
longer change. Reading order is section order, then the editor's positions; an item
without a position goes in by its start date.

Over 500 lines on purpose: editions and items share the rules above (which statuses freeze
which fields, the one ``set_edition_status``); section changes are in ``sections.py``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from wip_mailer.db import utcnow
from wip_mailer.errors import InvalidInputError, NotFoundError, StateError
from wip_mailer.fields import check_image_url, check_single_line
from wip_mailer.models import (
    Campaign,
    Edition,
    EditionStatus,
    Item,
    ItemStatus,
    ScheduledJob,
    ScheduleStatus,
    Section,
)
from wip_mailer.overview import order_items
from wip_mailer.text.dates import DateSpan, parse_date_label
from wip_mailer.text.markdown import extract_links

DEFAULT_SECTIONS = ("Top News", "Approfondimenti", "Coming Soon")
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Allowed moves between edition states. Editors move draft ↔ ready; scheduling and
# dispatch move the rest. A sent edition is final.
_TRANSITIONS: dict[str, set[str]] = {
    EditionStatus.DRAFT: {EditionStatus.READY, EditionStatus.SCHEDULED, EditionStatus.SENDING},
    EditionStatus.READY: {EditionStatus.DRAFT, EditionStatus.SCHEDULED, EditionStatus.SENDING},
    EditionStatus.SCHEDULED: {EditionStatus.DRAFT, EditionStatus.READY, EditionStatus.SENDING},
    # Back to draft or ready only when its campaign handed nothing to the server
    # (dispatch.return_edition closes such a campaign first).
    EditionStatus.SENDING: {EditionStatus.SENT, EditionStatus.READY, EditionStatus.DRAFT},
    EditionStatus.SENT: set(),
}


@dataclass
class ItemChange:
    """An item after a change, with what the editor should know about it."""

    item: Item
    warnings: list[str] = field(default_factory=list)


# --- editions ----------------------------------------------------------------------------

def get_edition(session: Session, slug: str) -> Edition:
    edition = session.exec(select(Edition).where(Edition.slug == slug)).first()
    if edition is None:
        raise NotFoundError(f"There is no edition with slug '{slug}'.")
    return edition




def create_edition(
    session: Session,
    slug: str,
    title: str,
    period_start: date | None = None,
    period_end: date | None = None,
    *,
    language: str = "it",
    subject: str | None = None,
    sections: Sequence[str] = DEFAULT_SECTIONS,
) -> Edition:
    """A new draft edition with the usual sections."""
    if not _SLUG.match(slug):
        raise InvalidInputError(
            f"The slug '{slug}' is not valid: use letters, digits, '-', '.' or '_' (e.g. 2024-01)."
        )
    if not title.strip():
        raise InvalidInputError("The edition title must not be empty.")
    check_single_line("edition title", title, show=True)  # it goes into the Subject header
    if subject is not None:
        check_single_line("subject", subject, show=True)
    if period_start and period_end and period_end < period_start:
        raise InvalidInputError(
            f"The period ends ({period_end}) before it starts ({period_start})."
        )
    if session.exec(select(Edition.id).where(Edition.slug == slug)).first() is not None:
        raise InvalidInputError(f"There is already an edition with slug '{slug}'.")
    edition = Edition(slug=slug, title=title.strip(), period_start=period_start, period_end=period_end,
                      language=language, subject=subject)
    session.add(edition)
    session.flush()
    for position, name in enumerate(sections, start=1):
        session.add(Section(edition_id=_id(edition), name=name, position=position))
    session.flush()
    return edition


_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


def edit_edition(session: Session, slug: str, *, title: str | None = None, subject: str | None = None,
                 language: str | None = None, period_start: date | None = None,
                 period_end: date | None = None) -> Edition:
    """Change an edition's title, subject ("" = derived from the title), language or period.

    A new period re-reads the items' date labels within it. Sending or sent editions are final.
    """
    edition = get_edition(session, slug)
    check_editable(edition)
    if title is not None:
        if not title.strip():
            raise InvalidInputError("The edition title must not be empty.")
        edition.title = check_single_line("edition title", title, show=True).strip()
    if subject is not None:
        edition.subject = check_single_line("subject", subject, show=True).strip() or None
    if language is not None:
        if not _LANGUAGE.match(language.strip()):
            raise InvalidInputError(f"The language {language!r} is not a language code such as it or en.")
        edition.language = language.strip()
    start = period_start or edition.period_start
    end = period_end or edition.period_end
    if start and end and end < start:
        raise InvalidInputError(f"The period ends ({end}) before it starts ({start}).")
    edition.period_start, edition.period_end = start, end
    edition.updated_at = utcnow()
    session.add(edition)
    if period_start or period_end:
        for item in session.exec(select(Item).where(Item.edition_id == _id(edition))):
            apply_content(item, edition)  # the labels are read again within the new period
            session.add(item)
    session.flush()
    return edition


def delete_edition(session: Session, slug: str) -> int:
    """Delete a draft edition with its sections and items; returns how many items went."""
    edition = get_edition(session, slug)
    if edition.status != EditionStatus.DRAFT:
        raise StateError(f"Edition '{slug}' is {edition.status}: only a draft edition can be deleted.")
    if session.exec(select(Campaign.id).where(Campaign.edition_id == _id(edition))).first() is not None:
        raise StateError(f"Edition '{slug}' has campaigns on record (`wip-mailer campaigns list`), "
                         "so it is kept.")
    pending = session.exec(select(ScheduledJob.id).where(
        ScheduledJob.edition_id == _id(edition), ScheduledJob.status == ScheduleStatus.SCHEDULED)).all()
    if pending:
        raise StateError(f"Edition '{slug}' has scheduled job(s) {', '.join(f'#{n}' for n in pending)}: "
                         "cancel them first with `wip-mailer schedule cancel ID`.")
    items = session.execute(sa.delete(Item).where(col(Item.edition_id) == _id(edition)))
    session.execute(sa.delete(ScheduledJob).where(col(ScheduledJob.edition_id) == _id(edition)))
    session.execute(sa.delete(Section).where(col(Section.edition_id) == _id(edition)))
    session.delete(edition)
    session.flush()
    return int(getattr(items, "rowcount", 0) or 0)


def set_edition_status(session: Session, edition: Edition, status: str, *,
                       expect: str | None = None) -> Edition:
    """Move an edition to ``status`` (draft, ready, scheduled, sending, sent): the one path.

    A compare-and-set on the row, from ``expect`` (default: the status as loaded), through
    the transition table, so that two processes racing for one edition cannot both win.
    A sent edition stays sent: a later campaign to more lists leaves it as it is.
    """
    try:
        target = EditionStatus(status)
    except ValueError:
        allowed = ", ".join(s.value for s in EditionStatus)
        raise InvalidInputError(f"'{status}' is not an edition status; use one of {allowed}.") from None
    current = EditionStatus(expect or edition.status)
    if target == current or (current == EditionStatus.SENT and target == EditionStatus.SENDING):
        return edition
    if target not in _TRANSITIONS[current]:
        raise StateError(f"Edition '{edition.slug}' is {current} and cannot become {target}.")
    now = utcnow()
    values: dict[str, Any] = {"status": target, "updated_at": now}
    if target == EditionStatus.SENT:
        values["sent_at"] = now
    won = session.execute(
        sa.update(Edition).where(col(Edition.id) == edition.id, col(Edition.status) == current)
        .values(**values).execution_options(synchronize_session=False)
    )
    if getattr(won, "rowcount", 0) != 1:
        raise StateError(f"Edition '{edition.slug}' changed while its status was being set; try again.")
    for key, value in values.items():
        set_committed_value(edition, key, value)  # the row is written: keep the loaded copy in step
    return edition


def edition_period(edition: Edition) -> tuple[date, date] | None:
    if edition.period_start and edition.period_end:
        return edition.period_start, edition.period_end
    if edition.period_start or edition.period_end:
        day = edition.period_start or edition.period_end
        assert day is not None
        return day, day
    return None


def edition_year(edition: Edition) -> int:
    """The year labels without one belong to: from the period, else the slug (2024-01)."""
    if edition.period_start:
        return edition.period_start.year
    match = re.match(r"^(\d{4})", edition.slug)
    return int(match.group(1)) if match else edition.created_at.year


def parse_label_for(edition: Edition, label: str | None) -> DateSpan | None:
    return parse_date_label(label, year=edition_year(edition), period=edition_period(edition))


def check_editable(edition: Edition) -> None:
    if edition.status in (EditionStatus.SENDING, EditionStatus.SENT):
        raise StateError(f"Edition '{edition.slug}' is {edition.status}: its items can no longer change.")


def _id(row: Edition | Section | Item) -> int:
    assert row.id is not None, "row not flushed"
    return row.id


# --- sections ----------------------------------------------------------------------------

def sections_of(session: Session, edition: Edition) -> list[Section]:
    query = select(Section).where(Section.edition_id == _id(edition))
    return list(session.exec(query.order_by(col(Section.position), col(Section.id))))


def find_section(sections: Iterable[Section], name: str) -> Section | None:
    wanted = name.strip().casefold()
    return next((s for s in sections if s.name.casefold() == wanted), None)


def ensure_section(session: Session, edition: Edition, name: str, *, after: str | None = None) -> Section:
    """The section called ``name`` (any case); a new one goes after ``after``, else last."""
    sections = sections_of(session, edition)
    found = find_section(sections, name)
    if found is not None:
        return found
    if not name.strip():
        raise InvalidInputError("A section name must not be empty.")
    section = Section(edition_id=_id(edition), name=name.strip())
    anchor = find_section(sections, after) if after else None
    index = sections.index(anchor) + 1 if anchor else len(sections)
    sections.insert(index, section)
    for position, each in enumerate(sections, start=1):
        each.position = position
        session.add(each)
    session.flush()
    return section


def require_section(session: Session, edition: Edition, name: str) -> Section:
    """The section called ``name`` (any case), or an error naming the edition's sections."""
    sections = sections_of(session, edition)
    found = find_section(sections, name)
    if found is not None:
        return found
    names = [s.name for s in sections]
    by_key = {n.casefold(): n for n in names}
    close = difflib.get_close_matches(name.strip().casefold(), list(by_key), n=1, cutoff=0.6)
    hint = f" (did you mean '{by_key[close[0]]}'?)" if close else ""
    listed = ", ".join(names) if names else "none yet"
    raise InvalidInputError(
        f"Edition '{edition.slug}' has no section '{name.strip()}'{hint}; its sections are: {listed} "
        f"(add one with `wip-mailer sections add --edition {edition.slug} NAME`)."
    )


# --- items -------------------------------------------------------------------------------

def get_item(session: Session, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None:
        raise NotFoundError(f"There is no item with id {item_id}.")
    return item


def edition_of(session: Session, item: Item) -> Edition:
    edition = session.get(Edition, item.edition_id)
    assert edition is not None
    return edition






def items_by_section(
    session: Session, edition: Edition, statuses: Sequence[str] | None = None
) -> list[tuple[Section, list[Item]]]:
    """Every section in order with its items in reading order (all items, or ``statuses``)."""
    query = select(Item).where(Item.edition_id == _id(edition))
    if statuses is not None:
        query = query.where(col(Item.status).in_(list(statuses)))
    by_section: dict[int, list[Item]] = {}
    for item in session.exec(query):
        by_section.setdefault(item.section_id, []).append(item)
    return [(s, order_items(by_section.get(_id(s), []))) for s in sections_of(session, edition)]


def list_items(session: Session, slug: str, statuses: Sequence[str] | None = None) -> list[Item]:
    edition = get_edition(session, slug)
    return [item for _section, items in items_by_section(session, edition, statuses) for item in items]


def apply_content(
    item: Item,
    edition: Edition,
    *,
    title: str | None = None,
    date_label: str | None = None,
    body_md: str | None = None,
    image_url: str | None = None,
    image_alt: str | None = None,
) -> list[str]:
    """Set an item's content fields (None leaves a field as it is; "" clears the date
    label and image); derives dates and links. Returns warnings."""
    warnings: list[str] = []
    if title is not None:
        if not title.strip():
            raise InvalidInputError("An item title must not be empty.")
        item.title = title.strip()
    if date_label is not None:
        item.date_label = date_label.strip() or None
    span = parse_label_for(edition, item.date_label)
    item.start_date, item.end_date = (span.start, span.end) if span else (None, None)
    if item.date_label and span is None:
        warnings.append(f"the date label {item.date_label!r} could not be read; it is kept without dates.")
    if body_md is not None:
        item.body_md = body_md.strip()
    links = extract_links(item.body_md)
    item.links = [link.as_dict() for link in links]
    missing = [link.text for link in links if link.placeholder]
    if missing:
        warnings.append(f"{len(missing)} link(s) without a URL: {', '.join(repr(t) for t in missing)}.")
    if image_url is not None:
        item.image_url = check_image_url(image_url.strip()) if image_url.strip() else None
    if image_alt is not None:
        item.image_alt = image_alt.strip() or None
    return warnings


def add_item(
    session: Session,
    slug: str,
    *,
    title: str,
    date_label: str | None = None,
    body_md: str = "",
    section: str = DEFAULT_SECTIONS[0],
    position: int | None = None,
    image_url: str | None = None,
    image_alt: str | None = None,
    new_section: bool = True,
) -> ItemChange:
    """A new draft item; without a position it goes in by its start date. An unknown
    ``section`` is created at the end, or with ``new_section=False`` refused."""
    edition = get_edition(session, slug)
    check_editable(edition)
    if position is not None and position < 1:
        raise InvalidInputError("A position counts from 1.")
    target = (ensure_section if new_section else require_section)(session, edition, section)
    item = Item(edition_id=_id(edition), section_id=_id(target), title="")
    warnings = apply_content(item, edition, title=title, date_label=date_label or "", body_md=body_md,
                             image_url=image_url or "", image_alt=image_alt or "")
    session.add(item)
    session.flush()
    if position is not None:
        _place(session, edition, item, target, position)
    return ItemChange(item, warnings)


def edit_item(
    session: Session,
    item_id: int,
    *,
    title: str | None = None,
    date_label: str | None = None,
    body_md: str | None = None,
    image_url: str | None = None,
    image_alt: str | None = None,
) -> ItemChange:
    """Change an item's content. An approved item whose content changes needs approving again."""
    item = get_item(session, item_id)
    edition = edition_of(session, item)
    check_editable(edition)
    before = _content(item)
    warnings = apply_content(item, edition, title=title, date_label=date_label, body_md=body_md,
                             image_url=image_url, image_alt=image_alt)
    if _content(item) != before:
        item.updated_at = utcnow()
        if item.status == ItemStatus.APPROVED:
            item.status, item.status_by, item.status_at = ItemStatus.DRAFT, None, item.updated_at
            warnings.append("it was approved; its content changed, so it is a draft again.")
    session.add(item)
    session.flush()
    return ItemChange(item, warnings)


def delete_item(session: Session, item_id: int) -> Item:
    """Delete an item of an edition that is not being sent or sent; returns it as it was."""
    item = get_item(session, item_id)
    check_editable(edition_of(session, item))
    session.delete(item)
    session.flush()
    return item


def _content(item: Item) -> tuple[object, ...]:
    return (item.title, item.date_label, item.body_md, item.image_url, item.image_alt)


def _set_status(session: Session, items: Sequence[Item], status: str, by: str) -> list[Item]:
    """Items whose status changed (the others already had it)."""
    editions: dict[int, Edition] = {}
    for item in items:
        if item.edition_id not in editions:
            editions[item.edition_id] = edition_of(session, item)
            check_editable(editions[item.edition_id])
    changed = []
    now = utcnow()
    for item in items:
        if item.status != status:
            item.status, item.status_by, item.status_at = status, by, now
            session.add(item)
            changed.append(item)
    session.flush()
    return changed


def _items_by_id(session: Session, ids: Iterable[int]) -> list[Item]:
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        raise InvalidInputError("Give at least one item id.")
    return [get_item(session, item_id) for item_id in wanted]


def approve_items(session: Session, target: str | Iterable[int], by: str) -> list[Item]:
    """Approve items by id, or every item of the edition named by slug; returns those
    that were not approved before."""
    if isinstance(target, str):
        edition = get_edition(session, target)
        items = list_items(session, edition.slug)
        if not items:
            raise StateError(f"Edition '{edition.slug}' has no items to approve.")
        check_editable(edition)
    else:
        items = _items_by_id(session, target)
    return _set_status(session, items, ItemStatus.APPROVED, by)


def approve_all(session: Session, slug: str, by: str) -> int:
    """Approve every item of an edition (rejected ones too); returns how many changed."""
    return len(approve_items(session, slug, by))


def reject_items(session: Session, ids: Iterable[int], by: str) -> list[Item]:
    return _set_status(session, _items_by_id(session, ids), ItemStatus.REJECTED, by)


def move_item(session: Session, item_id: int, *, position: int | None = None,
              section: str | None = None) -> Item:
    """Put an item at ``position`` (1 = first) of its section, or of ``section``;
    the section's items are renumbered in their current reading order."""
    item = get_item(session, item_id)
    edition = edition_of(session, item)
    check_editable(edition)
    if position is not None and position < 1:
        raise InvalidInputError("A position counts from 1.")
    target = ensure_section(session, edition, section) if section else session.get(Section, item.section_id)
    assert target is not None
    if position is None:
        position = len(_section_items(session, target, excluding=item)) + 1
    _place(session, edition, item, target, position)
    return item


def _section_items(session: Session, section: Section, excluding: Item) -> list[Item]:
    query = select(Item).where(Item.section_id == _id(section), Item.id != _id(excluding))
    return order_items(session.exec(query))


def _place(session: Session, edition: Edition, item: Item, section: Section, position: int) -> None:
    others = _section_items(session, section, excluding=item)
    others.insert(min(position, len(others) + 1) - 1, item)
    item.section_id = _id(section)
    for number, each in enumerate(others, start=1):
        each.position = number
        session.add(each)
    session.flush()


# --- summaries for the CLI and the web -------------------------------------------------------



def section_name(session: Session, item: Item) -> str:
    section = session.get(Section, item.section_id)
    return section.name if section else ""



