"""The email's layout measured in headless Chromium: phone width and desktop width."""

from __future__ import annotations

import pytest

from tests.render_fixtures import small_edition, synthetic_edition
from wip_mailer.assemble import EditionContext
from wip_mailer.browser import Layout, find_chromium, measure_layout
from wip_mailer.render import render_edition
from wip_mailer.settings import Settings

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(
        find_chromium() is None,
        reason="headless Chromium is not installed (Debian package `chromium`); "
        "the layout cannot be measured",
    ),
]


def assert_fits_a_phone(layout: Layout, width: int = 375) -> None:
    assert layout.viewport_width == width
    assert not layout.scrolls_horizontally, (layout.scroll_width, layout.overflowing)
    assert layout.overflowing == ()
    assert layout.text_left >= 0 and layout.text_right <= width
    assert layout.item_lefts and len(set(layout.item_lefts)) == 1  # one column


def assert_single_centred_column(layout: Layout, width: int = 1024, column: int = 600) -> None:
    assert not layout.scrolls_horizontally
    edge = (width - column) / 2
    assert edge - 0.5 <= layout.text_left and layout.text_right <= width - edge + 0.5
    assert len(set(layout.item_lefts)) == 1, "the news items must be stacked in one column"
    for left, item_width in zip(layout.item_lefts, layout.item_widths, strict=True):
        assert item_width <= column
        assert abs(left + item_width / 2 - width / 2) <= 1, "the column must be centred"
    assert layout.text_right - layout.text_left > column * 0.75  # the column is really used


@pytest.mark.parametrize("context", [small_edition(), synthetic_edition()], ids=["small", "30-items"])
def test_no_horizontal_scrolling_on_a_phone(context: EditionContext) -> None:
    html = render_edition(context, Settings()).html
    assert_fits_a_phone(measure_layout(html, 375))


def test_long_unbreakable_text_wraps_on_a_phone() -> None:
    html = render_edition(synthetic_edition(3), Settings()).html
    layout = measure_layout(html, 320)
    assert_fits_a_phone(layout, 320)


def test_single_centred_column_on_a_desktop() -> None:
    html = render_edition(synthetic_edition(), Settings()).html
    layout = measure_layout(html, 1024)
    assert_single_centred_column(layout)
    assert len(layout.item_lefts) == 31


def test_the_probe_notices_a_layout_that_is_too_wide() -> None:
    wide = (
        '<!DOCTYPE html><html><body style="margin:0"><div class="item" style="width:700px">'
        "wide</div><p>x</p></body></html>"
    )
    layout = measure_layout(wide, 375)
    assert layout.scrolls_horizontally and layout.scroll_width >= 700
    assert "div.item" in layout.overflowing
