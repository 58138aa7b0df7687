"""The real sample edition end to end: import, approve all, assemble, render, check, measure."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.sample_edition import SLUG, import_sample, seed_facts
from wip_mailer import db
from wip_mailer.assemble import EditionContext
from wip_mailer.browser import find_chromium, measure_layout
from wip_mailer.preflight import run_preflight
from wip_mailer.render import UNSUBSCRIBE_URL_PLACEHOLDER, render_edition
from wip_mailer.settings import Settings

KIB = 1024


@pytest.fixture
def sample(engine: Engine, seed_path: Path) -> EditionContext:
    return import_sample(engine, seed_path)


def visible(html: str) -> str:
    """The text a reader sees: tags dropped, entities decoded, spaces collapsed."""
    body = html[html.index("<body"):].replace("<wbr>", "")  # a break opportunity, no space
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", body)))


def test_sample_renders_complete_and_small(
    sample: EditionContext, settings: Settings, seed_path: Path, no_network: list[Any]
) -> None:
    rendered = render_edition(sample, settings)
    assert no_network == []  # premailer and cssutils never reached for the network
    assert rendered.html_bytes <= 70 * KIB, f"{rendered.html_bytes / KIB:.1f} KiB"
    html = rendered.html
    assert html.startswith("<!DOCTYPE html>")
    mobile = re.search(r"@media only screen and \(max-width:\s*479px\)\s*\{(.*?)\}\s*\}", html, re.S)
    assert mobile and "!important" in mobile.group(1)
    seen = visible(html)
    items = [item for section in sample.sections for item in section.items]
    top = max(sample.sections, key=lambda s: len(s.items))
    assert len(top.items) == 29
    for item in items:
        assert re.sub(r"\s+", " ", item.title) in seen, item.title
        if item.date_label:
            assert re.sub(r"\s+", " ", item.date_label) in seen, item.date_label
    facts = seed_facts(seed_path)
    for text in facts.delegations + facts.coming_soon + facts.footer:
        assert text in seen, text
    for label in ("Work in Progress", "Top News", "Approfondimenti", "Coming Soon",
                  "Relazioni Internazionali", "Visualizza nel browser"):
        assert label in seen
    assert f'href="{UNSUBSCRIBE_URL_PLACEHOLDER}"' in html
    assert 'href="#"' not in html  # placeholder links are plain text


def test_sample_text_twin_has_every_title_and_link(
    sample: EditionContext, settings: Settings, seed_path: Path
) -> None:
    text = render_edition(sample, settings).text
    flat = re.sub(r"\s+", " ", text)
    for section in sample.sections:
        for item in section.items:
            assert re.sub(r"\s+", " ", item.title) in flat, item.title
            for link in item.links:
                if link.url and link.url != "#":
                    assert link.url.removeprefix("mailto:") in text, link.url
    for url in seed_facts(seed_path).urls:
        assert url.removeprefix("mailto:") in text, url
    for line in text.splitlines():
        assert len(line) <= 78 or " " not in line.strip(), line


def test_sample_passes_check_with_warnings(
    sample: EditionContext, engine: Engine, settings: Settings
) -> None:
    with db.session_scope(engine) as session:
        report = run_preflight(session, settings, SLUG)
    assert report.ok, report.blocking
    assert report.rendered is not None and report.html_bytes <= 70 * KIB
    assert any("without a target" in warning for warning in report.warnings)
    assert not report.passes(strict=True)


@pytest.mark.chromium
@pytest.mark.skipif(find_chromium() is None, reason="headless Chromium is not installed")
def test_sample_layout_phone_and_desktop(sample: EditionContext, settings: Settings) -> None:
    html = render_edition(sample, settings).html
    phone = measure_layout(html, 375)
    assert not phone.scrolls_horizontally, (phone.scroll_width, phone.overflowing)
    assert phone.text_right <= 375 and len(set(phone.item_lefts)) == 1
    desktop = measure_layout(html, 1024)
    assert not desktop.scrolls_horizontally
    assert desktop.text_left >= 212 - 0.5 and desktop.text_right <= 812 + 0.5
    assert len(set(desktop.item_lefts)) == 1
    for left, width in zip(desktop.item_lefts, desktop.item_widths, strict=True):
        assert width <= 600 and abs(left + width / 2 - 512) <= 1
