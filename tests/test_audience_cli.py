"""Lists and subscribers from the CLI: sync, add, remove, GDPR access and erasure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sqlmodel import select

from tests.conftest import REPO
from wip_mailer import db
from wip_mailer.models import Campaign, ConsentEvent, Delivery, Edition, Subscriber, Suppression


def _sync(cli, workdir: Path):
    (workdir / "subscribers").mkdir(exist_ok=True)
    shutil.copy(REPO / "subscribers" / "lists.toml", workdir / "subscribers" / "lists.toml")
    return cli("lists", "sync")


def test_lists_sync_is_declarative_and_repeatable(cli, engine, workdir) -> None:
    first = _sync(cli, workdir)
    assert first.exit_code == 0, first.stderr
    assert first.stdout == "Created: partner-internazionali, consolati, stampa, cittadini\n"
    assert _sync(cli, workdir).stdout == "Unchanged: partner-internazionali, consolati, stampa, cittadini\n"
    listed = json.loads(cli("lists", "list", "--json").stdout)
    assert [item["name"] for item in listed] == ["cittadini", "consolati", "partner-internazionali", "stampa"]
    assert listed[0]["public"] is True and listed[0]["double_opt_in"] is True

    (workdir / "subscribers" / "lists.toml").write_text(
        '[lists.stampa]\ndescription = "Stampa estera"\nlanguage = "en"\n', encoding="utf-8")
    result = cli("lists", "sync")
    assert result.stdout == ("Updated: stampa\n"
                             "Not in the file (kept): cittadini, consolati, partner-internazionali\n")
    assert json.loads(cli("lists", "show", "stampa", "--json").stdout)["language"] == "en"


def test_lists_sync_rejects_unknown_keys(cli, engine, workdir) -> None:
    path = workdir / "lists.toml"
    path.write_text('[lists.stampa]\ndouble_optin = true\n', encoding="utf-8")
    result = cli("lists", "sync", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: In {path}, lists.stampa has the unknown key 'double_optin'; "
                             "known keys are description, language, double_opt_in, public.\n")


def test_list_create_rename_delete(cli, engine) -> None:
    assert cli("lists", "create", "prova", "--no-double-opt-in").exit_code == 0
    again = cli("lists", "create", "prova")
    assert (again.exit_code, again.stderr) == (1, "Error: A list named 'prova' already exists.\n")
    bad = cli("lists", "create", "Nome Con Spazi")
    assert bad.exit_code == 1 and "is not a valid list name" in bad.stderr
    assert cli("subscribers", "add", "a@example.org", "--list", "prova").exit_code == 0
    assert cli("lists", "rename", "prova", "test-list").stdout == "Renamed the list prova to test-list.\n"
    refused = cli("lists", "delete", "test-list")  # not interactive, no --yes
    assert refused.exit_code == 2
    assert json.loads(cli("lists", "show", "test-list", "--json").stdout)["members"]["active"] == 1
    deleted = cli("lists", "delete", "test-list", "--yes")
    assert deleted.stdout == "Deleted the list test-list (1 memberships removed).\n"
    assert json.loads(cli("subscribers", "show", "a@example.org", "--json").stdout)["memberships"] == []


def test_add_confirmed_and_remove(cli, engine, smtp_server, monkeypatch) -> None:
    monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(smtp_server.port))
    cli("lists", "create", "stampa")
    result = cli("subscribers", "add", "Piero@Example.org", "--list", "stampa", "--confirmed",
                 "--country", "it", "--tag", "Press", "--attr", "sector=media", "--source", "telefono")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "piero@example.org on stampa: joined\n"
    assert smtp_server.messages == []  # confirmed: no confirmation email
    shown = json.loads(cli("subscribers", "show", "piero@example.org", "--json").stdout)
    assert (shown["status"], shown["country"], shown["tags"], shown["attributes"]) == (
        "active", "IT", ["press"], {"sector": "media"})

    assert cli("subscribers", "remove", "piero@example.org").stdout == (
        "Unsubscribed piero@example.org from every list.\n")
    assert cli("subscribers", "remove", "piero@example.org").stdout == (
        "piero@example.org was already unsubscribed from every list.\n")
    shown = json.loads(cli("subscribers", "show", "piero@example.org", "--json").stdout)
    assert shown["status"] == "unsubscribed"

    bad = cli("subscribers", "add", "piero@", "--list", "stampa")
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: 'piero@' is not a valid email address")
    missing = cli("subscribers", "show", "nobody@example.org")
    assert (missing.exit_code, missing.stderr) == (1, "Error: There is no subscriber nobody@example.org.\n")


def test_export_data_then_erase(cli, engine, workdir) -> None:
    cli("lists", "create", "stampa", "--no-double-opt-in")
    cli("subscribers", "add", "dora@example.org", "--list", "stampa", "--name", "Dora")
    with db.session_scope(engine) as session:
        dora = session.exec(select(Subscriber).where(Subscriber.email == "dora@example.org")).one()
        edition = Edition(slug="2024-01", title="Gennaio-Febbraio 2024")
        session.add(edition)
        session.flush()
        campaign = Campaign(edition_id=edition.id)  # type: ignore[arg-type]
        session.add(campaign)
        session.flush()
        session.add(Delivery(campaign_id=campaign.id, subscriber_id=dora.id, email=dora.email,  # type: ignore[arg-type]
                             state="sent"))

    data = json.loads(cli("subscribers", "export-data", "dora@example.org").stdout)
    assert data["subscriber"]["name"] == "Dora"
    assert [(e["kind"], e["list"], e["source"]) for e in data["consent_events"]] == [
        ("subscribe", "stampa", "cli")]
    assert [(d["email"], d["state"]) for d in data["deliveries"]] == [("dora@example.org", "sent")]

    refused = cli("subscribers", "erase", "dora@example.org")  # no --yes, not interactive
    assert refused.exit_code == 2
    assert json.loads(cli("subscribers", "show", "dora@example.org", "--json").stdout)["name"] == "Dora"

    erased = cli("subscribers", "erase", "Dora@example.org", "--yes")
    assert erased.stdout == ("Erased dora@example.org; 1 delivery records kept without the address; "
                             "the address is suppressed.\n")
    with db.session_scope(engine) as session:
        assert session.exec(select(Subscriber)).all() == []
        [delivery] = session.exec(select(Delivery)).all()
        assert (delivery.email, delivery.subscriber_id, delivery.state) == ("", None, "sent")
        assert [e.kind for e in session.exec(select(ConsentEvent)).all()] == ["erase"]
        assert [s.reason for s in session.exec(select(Suppression)).all()] == ["erased"]
    with engine.connect() as connection:  # move the WAL into the file, as SQLite does on its own
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert b"dora@example.org" not in (workdir / "wip.db").read_bytes()  # nor in freed pages

    readd = cli("subscribers", "add", "dora@example.org", "--list", "stampa")
    assert (readd.exit_code, readd.stderr) == (
        1, "Error: dora@example.org is on the suppression list (erased) and cannot be added.\n")
    assert cli("subscribers", "erase", "ghost@example.org", "--yes").stdout == (
        "No data held on ghost@example.org; the address is suppressed all the same.\n")
