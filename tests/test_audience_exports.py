"""Other tools' exports (tests/data/exports/, written after each tool's documented columns),
imported through the real CLI into a real SQLite file: statuses kept, every other column
kept as an attribute, consent times and IPs kept, nobody who left or bounced is mailed."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from wip_mailer import db
from wip_mailer.audience import csv_import, lists, select_recipients, subscribers
from wip_mailer.models import ConsentEvent, Membership, Subscriber, Suppression

DATA = Path(__file__).parent / "data" / "exports"
MAILCHIMP = DATA / "mailchimp"


@pytest.fixture
def stampa(engine) -> None:
    with db.session_scope(engine) as session:
        lists.create_list(session, "stampa", double_opt_in=True)


def _mailchimp_zip(folder: Path) -> Path:
    path = folder / "export.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for member in sorted(MAILCHIMP.iterdir()):
            archive.write(member, f"audience_export_4f2a1c/{member.name}")
    return path


def _person(engine, email: str) -> dict:
    with db.session_scope(engine) as session:
        return subscribers.export_personal_data(session, email)


def _recipients(engine) -> list[str]:
    with db.session_scope(engine) as session:
        return [r.email for r in select_recipients(session, ["stampa"])]


def _snapshot(engine) -> list:
    with db.session_scope(engine) as session:
        return [session.execute(sa.select(*[c for c in model.__table__.c if c.name != "updated_at"])
                                .order_by(model.id)).all()
                for model in (Subscriber, Membership, ConsentEvent, Suppression)]


def test_mailchimp_zip_is_imported_whole(cli, engine, stampa, workdir) -> None:
    result = cli("subscribers", "import", str(_mailchimp_zip(workdir)), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert "read as a Mailchimp export (3 files)" in result.stderr
    assert result.stdout.splitlines()[0] == (
        "4 rows: 2 added, 0 activated, 0 updated, 0 unchanged, 2 kept out, 0 rejected.")

    anna = _person(engine, "anna.rossi@example.org")
    assert (anna["subscriber"]["name"], anna["subscriber"]["status"], anna["subscriber"]["country"]) == (
        "Anna Rossi", "active", "IT")
    assert anna["subscriber"]["tags"] == ["board member", "press"]
    attributes = anna["subscriber"]["attributes"]
    assert (attributes["Phone Number"], attributes["Company"], attributes["LEID"]) == (
        "+39 011 555 0101", "Comune di Esempio", "101")
    assert "OPTIN_TIME" not in attributes and "TAGS" not in attributes
    assert [(e["kind"], e["at"], e["ip"], e["source"]) for e in anna["consent_events"]] == [
        ("request", datetime(2021, 3, 1, 9, 15, 2, tzinfo=UTC), "203.0.113.7", "import:mailchimp"),
        ("confirm", datetime(2021, 3, 1, 9, 17, 45, tzinfo=UTC), "203.0.113.7", "import:mailchimp")]
    assert anna["memberships"][0]["subscribed_at"] == datetime(2021, 3, 1, 9, 15, 2, tzinfo=UTC)

    marco = _person(engine, "marco.bianchi@example.net")
    assert [(e["kind"], e["at"], e["ip"]) for e in marco["consent_events"]] == [
        ("subscribe", datetime(2020, 11, 20, 16, 40, tzinfo=UTC), "198.51.100.23")]
    assert marco["subscriber"]["attributes"]["NOTES"] == "met at the fair"

    lucia = _person(engine, "lucia.verdi@example.org")
    assert (lucia["subscriber"]["status"], lucia["memberships"][0]["status"]) == (
        "unsubscribed", "unsubscribed")
    assert lucia["memberships"][0]["unsubscribed_at"] == datetime(2022, 9, 30, 18, 22, 10, tzinfo=UTC)
    with db.session_scope(engine) as session:
        left = session.exec(select(ConsentEvent).where(ConsentEvent.kind == "unsubscribe")).one()
    assert (left.at, left.detail) == (datetime(2022, 9, 30, 18, 22, 10, tzinfo=UTC),
                                      "I no longer want to receive these emails")

    gone = _person(engine, "gone@example.com")
    assert (gone["subscriber"]["status"], gone["suppressed"]) == ("bounced", "bounced")

    assert _recipients(engine) == ["anna.rossi@example.org", "marco.bianchi@example.net"]

    # The subscribed file again, alone, and the whole ZIP again: nothing changes.
    before = _snapshot(engine)
    subscribed = Path(shutil.copy(next(MAILCHIMP.glob("subscribed_*.csv")), workdir / "subscribed.csv"))
    again = cli("subscribers", "import", str(subscribed), "--list", "stampa")
    assert again.exit_code == 0, again.stderr
    assert again.stdout.splitlines()[0] == "2 rows: 0 added, 0 activated, 0 updated, 2 unchanged, 0 rejected."
    whole = cli("subscribers", "import", str(workdir / "export.zip"), "--list", "stampa")
    assert whole.stdout.splitlines()[0] == (
        "4 rows: 0 added, 0 activated, 0 updated, 2 unchanged, 2 kept out, 0 rejected.")
    assert _snapshot(engine) == before
    assert _recipients(engine) == ["anna.rossi@example.org", "marco.bianchi@example.net"]


def test_an_old_spreadsheet_cannot_bring_back_who_left_elsewhere(cli, engine, stampa, workdir) -> None:
    cli("subscribers", "import", str(_mailchimp_zip(workdir)), "--list", "stampa")
    old = workdir / "old.csv"
    old.write_text("email,name\nlucia.verdi@example.org,Lucia\ngone@example.com,Gino\n", encoding="utf-8")
    result = cli("subscribers", "import", str(old), "--list", "stampa")
    assert result.exit_code == 0
    assert f"{old}:2: lucia.verdi@example.org unsubscribed from stampa; only they can subscribe again" in (
        result.stderr)
    assert f"{old}:3: gone@example.com is on the suppression list (bounced)" in result.stderr
    assert _recipients(engine) == ["anna.rossi@example.org", "marco.bianchi@example.net"]


def test_a_no_from_elsewhere_unsubscribes_someone_active_here(cli, engine, stampa, workdir) -> None:
    here = workdir / "here.csv"
    here.write_text("email\nfabio@example.org\n", encoding="utf-8")
    cli("subscribers", "import", str(here), "--list", "stampa")
    assert _recipients(engine) == ["fabio@example.org"]
    result = cli("subscribers", "import", str(DATA / "keila.csv"), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert _person(engine, "fabio@example.org")["subscriber"]["status"] == "unsubscribed"
    assert _recipients(engine) == ["elena@example.org"]


@pytest.mark.parametrize(("name", "label", "expected"), [
    ("listmonk-import.csv", "listmonk", {
        "ada@example.org": ("active", {"city": "London", "projects": 3, "stack": ["python", "go"]}, None)}),
    ("listmonk-export.csv", "listmonk", {
        "carla@example.org": ("active", {"city": "Milano", "uuid": "5e91dda1-1c16-467d-9bf9-2a21bf22ae21",
                                         "updated_at": "2023-01-01 00:00:00+00:00"}, None),
        "dario@example.org": ("unsubscribed", None, "blocklisted")}),
    ("keila.csv", "Keila", {
        "elena@example.org": ("active", {"membership": "gold", "since": 2019, "External ID": "crm-0042"},
                              None),
        "fabio@example.org": ("unsubscribed", None, None),
        "gaia@example.org": ("bounced", None, "bounced")}),
    ("substack.csv", "Substack", {
        "hugo@example.org": ("active", {"active_subscription": True, "expiry": "2025-12-31T00:00:00.000Z",
                                        "prefer_digests": False}, None),
        "irene@example.org": ("unsubscribed", None, None)}),
    ("beehiiv.csv", "beehiiv", {
        "jack@example.org": ("active", {"tier": "free", "utm_source": "twitter"}, None),
        "kira@example.org": ("unsubscribed", None, None)}),
    ("curated.csv", "Curated", {
        "leo@example.org": ("active", {"UTM Source": "newsletter", "UTM Medium": "email"}, None)}),
    ("mailman-members.txt", "Mailman 3", {
        "olga@example.org": ("active", {}, None), "paolo@example.org": ("active", {}, None)}),
])
def test_each_format_imports_with_its_statuses_and_attributes(cli, engine, stampa, workdir, name, label,
                                                              expected) -> None:
    source = Path(shutil.copy(DATA / name, workdir / name))
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert f"read as a {label}" in result.stderr
    assert "rejected" in result.stdout and ", 0 rejected." in result.stdout.splitlines()[0]
    for email, (status, attributes, suppressed) in expected.items():
        person = _person(engine, email)
        assert person["subscriber"]["status"] == status, email
        if attributes is not None:
            assert person["subscriber"]["attributes"] == attributes, email
        assert person["suppressed"] == suppressed, email
        assert email in _recipients(engine) if status == "active" else email not in _recipients(engine)


def test_times_survive_from_each_tool(cli, engine, stampa, workdir) -> None:
    for name in ("listmonk-export.csv", "substack.csv", "beehiiv.csv", "curated.csv"):
        assert cli("subscribers", "import", str(DATA / name), "--list", "stampa").exit_code == 0
    def times(email: str) -> list[tuple[str, datetime]]:
        return [(e["kind"], e["at"]) for e in _person(engine, email)["consent_events"]]
    assert times("carla@example.org") == [("subscribe", datetime(2022, 4, 1, 10, 0, 0, 123456, tzinfo=UTC))]
    assert times("irene@example.org") == [("subscribe", datetime(2021, 5, 20, 19, 45, tzinfo=UTC)),
                                          ("unsubscribe", times("irene@example.org")[1][1])]
    assert times("kira@example.org") == [("subscribe", datetime(2022, 1, 1, 9, tzinfo=UTC)),
                                         ("unsubscribe", datetime(2023, 2, 2, 10, tzinfo=UTC))]
    assert times("leo@example.org") == [("subscribe", datetime(2021, 2, 4, 7, 55, 20, tzinfo=UTC))]


def test_mailman_display_names_fill_the_name(cli, engine, stampa, workdir) -> None:
    assert cli("subscribers", "import", str(DATA / "mailman-members.txt"), "--list", "stampa").exit_code == 0
    assert _person(engine, "nina@example.org")["subscriber"]["name"] == "Nina Grigi"
    assert _person(engine, "olga@example.org")["subscriber"]["name"] == "Ponti, Olga"


def test_format_can_be_said_outright_and_must_fit(cli, engine, stampa, workdir) -> None:
    result = cli("subscribers", "import", str(DATA / "keila.csv"), "--list", "stampa", "--format", "substack")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: The file {DATA / 'keila.csv'} does not have the columns of a Substack "
                             "export (missing: activesubscription, emaildisabled).\n")
    result = cli("subscribers", "import", str(DATA / "keila.csv"), "--list", "stampa", "--format", "keila")
    assert result.exit_code == 0, result.stderr


def test_an_exports_cells_are_read_as_written(cli, engine, stampa, workdir) -> None:
    """Spaces around a cell go; the ' that a spreadsheet export puts before a formula goes, in
    any column; an apostrophe within a value stays; a row shorter than the header is read; a
    kept column with a control character rejects its row, naming the column."""
    source = workdir / "subscribed_members_export_x.csv"
    header = (MAILCHIMP / "subscribed_members_export_4f2a1c.csv").read_text(encoding="utf-8").splitlines()[0]
    rita = ["rita@example.org", " Rita ", "D'Angelo", "'=Via Po 2", "'+39 011 1", "", "'@Comune", " ",
            "2021-03-01 09:15:02", *[""] * 11, "7", "", "'-", '"""Press"""']
    assert len(rita) == len(header.split(","))
    source.write_text(f"{header}\n{','.join(rita)}\nsara@example.org,Sara,,,,,L'Officina\n"
                      "tina@example.org,Tina,,,,,,,,,,,,,,,,,,,,,Bell\x07,\n", encoding="utf-8")
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    assert result.exit_code == 0, result.stderr
    assert ", 1 rejected." in result.stdout.splitlines()[0]
    assert (f"{source}:4: the column NOTES contains a control character (U+0007); a kept column must be "
            "one line of printable text") in result.stderr
    rita = _person(engine, "rita@example.org")["subscriber"]
    assert (rita["name"], rita["tags"]) == ("Rita D'Angelo", ["press"])
    assert rita["attributes"] == {"Address": "=Via Po 2", "Phone Number": "+39 011 1", "Company": "@Comune",
                                  "LEID": "7", "NOTES": "-"}
    sara = _person(engine, "sara@example.org")
    assert (sara["subscriber"]["name"], sara["subscriber"]["attributes"]) == (
        "Sara", {"Company": "L'Officina"})
    assert [e["kind"] for e in sara["consent_events"]] == ["subscribe"]


def test_a_corrected_address_is_reported_with_its_line(cli, engine, stampa, workdir) -> None:
    source = workdir / "x.csv"
    source.write_text("email,name\nAnna <anna@example.org>,\nmailto:bob@example.org\nCarla@Example.org.,C\n"
                      "dina@example.org,D\n", encoding="utf-8")
    changes = workdir / "changes.csv"
    plain = cli("subscribers", "import", str(source), "--list", "stampa", "--dry-run")
    assert plain.exit_code == 0, plain.stderr
    assert (f"{source}:2: corrected 'Anna <anna@example.org>' to anna@example.org "
            "(unwrapped from Name <addr>)") in plain.stderr
    assert (f"{source}:3: corrected 'mailto:bob@example.org' to bob@example.org "
            "(mailto: removed)") in plain.stderr
    assert (f"{source}:4: corrected 'Carla@Example.org.' to carla@example.org (trailing dot removed, "
            "case folded)") in plain.stderr
    assert ":5:" not in plain.stderr
    result = cli("subscribers", "import", str(source), "--list", "stampa", "--changes", str(changes))
    assert "3 corrected addresses written to" in result.stderr
    assert changes.read_text(encoding="utf-8").splitlines() == [
        "file,line,before,after,change",
        "x.csv,2,Anna <anna@example.org>,anna@example.org,unwrapped from Name <addr>",
        "x.csv,3,mailto:bob@example.org,bob@example.org,mailto: removed",
        "x.csv,4,Carla@Example.org.,carla@example.org,\"trailing dot removed, case folded\""]


def test_dry_run_reads_everything_and_writes_nothing(cli, engine, stampa, workdir) -> None:
    zipped = _mailchimp_zip(workdir)
    bad = workdir / "bad.csv"
    bad.write_text("email\nnot-an-address\nok@example.org\n", encoding="utf-8")
    before, files = _snapshot(engine), {p.name for p in workdir.iterdir() if not p.name.startswith("wip.db")}
    result = cli("subscribers", "import", str(zipped), "--list", "stampa", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "Dry run, nothing written: 4 rows: 2 added, 0 activated, 0 updated, 0 unchanged, 2 kept out, "
        "0 rejected.")
    assert "  column 'OPTIN_TIME' -> optin_time" in result.stderr
    assert "  column 'Phone Number' -> attr.Phone Number" in result.stderr
    assert "on the authority of the consent source 'import:mailchimp'" in result.stderr
    dry = cli("subscribers", "import", str(bad), "--list", "stampa", "--dry-run", "--changes",
              str(workdir / "c.csv"))
    assert f"{bad}:2: 'not-an-address' is not a valid email address" in dry.stderr
    assert _snapshot(engine) == before
    # no rejects file, no changes file
    assert {p.name for p in workdir.iterdir() if not p.name.startswith("wip.db")} == files


def test_double_opt_in_list_says_once_on_whose_authority(cli, engine, stampa, workdir, smtp_server,
                                                         monkeypatch) -> None:
    monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(smtp_server.port))
    source = workdir / "x.csv"
    source.write_text("email\na@example.org\nb@example.org\n", encoding="utf-8")
    result = cli("subscribers", "import", str(source), "--list", "stampa", "--source", "modulo carta 2024")
    assert result.stderr.count("double opt-in list") == 1
    assert ("stampa is a double opt-in list: the 2 added rows became active without a confirmation email, "
            "on the authority of the consent source 'modulo carta 2024'") in result.stderr
    other = workdir / "y.csv"
    other.write_text("email\nc@example.org\n", encoding="utf-8")
    confirmed = cli("subscribers", "import", str(other), "--list", "stampa", "--double-opt-in")
    assert "double opt-in list" not in confirmed.stderr
    assert "Sent 1 confirmation email(s)." in confirmed.stdout, confirmed.stderr
    assert [m.rcpt_tos for m in smtp_server.messages] == [["c@example.org"]]
    with db.session_scope(engine) as session:
        status = session.exec(select(Membership.status).where(col(Membership.subscriber_id) == 3)).one()
    assert status == "pending"


@pytest.mark.parametrize("by_list", [True, False])
def test_export_import_export_gives_the_same_file(cli, engine, settings, stampa, workdir, by_list) -> None:
    for name in ("keila.csv", "listmonk-export.csv", "substack.csv", "beehiiv.csv"):
        assert cli("subscribers", "import", str(DATA / name), "--list", "stampa").exit_code == 0
    cli("subscribers", "import", str(_mailchimp_zip(workdir)), "--list", "stampa")
    own = workdir / "own.csv"
    own.write_text("email,name,tags,status,attr.sector\nwait@example.org,Wait,press,pending,=culture\n"
                   "ada@example.org,Ada,,,\n", encoding="utf-8")
    assert cli("subscribers", "import", str(own), "--list", "stampa").exit_code == 0
    with db.session_scope(engine) as session:
        lists.create_list(session, "altra", double_opt_in=False)
    subscribers.add_subscriber(engine, settings, "ada@example.org", ["altra"], source="telefono",
                               profile=subscribers.Profile(attributes={"sector": "science"}))
    with db.session_scope(engine) as session:
        subscribers.remove_subscriber(session, "hugo@example.org", "stampa", source="email di Hugo")
    scope = ["--list", "stampa"] if by_list else []
    first = workdir / "first.csv"
    assert cli("subscribers", "export", *scope, "--out", str(first)).exit_code == 0

    copy = db.create_database(f"sqlite:///{workdir / 'copy.db'}")
    with db.session_scope(copy) as session:
        lists.create_list(session, "stampa", double_opt_in=True)
    report = csv_import.import_csv(copy, settings, first, "stampa")
    assert report.rejected == []
    second = workdir / "second.csv"
    with db.session_scope(copy) as session, second.open("w", encoding="utf-8", newline="") as handle:
        subscribers.export_csv(session, handle, list_name="stampa" if by_list else None)

    text = first.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0].startswith("email,name,language,organisation,country,tags,status,suppressed,consent,"
                               "attr.")
    assert "attr.Phone Number" in lines[0] and "attr.sector" in lines[0]
    assert len(lines) == 1 + 15
    assert sorted(second.read_text(encoding="utf-8").splitlines()) == sorted(lines)
    rows = {r["email"]: r for r in csv.DictReader(first.open(encoding="utf-8", newline=""))}
    assert (rows["dario@example.org"]["status"], rows["dario@example.org"]["suppressed"]) == (
        "unsubscribed", "blocklisted")
    assert (rows["gone@example.com"]["status"], rows["wait@example.org"]["status"]) == ("bounced", "pending")
    assert rows["wait@example.org"]["attr.sector"] == "'=culture"
    anna = json.loads(rows["anna.rossi@example.org"]["consent"])
    assert anna[0] == {"kind": "request", "at": "2021-03-01T09:15:02+00:00", "source": "import:mailchimp",
                       "ip": "203.0.113.7"}
    assert json.loads(rows["elena@example.org"]["attr.since"]) == 2019


def test_suppressions_can_be_seen_and_lifted_with_the_lift_on_record(cli, engine, stampa, workdir) -> None:
    cli("subscribers", "import", str(DATA / "keila.csv"), "--list", "stampa")
    cli("subscribers", "import", str(DATA / "listmonk-export.csv"), "--list", "stampa")
    cli("subscribers", "erase", "elena@example.org", "--yes")
    result = cli("suppressions", "list", "--json")
    assert result.exit_code == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [(e["email"], e["reason"]) for e in entries] == [
        ("gaia@example.org", "bounced"), ("dario@example.org", "blocklisted"), (None, "erased")]
    text = cli("suppressions", "list", "--reason", "bounced")
    assert text.stdout.startswith("gaia@example.org\tbounced\t") and text.stdout.count("\n") == 1
    assert "(address not held; hash " in cli("suppressions", "list", "--reason", "erased").stdout

    assert "gaia@example.org" not in _recipients(engine)
    lifted = cli("suppressions", "remove", "Gaia@Example.org", "--reason", "the mailbox was only full")
    assert (lifted.exit_code, lifted.stdout) == (
        0, "Lifted the suppression of Gaia@Example.org (it was bounced).\n")
    gaia = _person(engine, "gaia@example.org")
    assert (gaia["subscriber"]["status"], gaia["suppressed"]) == ("active", None)
    assert (gaia["consent_events"][-1]["kind"], gaia["consent_events"][-1]["source"]) == ("unsuppress", "cli")
    with db.session_scope(engine) as session:
        event = session.exec(select(ConsentEvent).where(ConsentEvent.kind == "unsuppress")).one()
    assert event.detail == "was bounced: the mailbox was only full"
    assert "gaia@example.org" in _recipients(engine)

    again = cli("suppressions", "remove", "gaia@example.org", "--reason", "twice")
    assert (again.exit_code, again.stderr) == (1, "Error: gaia@example.org is not on the suppression list.\n")
    empty = cli("suppressions", "remove", "dario@example.org", "--reason", "  ")
    assert empty.exit_code == 1 and "Say why the suppression is lifted" in empty.stderr
