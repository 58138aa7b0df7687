"""An edition's sections, as the editor manages them: add, rename, remove (empty ones only).

Finding and creating sections for items and imports is in ``editorial`` (``sections_of``,
``ensure_section``, ``require_section``).
"""

from __future__ import annotations

from sqlmodel import Session, select

from wip_mailer.editorial import (
    check_editable,
    ensure_section,
    find_section,
    get_edition,
    require_section,
    sections_of,
)
from wip_mailer.errors import InvalidInputError, StateError
from wip_mailer.fields import check_single_line
from wip_mailer.models import Item, Section


def add_section(session: Session, slug: str, name: str, *, after: str | None = None) -> Section:
    """A new empty section, after the section ``after`` (default: last)."""
    edition = get_edition(session, slug)
    check_editable(edition)
    check_single_line("section name", name, show=True)
    sections = sections_of(session, edition)
    if find_section(sections, name) is not None:
        raise InvalidInputError(f"Edition '{slug}' already has a section '{name.strip()}'.")
    if after is not None:
        require_section(session, edition, after)
    return ensure_section(session, edition, name, after=after)


def rename_section(session: Session, slug: str, old: str, new: str) -> Section:
    edition = get_edition(session, slug)
    check_editable(edition)
    section = require_section(session, edition, old)
    if not new.strip():
        raise InvalidInputError("A section name must not be empty.")
    check_single_line("section name", new, show=True)
    taken = find_section(sections_of(session, edition), new)
    if taken is not None and taken.id != section.id:
        raise InvalidInputError(f"Edition '{slug}' already has a section '{taken.name}'.")
    section.name = new.strip()
    session.add(section)
    session.flush()
    return section


def remove_section(session: Session, slug: str, name: str) -> Section:
    """Remove an empty section (one with items is refused: move or delete them first)."""
    edition = get_edition(session, slug)
    check_editable(edition)
    section = require_section(session, edition, name)
    count = len(session.exec(select(Item.id).where(Item.section_id == section.id)).all())
    if count:
        raise StateError(f"The section '{section.name}' has {count} item(s): move them with "
                         "`wip-mailer items move ID --section NAME` or delete them first.")
    session.delete(section)
    session.flush()
    for position, each in enumerate(sections_of(session, edition), start=1):
        each.position = position
        session.add(each)
    session.flush()
    return section
