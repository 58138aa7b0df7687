"""`archive build DIR --reports`: every campaign's report and the lists' report beside the
archive, in a folder the archive never links whose name only the secret key gives."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from tests.report_helpers import synthetic_campaign
from wip_mailer.db import session_scope
from wip_mailer.models import Edition
from wip_mailer.reports import reports_folder
from wip_mailer.settings import Settings


@pytest.fixture(autouse=True)
def _demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIP_MAILER_DEMO", "true")


def test_reports_go_to_an_unlinked_folder_named_by_the_key(cli, engine: Engine, settings: Settings,
                                                           workdir: Path) -> None:
    campaign_id = synthetic_campaign(engine, 300)
    with session_scope(engine) as session:  # its edition has no items: keep it out of the archive
        session.execute(update(Edition).values(status="draft"))
    result = cli("archive", "build", "site", "--reports")
    assert result.exit_code == 0, result.stderr
    folder = workdir / "site" / reports_folder(settings)
    assert f"Wrote 3 report page(s) in site/{folder.name} (not linked" in result.output
    assert sorted(p.name for p in folder.iterdir()) == [
        f"campaign-{campaign_id}.html", "index.html", "lists.html"]
    page = (folder / f"campaign-{campaign_id}.html").read_text(encoding="utf-8")
    assert '<meta name="robots" content="noindex, nofollow">' in page and "300" in page
    # linked from nowhere in the archive, and not guessable without the key
    for public in ("index.html", "feed.xml", ".wip-mailer-archive"):
        assert "reports-" not in (workdir / "site" / public).read_text(encoding="utf-8")
    other = dataclasses.replace(settings, secret_key="another-secret-key-0123456789abcdef")
    assert reports_folder(other) != folder.name and len(folder.name) == len("reports-") + 20
    # a later build keeps the archive's own bookkeeping away from the reports
    assert cli("archive", "build", "site").exit_code == 0
    assert (folder / "lists.html").exists()
