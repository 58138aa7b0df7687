"""The email as subscribers see it in headless Chromium, light and emulated dark, phone and
desktop: no horizontal scrolling, every visible text at ≥ 4.5:1 contrast (computed from the
rendered styles), the logo at its pixel size, long URLs wrapped at their punctuation."""

from __future__ import annotations

import dataclasses
import http.server
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.render_fixtures import small_edition, synthetic_edition
from wip_mailer.browser import find_chromium, measure_appearance
from wip_mailer.render import render_edition
from wip_mailer.settings import Settings

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(find_chromium() is None,
                       reason="headless Chromium is not installed (Debian package `chromium`)"),
]


def _png(width: int, height: int) -> bytes:
    """A real PNG file of ``width`` × ``height`` pixels (one colour)."""
    row = b"\x00" + b"\x8a\x15\x38" * width
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * height))
            + chunk(b"IEND", b""))


@pytest.fixture
def logo_server(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on loopback serving a 480 × 160 crest (shown at 120 × 40: sharp on 4× screens)."""
    (tmp_path / "crest.png").write_bytes(_png(480, 160))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/crest.png"
    server.shutdown()


@pytest.fixture
def themed(tmp_path: Path, logo_server: str) -> Settings:
    """The built-in theme with a logo set through a custom theme.toml (single keys override)."""
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "theme.toml").write_text(
        f'[logo]\nurl = "{logo_server}"\nalt = "Stemma della Città"\nwidth = 120\nheight = 40\n',
        encoding="utf-8")
    return dataclasses.replace(Settings(), templates_dir=str(folder))


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("width", [375, 1024])
def test_no_overflow_and_every_text_readable(themed: Settings, dark: bool, width: int) -> None:
    html = render_edition(synthetic_edition(), themed).html
    seen = measure_appearance(html, width, dark=dark)
    assert seen.scheme == ("dark" if dark else "light")
    assert not seen.layout.scrolls_horizontally, (seen.layout.scroll_width, seen.layout.overflowing)
    assert seen.layout.overflowing == ()
    for kind in ("body", "link", "date", "heading"):
        lowest = seen.lowest(kind)
        assert lowest.contrast >= 4.5, lowest
    assert all(t.contrast >= 4.5 for t in seen.texts), seen.lowest()
    # Dark means dark: the page really switched (no white column left behind).
    paper = seen.lowest("date").background
    assert (paper == "rgb(28, 31, 36)") if dark else (paper == "rgb(255, 255, 255)")
    footer_links = [t for t in seen.texts if t.kind == "link" and t.in_footer]
    assert len(footer_links) >= 3 and min(t.font_size for t in footer_links) >= 14, footer_links
    [logo] = [image for image in seen.images if image.alt == "Stemma della Città"]
    assert (logo.width, logo.height) == (120, 40)


def test_item_images_have_a_pixel_width_and_shrink_on_a_phone() -> None:
    html = render_edition(small_edition(), Settings()).html
    assert 'class="item-image"' in html and 'width="544"' in html and 'width="100%"' not in html.split(
        'class="item-image"')[1][:300]
    phone = measure_appearance(html, 375, dark=False)
    desktop = measure_appearance(html, 1024, dark=False)
    assert [i.width for i in desktop.images if "item-image" in i.css_class] == [544, 544]
    assert all(i.width <= 375 - 32 for i in phone.images if "item-image" in i.css_class)


_SEGMENTS = r"""<pre id="wip-probe">pending</pre><script>
window.addEventListener("load", function () {
  var doc = document.getElementById("email").contentDocument, broken = [], count = 0;
  doc.querySelectorAll("a").forEach(function (a) {
    if (!a.querySelector("wbr")) return;
    a.childNodes.forEach(function (node) {
      if (node.nodeType !== 3 || !node.textContent) return;
      count++;
      var r = doc.createRange(); r.selectNodeContents(node);
      // Each piece starts with its punctuation (/, -, ?...), after which a browser may break too.
      if (/^[\/?#&=_-]/.test(node.textContent) && node.textContent.length > 1) r.setStart(node, 1);
      var lines = Array.prototype.filter.call(r.getClientRects(), function (x) { return x.width > 0; });
      if (lines.length > 1) broken.push(node.textContent);
    });
  });
  document.getElementById("wip-probe").textContent = JSON.stringify({count: count, broken: broken});
});
</script>"""


def test_long_urls_wrap_at_their_punctuation_not_mid_word() -> None:
    from wip_mailer.browser import _probe

    html = render_edition(synthetic_edition(), Settings()).html
    assert "<wbr>" in html and "<wbr></wbr>" not in html
    result = _probe(html, 375, 900, _SEGMENTS, False)
    assert result["count"] > 100  # the URLs written out in the text, in pieces
    assert result["broken"] == []  # no piece between two break points is split across lines
