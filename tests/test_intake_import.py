"""Importing documents into the store: counts, re-import, approved items, bad input."""

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import select

from wip_mailer import db, editorial
from wip_mailer.errors import InvalidInputError, NotFoundError, StateError
from wip_mailer.intake import import_document
from wip_mailer.models import Edition, Item, ItemStatus, Section

REPO = Path(__file__).resolve().parents[1]


def _items(engine: Engine, slug: str) -> list[Item]:
    with db.session_scope(engine) as session:
        return editorial.list_items(session, slug)


def _count(engine: Engine) -> int:
    with db.session_scope(engine) as session:
        return session.exec(select(func.count()).select_from(Item)).one()


def test_sample_import_creates_29_news_items_and_the_rest(engine: Engine, edition_2024: str,
                                                          seed_path: Path) -> None:
    with db.session_scope(engine) as session:
        report = import_document(session, seed_path, edition_2024)
    assert (report.created, report.updated, report.unchanged, report.skipped_approved) == (30, 0, 0, 0)
    assert report.sections == {"Top News": 29, "Approfondimenti": 0, "Coming Soon": 1}
    items = _items(engine, edition_2024)
    news = [i for i in items if i.position is not None and i.section_id == items[0].section_id]
    assert len(news) == 29
    assert [i.position for i in news] == list(range(1, 30))
    assert all(i.status == ItemStatus.DRAFT for i in items)
    by_title = {i.title: i for i in items}
    sme = by_title["Consortium meeting di SME4GREEN a Bucarest"]
    assert (sme.date_label, sme.start_date, sme.end_date) == (
        "9-11 gennaio", date(2024, 1, 9), date(2024, 1, 11))
    assert sme.links == [{"text": "SME4GREEN", "url": None, "placeholder": True}]
    assert sme.image_alt is not None and sme.image_url is None
    toasean = by_title["TOASEAN Business Days 2024"]
    assert (toasean.start_date, toasean.end_date) == (date(2024, 2, 29), date(2024, 2, 29))
    survey = by_title["Indagine su diritti, condizioni di lavoro e welfare degli artisti nel 2024"]
    assert (survey.date_label, survey.start_date) == (None, None)
    assert {"text": "https://shorturl.at/bhEKO", "url": "https://shorturl.at/bhEKO", "placeholder": False} \
        in survey.links
    nagoya = items[-1]
    assert (nagoya.title, nagoya.start_date, nagoya.end_date) == (
        "Delegazione di studenti di Nagoya", date(2024, 3, 1), date(2024, 3, 31))
    with db.session_scope(engine) as session:
        edition = editorial.get_edition(session, edition_2024)
        sections = {s.name: s for s in editorial.sections_of(session, edition)}
    assert sections["Approfondimenti"].intro_md.count("\n- ") == 7
    assert edition.meta["credit"] == "a cura del Servizio Gabinetto del Sindaco – Relazioni Internazionali"
    assert edition.meta["contact"][-2] == (
        "[international.affairs@comune.torino.it](mailto:international.affairs@comune.torino.it)")
    # warnings carry line numbers: a placeholder link on the first item's title line
    assert any(w.line == 17 and "without a URL" in w.message for w in report.warnings)


def test_reimport_updates_drafts_and_leaves_approved_items(engine: Engine, edition_2024: str, seed_path: Path,
                                                           tmp_path: Path) -> None:
    with db.session_scope(engine) as session:
        import_document(session, seed_path, edition_2024)
    with db.session_scope(engine) as session:
        again = import_document(session, seed_path, edition_2024)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 30)
    assert _count(engine) == 30

    items = _items(engine, edition_2024)
    approved, draft = items[1], items[2]
    with db.session_scope(engine) as session:
        editorial.approve_items(session, [approved.id], by="ada")
    text = seed_path.read_text(encoding="utf-8")
    first_sentence = approved.body_md.split(".")[0]
    text = text.replace(first_sentence, first_sentence + " (rivisto)")
    text = text.replace(draft.body_md.split(".")[0], draft.body_md.split(".")[0] + " (rivisto)")
    text = text.replace("**17 gennaio**", "**18 gennaio**")
    edited = tmp_path / "edited.md"
    edited.write_text(text, encoding="utf-8")

    with db.session_scope(engine) as session:
        report = import_document(session, edited, edition_2024)
    assert (report.created, report.updated, report.unchanged, report.skipped_approved) == (0, 2, 27, 1)
    after = {i.id: i for i in _items(engine, edition_2024)}
    assert "(rivisto)" not in after[approved.id].body_md
    assert after[approved.id].status == ItemStatus.APPROVED and after[approved.id].status_by == "ada"
    assert "(rivisto)" in after[draft.id].body_md
    moved = next(i for i in after.values() if i.date_label == "18 gennaio")
    assert moved.start_date == date(2024, 1, 18)
    assert _count(engine) == 30

    with db.session_scope(engine) as session:
        forced = import_document(session, edited, edition_2024, force=True)
    assert (forced.reverted, forced.skipped_approved, forced.unchanged) == (1, 0, 29)
    after = {i.id: i for i in _items(engine, edition_2024)}
    assert "(rivisto)" in after[approved.id].body_md
    assert after[approved.id].status == ItemStatus.DRAFT  # what was approved is no longer what would go out


def test_import_of_the_repository_example(engine: Engine) -> None:
    with db.session_scope(engine) as session:
        editorial.create_edition(session, "2026-11", "Novembre-Dicembre 2026", date(2026, 11, 1),
                                 date(2026, 12, 31))
        report = import_document(session, REPO / "examples" / "edition-2026-11.md", "2026-11")
    assert (report.created, report.sections) == (12, {"Top News": 10, "Approfondimenti": 0, "Coming Soon": 2})
    new_year = next(i for i in _items(engine, "2026-11") if i.date_label == "30 dicembre - 2 gennaio")
    assert (new_year.start_date, new_year.end_date) == (date(2026, 12, 30), date(2027, 1, 2))


def test_custom_section_goes_after_the_section_before_it_in_the_document(engine: Engine, edition_2024: str,
                                                                        tmp_path: Path) -> None:
    doc = tmp_path / "custom.md"
    doc.write_text(
        "## Top News\n\n### Uno\n\n**3 gennaio**\n\nTesto uno.\n\n"
        "# Eventi sportivi\n\n## Due\n\n**4 gennaio**\n\nTesto due.\n\n"
        "# Coming Soon\n\n- Tre | marzo\n",
        encoding="utf-8",
    )
    with db.session_scope(engine) as session:
        import_document(session, doc, edition_2024)
        edition = editorial.get_edition(session, edition_2024)
        names = [s.name for s in editorial.sections_of(session, edition)]
    assert names == ["Top News", "Eventi sportivi", "Approfondimenti", "Coming Soon"]


def test_unreadable_date_label_is_kept_and_reported(engine: Engine, edition_2024: str,
                                                    tmp_path: Path) -> None:
    doc = tmp_path / "tbd.md"
    doc.write_text("## Top News\n\n### Uno\n\n**data da definire**\n\nTesto uno.\n", encoding="utf-8")
    with db.session_scope(engine) as session:
        report = import_document(session, doc, edition_2024)
    (item,) = _items(engine, edition_2024)
    assert (item.date_label, item.start_date, item.end_date) == ("data da definire", None, None)
    assert [str(w) for w in report.warnings] == [
        "line 5: 'Uno': the date label 'data da definire' could not be read; it is kept without dates."
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "{path} is empty."),
        ("  \n\n \n", "{path} is empty."),
        ("Solo una riga di testo, senza titoli né date.\n",
         "{path} does not look like a newsletter document: it has no news items (a title line followed by "
         "its text)."),
        ("# Installazione\n\nEseguire lo script.\n\n## Uso\n\nAprire il programma.\n",
         "{path} does not look like a newsletter document: it has no known section (Top News, "
         "Approfondimenti, Coming Soon) and no item has a date line."),
    ],
)
def test_bad_documents_are_refused_and_nothing_changes(engine: Engine, edition_2024: str, tmp_path: Path,
                                                       content: str, message: str) -> None:
    path = tmp_path / "doc.md"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError) as caught, db.session_scope(engine) as session:
        import_document(session, path, edition_2024)
    assert str(caught.value) == message.format(path=path)
    assert _count(engine) == 0


def test_binary_and_missing_files(engine: Engine, edition_2024: str, tmp_path: Path) -> None:
    binary = tmp_path / "doc.pdf"
    binary.write_bytes(b"%PDF-1.4\x00\x01\x02")
    with pytest.raises(InvalidInputError, match=r"doc\.pdf is not a text file\."), \
            db.session_scope(engine) as s:
        import_document(s, binary, edition_2024)
    latin1 = tmp_path / "latin1.md"
    latin1.write_bytes("## Top News\n\n### Città\n\nTesto.\n".encode("latin-1"))
    with pytest.raises(InvalidInputError, match=r"latin1\.md is not UTF-8 text\."), \
            db.session_scope(engine) as s:
        import_document(s, latin1, edition_2024)
    with pytest.raises(NotFoundError, match=r"There is no file .*absent\.md\."), \
            db.session_scope(engine) as s:
        import_document(s, tmp_path / "absent.md", edition_2024)


def test_unknown_edition_and_sent_edition(engine: Engine, edition_2024: str, seed_path: Path) -> None:
    with pytest.raises(NotFoundError) as caught, db.session_scope(engine) as session:
        import_document(session, seed_path, "2099-01")
    assert str(caught.value) == "There is no edition with slug '2099-01'."
    with db.session_scope(engine) as session:
        edition = editorial.get_edition(session, edition_2024)
        editorial.set_edition_status(session, edition, "sending")
        editorial.set_edition_status(session, edition, "sent")
    with pytest.raises(StateError) as caught, db.session_scope(engine) as session:
        import_document(session, seed_path, edition_2024)
    assert str(caught.value) == "Edition '2024-01' is sent: its items can no longer change."
    assert _count(engine) == 0
    with db.session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(Section)).one() == 3
        assert session.exec(select(Edition)).one().meta == {}
