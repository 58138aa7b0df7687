"""The editorial commands, run in-process against a real SQLite file."""

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "edition-2026-11.md"


@pytest.fixture
def desk(cli, engine: Engine):
    """The quick start's editorial steps, as a user runs them."""
    result = cli("editions", "create", "2026-11", "--title", "Novembre-Dicembre 2026",
                 "--start", "2026-11-01", "--end", "2026-12-31")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Created edition 2026-11 (Novembre-Dicembre 2026, 2026-11-01 to 2026-12-31).\n"
    return cli


def _items(cli) -> list[dict]:
    result = cli("items", "list", "--edition", "2026-11", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_quick_start_steps(desk) -> None:
    result = desk("import", str(EXAMPLE), "--edition", "2026-11")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Imported 12 items into edition '2026-11': 12 created, 0 updated, 0 unchanged.\n"
        "Sections: Top News 10, Approfondimenti 0, Coming Soon 2.\n"
    )
    assert result.stderr.splitlines() == [
        "Warning: line 18: 'Laboratorio sul clima urbano a Lione': 1 link(s) without a URL: 'CoolYards'.",
        "Warning: line 48: joined a paragraph of 'Visita studio sul riuso degli edifici industriali' "
        "cut by a page break.",
        "Warning: line 50: image description kept as image alt text of 'Visita studio sul riuso degli "
        "edifici industriali'.",
        "Warning: line 62: \"Rete delle città dell'apprendimento\": 1 link(s) without a URL: "
        "'portale della rete'.",
    ]
    result = desk("items", "approve", "--all", "--edition", "2026-11", "--by", "ada")
    assert result.exit_code == 0
    assert result.stdout == "Approved 12 items of edition '2026-11' (12 approved in all).\n"
    again = desk("import", str(EXAMPLE), "--edition", "2026-11")
    assert again.stdout.splitlines()[0] == (
        "Imported 12 items into edition '2026-11': 0 created, 0 updated, 12 unchanged.")
    assert {item["status"] for item in _items(desk)} == {"approved"}


def test_items_list_json_is_in_reading_order(desk) -> None:
    desk("import", str(EXAMPLE), "--edition", "2026-11")
    items = _items(desk)
    assert list(items[0]) == ["id", "title", "date_label", "start", "end", "section", "position", "status"]
    assert items[0] == {
        "id": 1, "title": "Settimana delle città gemellate", "date_label": "3-7 novembre",
        "start": "2026-11-03", "end": "2026-11-07", "section": "Top News", "position": 1, "status": "draft",
    }
    assert [i["section"] for i in items] == ["Top News"] * 10 + ["Coming Soon"] * 2
    last = desk("items", "move", str(items[-1]["id"]), "--position", "1")
    assert last.stdout == f"Item {items[-1]['id']} is now number 1 in Coming Soon.\n"
    moved = desk("items", "move", str(items[3]["id"]), "--position", "1")
    assert moved.exit_code == 0
    order = [i["id"] for i in _items(desk)]
    assert order[:4] == [items[3]["id"], items[0]["id"], items[1]["id"], items[2]["id"]]
    assert order[-2:] == [items[-1]["id"], items[-2]["id"]]


def test_items_show_json_has_markdown_html_and_links(desk) -> None:
    desk("import", str(EXAMPLE), "--edition", "2026-11")
    lab = _items(desk)[1]
    result = desk("items", "show", str(lab["id"]), "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["body_md"].startswith("Tecnici e ricercatori")
    assert "[CoolYards](#)" in data["body_md"]
    assert "CoolYards" in data["body_html"] and 'href="#"' not in data["body_html"]
    assert data["body_html"].startswith("<p>Tecnici e ricercatori")
    assert data["links"] == [{"text": "CoolYards", "url": None, "placeholder": True}]
    text = desk("items", "show", str(lab["id"]))
    assert "Link:  CoolYards → MISSING URL" in text.stdout


def test_add_edit_reject_and_editions_show(desk) -> None:
    added = desk("items", "add", "--edition", "2026-11", "--title", "Nuova mostra",
                 "--date", "dal 3 al 5 dicembre", "--body", "Una mostra con [link](#).")
    assert added.exit_code == 0
    assert added.stdout == "Added item 1 to edition '2026-11', section Top News (draft).\n"
    assert added.stderr == "Warning: 1 link(s) without a URL: 'link'.\n"
    edited = desk("items", "edit", "1", "--date", "presto")
    assert edited.stdout == "Item 1 saved (draft).\n"
    assert edited.stderr == (  # the missing URL is still missing
        "Warning: the date label 'presto' could not be read; it is kept without dates.\n"
        "Warning: 1 link(s) without a URL: 'link'.\n"
    )
    rejected = desk("items", "reject", "1", "--by", "ada")
    assert rejected.stdout == "Rejected 1 of 1 items.\n"
    again = desk("items", "reject", "1", "--by", "ada")
    assert again.stdout == "Rejected 0 of 1 items (1 already rejected).\n"
    shown = desk("editions", "show", "2026-11")
    assert shown.stdout == (
        "Edition 2026-11: Novembre-Dicembre 2026 [draft]\n"
        "Period: 2026-11-01 to 2026-12-31\n"
        "Language: it\n"
        "Items: 0 approved, 0 draft, 1 rejected (1 would be left out)\n"
        "  1. Top News: 1 items, 0 approved\n"
        "  2. Approfondimenti: 0 items, 0 approved\n"
        "  3. Coming Soon: 0 items, 0 approved\n"
    )
    listed = desk("editions", "list", "--json")
    assert json.loads(listed.stdout)[0]["items"] == 1
    ready = desk("editions", "set-status", "2026-11", "ready")
    assert ready.stdout == "Edition 2026-11 is ready.\n"


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (("import", "{empty}", "--edition", "2026-11"), "Error: {empty} is empty.\n"),
        (("import", "{readme}", "--edition", "2026-11"),
         "Error: {readme} does not look like a newsletter document: it has no known section (Top News, "
         "Approfondimenti, Coming Soon) and no item has a date line.\n"),
        (("import", "{example}", "--edition", "2099-01"),
         "Error: There is no edition with slug '2099-01'.\n"),
        (("import", "{missing}", "--edition", "2026-11"), "Error: There is no file {missing}.\n"),
        (("items", "show", "999"), "Error: There is no item with id 999.\n"),
        (("items", "approve", "999"), "Error: There is no item with id 999.\n"),
        (("items", "edit", "999", "--title", "x"), "Error: There is no item with id 999.\n"),
        (("items", "list", "--edition", "nope"), "Error: There is no edition with slug 'nope'.\n"),
        (("editions", "show", "nope"), "Error: There is no edition with slug 'nope'.\n"),
        (("items", "approve", "--all", "--edition", "nope"),
         "Error: There is no edition with slug 'nope'.\n"),
        (("editions", "create", "2026-11", "--title", "Doppia"),
         "Error: There is already an edition with slug '2026-11'.\n"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(desk, tmp_path: Path, args: tuple, stderr: str) -> None:
    desk("import", str(EXAMPLE), "--edition", "2026-11")
    before = _items(desk)
    paths = {"empty": tmp_path / "empty.md", "readme": tmp_path / "readme.md", "example": EXAMPLE,
             "missing": tmp_path / "missing.md"}
    paths["empty"].write_text("")
    paths["readme"].write_text("# Installazione\n\nEseguire lo script.\n\n## Uso\n\nAprire il programma.\n")
    result = desk(*(a.format(**paths) for a in args))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == stderr.format(**paths)
    assert _items(desk) == before


def test_approving_items_of_a_sent_edition_is_refused(desk, engine: Engine) -> None:
    from wip_mailer import db, editorial

    desk("import", str(EXAMPLE), "--edition", "2026-11")
    with db.session_scope(engine) as session:
        edition = editorial.get_edition(session, "2026-11")
        editorial.set_edition_status(session, edition, "sending")
        editorial.set_edition_status(session, edition, "sent")
    for args in (("items", "approve", "1", "2"), ("items", "approve", "--all", "--edition", "2026-11")):
        result = desk(*args)
        assert result.exit_code == 1
        assert result.stderr == "Error: Edition '2026-11' is sent: its items can no longer change.\n"
    assert {item["status"] for item in _items(desk)} == {"draft"}


def test_approve_needs_ids_or_all_with_an_edition(desk) -> None:
    for args in (("items", "approve"), ("items", "approve", "--all"), ("items", "approve", "1", "--all",
                                                                         "--edition", "2026-11")):
        result = desk(*args)
        assert result.exit_code == 2
        assert "Give item ids, or --all with --edition SLUG." in result.stderr
