"""The issue assembler: an edition's approved items, grouped and ordered, as a typed context.

CONTRACT (shared by the editorial and render stages): ``assemble_edition`` returns an
``EditionContext``; ``render`` consumes only these dataclasses, never the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


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
    extra: dict[str, str] = field(default_factory=dict)
