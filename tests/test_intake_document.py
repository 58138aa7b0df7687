"""Parsing newsletter documents: the real sample, and layouts written for these tests."""

import re
from datetime import date
from pathlib import Path

import pytest

from wip_mailer.intake.document import SectionKind, is_image_description, parse_document
from wip_mailer.text.dates import parse_date_label

REPO = Path(__file__).resolve().parents[1]


def _source_line(lines: list[str], number: int) -> str:
    """A title or date line as the document shows it, without Markdown markers."""
    return re.sub(r"^#+\s*|\*\*", "", lines[number - 1]).strip()


def test_sample_has_its_29_news_items_in_document_order(seed_path: Path) -> None:
    text = seed_path.read_text(encoding="utf-8")
    lines = text.splitlines()
    doc = parse_document(text)
    assert [s.name for s in doc.sections] == ["Top News", "Approfondimenti", "Coming Soon"]
    news = doc.sections[0].items
    assert len(news) == 29
    # Exact titles and date labels: each is the text of its own line in the document.
    for item in news:
        assert item.title == _source_line(lines, item.line)
        if item.date_label is not None:
            assert item.date_line == item.line + 2  # the line under the title (after a blank)
            assert item.date_label == _source_line(lines, item.date_line)
    assert [i.line for i in news] == sorted(i.line for i in news)
    # Titles and dates written as headings of every level, and as bold lines alone.
    by_title = {i.title: i for i in news}
    assert by_title["Consortium meeting di SME4GREEN a Bucarest"].date_label == "9-11 gennaio"
    assert by_title["TOASEAN Business Days 2024"].date_label == "29 febbraio"
    survey = by_title["Indagine su diritti, condizioni di lavoro e welfare degli artisti nel 2024"]
    assert survey.date_label is None
    assert news[0].title.startswith("Indagine su diritti")
    assert sum(1 for i in news if i.date_label is None) == 1
    assert {lines[i.line - 1].split(" ")[0] for i in news} == {"###", "##", "**TOASEAN"}
    assert {lines[i.date_line - 1][:2] for i in news if i.date_line} == {"##", "**"}


def test_sample_bodies_have_no_image_description_and_no_page_break_cut(seed_path: Path) -> None:
    doc = parse_document(seed_path.read_text(encoding="utf-8"))
    news = doc.sections[0].items
    assert all(item.body_md for item in news)
    for item in news:
        for paragraph in item.body_md.split("\n\n"):
            assert not is_image_description(paragraph)
            assert not paragraph[:1].islower(), (item.title, paragraph[:40])  # a cut half starts lower case
    joined = [i for i in news
              if "basato sui dati" in i.body_md or "replicabili nei due territori" in i.body_md]
    assert len(joined) == 2
    described = [i for i in news if i.image_alt]
    assert len(described) == 1 and described[0].title == "Consortium meeting di SME4GREEN a Bucarest"
    assert described[0].image_alt.startswith("The logo for SME4GREEN")
    assert "featuring" not in described[0].body_md
    # Page-break joins and the image description are reported with their line numbers.
    messages = [str(w) for w in doc.warnings]
    assert sum("cut by a page break" in m for m in messages) == 4
    assert any(m.startswith("line 49: image description") for m in messages)


def test_sample_approfondimenti_coming_soon_and_edition_metadata(seed_path: Path) -> None:
    doc = parse_document(seed_path.read_text(encoding="utf-8"))
    approfondimenti, coming_soon = doc.sections[1], doc.sections[2]
    assert approfondimenti.kind == SectionKind.TEXT and approfondimenti.items == []
    intro = approfondimenti.intro_md
    assert intro.startswith("Sul sito web")
    assert "**Delegazioni ricevute dal 1° dicembre 2023 al 31 gennaio 2024:**" in intro
    assert len([line for line in intro.splitlines() if line.startswith("- ")]) == 7
    assert coming_soon.kind == SectionKind.LIST
    entries = [(i.title, i.date_label) for i in coming_soon.items]
    assert entries == [("Delegazione di studenti di Nagoya", "marzo")]
    assert doc.masthead == "Work in Progress"
    assert doc.period_label == "Gennaio-Febbraio 2024"
    assert doc.credit_lines == ["a cura del Servizio Gabinetto del Sindaco", "Relazioni Internazionali"]
    assert len(doc.contact_lines) == 7
    assert doc.contact_lines[0] == "Gabinetto del Sindaco"
    assert any("mailto:" in line for line in doc.contact_lines)
    # the footer is not an item nor section text
    everything = intro + "".join(i.body_md for i in doc.items)
    assert "Via Meucci" not in everything


def test_sample_date_labels_all_parse_in_the_edition_year(seed_path: Path) -> None:
    doc = parse_document(seed_path.read_text(encoding="utf-8"))
    period = (date(2024, 1, 1), date(2024, 2, 29))
    for item in doc.items:
        if item.date_label:
            span = parse_date_label(item.date_label, period=period)
            assert span is not None, item.date_label
            assert (span.start or span.end).year == 2024


ENGLISH_LAYOUT = """\
# Work in Progress

### March-April 2025

Edited by the Example Office

# News

### Twinning week with an example city

**3-7 March**

Five delegations visit the city for a week of meetings on neighbourhood services and soft mobility,
with a public programme at [the library](https://www.example.org/library).

### Climate lab in an example city

**March 12**

Technicians compare the data of the heat sensors installed in school yards within the
[CoolYards](#) project. The lab prepares shared guidelines to be published

in the spring, together with the data.

![Sensors in a school yard](https://www.example.org/sensors.jpg)

### Young translators' prize

**Until April 30**

Secondary school students translate a short story from one of the partner cities' languages.

### Cultural events

**Sometime in spring**

An exhibition of photographs from the partner cities.

# Upcoming

- Mission to an example city | May
- General assembly of the network | June 2025

## Contacts

Example Office
[office@example.org](mailto:office@example.org)
"""


def test_english_layout_with_level3_titles_and_bold_dates() -> None:
    doc = parse_document(ENGLISH_LAYOUT)
    assert doc.masthead == "Work in Progress" and doc.period_label == "March-April 2025"
    assert doc.credit_lines == ["Edited by the Example Office"]
    assert [s.name for s in doc.sections] == ["News", "Upcoming"]
    news = doc.sections[0].items
    assert [(i.title, i.date_label) for i in news] == [
        ("Twinning week with an example city", "3-7 March"),
        ("Climate lab in an example city", "March 12"),
        ("Young translators' prize", "Until April 30"),
        ("Cultural events", "Sometime in spring"),
    ]
    lab = news[1]
    assert "published in the spring, together with the data." in lab.body_md  # page-break join
    assert lab.image_url == "https://www.example.org/sensors.jpg"
    assert lab.image_alt == "Sensors in a school yard"
    assert "![" not in lab.body_md
    assert [(i.title, i.date_label) for i in doc.sections[1].items] == [
        ("Mission to an example city", "May"),
        ("General assembly of the network", "June 2025"),
    ]
    assert doc.contact_lines == ["Example Office", "[office@example.org](mailto:office@example.org)"]


CUSTOM_SECTIONS = """\
# Work in Progress

## Settembre-Ottobre 2025

# Eventi in città

## Festa delle lingue

### 26 settembre

Letture e giochi nelle lingue delle città partner.

## Notte della ricerca

**26-27 settembre**

Laboratori aperti nei centri di ricerca delle città della rete.

# Progetti europei

## Avvio di un progetto sul verde

**1 ottobre**

Il progetto parte con un incontro tra i partner.

A photo of a park with tall trees, showing children playing on the grass.

## Chiusura di un progetto sui quartieri

**Ottobre**

Conferenza finale con le città partner.
"""


def test_custom_sections_are_headings_with_headings_under_them() -> None:
    doc = parse_document(CUSTOM_SECTIONS)
    assert [(s.name, [i.title for i in s.items]) for s in doc.sections] == [
        ("Eventi in città", ["Festa delle lingue", "Notte della ricerca"]),
        ("Progetti europei", ["Avvio di un progetto sul verde", "Chiusura di un progetto sui quartieri"]),
    ]
    assert [i.date_label for i in doc.items] == ["26 settembre", "26-27 settembre", "1 ottobre", "Ottobre"]
    green = doc.items[2]
    assert green.body_md == "Il progetto parte con un incontro tra i partner."
    assert green.image_alt is not None and green.image_alt.startswith("A photo of a park")


def test_example_edition_in_the_repository_parses() -> None:
    doc = parse_document((REPO / "examples" / "edition-2026-11.md").read_text(encoding="utf-8"))
    assert [(s.name, len(s.items)) for s in doc.sections] == [
        ("Top News", 10), ("Approfondimenti", 0), ("Coming Soon", 2),
    ]
    assert all(i.date_label for i in doc.items)
    assert all("example.org" in line or "Torino" in line or "Ufficio" in line or "Relazioni" in line
               or "Via" in line for line in doc.contact_lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The logo for SME4GREEN, featuring the text in a bold, sans-serif font.", True),
        ("A photo of an old brick factory with large windows, showing people in the courtyard.", True),
        ("Immagine: la piazza illuminata", True),
        ("Il logo del progetto è stato presentato alla conferenza finale.", False),
        ("La Città di Torino partecipa al meeting conclusivo del progetto.", False),
    ],
)
def test_image_descriptions(text: str, expected: bool) -> None:
    assert is_image_description(text) is expected


def test_an_item_title_starting_like_a_section_name_stays_an_item() -> None:
    doc = parse_document(
        "# News\n\n## News from the twinning network\n\n**4 May**\n\nThree cities join the network.\n\n"
        "## Coming soon: a new portal\n\n**June**\n\nThe portal opens in June.\n\n"
        "## Top News May-June 2025\n\n### Solo title\n\n**8 May**\n"
    )
    assert [(s.name, [i.title for i in s.items]) for s in doc.sections] == [
        ("News", ["News from the twinning network", "Coming soon: a new portal"]),
        ("Top News", ["Solo title"]),
    ]
    assert [str(w) for w in doc.warnings] == ["line 17: item 'Solo title' has no text."]
