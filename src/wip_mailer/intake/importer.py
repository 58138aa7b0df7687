"""Store a parsed newsletter document as draft items of an edition.

Items are matched to earlier imports by ``source_key`` (the normalised title), so
importing the same file again updates the drafts instead of duplicating them. Approved
items are left alone unless ``force`` is given; then a changed approved item becomes a
draft again, since what was approved is no longer what would be sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import Session, select

from wip_mailer import editorial
from wip_mailer.db import utcnow
from wip_mailer.errors import InvalidInputError, NotFoundError
from wip_mailer.fields import check_single_line, image_url_problem
from wip_mailer.intake.document import (
    ImportWarning,
    ParsedDocument,
    normalise_name,
    parse_document,
    source_key,
)
from wip_mailer.models import Edition, Item, ItemStatus

MAX_DOCUMENT_BYTES = 5 * 1024 * 1024


@dataclass
class ImportReport:
    edition: str
    path: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped_approved: int = 0  # approved items the document would change (see ``force``)
    reverted: int = 0  # approved items changed by ``force``, now drafts again
    absent: int = 0  # items of earlier imports that this document no longer has
    sections: dict[str, int] = field(default_factory=dict)  # section → items in the document
    warnings: list[ImportWarning] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged + self.skipped_approved

    def summary(self) -> str:
        parts = [f"{self.created} created", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        if self.skipped_approved:
            parts.append(f"{self.skipped_approved} approved left as they are (use --force to update them)")
        if self.reverted:
            parts.append(f"{self.reverted} approved updated and back to draft")
        return f"Imported {self.total} items into edition '{self.edition}': {', '.join(parts)}."


def read_document(path: Path) -> str:
    """The document's text, or one clear sentence about why it cannot be read."""
    if not path.exists():
        raise NotFoundError(f"There is no file {path}.")
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file.")
    if path.stat().st_size > MAX_DOCUMENT_BYTES:
        raise InvalidInputError(f"{path} is larger than 5 MB; a newsletter document is much smaller.")
    data = path.read_bytes()
    if b"\x00" in data:
        raise InvalidInputError(f"{path} is not a text file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not UTF-8 text.") from None
    if not text.strip():
        raise InvalidInputError(f"{path} is empty.")
    return text


def check_newsletter(document: ParsedDocument, path: Path) -> None:
    items = document.items
    if not items:
        raise InvalidInputError(
            f"{path} does not look like a newsletter document: it has no news items "
            "(a title line followed by its text)."
        )
    if not document.known_sections and not any(item.date_label for item in items):
        raise InvalidInputError(
            f"{path} does not look like a newsletter document: it has no known section "
            "(Top News, Approfondimenti, Coming Soon) and no item has a date line."
        )


def import_document(session: Session, path: Path, edition_slug: str, *, force: bool = False) -> ImportReport:
    """Turn a newsletter document into draft items of an existing edition."""
    edition = editorial.get_edition(session, edition_slug)
    editorial.check_editable(edition)
    text = read_document(path)
    document = parse_document(text)
    check_newsletter(document, path)
    report = ImportReport(edition=edition.slug, path=str(path), warnings=list(document.warnings))
    _store_metadata(edition, document, report)

    existing = {
        item.source_key: item
        for item in session.exec(select(Item).where(Item.edition_id == edition.id))
        if item.source_key
    }
    seen: dict[str, int] = {}
    previous_section: str | None = None
    for parsed_section in document.sections:
        section = editorial.ensure_section(session, edition, parsed_section.name, after=previous_section)
        previous_section = section.name
        if parsed_section.intro_parts:
            section.intro_md = parsed_section.intro_md
            session.add(section)
        report.sections[section.name] = report.sections.get(section.name, 0) + len(parsed_section.items)
        for position, parsed in enumerate(parsed_section.items, start=1):
            occurrence = seen[parsed.title.casefold()] = seen.get(parsed.title.casefold(), 0) + 1
            key = source_key(parsed.title, occurrence)
            item = existing.pop(key, None)
            is_new = item is None
            if item is None:
                item = Item(edition_id=edition.id or 0, section_id=section.id or 0, title=parsed.title,
                            source_key=key)
            before = _snapshot(item)
            candidate = Item.model_validate(item.model_dump())  # work on a copy: approved stay untouched
            image_url = parsed.image_url or ""
            if image_url and (problem := image_url_problem(image_url)):
                report.warnings.append(ImportWarning(parsed.line, f"{parsed.title!r}: the image URL "
                                                     f"{image_url[:80]!r} was left out: {problem}."))
                image_url = ""
            warnings = editorial.apply_content(
                candidate, edition, title=parsed.title, date_label=parsed.date_label or "",
                body_md=parsed.body_md, image_url=image_url, image_alt=parsed.image_alt or "",
            )
            candidate.section_id = section.id or 0
            for warning in warnings:
                about_date = warning.startswith("the date label") and parsed.date_line
                line = parsed.date_line if about_date else parsed.line
                report.warnings.append(ImportWarning(line or parsed.line, f"{parsed.title!r}: {warning}"))
            if is_new:
                _copy(candidate, item)
                item.position = position
                session.add(item)
                report.created += 1
                continue
            if _snapshot(candidate) == before:
                if item.status != ItemStatus.APPROVED and item.position != position:
                    item.position = position
                    session.add(item)
                report.unchanged += 1
                continue
            if item.status == ItemStatus.APPROVED and not force:
                report.skipped_approved += 1
                continue
            _copy(candidate, item)
            item.position = position
            item.updated_at = utcnow()
            if item.status == ItemStatus.APPROVED:
                item.status, item.status_by, item.status_at = ItemStatus.DRAFT, None, item.updated_at
                report.reverted += 1
            else:
                report.updated += 1
            session.add(item)
    report.absent = len(existing)
    if existing:
        report.warnings.append(ImportWarning(0, f"{len(existing)} item(s) from an earlier import are not "
                                             "in this document; they were left as they are."))
    report.warnings.sort(key=lambda w: w.line)
    edition.updated_at = utcnow()
    session.add(edition)
    session.flush()
    return report


_FIELDS = ("title", "date_label", "start_date", "end_date", "body_md", "links", "image_url", "image_alt",
           "section_id")


def _snapshot(item: Item) -> tuple[object, ...]:
    return tuple(getattr(item, name) for name in _FIELDS)


def _copy(source: Item, target: Item) -> None:
    for name in _FIELDS:
        setattr(target, name, getattr(source, name))


def _store_metadata(edition: Edition, document: ParsedDocument, report: ImportReport) -> None:
    meta = dict(edition.meta or {})
    if document.masthead:
        meta["masthead"] = check_single_line("masthead", document.masthead, show=True)  # in the subject
    if document.credit_lines:
        meta["credit"] = " – ".join(document.credit_lines)
    if document.contact_lines:
        meta["contact"] = list(document.contact_lines)
    if document.period_label:
        meta["period_label"] = document.period_label
        # Only words count: "Marzo – Aprile 2025" (spaces, a dash of another width) is "Marzo-Aprile 2025".
        if normalise_name(document.period_label) != normalise_name(edition.title):
            report.warnings.append(ImportWarning(0, f"the document is for {document.period_label!r} but "
                                                 f"edition '{edition.slug}' is {edition.title!r}."))
    edition.meta = meta
