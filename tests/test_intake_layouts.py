"""Other editions in other layouts, imported with the real CLI as a new user would.

The documents in tests/data/editions/ are invented; each exercises what another editor or
another PDF→Markdown converter produces. These are the regression suite for "other layouts":
every title, date label, parsed date and section is asserted exactly.
"""

import json
import re
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine

from wip_mailer.intake.document import parse_document, split_title_date
from wip_mailer.text.dates import parse_date_label
from wip_mailer.text.markdown import extract_links, markdown_to_html

EDITIONS = Path(__file__).resolve().parent / "data" / "editions"

Row = tuple[str, str, str | None, str | None, str | None]  # section, title, label, start, end


def _import(cli, name: str, slug: str, title: str, start: str, end: str) -> tuple[list[Row], list[str]]:
    result = cli("editions", "create", slug, "--title", title, "--start", start, "--end", end)
    assert result.exit_code == 0, result.output
    result = cli("import", str(EDITIONS / name), "--edition", slug)
    assert result.exit_code == 0, result.output
    listed = cli("items", "list", "--edition", slug, "--json")
    items = json.loads(listed.stdout)
    rows = [(i["section"], i["title"], i["date_label"], i["start"], i["end"]) for i in items]
    return rows, result.stderr.splitlines()


def _text_twin(cli, slug: str, tmp_path: Path) -> str:
    assert cli("items", "approve", "--all", "--edition", slug, "--by", "test").exit_code == 0
    result = cli("preview", slug, "--out", str(tmp_path / "p.html"), "--text", str(tmp_path / "p.txt"))
    assert result.exit_code == 0, result.output
    return (tmp_path / "p.txt").read_text(encoding="utf-8")


def test_english_edition(cli, engine: Engine, tmp_path: Path) -> None:
    rows, warnings = _import(cli, "en-2025-03-march-april.md", "2025-03", "March–April 2025",
                             "2025-03-01", "2025-04-30")
    assert rows == [
        ("Top News", "Harbour cities summit in Rotterdam", "9–11 March", "2025-03-09", "2025-03-11"),
        ("Top News", "Youth orchestra exchange with Porto", "From 3 March", "2025-03-03", None),
        ("Top News", "Mapping urban heat islands", "Until 5 May", None, "2025-05-05"),
        ("Top News", "Delegation from Kraków on social housing", "28 March — 2 April", "2025-03-28",
         "2025-04-02"),
        ("Top News", "Webinar: EU funds for small NGOs", "Tuesday 15 April", "2025-04-15", "2025-04-15"),
        ("Top News", "Open day at the twinning office", "April 24-25", "2025-04-24", "2025-04-25"),
        # Coming Soon in three shapes: date first, date after a dash, date in brackets.
        ("Coming Soon", "Visit from the City of Nagoya", "March", "2025-03-01", "2025-03-31"),
        ("Coming Soon", "Students from Guadalajara", "April", "2025-04-01", "2025-04-30"),
        ("Coming Soon", "Delegation of the Region of Flanders", "May", "2025-05-01", "2025-05-31"),
    ]
    assert warnings == [
        "Warning: line 35: image description kept as the image of 'Mapping urban heat islands'."]
    text = _text_twin(cli, "2025-03", tmp_path)
    # The reference link's definition sits at the end of the document, yet the item keeps its URL.
    assert "in the summary report\n<https://www.example.org/reports/green-docks.pdf>." in text
    assert "[1]" not in text
    assert "IN DEPTH\n========\n\nDelegations received from 1 January to 28 February 2025:" in text
    assert "1. fill in the form on the website;\n2. send a short recording;" in text
    html = (tmp_path / "p.html").read_text(encoding="utf-8")
    # A bare URL is a link in the HTML, without the full stop that ends the sentence.
    assert '<a href="https://www.example.org/webinar" ' in html
    assert re.search(r'<img [^>]*alt="A map of the city coloured from yellow to red"', html)


def test_setext_crlf_bom_nbsp_comments_and_br(cli, engine: Engine, tmp_path: Path) -> None:
    raw = (EDITIONS / "it-2025-03-setext-crlf.md").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw and "\u00a0".encode() in raw
    rows, warnings = _import(cli, "it-2025-03-setext-crlf.md", "2025-03", "Marzo-Aprile 2025",
                             "2025-03-01", "2025-04-30")
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("Festival delle lingue minori", "12 marzo", "2025-03-12", "2025-03-12"),
        ("“Ponti d’acqua”: mostra fotografica", "14 marzo", "2025-03-14", "2025-03-14"),
        ("Tavolo sulla mobilità scolastica", "dal 17 al 21 marzo", "2025-03-17", "2025-03-21"),
        ("Gemellaggio digitale con Tampere", "25 marzo", "2025-03-25", "2025-03-25"),
        ("Delegazione della Città di Rosario", "aprile", "2025-04-01", "2025-04-30"),
        ("Missione a Bruxelles", "maggio", "2025-05-01", "2025-05-31"),
    ]
    assert [r[0] for r in rows] == ["Top News"] * 4 + ["Coming Soon"] * 2
    # "Marzo – Aprile 2025" with no-break spaces is the edition's "Marzo-Aprile 2025": no warning.
    assert warnings == []
    text = _text_twin(cli, "2025-03", tmp_path)
    assert text.splitlines()[2] == "a cura dell'Ufficio Relazioni Internazionali – Città di Esempio"
    assert "<!--" not in text and "<br" not in text
    assert "comunità della città. Ingresso libero" in text
    html = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert "&lt;br" not in html and "pdf2md" not in html


def test_dates_on_the_title_line_and_an_empty_section(cli, engine: Engine) -> None:
    rows, warnings = _import(cli, "it-2025-05-title-line-dates.md", "2025-05", "Maggio-Giugno 2025",
                             "2025-05-01", "2025-06-30")
    assert rows == [
        ("Top News", "Assemblea della rete Città Sostenibili", "6 maggio", "2025-05-06", "2025-05-06"),
        ("Top News", "Laboratorio europeo sulla partecipazione", "8-9 maggio", "2025-05-08", "2025-05-09"),
        ("Top News", "Settimana dell'Europa", "5-11 maggio", "2025-05-05", "2025-05-11"),
        ("Top News", "Premio per il giornalismo locale", "fino al 30 giugno", None, "2025-06-30"),
        ("Top News", "Incontro con la Console di Francia", "20 maggio", "2025-05-20", "2025-05-20"),
        ("Top News", "Giornata mondiale dei rifugiati", "20 giugno", "2025-06-20", "2025-06-20"),
    ]
    assert warnings == []


def test_edition_across_new_year(cli, engine: Engine) -> None:
    rows, warnings = _import(cli, "it-2024-12-december-january.md", "2024-12", "Dicembre 2024 - Gennaio 2025",
                             "2024-12-01", "2025-01-31")
    assert rows == [
        # The section heading carries a period with two years: still Top News, and no item is lost.
        ("Top News", "Mercatino di Natale delle città gemellate", "dal 29 novembre al 6 gennaio",
         "2024-11-29", "2025-01-06"),
        ("Top News", "Concerto di Capodanno con l'orchestra di Salonicco", "31 dicembre", "2024-12-31",
         "2024-12-31"),
        ("Top News", "Settimana della memoria", "27 dicembre – 3 gennaio", "2024-12-27", "2025-01-03"),
        ("Top News", "Bando per tirocini all'estero", "Entro il 15 gennaio 2025", None, "2025-01-15"),
        ("Top News", "Visita della delegazione di Kobe", "13-15 gen.", "2025-01-13", "2025-01-15"),
        ("Top News", 'Mostra "Città d\'inverno"', "dicembre-gennaio", "2024-12-01", "2025-01-31"),
        ("Coming Soon", "Delegazione di Lione", "febbraio", "2025-02-01", "2025-02-28"),
        ("Coming Soon", "Missione a Nairobi", "10-14 febbraio", "2025-02-10", "2025-02-14"),
    ]
    assert warnings == []


def test_bold_lines_numeric_dates_own_section_names_and_contacts(cli, engine: Engine) -> None:
    rows, warnings = _import(cli, "it-2025-04-bold-lines-numeric.md", "2025-04", "Aprile 2025",
                             "2025-04-01", "2025-04-30")
    assert rows == [
        ("News", "Corso di italiano per le famiglie ucraine", "dal 2/4 al 30/4", "2025-04-02", "2025-04-30"),
        ("News", "“Cucine del mondo” al mercato coperto", "12.04.2025", "2025-04-12", "2025-04-12"),
        ("News", "Bando Erasmus per il personale comunale", "Entro il 18/4", None, "2025-04-18"),
        ("News", "Seminario sulla cooperazione decentrata", "23/24 aprile", "2025-04-23", "2025-04-24"),
        ("Prossimamente", "Delegazione di Ouagadougou", "maggio", "2025-05-01", "2025-05-31"),
        ("Prossimamente", "Forum delle città UNESCO", "giugno", "2025-06-01", "2025-06-30"),
        ("Prossimamente", "Visita di studio a Graz", None, None, None),
    ]
    assert warnings == []
    doc = parse_document((EDITIONS / "it-2025-04-bold-lines-numeric.md").read_text(encoding="utf-8"))
    assert doc.period_label == "Aprile 2025"
    assert doc.contact_lines == ["Ufficio Relazioni Internazionali", "relazioni@example.org"]


def test_forty_items(cli, engine: Engine) -> None:
    rows, warnings = _import(cli, "it-2025-09-forty-items.md", "2025-09", "Settembre-Ottobre 2025",
                             "2025-09-01", "2025-10-31")
    news = [r for r in rows if r[0] == "Top News"]
    assert [r[1].split(" su ")[0] for r in news] == [f"Incontro n. {n}" for n in range(1, 41)]
    assert news[0][2:] == ("1-3 settembre", "2025-09-01", "2025-09-03")
    assert news[39][2:] == ("20 ottobre", "2025-10-20", "2025-10-20")
    assert all(r[3] is not None for r in news)
    assert rows[-1] == ("Coming Soon", "Delegazione di Lisbona", "novembre", "2025-11-01", "2025-11-30")
    assert warnings == []


def test_a_document_with_only_a_title_is_refused_in_one_sentence(cli, engine: Engine) -> None:
    assert cli("editions", "create", "2025-07", "--title", "Luglio-Agosto 2025").exit_code == 0
    path = EDITIONS / "it-2025-07-only-title.md"
    result = cli("import", str(path), "--edition", "2025-07")
    assert result.exit_code != 0
    assert result.stderr == (f"Error: {path} does not look like a newsletter document: it has no news items "
                             "(a title line followed by its text).\n")
    assert cli("items", "list", "--edition", "2025-07").stdout == "Edition '2025-07' has no items.\n"


@pytest.mark.parametrize(("line", "expected"), [
    ("Assemblea – 6 maggio", ("Assemblea", "6 maggio")),
    ("### Forum, 12 marzo ###", ("Forum", "12 marzo")),
    ("**8-9 maggio** Laboratorio", ("Laboratorio", "8-9 maggio")),
    ("Festival – 28 marzo – 2 aprile", ("Festival", "28 marzo – 2 aprile")),
    ("Premio (fino al 30 giugno)", ("Premio", "fino al 30 giugno")),
    ("20 maggio: Incontro con la Console", ("Incontro con la Console", "20 maggio")),
    # Not dates, or nothing left for a title: the line stays whole.
    ("Contemporary Monogatari: nuove narrazioni - MAO", ("Contemporary Monogatari: nuove narrazioni - MAO",
                                                          None)),
    ("Agenda 2030: obiettivi", ("Agenda 2030: obiettivi", None)),
    ("Ciak, Europa, si vota!", ("Ciak, Europa, si vota!", None)),
    ("Festa del 25 aprile", ("Festa del 25 aprile", None)),
    ("Marzo in musica", ("Marzo in musica", None)),
    ("– 12 marzo", ("– 12 marzo", None)),
])
def test_split_title_date(line: str, expected: tuple[str, str | None]) -> None:
    assert split_title_date(line) == expected


@pytest.mark.parametrize(("label", "start", "end"), [
    ("29/3", date(2025, 3, 29), date(2025, 3, 29)),
    ("dal 29/3 al 2/4", date(2025, 3, 29), date(2025, 4, 2)),
    ("03/04/2025", date(2025, 4, 3), date(2025, 4, 3)),
    ("1.4.25", date(2025, 4, 1), date(2025, 4, 1)),
    ("5/6 marzo", date(2025, 3, 5), date(2025, 3, 6)),  # before a month name: two days, not 5 June
    ("(maggio)", date(2025, 5, 1), date(2025, 5, 31)),
])
def test_numeric_and_bracketed_date_labels(label: str, start: date, end: date) -> None:
    span = parse_date_label(label, period=(date(2025, 3, 1), date(2025, 4, 30)))
    assert span is not None and (span.start, span.end) == (start, end)


def test_bare_urls_become_links_outside_links_and_code() -> None:
    md = "See https://example.org/a_(b)). Or [x](https://example.org/x), <https://example.org/y>, `https://c.org`."
    assert [link.url for link in extract_links(md)] == [
        "https://example.org/a_(b)", "https://example.org/x", "https://example.org/y"]
    html = markdown_to_html(md)
    link = '<a href="https://example.org/a_(b)" rel="noopener noreferrer">https://example.org/a_(b)</a>'
    assert link + ")." in html
    assert "<code>https://c.org</code>" in html
