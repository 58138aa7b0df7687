"""The issue assembler: an edition's approved items, grouped and ordered, as a typed context.

CONTRACT (shared by the editorial and render stages): ``assemble_edition`` returns an
``EditionContext``; ``render`` consumes only these dataclasses, never the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlmodel import Session

from wip_mailer import editorial
from wip_mailer.errors import StateError
from wip_mailer.models import Item, ItemStatus
from wip_mailer.text.markdown import markdown_to_html


@dataclass(frozen=True)
class LinkContext:
    text: str
    url: str | None  # None for a placeholder link ("#"): rendered as plain text


@dataclass(frozen=True)
class ItemContext:
    id: int
    title: str
    date_label: str | None
    start_date: date | None
    end_date: date | None
    body_html: str  # sanitised HTML rendered from the item's Markdown
    body_md: str
    links: tuple[LinkContext, ...] = ()
    image_url: str | None = None
    image_alt: str | None = None


@dataclass(frozen=True)
class SectionContext:
    name: str
    intro_html: str  # sanitised HTML of the section's free text ("" if none)
    intro_md: str
    items: tuple[ItemContext, ...] = ()


@dataclass(frozen=True)
class EditionContext:
    slug: str
    title: str  # the period label, e.g. "Gennaio-Febbraio 2024"
    language: str
    period_start: date | None
    period_end: date | None
    subject: str
    sections: tuple[SectionContext, ...]
    credit: str = ""  # masthead line, e.g. "a cura del Servizio ... – Relazioni Internazionali"
    contact_lines: tuple[str, ...] = ()  # the contact footer, one line each (Markdown)
    contact_html: str = ""  # the contact footer as sanitised HTML
    left_out: int = 0  # items not approved, hence not in the context


# --- the assembler -------------------------------------------------------------------------

DEFAULT_MASTHEAD = "Work in Progress"


def assemble_edition(session: Session, slug: str) -> EditionContext:
    """The edition as it will go out: approved items only, grouped by section, in the
    editor's order. Sections with neither approved items nor text are left out.

    Raises StateError when no item is approved; ``left_out`` counts the items that are
    not approved (drafts and rejected), so the editor can be told.
    """
    edition = editorial.get_edition(session, slug)
    grouped = editorial.items_by_section(session, edition)
    approved = sum(1 for _s, items in grouped for i in items if i.status == ItemStatus.APPROVED)
    total = sum(len(items) for _s, items in grouped)
    if approved == 0:
        waiting = f" ({total} waiting: approve them with `wip-mailer items approve`)" if total else ""
        raise StateError(f"Edition '{slug}' has no approved items{waiting}; nothing to send.")
    sections = []
    for section, items in grouped:
        chosen = tuple(_item_context(i) for i in items if i.status == ItemStatus.APPROVED)
        if chosen or section.intro_md.strip():
            sections.append(SectionContext(
                name=section.name,
                intro_html=markdown_to_html(section.intro_md),
                intro_md=section.intro_md,
                items=chosen,
            ))
    meta = edition.meta or {}
    contact = tuple(str(line) for line in meta.get("contact", []))
    masthead = str(meta.get("masthead") or DEFAULT_MASTHEAD)
    return EditionContext(
        slug=edition.slug,
        title=edition.title,
        language=edition.language,
        period_start=edition.period_start,
        period_end=edition.period_end,
        subject=edition.subject or f"{masthead} – {edition.title}",
        sections=tuple(sections),
        credit=str(meta.get("credit", "")),
        contact_lines=contact,
        contact_html=markdown_to_html("  \n".join(contact)),
        left_out=total - approved,
    )


def _item_context(item: Item) -> ItemContext:
    assert item.id is not None
    return ItemContext(
        id=item.id,
        title=item.title,
        date_label=item.date_label,
        start_date=item.start_date,
        end_date=item.end_date,
        body_html=markdown_to_html(item.body_md),
        body_md=item.body_md,
        links=tuple(LinkContext(str(link.get("text", "")), link.get("url")) for link in item.links),
        image_url=item.image_url,
        image_alt=item.image_alt,
    )
