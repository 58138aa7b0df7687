"""Headless Chromium, used to see the email as a subscriber would: screenshots and layout probes.

Chromium's headless window is at least 500 px wide, so a narrower viewport is measured by
loading the email into an iframe of that width; ``--dump-dom`` runs the page's scripts, so a
probe script writes its measurements into the DOM, which we read back.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wip_mailer.errors import WipMailerError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_SECONDS = 60
MAX_SCREENSHOT_HEIGHT = 16000


class BrowserUnavailable(WipMailerError):
    """Headless Chromium is not installed or did not run."""


def find_chromium() -> str | None:
    """The path of a Chromium-compatible browser on PATH, or None."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _require_chromium() -> str:
    found = find_chromium()
    if found is None:
        raise BrowserUnavailable(
            "Headless Chromium is not installed (looked for "
            f"{', '.join(CANDIDATES)} on PATH); on Debian run `apt-get install chromium`."
        )
    return found


def _scheme(dark: bool) -> str:
    # Emulates the reader's setting (prefers-color-scheme), as Apple Mail and others pass it
    # on; it is not Chromium's automatic darkening of pages (which would hide our colours).
    return f"--blink-settings=preferredColorScheme={0 if dark else 1}"


def _run(args: list[str]) -> str:
    binary = _require_chromium()
    with tempfile.TemporaryDirectory(prefix="wip-chromium-") as profile:
        command = [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={profile}", *args,
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            raise BrowserUnavailable(
                f"Headless Chromium did not finish within {TIMEOUT_SECONDS} seconds."
            ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BrowserUnavailable(f"Headless Chromium failed (exit {done.returncode}): {last}")
    return done.stdout


@dataclass(frozen=True)
class Layout:
    """What the email looks like in a viewport of ``viewport_width`` CSS pixels."""

    viewport_width: float
    scroll_width: float  # wider than the viewport means horizontal scrolling
    height: float
    text_left: float  # the union of every visible line of text
    text_right: float
    item_lefts: tuple[float, ...]  # left edges of the news items (one value: one column)
    item_widths: tuple[float, ...]
    overflowing: tuple[str, ...]  # elements sticking out past the right edge

    @property
    def scrolls_horizontally(self) -> bool:
        return self.scroll_width > self.viewport_width + 0.5


_FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"></head>
<body style="margin:0"><iframe id="email" style="display:block;border:0;width:%(width)dpx;height:%(height)dpx"
srcdoc="%(srcdoc)s"></iframe>%(script)s</body></html>
"""

_PROBE_SCRIPT = """<pre id="wip-probe">pending</pre>
<script>
window.addEventListener("load", function () {
  var doc = document.getElementById("email").contentDocument;
  var root = doc.documentElement;
  var left = Infinity, right = -Infinity, overflowing = [];
  var walker = doc.createTreeWalker(doc.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    var node = walker.currentNode;
    if (!node.textContent.trim()) continue;
    var range = doc.createRange(); range.selectNodeContents(node);
    var rects = range.getClientRects();
    for (var i = 0; i < rects.length; i++) {
      if (rects[i].width < 1 || rects[i].height < 1) continue;
      left = Math.min(left, rects[i].left); right = Math.max(right, rects[i].right);
    }
  }
  var all = doc.body.getElementsByTagName("*");
  for (var j = 0; j < all.length; j++) {
    var r = all[j].getBoundingClientRect();
    if (r.width > 0 && r.height > 0 && r.right > root.clientWidth + 0.5 && overflowing.length < 10)
      overflowing.push(all[j].tagName.toLowerCase() + "." + (all[j].className || ""));
  }
  var items = doc.querySelectorAll(".item");
  var lefts = [], widths = [];
  for (var k = 0; k < items.length; k++) {
    var b = items[k].getBoundingClientRect();
    lefts.push(Math.round(b.left * 10) / 10); widths.push(Math.round(b.width * 10) / 10);
  }
  document.getElementById("wip-probe").textContent = JSON.stringify({
    viewport_width: root.clientWidth,
    scroll_width: Math.max(root.scrollWidth, doc.body.scrollWidth),
    height: Math.max(root.scrollHeight, doc.body.scrollHeight),
    text_left: left, text_right: right, item_lefts: lefts, item_widths: widths,
    overflowing: overflowing
  });
});
</script>"""


def _framed(email_html: str, width: int, height: int, script: str = "") -> str:
    """A page showing the email in an iframe of exactly ``width`` × ``height`` CSS pixels."""
    return _FRAME % {
        "width": width, "height": height, "script": script,
        "srcdoc": html_lib.escape(email_html, quote=True),
    }


_RESULT = re.compile(r'<pre id="wip-probe">(.*?)</pre>', re.S)


def _probe(email_html: str, width: int, height: int, script: str, dark: bool) -> Any:
    probe = _framed(email_html, width, height, script)
    with tempfile.TemporaryDirectory(prefix="wip-probe-") as folder:
        page = Path(folder) / "probe.html"
        page.write_text(probe, encoding="utf-8")
        window = f"--window-size={max(width, 500) + 20},{height + 100}"
        dom = _run([window, _scheme(dark), "--virtual-time-budget=5000", "--dump-dom", page.as_uri()])
    found = _RESULT.search(dom)
    if not found or found.group(1).strip() == "pending":
        raise BrowserUnavailable("Headless Chromium ran but the layout probe wrote no result.")
    return json.loads(html_lib.unescape(found.group(1)))


def measure_layout(email_html: str, width: int, height: int = 900, *, dark: bool = False) -> Layout:
    """Load ``email_html`` in an iframe ``width`` px wide (light or dark scheme) and measure it."""
    data = _probe(email_html, width, height, _PROBE_SCRIPT, dark)
    return Layout(
        viewport_width=float(data["viewport_width"]),
        scroll_width=float(data["scroll_width"]),
        height=float(data["height"]),
        text_left=float(data["text_left"]),
        text_right=float(data["text_right"]),
        item_lefts=tuple(float(v) for v in data["item_lefts"]),
        item_widths=tuple(float(v) for v in data["item_widths"]),
        overflowing=tuple(data["overflowing"]),
    )


def screenshot(email_html: str, out: Path, width: int = 375) -> Path:
    """A full-length PNG of the email at ``width`` CSS pixels.

    The window may be wider than asked (headless minimum), but the screenshot is cut to
    ``width`` and the email sits in an iframe of exactly that width at the left edge.
    """
    height = min(int(measure_layout(email_html, width).height) + 1, MAX_SCREENSHOT_HEIGHT)
    with tempfile.TemporaryDirectory(prefix="wip-shot-") as folder:
        page = Path(folder) / "email.html"
        page.write_text(_framed(email_html, width, height), encoding="utf-8")
        target = out.resolve()
        _run([f"--window-size={width},{height}", f"--screenshot={target}", page.as_uri()])
    if not target.exists():
        raise BrowserUnavailable(f"Headless Chromium did not write the screenshot {out}.")
    return target


@dataclass(frozen=True)
class TextColour:
    """One run of visible text: its kind, colours as rendered, and their contrast ratio."""

    kind: str  # "link", "date", "heading" or "body"
    text: str  # the first characters, to name it in a failure
    colour: str  # rgb(...) as computed
    background: str  # the nearest opaque background behind it
    contrast: float  # WCAG 2 contrast ratio, 1 to 21
    font_size: float = 0.0  # CSS pixels, as computed
    in_footer: bool = False  # inside the element of class "footer"


@dataclass(frozen=True)
class ImageBox:
    css_class: str
    alt: str
    width: float  # as laid out, CSS pixels
    height: float


@dataclass(frozen=True)
class Appearance:
    scheme: str  # "light" or "dark": what the page saw (prefers-color-scheme)
    layout: Layout
    texts: tuple[TextColour, ...]
    images: tuple[ImageBox, ...]

    def lowest(self, kind: str | None = None) -> TextColour:
        runs = [t for t in self.texts if kind is None or t.kind == kind]
        if not runs:
            raise ValueError(f"no visible text of kind {kind!r}")
        return min(runs, key=lambda t: t.contrast)


_RESULT_LINE = """  document.getElementById("wip-probe").textContent = JSON.stringify({"""
_COLOUR_SCRIPT = _PROBE_SCRIPT.replace(_RESULT_LINE, """
  function parse(c) { var m = c.match(/[\\d.]+/g) || ["0", "0", "0", "0"];
    return m.map(Number).concat(m.length < 4 ? [1] : []); }
  function channel(v) {
    v = v / 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }
  function lum(c) { return 0.2126 * channel(c[0]) + 0.7152 * channel(c[1]) + 0.0722 * channel(c[2]); }
  function behind(el) {
    for (; el; el = el.parentElement) {
      var c = parse(getComputedStyle(el).backgroundColor);
      if (c[3] > 0.99) return c;
    }
    var dark = doc.defaultView.matchMedia("(prefers-color-scheme: dark)").matches;
    return dark ? [18, 18, 18, 1] : [255, 255, 255, 1];
  }
  var texts = [], tw = doc.createTreeWalker(doc.body, NodeFilter.SHOW_TEXT);
  while (tw.nextNode()) {
    var t = tw.currentNode, el = t.parentElement;
    if (!t.textContent.trim() || !el) continue;
    var rg = doc.createRange(); rg.selectNodeContents(t);
    var shown = Array.prototype.some.call(rg.getClientRects(),
                                          function (r) { return r.width >= 1 && r.height >= 1; });
    if (!shown) continue;
    var fg = parse(getComputedStyle(el).color), bg = behind(el);
    var a = lum(fg), b = lum(bg);
    var kind = el.closest("a") ? "link" : el.closest(".item-date") ? "date"
             : el.closest("h1,h2,h3") ? "heading" : "body";
    texts.push({kind: kind, text: t.textContent.trim().slice(0, 40), colour: getComputedStyle(el).color,
                background: "rgb(" + bg.slice(0, 3).join(", ") + ")",
                contrast: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05),
                font_size: parseFloat(getComputedStyle(el).fontSize), in_footer: !!el.closest(".footer")});
  }
  var images = Array.prototype.map.call(doc.images, function (im) {
    var r = im.getBoundingClientRect();
    return {css_class: im.className || "", alt: im.alt || "", width: r.width, height: r.height}; });
  document.getElementById("wip-probe").textContent = JSON.stringify({
    scheme: doc.defaultView.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light",
    texts: texts, images: images,""")


def measure_appearance(email_html: str, width: int, *, dark: bool, height: int = 900) -> Appearance:
    """The layout plus the colour and contrast of every visible run of text and the laid-out
    size of every image, in a ``width`` px iframe with the light or dark scheme emulated."""
    data = _probe(email_html, width, height, _COLOUR_SCRIPT, dark)
    layout = Layout(
        viewport_width=float(data["viewport_width"]), scroll_width=float(data["scroll_width"]),
        height=float(data["height"]), text_left=float(data["text_left"]),
        text_right=float(data["text_right"]),
        item_lefts=tuple(float(v) for v in data["item_lefts"]),
        item_widths=tuple(float(v) for v in data["item_widths"]),
        overflowing=tuple(data["overflowing"]),
    )
    return Appearance(
        scheme=str(data["scheme"]), layout=layout,
        texts=tuple(TextColour(str(t["kind"]), str(t["text"]), str(t["colour"]), str(t["background"]),
                               float(t["contrast"]), float(t["font_size"]), bool(t["in_footer"]))
                    for t in data["texts"]),
        images=tuple(ImageBox(str(i["css_class"]), str(i["alt"]), float(i["width"]), float(i["height"]))
                     for i in data["images"]),
    )
