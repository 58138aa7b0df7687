"""The reports' charts: pygal SVG, inlined in the page (no script, no font, nothing fetched).

pygal's interactive tooltips need a script from its CDN: it is left out (``js=[]``, and the
inline configuration script is removed), so a chart is a plain picture; every chart also has
a text alternative in the page (a caption and a table of its data), and its SVG carries
``role="img"`` and an ``aria-label``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from markupsafe import Markup, escape

# The archive's colours (templates/archive/index.html.j2): the City's claret first.
COLOURS = ("#8a1538", "#2f6f9f", "#c98a00", "#5b6672", "#3c8d5a", "#b34d7a")


def _style() -> Any:
    from pygal.style import Style

    return Style(background="#ffffff", plot_background="#ffffff", foreground="#1d2733",
                 foreground_strong="#1d2733", foreground_subtle="#5b6672", colors=COLOURS,
                 font_family="Helvetica, Arial, sans-serif", label_font_size=15, major_label_font_size=15,
                 legend_font_size=16, value_font_size=14, title_font_size=18)


def _config(number: Callable[[float], str], **extra: Any) -> dict[str, Any]:
    return {"style": _style(), "js": [], "disable_xml_declaration": True, "explicit_size": False,
            # a small canvas, so that its text stays readable when a phone shrinks it to ~340 px
            "width": 560, "height": 340, "legend_at_bottom": True, "legend_at_bottom_columns": 1,
            "truncate_legend": 40,
            "value_formatter": number, "print_values": False,
            "truncate_label": 18, "margin": 8, **extra}


_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)


def _svg(chart: Any, label: str) -> Markup:
    svg: str = chart.render(is_unicode=True)
    # pygal writes its tooltip configuration as an inline script even without its JS: the
    # page has no script at all (a static page, readable with scripts off); and no comments
    svg = _COMMENT.sub("", _SCRIPT.sub("", svg))
    # the SVG is a picture described by its label; the table beside it holds the numbers
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" focusable="false" ', 1)
    return Markup(svg)


def bar_chart(label: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
              number: Callable[[float], str], *, stacked: bool = True, horizontal: bool = False) -> Markup:
    import pygal

    kind = {(True, True): pygal.HorizontalStackedBar, (True, False): pygal.StackedBar,
            (False, True): pygal.HorizontalBar, (False, False): pygal.Bar}[(stacked, horizontal)]
    # few value ticks, so that Italian thousands ("1.200") never run into each other
    chart = kind(**_config(number, x_label_rotation=0 if horizontal else 30, max_scale=5))
    chart.x_labels = list(categories)
    for name, values in series:
        chart.add(name, list(values))
    return _svg(chart, label)


def line_chart(label: str, x_labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]],
               number: Callable[[float], str], *, fill: bool = False, major_every: int = 1) -> Markup:
    import pygal

    # the last x label is centred on the right edge of the plot: room for its other half
    chart = pygal.Line(**_config(number, fill=fill, dots_size=3, show_dots=len(x_labels) <= 40,
                                 x_labels_major_every=major_every, show_minor_x_labels=major_every == 1,
                                 allow_interruptions=True,
                                 include_x_axis=True, margin_right=56, margin_left=8, truncate_label=14))
    chart.x_labels = list(x_labels)
    for name, values in series:
        chart.add(name, list(values))
    return _svg(chart, label)
