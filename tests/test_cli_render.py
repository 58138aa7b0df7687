"""`wip-mailer preview`, `check` and `archive build` end to end on the sample edition."""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.sample_edition import SLUG, editorial, import_sample, intake, period_label
from wip_mailer import db
from wip_mailer.browser import find_chromium
from wip_mailer.models import Edition, EditionStatus

ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture(autouse=True)
def _demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """`check` judges a real send: with the template's placeholder addresses only a demo passes
    (test_preflight_settings.py pins the refusal); these tests are about the edition."""
    monkeypatch.setenv("WIP_MAILER_DEMO", "true")


@pytest.fixture
def sample(engine: Engine, seed_path: Path) -> Path:
    import_sample(engine, seed_path)
    return seed_path


def mark_sent(engine: Engine, slug: str, when: datetime) -> None:
    with db.session_scope(engine) as session:
        edition = session.exec(select(Edition).where(Edition.slug == slug)).one()
        edition.status = EditionStatus.SENT
        edition.sent_at = when
        session.add(edition)


def test_check_passes_with_warnings_and_strict_fails(cli, sample: Path) -> None:
    result = cli("check", SLUG)
    assert result.exit_code == 0, result.output + result.stderr
    assert result.output.startswith(f"Edition {SLUG}: HTML ")
    assert "BLOCKING" not in result.output
    assert "Warning: " in result.output and "without a target" in result.output
    assert "Ready to send, with " in result.output
    strict = cli("check", SLUG, "--strict")
    assert strict.exit_code == 1 and "Not ready (--strict)" in strict.output
    as_json = json.loads(cli("check", SLUG, "--json").output)
    assert as_json["ok"] is True and as_json["blocking"] == []
    assert 0 < as_json["html_kib"] <= 70 and as_json["warnings"]


def test_check_blocks_an_edition_without_approved_items(cli, engine: Engine, seed_path: Path) -> None:
    with db.session_scope(engine) as session:
        editorial.create_edition(session, "2024-09", period_label(seed_path))
        intake.import_document(session, seed_path, "2024-09")
    result = cli("check", "2024-09")
    assert result.exit_code == 1
    assert "BLOCKING: Edition '2024-09' has no approved items" in result.output
    assert result.output.rstrip().endswith("Not ready: 1 blocking problem(s).")


def test_check_unknown_edition_is_one_line(cli, engine: Engine) -> None:
    result = cli("check", "no-such-edition")
    assert result.exit_code != 0
    assert result.stderr.startswith("Error: ") and "no-such-edition" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_preview_writes_what_a_subscriber_sees(cli, sample: Path, workdir: Path) -> None:
    result = cli("preview", SLUG, "--out", "p.html", "--text", "p.txt")
    assert result.exit_code == 0, result.stderr
    html = (workdir / "p.html").read_text(encoding="utf-8")
    text = (workdir / "p.txt").read_text(encoding="utf-8")
    assert "personal.wip-mailer.invalid" not in html + text
    assert "/u/PREVIEW-NOT-A-REAL-TOKEN" in html and "/u/PREVIEW" in text  # the real route
    assert html.startswith("<!DOCTYPE html>")
    assert "Wrote p.html" in result.output and "Wrote p.txt" in result.output


@pytest.mark.chromium
@pytest.mark.skipif(find_chromium() is None, reason="headless Chromium is not installed")
def test_preview_screenshot_at_phone_width(cli, sample: Path, workdir: Path) -> None:
    result = cli("preview", SLUG, "--out", "p.html", "--screenshot", "p.png", "--width", "375")
    assert result.exit_code == 0, result.stderr
    png = (workdir / "p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == 375 and height > 2000  # the whole edition, not just the first screen


def test_preview_without_chromium_says_so(cli, sample: Path, workdir: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(workdir / "empty-bin"))
    result = cli("preview", SLUG, "--out", "p.html", "--screenshot", "p.png")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: No screenshot: Headless Chromium is not installed")
    assert (workdir / "p.html").exists() and not (workdir / "p.png").exists()


def test_archive_lists_sent_editions_newest_first(
    cli, engine: Engine, seed_path: Path, workdir: Path
) -> None:
    import_sample(engine, seed_path, "2024-01")
    import_sample(engine, seed_path, "2024-03")
    import_sample(engine, seed_path, "2024-05")  # a draft: not in the archive
    mark_sent(engine, "2024-01", datetime(2024, 2, 5, 9, 0, tzinfo=UTC))
    mark_sent(engine, "2024-03", datetime(2024, 4, 8, 9, 0, tzinfo=UTC))

    result = cli("archive", "build", "site")
    assert result.exit_code == 0, result.stderr
    assert result.output == "Wrote 2 edition page(s), index.html and feed.xml in site.\n"
    site = workdir / "site"
    index = (site / "index.html").read_text(encoding="utf-8")
    assert index.index('href="2024-03/"') < index.index('href="2024-01/"')
    assert "2024-05" not in index and not (site / "2024-05").exists()
    page = (site / "2024-01" / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "personal.wip-mailer.invalid" not in page and "Annulla" not in page
    feed = ET.parse(site / "feed.xml").getroot()
    entries = feed.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}id") for e in entries] == [
        "http://127.0.0.1:8000/archive/2024-03/", "http://127.0.0.1:8000/archive/2024-01/"
    ]
    assert entries[0].findtext(f"{ATOM}updated") == "2024-04-08T09:00:00Z"
    assert "<li>" in (entries[0].findtext(f"{ATOM}summary") or "")

    preview = cli("archive", "build", "all", "--include-unsent")
    assert preview.exit_code == 0 and "Wrote 3 edition page(s)" in preview.output


def test_archive_marks_unsent_editions_as_drafts_and_drops_pages_no_longer_published(
    cli, engine: Engine, seed_path: Path, workdir: Path
) -> None:
    import_sample(engine, seed_path, "2024-01")
    import_sample(engine, seed_path, "2024-05")  # a draft
    mark_sent(engine, "2024-01", datetime(2024, 2, 5, 9, 0, tzinfo=UTC))
    site = workdir / "site"
    (site / "assets").mkdir(parents=True)
    (site / "assets" / "logo.png").write_bytes(b"png")  # not the archive's: never touched
    preview = cli("archive", "build", "site", "--include-unsent")
    assert preview.exit_code == 0, preview.stderr
    draft = (site / "2024-05" / "index.html").read_text(encoding="utf-8")
    assert "Bozza: questo numero non è ancora stato inviato." in draft
    assert '<meta name="robots" content="noindex">' in draft
    assert draft.index("Bozza:") > draft.index("<body")
    sent = (site / "2024-01" / "index.html").read_text(encoding="utf-8")
    assert "Bozza:" not in sent and "noindex" not in sent

    published = cli("archive", "build", "site")
    assert published.output == (
        "Wrote 1 edition page(s), index.html and feed.xml in site.\n"
        "Removed the pages of 1 edition(s) no longer published: 2024-05.\n")
    assert not (site / "2024-05").exists() and (site / "2024-01" / "index.html").exists()
    assert (site / "assets" / "logo.png").read_bytes() == b"png"
    with db.session_scope(engine) as session:  # an edition deleted from the database
        editorial.delete_edition(session, "2024-05")
    again = cli("archive", "build", "site")
    assert "Removed" not in again.output


def test_empty_archive_says_so(cli, engine: Engine, workdir: Path) -> None:
    result = cli("archive", "build", "site")
    assert result.exit_code == 0
    assert result.output == "Wrote 0 edition page(s), index.html and feed.xml in site.\n"
    assert "Nessun numero è stato ancora inviato." in (workdir / "site" / "index.html").read_text("utf-8")
    feed = ET.parse(workdir / "site" / "feed.xml").getroot()
    assert feed.findall(f"{ATOM}entry") == [] and feed.findtext(f"{ATOM}updated")


def test_a_relative_link_is_text_in_html_and_text_twin_and_check_names_it(
    cli, engine: Engine, workdir: Path
) -> None:
    """One link rule: the email cannot open a relative URL, so both parts show the link's
    text only, and `check` tells the editor which item and which link."""
    assert cli("editions", "create", "2099-05", "--title", "Maggio 2099",
               "--start", "2099-05-01", "--end", "2099-05-31").exit_code == 0
    body = ("Il programma è su [la pagina del festival](/relative/page) e sul "
            "[sito](https://festival.example.org/programma).")
    added = cli("items", "add", "--edition", "2099-05", "--title", "Festival dei cortili",
                "--body", body)
    assert added.exit_code == 0, added.output + added.stderr
    assert cli("items", "approve", "1").exit_code == 0

    result = cli("preview", "2099-05", "--out", "p.html", "--text", "p.txt")
    assert result.exit_code == 0, result.stderr
    html = (workdir / "p.html").read_text(encoding="utf-8")
    text = " ".join((workdir / "p.txt").read_text(encoding="utf-8").split())
    assert "/relative/page" not in html and "/relative/page" not in text
    assert "la pagina del festival e sul <a " in html  # the text, outside any anchor
    assert 'href="https://festival.example.org/programma"' in html
    assert "su la pagina del festival e sul sito <https://festival.example.org/programma>." in text

    check = cli("check", "2099-05")
    assert check.exit_code == 0, check.output
    assert ("Warning: «Festival dei cortili»: 1 link(s) to an address an email cannot open "
            "(«la pagina del festival» → /relative/page), shown as plain text; "
            "give the full address (https://…).") in check.output.splitlines()
    assert "«sito»" not in check.output  # the absolute link is fine
    assert cli("check", "2099-05", "--strict").exit_code == 1
