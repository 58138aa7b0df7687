"""CSV import: BOM, separators, bad rows with line numbers, idempotent re-import, erasure."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from tests.conftest import REPO
from wip_mailer import db
from wip_mailer.audience import csv_import, lists, select_recipients, subscribers
from wip_mailer.errors import InvalidInputError
from wip_mailer.models import ConsentEvent, Membership, Subscriber

MESSY = (
    "\ufeffEmail ; Name;language;Organisation;country;tags\n"  # BOM, odd spacing and case in the header
    "anna.rossi@example.org;Anna Rossi;it;Comune di Esempio;IT;press, Partner\n"  # line 2
    "not-an-address;Broken;it;;IT;\n"  # line 3: malformed
    "ANNA.Rossi@Example.org;Anna again;it;;IT;\n"  # line 4: duplicate of line 2 (case-insensitive)
    "\n"  # line 5: blank, ignored
    "jean@example.net;Jean Dupont;fr;Ville d'Exemple;FR;consulate\n"  # line 6
    '"multi@example.org";"Line one\nline two";en;;GB;\n'  # lines 7-8: a quoted value over two lines
    "bad-lang@example.org;X;xx;;IT;\n"  # line 9: unknown language
    "bad-country@example.org;Y;it;;QQ;\n"  # line 10: unknown country
    "two@@example.org;Z;it;;IT;\n"  # line 11: malformed
    "hans@example.net;Hans;de;;DE;press\n"  # line 12
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


@pytest.fixture
def stampa(engine) -> None:
    with db.session_scope(engine) as session:
        lists.create_list(session, "stampa", double_opt_in=True)


def _counts(engine) -> tuple[int, int, int]:
    with db.session_scope(engine) as session:
        return tuple(  # type: ignore[return-value]
            session.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()
            for model in (Subscriber, Membership, ConsentEvent)
        )


def test_messy_file_imports_good_rows_and_reports_bad_ones(engine, settings, stampa, tmp_path) -> None:
    source = _write(tmp_path / "contatti.csv", MESSY)
    rejects = tmp_path / "scarti.csv"
    report = csv_import.import_csv(engine, settings, source, "stampa", rejects_path=rejects)

    assert report.rows == 9
    assert (report.added, report.updated, report.unchanged) == (4, 0, 0)
    assert [(r.line, r.reason.split(":")[0]) for r in report.rejected] == [
        (3, "'not-an-address' is not a valid email address"),
        (4, "anna.rossi@example.org is a duplicate of line 2"),
        (9, "'xx' is not a language code such as it or en, nor a language name such as Italiano or English"),
        (10, "'QQ' is not a two-letter country code such as IT or FR, nor a country name such as Italia or "
             "France"),
        (11, "'two@@example.org' is not a valid email address"),
    ]
    with db.session_scope(engine) as session:
        anna = subscribers.show_subscriber(session, "Anna.Rossi@example.org")
        multi = subscribers.show_subscriber(session, "multi@example.org")
        emails = sorted(session.exec(select(Subscriber.email)).all())
        events = session.exec(select(ConsentEvent)).all()
    assert emails == ["anna.rossi@example.org", "hans@example.net", "jean@example.net", "multi@example.org"]
    assert anna["tags"] == ["partner", "press"]
    assert anna["organisation"] == "Comune di Esempio"
    assert anna["status"] == "active"
    assert [m["list"] for m in anna["memberships"]] == ["stampa"]
    assert anna["memberships"][0]["status"] == "active"
    assert multi["name"] == "Line one line two"
    assert {(e.kind, e.source) for e in events} == {("subscribe", "import:contatti.csv")}
    assert len(events) == 4

    # The rejects file: the original columns, as written, then line and reason.
    with rejects.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    assert rows[0] == ["Email ", " Name", "language", "Organisation", "country", "tags", "line", "reason"]
    assert [row[0] for row in rows[1:]] == [
        "not-an-address", "ANNA.Rossi@Example.org", "bad-lang@example.org", "bad-country@example.org",
        "two@@example.org",
    ]
    assert [row[6] for row in rows[1:]] == ["3", "4", "9", "10", "11"]


def test_reimport_changes_nothing(engine, settings, stampa, tmp_path) -> None:
    source = _write(tmp_path / "contatti.csv", MESSY)
    csv_import.import_csv(engine, settings, source, "stampa")
    before = _counts(engine)
    with db.session_scope(engine) as session:
        snapshot = [subscribers.show_subscriber(session, e)
                    for e in session.exec(select(Subscriber.email)).all()]
    again = csv_import.import_csv(engine, settings, source, "stampa")
    assert (again.added, again.reactivated, again.updated, again.unchanged) == (0, 0, 0, 4)
    assert len(again.rejected) == 5
    assert _counts(engine) == before
    with db.session_scope(engine) as session:
        assert snapshot == [subscribers.show_subscriber(session, s["email"]) for s in snapshot]


def test_comma_separated_without_bom_and_updates(engine, settings, stampa, tmp_path) -> None:
    first = _write(tmp_path / "a.csv", "email,name\nlea@example.org,Lea\n")
    csv_import.import_csv(engine, settings, first, "stampa")
    second = _write(tmp_path / "b.csv",
                    'email,name,tags,attr.sector\nlea@example.org,Lea Bianchi,"press,eu",culture\n')
    report = csv_import.import_csv(engine, settings, second, "stampa")
    assert (report.added, report.updated) == (0, 1)
    with db.session_scope(engine) as session:
        lea = subscribers.show_subscriber(session, "lea@example.org")
    assert (lea["name"], lea["tags"], lea["attributes"]) == ("Lea Bianchi", ["eu", "press"],
                                                             {"sector": "culture"})


def test_unknown_header_is_a_file_error_before_any_row(engine, settings, stampa, tmp_path) -> None:
    source = _write(tmp_path / "x.csv", "email;nome;phone number\nok@example.org;A;1\n")
    with pytest.raises(InvalidInputError) as caught:
        csv_import.import_csv(engine, settings, source, "stampa")
    assert str(caught.value) == (
        f"The file {source} has the unknown column 'phone number' (column 3); known columns are email, name, "
        "language, organisation, country, tags, status, suppressed, consent, attr.NAME: rename it, or call "
        "it attr.phonenumber to keep it as an attribute, or delete it."
    )
    assert _counts(engine) == (0, 0, 0)


def test_neither_utf8_nor_windows_1252_names_the_line(engine, settings, stampa, tmp_path) -> None:
    source = tmp_path / "latin1.csv"
    # 0x81 is undefined in Windows-1252: this is not text in any encoding a spreadsheet writes.
    source.write_bytes(b"email;name\nok@example.org;Mario\nx@example.org;Nicol\x81\xf2\n")
    with pytest.raises(InvalidInputError, match=r"neither UTF-8 nor Windows-1252 text \(first bad byte on "
                                                r"line 3\); open it in the spreadsheet and save it as"):
        csv_import.import_csv(engine, settings, source, "stampa")
    assert _counts(engine) == (0, 0, 0)


def test_too_many_values_is_a_bad_row(engine, settings, stampa, tmp_path) -> None:
    source = _write(tmp_path / "x.csv", "email,name\na@example.org,A,extra\nb@example.org,B\n")
    report = csv_import.import_csv(engine, settings, source, "stampa")
    assert report.added == 1
    assert [(r.line, r.reason) for r in report.rejected] == [
        (2, "has 3 values but the header has 2 columns (extra: extra)")]


def test_unsubscribed_member_is_not_readded(engine, settings, stampa, tmp_path) -> None:
    source = _write(tmp_path / "x.csv", "email\na@example.org\n")
    csv_import.import_csv(engine, settings, source, "stampa")
    with db.session_scope(engine) as session:
        subscribers.remove_subscriber(session, "a@example.org", "stampa")
    report = csv_import.import_csv(engine, settings, source, "stampa")
    assert [r.reason for r in report.rejected] == [
        "a@example.org unsubscribed from stampa; only they can subscribe again"]
    with db.session_scope(engine) as session:
        assert subscribers.show_subscriber(session, "a@example.org")["status"] == "unsubscribed"


def test_erase_then_reimport_does_not_resubscribe(engine, settings, stampa, tmp_path) -> None:
    source = _write(tmp_path / "x.csv", "email;name\nerika@example.org;Erika\nother@example.org;O\n")
    csv_import.import_csv(engine, settings, source, "stampa")
    with db.session_scope(engine) as session:
        report = subscribers.erase_subscriber(session, "Erika@example.org")
    assert report.found
    with db.session_scope(engine) as session:
        assert session.exec(select(Subscriber).where(Subscriber.email == "erika@example.org")).first() is None
        # Nothing personal is left: no event names the subscriber, the erase event is anonymous.
        erase = session.exec(select(ConsentEvent).where(ConsentEvent.kind == "erase")).one()
        assert (erase.subscriber_id, erase.list_id) == (None, None)

    again = csv_import.import_csv(engine, settings, source, "stampa")
    assert again.added == 0
    assert [(r.line, r.reason) for r in again.rejected] == [
        (2, "erika@example.org is on the suppression list (erased)")]
    with db.session_scope(engine) as session:
        assert session.exec(select(Subscriber).where(Subscriber.email == "erika@example.org")).first() is None
        assert [r.email for r in select_recipients(session, ["stampa"])] == ["other@example.org"]


def test_cli_import_reports_lines_and_writes_rejects(cli, engine, stampa, tmp_path) -> None:
    source = _write(tmp_path / "contatti.csv", MESSY)
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "9 rows: 4 added, 0 activated, 0 updated, 0 unchanged, 5 rejected.")
    assert f"{source}:3: 'not-an-address' is not a valid email address" in result.stderr
    assert f"{source}:4: anna.rossi@example.org is a duplicate of line 2" in result.stderr
    assert (tmp_path / "contatti.rejects.csv").exists()

    shown = cli("subscribers", "show", "ANNA.ROSSI@example.org", "--json")
    data = json.loads(shown.stdout)
    assert (data["status"], data["memberships"][0]["list"]) == ("active", "stampa")


def test_cli_unknown_list_and_unknown_header_are_one_line(cli, engine, stampa, tmp_path) -> None:
    source = _write(tmp_path / "x.csv", "email\na@example.org\n")
    result = cli("subscribers", "import", str(source), "--list", "nessuna")
    assert (result.exit_code, result.stderr) == (1, "Error: There is no list named 'nessuna'.\n")
    bad = _write(tmp_path / "y.csv", "posta\na@example.org\n")
    result = cli("subscribers", "import", str(bad), "--list", "stampa")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: The file {bad} has the unknown column 'posta'")
    assert result.stderr.count("\n") == 1


def test_export_round_trips_through_import(cli, engine, settings, stampa, tmp_path) -> None:
    csv_import.import_csv(engine, settings, _write(tmp_path / "a.csv", MESSY), "stampa")
    out = tmp_path / "export.csv"
    result = cli("subscribers", "export", "--list", "stampa", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["email"] for r in rows] == [
        "anna.rossi@example.org", "hans@example.net", "jean@example.net", "multi@example.org"]
    assert rows[0]["tags"] == "partner,press" and rows[0]["status"] == "active"
    with db.session_scope(engine) as session:
        lists.create_list(session, "copia", double_opt_in=False)
    report = csv_import.import_csv(engine, settings, out, "copia")
    assert (report.added, len(report.rejected)) == (4, 0)


def test_example_file_in_the_repository_imports_cleanly(engine, settings, stampa) -> None:
    report = csv_import.import_csv(engine, settings, REPO / "subscribers" / "example-import.csv", "stampa",
                                   rejects_path=Path("unused.csv"))
    assert (report.added, report.rejected) == (4, [])
    with db.session_scope(engine) as session:
        info = subscribers.show_subscriber(session, "consolato@example.org")
    assert (info["language"], info["country"], info["attributes"]) == ("fr", "FR", {"sector": "diplomacy"})


@pytest.mark.postgres
def test_import_and_reimport_on_postgresql(pg_engine, settings, tmp_path) -> None:
    with db.session_scope(pg_engine) as session:
        lists.create_list(session, "stampa")
    source = _write(tmp_path / "contatti.csv", MESSY)
    report = csv_import.import_csv(pg_engine, settings, source, "stampa")
    assert (report.added, len(report.rejected)) == (4, 5)
    before = _counts(pg_engine)
    again = csv_import.import_csv(pg_engine, settings, source, "stampa")
    assert (again.added, again.unchanged, _counts(pg_engine)) == (0, 4, before)
    with db.session_scope(pg_engine) as session:
        anna = subscribers.show_subscriber(session, "anna.rossi@example.org")
        assert [r.email for r in select_recipients(session, ["stampa"], "tag=partner")] == [
            "anna.rossi@example.org"]
    assert anna["tags"] == ["partner", "press"]
    assert anna["memberships"][0]["subscribed_at"].tzinfo is not None


def test_double_opt_in_import_sends_one_confirmation_each(engine, smtp_server, workdir, monkeypatch,
                                                          stampa, tmp_path) -> None:
    monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(smtp_server.port))
    from wip_mailer.settings import load_settings

    settings = load_settings()
    source = _write(tmp_path / "doi.csv",
                    "email;name;language\nuno@example.org;Uno;it\ntwo@example.net;Two;en\n")
    report = csv_import.import_csv(engine, settings, source, "stampa", double_opt_in=True)
    assert (report.added, report.confirmations_sent) == (2, 2)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == ["two@example.net", "uno@example.org"]
    english = next(m.message for m in smtp_server.messages if m.rcpt_tos == ["two@example.net"])
    assert english["Subject"].startswith("Please confirm your subscription")
    with db.session_scope(engine) as session:
        uno = subscribers.show_subscriber(session, "uno@example.org")
        assert (uno["status"], uno["memberships"][0]["status"]) == ("pending", "pending")
        assert list(select_recipients(session, ["stampa"])) == []
    again = csv_import.import_csv(engine, settings, source, "stampa", double_opt_in=True)
    assert (again.added, again.unchanged, again.confirmations_sent) == (0, 2, 0)
    assert len(smtp_server.messages) == 2
    # A later plain import (the admin now holds proof of consent) activates them.
    activated = csv_import.import_csv(engine, settings, source, "stampa")
    assert activated.reactivated == 2
    with db.session_scope(engine) as session:
        assert sorted(r.email for r in select_recipients(session, ["stampa"])) == [
            "two@example.net", "uno@example.org"]


# --- records that must not swallow rows, cells that are too long ---------------------

def _good_rows(count: int, first: int = 0) -> str:
    return "".join(f"p{i}@example.org,Person {i},Org {i}\n" for i in range(first, first + count))


def _emails(engine) -> set[str]:
    with db.session_scope(engine) as session:
        return set(session.exec(select(Subscriber.email)).all())


def test_an_unclosed_quote_costs_one_row_not_the_thousand_after_it(cli, engine, stampa, tmp_path) -> None:
    # The trial: one stray quote used to turn the whole file into one 25,799-character name.
    source = _write(tmp_path / "x.csv", 'email,name,organisation\nbroken@example.org,"Anna Rossi,Comune\n'
                    + _good_rows(1000))
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "1001 rows: 1000 added, 0 activated, 0 updated, 0 unchanged, 1 rejected.")
    assert [line for line in result.stderr.splitlines() if line.startswith(f"{source}:")] == [
        f"{source}:2: has a quote (\") that is not closed before line 3, which is a row of its own; "
        "this line was not imported"]
    assert _emails(engine) == {f"p{i}@example.org" for i in range(1000)}
    with (tmp_path / "x.rejects.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1] == ["broken@example.org", "Anna Rossi,Comune", "", "2", rows[1][4]]


def test_bad_quote_line_numbers_are_physical_and_later_rows_are_rows(engine, settings, stampa,
                                                                      tmp_path) -> None:
    source = _write(tmp_path / "x.csv", (
        "email;name;organisation\r\n"
        'ugo@example.org;Ugo;"Ufficio\r\nstampa\r\nsecondo piano"\r\n'  # lines 2-4: a real multi-line cell
        'anna@example.org;"Anna;Comune\r\n'  # line 5: a quote never closed...
        "di Torino\r\n"  # line 6: ...swallowed, does not look like a row
        "bob@example.org;Bob;\r\n"  # line 7: looks like a row, so it is one
        "not-an-address;X;\r\n"  # line 8
        'eve@example.org;Eve;"Org\r\n'  # lines 9-10: open to the end of the file
        "rest of it\r\n"))
    report = csv_import.import_csv(engine, settings, source, "stampa")
    assert [(r.line, r.reason.split(":")[0]) for r in report.rejected] == [
        (5, 'has a quote (") that is not closed before line 7, which is a row of its own; lines 5-6 were '
            "not imported"),
        (8, "'not-an-address' is not a valid email address"),
        (9, 'has a quote (") that is still open at the end of the file; lines 9-10 were not imported'),
    ]
    assert (report.rows, report.added) == (5, 2)
    assert _emails(engine) == {"ugo@example.org", "bob@example.org"}
    with db.session_scope(engine) as session:
        assert subscribers.show_subscriber(session, "ugo@example.org")["organisation"] == (
            "Ufficio stampa secondo piano")


def test_a_quoted_multi_line_organisation_is_one_row(engine, settings, stampa, tmp_path) -> None:
    source = _write(tmp_path / "x.csv", 'email,name,organisation\na@example.org,A,"Comune di Torino\n'
                                        'Relazioni internazionali\nVia Meucci 4"\nb@example.org,B,\n')
    report = csv_import.import_csv(engine, settings, source, "stampa")
    assert (report.rows, report.added, report.rejected) == (2, 2, [])
    with db.session_scope(engine) as session:
        assert subscribers.show_subscriber(session, "a@example.org")["organisation"] == (
            "Comune di Torino Relazioni internazionali Via Meucci 4")


def test_a_cell_longer_than_the_setting_rejects_its_row(cli, engine, stampa, workdir, monkeypatch) -> None:
    monkeypatch.setenv("WIP_MAILER_IMPORT_MAX_FIELD_CHARS", "100")
    source = _write(workdir / "x.csv", f"email,name\na@example.org,{'n' * 101}\nb@example.org,{'n' * 100}\n")
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert f"{source}:2: column 2 has 101 characters, more than the 100 allowed " \
           "(WIP_MAILER_IMPORT_MAX_FIELD_CHARS)" in result.stderr
    assert _emails(engine) == {"b@example.org"}
    monkeypatch.setenv("WIP_MAILER_IMPORT_MAX_FIELD_CHARS", "10")
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert (result.exit_code, result.stderr) == (
        2, "Error: WIP_MAILER_IMPORT_MAX_FIELD_CHARS must be a whole number from 64 to 100000, got '10'.\n")


def test_a_long_quoted_cell_over_many_lines_is_skipped_to_the_next_row(engine, settings, stampa,
                                                                        tmp_path) -> None:
    # A quoted cell of 5,000 short lines: past the limit it is skipped, not kept, up to the next row.
    notes = "".join(f"note line {i}\n" for i in range(5000))
    source = _write(tmp_path / "x.csv",
                    f'email,name,organisation\na@example.org,"{notes}",\n' + _good_rows(3))
    report = csv_import.import_csv(engine, settings, source, "stampa")
    assert [(r.line, r.reason) for r in report.rejected] == [
        (2, "has a cell longer than 4,096 characters (WIP_MAILER_IMPORT_MAX_FIELD_CHARS); lines 2-5002 were "
            "not imported")]
    assert len(report.rejected[0].values[1]) <= 4096
    assert _emails(engine) == {"p0@example.org", "p1@example.org", "p2@example.org"}


_PEAK_RSS = """
import atexit, pathlib, sys
def peak():  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
    status = pathlib.Path("/proc/self/status").read_text()
    kib = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM:"))
    sys.stderr.write(f"peak-rss-kib {kib}\\n")
atexit.register(peak)
from wip_mailer.cli import main
main(prog_name="wip-mailer")
"""


def test_a_100_mb_cell_rejects_one_row_in_bounded_memory(engine, stampa, workdir) -> None:
    # The trial: this aborted the whole import after using 714 MB.
    source = workdir / "huge.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        handle.write("email,name,organisation\n" + _good_rows(500) + "big@example.org,")
        block = "x" * (1 << 20)
        for _ in range(100):
            handle.write(block)
        handle.write(",Org\n" + _good_rows(500, first=500))
    assert source.stat().st_size > 100 * (1 << 20)
    result = subprocess.run([sys.executable, "-c", _PEAK_RSS, "subscribers", "import", str(source),
                             "--list", "stampa"], capture_output=True, text=True, cwd=workdir, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "1001 rows: 1000 added, 0 activated, 0 updated, 0 unchanged, 1 rejected.")
    assert f"{source}:502: has a cell longer than 4,096 characters" in result.stderr
    peak_mb = int(result.stderr.rsplit("peak-rss-kib ", 1)[1]) / 1024
    assert peak_mb < 200, f"peak memory {peak_mb:.0f} MB"
    assert len(_emails(engine)) == 1000
    rejects = (workdir / "huge.rejects.csv").stat().st_size
    assert rejects < 100_000  # the cell is cut, not copied
