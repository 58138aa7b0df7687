"""Item images: only absolute http(s) URLs, checked at entry (items, import) and again at render."""

from __future__ import annotations

import dataclasses
import json

import pytest
import sqlalchemy as sa

from tests.render_fixtures import small_edition
from tests.test_intake_document import ENGLISH_LAYOUT
from wip_mailer import db
from wip_mailer.models import Item
from wip_mailer.preflight import check_context
from wip_mailer.render import render_edition
from wip_mailer.settings import Settings

SLUG = "2025-03"
BAD_URLS = ["javascript:alert(document.cookie)", "JavaScript:alert(1)",
            "data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+", "//cdn.example.org/a.png",
            "images/a.png", "ftp://example.org/a.png"]


@pytest.fixture
def edition(cli, engine) -> str:
    result = cli("editions", "create", SLUG, "--title", "March-April 2025")
    assert result.exit_code == 0, result.stderr
    return SLUG


def _image_urls(engine) -> list[str | None]:
    with db.session_scope(engine) as session:
        return list(session.execute(sa.select(Item.image_url).order_by(Item.id)).scalars())


@pytest.mark.parametrize("url", BAD_URLS)
def test_items_add_refuses_an_image_url_that_is_not_http(cli, engine, edition, url) -> None:
    result = cli("items", "add", "--edition", edition, "--title", "Mostra", "--image-url", url,
                 "--image-alt", "Una foto")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: The image URL {url!r} cannot be used: ")
    assert result.stderr.count("\n") == 1
    assert _image_urls(engine) == []


def test_items_edit_refuses_it_too_and_https_is_kept(cli, engine, edition) -> None:
    added = cli("items", "add", "--edition", edition, "--title", "Mostra",
                "--image-url", "https://www.example.org/mostra.jpg", "--image-alt", "La mostra")
    assert added.exit_code == 0, added.stderr
    edited = cli("items", "edit", "1", "--image-url", "javascript:alert(1)")
    assert edited.exit_code == 1
    assert "only absolute http:// and https:// URLs are allowed" in edited.stderr
    assert _image_urls(engine) == ["https://www.example.org/mostra.jpg"]
    assert cli("items", "edit", "1", "--image-url", "").exit_code == 0  # "" still removes it
    assert _image_urls(engine) == [None]


@pytest.mark.parametrize("url", ["javascript:alert%281%29", "data:image/png;base64,iVBORw0KGgo="])
def test_import_leaves_out_a_bad_image_url_with_a_warning_naming_the_line(cli, engine, edition, tmp_path,
                                                                         url) -> None:
    document = tmp_path / "march.md"
    document.write_text(ENGLISH_LAYOUT.replace("https://www.example.org/sensors.jpg", url), encoding="utf-8")
    result = cli("import", str(document), "--edition", edition)
    assert result.exit_code == 0, result.stderr
    assert f"Warning: line 16: 'Climate lab in an example city': the image URL {url!r} was left out: " \
           "only absolute http:// and https:// URLs are allowed.\n" in result.stderr
    items = json.loads(cli("items", "list", "--edition", edition, "--json").stdout)
    assert len(items) == 6  # every item went in
    assert _image_urls(engine) == [None] * 6


@pytest.mark.parametrize("url", BAD_URLS[:3])
def test_render_drops_a_stored_bad_url_and_the_check_blocks_naming_the_item(url: str) -> None:
    context = small_edition()
    first = context.sections[0]
    item = dataclasses.replace(first.items[0], image_url=url, image_alt="Una foto")
    context = dataclasses.replace(context, sections=(dataclasses.replace(
        first, items=(item, *first.items[1:])), *context.sections[1:]))
    rendered = render_edition(context, Settings())
    assert url not in rendered.html and url.split(":")[0] + ":" not in rendered.html.replace("https:", "")
    report = check_context(context, Settings())
    assert not report.ok
    assert any(problem.startswith(f"«{item.title}»: the image URL {url[:80]!r} cannot be used")
               for problem in report.blocking), report.blocking


def test_check_command_blocks_an_edition_with_a_stored_javascript_image(cli, engine, edition) -> None:
    assert cli("items", "add", "--edition", edition, "--title", "Mostra", "--body", "Testo.",
               "--image-url", "https://www.example.org/a.jpg", "--image-alt", "Foto").exit_code == 0
    assert cli("items", "approve", "--edition", edition, "--all").exit_code == 0
    with db.session_scope(engine) as session:  # a row stored before the check at entry existed
        session.execute(sa.update(Item).values(image_url="javascript:alert(1)"))
    result = cli("check", edition)
    assert result.exit_code != 0
    assert "«Mostra»: the image URL 'javascript:alert(1)' cannot be used" in result.stdout + result.stderr
