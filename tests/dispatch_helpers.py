"""Builders shared by the dispatch tests: a hand-made rendered edition, an audience, a frozen
campaign, a send with a stand-in pre-flight, and the ledger as a dict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, insert
from sqlmodel import select

from wip_mailer.db import session_scope, utcnow
from wip_mailer.dispatch import SendRequest, send_edition
from wip_mailer.models import Delivery, Edition, EditionStatus, MailingList, Membership, Subscriber
from wip_mailer.render import PREFERENCES_URL_PLACEHOLDER, UNSUBSCRIBE_URL_PLACEHOLDER, RenderedEdition
from wip_mailer.settings import Settings

UNSUB = UNSUBSCRIBE_URL_PLACEHOLDER
PREFS = PREFERENCES_URL_PLACEHOLDER


def rendered_edition(subject: str = "Work in Progress – Gennaio-Febbraio 2024",
                     items: int = 30) -> RenderedEdition:
    """An edition as render would give it: one very long HTML line, accents, '=' and '.' traps."""
    blocks = "".join(
        f'<tr><td style="font-family:Arial;color:#333"><h2>Notizia {n}: città è più "bella"</h2>'
        f'<p>Testo della notizia {n} con un link <a href="https://example.org/n?id={n}&amp;x=1">qui</a> '
        f'e un prezzo = 5 € — fine.</p></td></tr>'
        for n in range(items)
    )
    html = (
        '<!doctype html><html><head><meta charset="utf-8"><style>@media (max-width:480px)'
        '{.c{width:100%!important}}</style></head><body><table class="c">' + blocks +
        f'</table><p><a href="{UNSUB}">Annulla l\'iscrizione</a> · '
        f'<a href="{PREFS}">Preferenze</a></p></body></html>'
    )
    text_items = "\n\n".join(
        f"Notizia {n}: città è più bella\n.Riga che inizia con un punto = trappola per SMTP.\n"
        + "parola " * 30
        for n in range(items)
    )
    text = f"{text_items}\n\n--\nPer non ricevere più la newsletter: {UNSUB}\nPreferenze: {PREFS}\n"
    return RenderedEdition(subject=subject, html=html, text=text)


def make_edition(engine: Engine, slug: str = "2024-01", status: str = EditionStatus.READY) -> int:
    with session_scope(engine) as session:
        edition = Edition(slug=slug, title="Gennaio-Febbraio 2024", status=status)
        session.add(edition)
        session.flush()
        assert edition.id is not None
        return edition.id


def make_audience(engine: Engine, count: int, list_name: str = "main", *, domain: str = "example.net",
                  names: Sequence[str] | None = None, start: int = 0) -> list[str]:
    """``count`` active subscribers on an active list; returns their addresses."""
    emails = [f"reader{n:06d}@{domain}" for n in range(start, start + count)]
    now = utcnow()
    with session_scope(engine) as session:
        mailing_list = MailingList(name=list_name)
        session.add(mailing_list)
        session.flush()
        session.execute(insert(Subscriber), [
            {"email": email, "name": (names[i % len(names)] if names else f"Lettore {i}"),
             "tags": [], "attributes": {}, "created_at": now, "updated_at": now}
            for i, email in enumerate(emails)
        ])
        ids = session.execute(
            Subscriber.__table__.select().where(Subscriber.__table__.c.email.in_(emails))  # type: ignore[attr-defined]
        ).all()
        session.execute(insert(Membership), [
            {"subscriber_id": row.id, "list_id": mailing_list.id, "status": "active", "subscribed_at": now}
            for row in ids
        ])
    return emails


@dataclass
class Report:
    """What the render stage's pre-flight check returns (its fields as dispatch uses them)."""

    rendered: RenderedEdition
    blocking: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def preflight_with(rendered: RenderedEdition, blocking: Sequence[str] = (), warnings: Sequence[str] = ()):
    """A pre-flight stand-in returning a hand-built rendered edition (until render is merged)."""

    def preflight(session: object, settings: object, slug: str) -> Report:
        return Report(rendered, list(blocking), list(warnings))

    return preflight


SLUG = "2024-01"


def send(engine: Engine, settings: Settings, **request: object):
    fields = {"slug": SLUG, "lists": ("main",), **request}
    return send_edition(engine, settings, SendRequest(**fields),  # type: ignore[arg-type]
                        preflight=preflight_with(rendered_edition()))


def deliveries(engine: Engine) -> dict[str, Delivery]:
    with session_scope(engine) as session:
        return {d.email: d for d in session.exec(select(Delivery)).all()}


def start_campaign(engine: Engine, lists: tuple[str, ...] = ("main",)) -> int:
    """Create and freeze a campaign without running it (what `send` does before its runner starts)."""
    from wip_mailer.audience import resolve_lists
    from wip_mailer.dispatch.campaign import _start_campaign

    with session_scope(engine) as session:
        resolved = resolve_lists(session, lists)
    return _start_campaign(engine, 1, SendRequest(SLUG, lists), resolved, rendered_edition())
