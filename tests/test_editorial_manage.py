"""Editing and deleting editions and items, managing sections, and no silent new section."""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlalchemy import Engine

from wip_mailer import db, editorial
from wip_mailer.models import Campaign, ScheduledJob

SLUG = "2026-11"


@pytest.fixture
def desk(cli, engine: Engine):
    result = cli("editions", "create", SLUG, "--title", "Novembre 2026", "--start", "2026-11-01",
                 "--end", "2026-11-30")
    assert result.exit_code == 0, result.stderr
    return cli


def _sections(cli) -> list[tuple[str, int]]:
    result = cli("sections", "list", "--edition", SLUG, "--json")
    assert result.exit_code == 0, result.stderr
    return [(row["name"], row["items"]) for row in json.loads(result.stdout)]


def test_items_add_refuses_an_unknown_section_naming_the_sections(desk) -> None:
    result = desk("items", "add", "--edition", SLUG, "--title", "Missione", "--section", "Top Nws")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: Edition '{SLUG}' has no section 'Top Nws' (did you mean 'Top News'?); its sections are: "
        f"Top News, Approfondimenti, Coming Soon (add one with `wip-mailer sections add --edition {SLUG} "
        "NAME`).\n")
    far = desk("items", "add", "--edition", SLUG, "--title", "Missione", "--section", "Eventi")
    assert far.exit_code == 1 and "did you mean" not in far.stderr
    assert _sections(desk) == [("Top News", 0), ("Approfondimenti", 0), ("Coming Soon", 0)]
    added = desk("items", "add", "--edition", SLUG, "--title", "Missione", "--section", "coming soon")
    assert added.stdout == f"Added item 1 to edition '{SLUG}', section Coming Soon (draft).\n"


def test_sections_add_rename_remove(desk) -> None:
    assert desk("sections", "add", "Eventi", "--edition", SLUG, "--after", "top news").stdout == \
        f"Added section Eventi to edition '{SLUG}' (number 2).\n"
    assert [n for n, _ in _sections(desk)] == ["Top News", "Eventi", "Approfondimenti", "Coming Soon"]
    again = desk("sections", "add", "eventi", "--edition", SLUG)
    assert (again.exit_code, again.stderr) == (
        1, f"Error: Edition '{SLUG}' already has a section 'eventi'.\n")
    assert desk("items", "add", "--edition", SLUG, "--title", "Fiera", "--section", "Eventi").exit_code == 0
    taken = desk("sections", "rename", "Eventi", "top news", "--edition", SLUG)
    assert taken.exit_code == 1 and "already has a section 'Top News'" in taken.stderr
    assert desk("sections", "rename", "Eventi", "Appuntamenti", "--edition", SLUG).exit_code == 0
    full = desk("sections", "remove", "Appuntamenti", "--edition", SLUG)
    assert full.exit_code == 1 and "has 1 item(s)" in full.stderr
    assert _sections(desk)[1] == ("Appuntamenti", 1)
    assert desk("items", "delete", "1", "--yes").stdout == "Deleted item 1.\n"
    assert desk("sections", "remove", "appuntamenti", "--edition", SLUG).exit_code == 0
    assert _sections(desk) == [("Top News", 0), ("Approfondimenti", 0), ("Coming Soon", 0)]
    listed = desk("sections", "list", "--edition", SLUG)
    assert listed.stdout.splitlines()[0] == "1. Top News: 0 items"
    unknown = desk("sections", "remove", "Nope", "--edition", SLUG)
    assert unknown.exit_code == 1 and "has no section 'Nope'" in unknown.stderr


def test_editions_edit_changes_fields_and_rereads_item_dates(desk, engine: Engine) -> None:
    assert desk("items", "add", "--edition", SLUG, "--title", "Fiera", "--date", "3 febbraio").exit_code == 0
    result = desk("editions", "edit", SLUG, "--title", "Inverno 2027", "--subject", "WIP – inverno",
                  "--language", "en", "--start", "2027-01-01", "--end", "2027-02-28")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Edition {SLUG} saved (Inverno 2027, 2027-01-01 to 2027-02-28, en).\n"
    with db.session_scope(engine) as session:
        edition = editorial.get_edition(session, SLUG)
        item = editorial.get_item(session, 1)
        assert (edition.title, edition.subject, edition.language) == ("Inverno 2027", "WIP – inverno", "en")
        assert item.start_date == date(2027, 2, 3)  # read again in the new period's year
    assert desk("editions", "edit", SLUG, "--subject", "").exit_code == 0
    with db.session_scope(engine) as session:
        assert editorial.get_edition(session, SLUG).subject is None  # derived from the title again


@pytest.mark.parametrize(("args", "stderr"), [
    (("--title", "Riga\nspezzata"), "Error: The edition title 'Riga\\nspezzata' contains a line break, which "
     "is not allowed: it must be one line of printable text.\n"),
    (("--subject", "A\x00B"), "Error: The subject 'A\\x00B' contains a control character (U+0000), which is "
     "not allowed: it must be one line of printable text.\n"),
    (("--title", "  "), "Error: The edition title must not be empty.\n"),
    (("--language", "italiano!"),
     "Error: The language 'italiano!' is not a language code such as it or en.\n"),
    (("--end", "2026-10-01"), "Error: The period ends (2026-10-01) before it starts (2026-11-01).\n"),
])
def test_editions_edit_refuses_bad_values_and_changes_nothing(desk, args: tuple, stderr: str) -> None:
    before = desk("editions", "show", SLUG, "--json").stdout
    result = desk("editions", "edit", SLUG, *args)
    assert (result.exit_code, result.stderr) == (1, stderr)
    assert desk("editions", "show", SLUG, "--json").stdout == before


def test_a_sent_edition_cannot_be_edited_or_deleted(desk, engine: Engine) -> None:
    assert desk("items", "add", "--edition", SLUG, "--title", "Fiera").exit_code == 0
    with db.session_scope(engine) as session:
        edition = editorial.get_edition(session, SLUG)
        editorial.set_edition_status(session, edition, "sending")
        editorial.set_edition_status(session, edition, "sent")
    edit = desk("editions", "edit", SLUG, "--title", "Altro")
    assert edit.stderr == f"Error: Edition '{SLUG}' is sent: its items can no longer change.\n"
    delete = desk("editions", "delete", SLUG, "--yes")
    assert delete.stderr == f"Error: Edition '{SLUG}' is sent: only a draft edition can be deleted.\n"
    item = desk("items", "delete", "1", "--yes")
    assert item.exit_code == 1 and "can no longer change" in item.stderr


def test_editions_delete_asks_and_removes_a_draft_with_its_items(desk, engine: Engine) -> None:
    assert desk("items", "add", "--edition", SLUG, "--title", "Fiera").exit_code == 0
    asked = desk("editions", "delete", SLUG)
    assert asked.exit_code == 2 and f"Delete edition {SLUG} and its 1 item(s)? Pass --yes" in asked.stderr
    assert desk("editions", "delete", SLUG, "--yes").stdout == f"Deleted edition {SLUG} (1 item(s)).\n"
    assert json.loads(desk("editions", "list", "--json").stdout) == []
    gone = desk("items", "show", "1")
    assert (gone.exit_code, gone.stderr) == (1, "Error: There is no item with id 1.\n")
    missing = desk("editions", "delete", SLUG, "--yes")
    assert missing.stderr == f"Error: There is no edition with slug '{SLUG}'.\n"


def test_an_edition_with_campaign_history_or_a_pending_job_is_kept(desk, engine: Engine) -> None:
    with db.session_scope(engine) as session:
        edition = editorial.get_edition(session, SLUG)
        session.add(ScheduledJob(edition_id=edition.id, kind="reminder", status="scheduled"))
    pending = desk("editions", "delete", SLUG, "--yes")
    assert pending.exit_code == 1 and "has scheduled job(s) #1: cancel them first" in pending.stderr
    with db.session_scope(engine) as session:
        edition = editorial.get_edition(session, SLUG)
        session.get(ScheduledJob, 1).status = "cancelled"
        session.add(Campaign(edition_id=edition.id, status="cancelled", audience={}, subject="s",
                             body_html="", body_text=""))
    history = desk("editions", "delete", SLUG, "--yes")
    assert history.exit_code == 1 and "has campaigns on record" in history.stderr
    assert desk("editions", "show", SLUG).exit_code == 0


def test_items_delete_asks_first(desk) -> None:
    assert desk("items", "add", "--edition", SLUG, "--title", "Fiera").exit_code == 0
    asked = desk("items", "delete", "1")
    assert asked.exit_code == 2 and "Delete item 1 «Fiera»? Pass --yes" in asked.stderr
    assert desk("items", "show", "1").exit_code == 0
    unknown = desk("items", "delete", "9", "--yes")
    assert (unknown.exit_code, unknown.stderr) == (1, "Error: There is no item with id 9.\n")
