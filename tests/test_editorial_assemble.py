"""The issue assembler: approved items only, grouped and ordered, as a typed context."""

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine

from wip_mailer import db, editorial
from wip_mailer.assemble import EditionContext, assemble_edition
from wip_mailer.errors import NotFoundError, StateError
from wip_mailer.intake import import_document

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def slug(engine: Engine) -> str:
    with db.session_scope(engine) as session:
        editorial.create_edition(session, "2026-11", "Novembre-Dicembre 2026",
                                 date(2026, 11, 1), date(2026, 12, 31))
    return "2026-11"


def _assemble(engine: Engine, slug: str) -> EditionContext:
    with db.session_scope(engine) as session:
        return assemble_edition(session, slug)


def test_only_approved_items_in_the_editors_order(engine: Engine, slug: str) -> None:
    with db.session_scope(engine) as session:
        ids = {}
        for title, label, section, position in [
            ("Terzo", "20 novembre", "Top News", 3),
            ("Primo", "2 novembre", "Top News", 1),
            ("Rifiutato", "3 novembre", "Top News", 2),
            ("Bozza", "4 novembre", "Top News", 4),
            ("Secondo", "10 novembre", "Top News", None),  # no position: by start date, between 1 and 3
            ("Più tardi", "febbraio", "Coming Soon", None),
            ("Evento", "5 dicembre", "Eventi", None),  # a custom section, last
        ]:
            ids[title] = editorial.add_item(session, slug, title=title, date_label=label, section=section,
                                            position=position, body_md=f"Testo **{title}**.").item.id
        chosen = ("Terzo", "Primo", "Secondo", "Più tardi", "Evento")
        editorial.approve_items(session, [ids[t] for t in chosen], by="ada")
        editorial.reject_items(session, [ids["Rifiutato"]], by="ada")
    context = _assemble(engine, slug)
    assert [(s.name, [i.title for i in s.items]) for s in context.sections] == [
        ("Top News", ["Primo", "Secondo", "Terzo"]),
        ("Coming Soon", ["Più tardi"]),
        ("Eventi", ["Evento"]),
    ]
    assert context.left_out == 2
    first = context.sections[0].items[0]
    assert first.body_html == "<p>Testo <strong>Primo</strong>.</p>"
    assert (first.date_label, first.start_date, first.end_date) == ("2 novembre", date(2026, 11, 2),
                                                                    date(2026, 11, 2))
    assert context.sections[1].items[0].start_date == date(2027, 2, 1)
    assert context.subject == "Work in Progress – Novembre-Dicembre 2026"
    assert (context.slug, context.title, context.language) == ("2026-11", "Novembre-Dicembre 2026", "it")


def test_imported_example_assembles_with_metadata(engine: Engine, slug: str) -> None:
    with db.session_scope(engine) as session:
        import_document(session, REPO / "examples" / "edition-2026-11.md", slug)
        items = editorial.list_items(session, slug)
        editorial.approve_items(session, [i.id for i in items[:3]] + [items[-1].id], by="ada")  # type: ignore[misc]
    context = _assemble(engine, slug)
    assert [(s.name, len(s.items)) for s in context.sections] == [
        ("Top News", 3), ("Approfondimenti", 0), ("Coming Soon", 1)]
    approfondimenti = context.sections[1]
    assert approfondimenti.intro_html.count("<li>") == 3
    assert "<strong>Delegazioni ricevute" in approfondimenti.intro_html
    assert context.left_out == len(items) - 4
    assert context.credit == "a cura dell'Ufficio Esempio – Relazioni Internazionali"
    assert context.contact_lines[0] == "Ufficio Esempio"
    assert '<a href="mailto:relazioni@example.org" rel="noopener noreferrer">relazioni@example.org</a>' \
        in context.contact_html
    assert context.contact_html.count("<br>") == len(context.contact_lines) - 1
    lab = context.sections[0].items[1]
    assert [(link.text, link.url) for link in lab.links] == [("CoolYards", None)]
    assert "CoolYards" in lab.body_html and 'href="#"' not in lab.body_html


def test_hostile_body_is_sanitised_in_the_context(engine: Engine, slug: str) -> None:
    with db.session_scope(engine) as session:
        hostile = "<script>alert(1)</script> [a](javascript:x) <img src=x onerror=alert(1)>"
        item = editorial.add_item(session, slug, title="X", body_md=hostile).item
        editorial.approve_items(session, [item.id], by="ada")  # type: ignore[list-item]
    body = _assemble(engine, slug).sections[0].items[0].body_html
    assert "<script" not in body and "<img" not in body and "href" not in body


def test_subject_set_on_the_edition_wins(engine: Engine, slug: str) -> None:
    with db.session_scope(engine) as session:
        edition = editorial.get_edition(session, slug)
        edition.subject = "Newsletter di novembre"
        item = editorial.add_item(session, slug, title="X", body_md="Testo.").item
        editorial.approve_items(session, [item.id], by="ada")  # type: ignore[list-item]
    assert _assemble(engine, slug).subject == "Newsletter di novembre"


def test_edition_without_approved_items_is_refused(engine: Engine, slug: str) -> None:
    with pytest.raises(StateError) as caught:
        _assemble(engine, slug)
    assert str(caught.value) == "Edition '2026-11' has no approved items; nothing to send."
    with db.session_scope(engine) as session:
        editorial.add_item(session, slug, title="X", body_md="Testo.")
        editorial.add_item(session, slug, title="Y", body_md="Testo.")
    with pytest.raises(StateError) as caught:
        _assemble(engine, slug)
    assert str(caught.value) == (
        "Edition '2026-11' has no approved items (2 waiting: approve them with `wip-mailer items approve`); "
        "nothing to send.")
    with pytest.raises(NotFoundError):
        _assemble(engine, "2099-01")
