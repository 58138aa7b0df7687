"""The reports as static HTML pages (templates/reports/), in the edition's or list's language.

Numbers are formatted with Babel in that language (``1.234`` and ``0,3%`` in Italian);
the page holds its charts inline and needs nothing from elsewhere.
"""

from __future__ import annotations

from typing import Any

from babel.numbers import format_decimal, format_percent
from markupsafe import Markup

from wip_mailer.db import utcnow
from wip_mailer.localtime import format_local
from wip_mailer.reports import charts
from wip_mailer.reports.campaign import OTHER_DOMAINS
from wip_mailer.reports.lists import CHANNELS
from wip_mailer.settings import Settings
from wip_mailer.templating import environment, load_labels, render_template

LABELS_FILE = "reports/labels.toml"
CAMPAIGN_TEMPLATE = "reports/campaign.html.j2"
LISTS_TEMPLATE = "reports/lists.html.j2"


class Numbers:
    """Babel's number formats for one language, for the templates and the charts."""

    def __init__(self, language: str) -> None:
        self.language = language

    def number(self, value: float | None) -> str:
        if value is None:
            return "–"
        return format_decimal(value, format="#,##0.###", locale=self.language)

    def percent(self, value: float) -> str:
        return format_percent(value, format="#,##0.0#%", locale=self.language)


def _base(settings: Settings, language: str) -> tuple[dict[str, str], Numbers, dict[str, Any]]:
    labels, used = load_labels(settings, LABELS_FILE, language)
    numbers = Numbers(used)
    values = {"labels": labels, "lang": used, "num": numbers.number, "pct": numbers.percent,
              "generated": format_local(utcnow(), settings.tz)}
    return labels, numbers, values


def campaign_page(report: dict[str, Any], settings: Settings) -> str:
    labels, numbers, values = _base(settings, report["campaign"]["language"])
    summary, domains, timeline = report["summary"], report["domains"], report["timeline"]
    state_names = ["sent", "deferred_then_sent", "in_doubt", "failed", "deferred", "skipped"]
    pictures: dict[str, Markup] = {
        "summary": charts.bar_chart(labels["summary"], [labels[name] for name in state_names],
                                    [(labels["recipients"], [summary[name] for name in state_names])],
                                    numbers.number, stacked=False, horizontal=True),
    }
    shown = domains[:OTHER_DOMAINS]
    pictures["domains"] = charts.bar_chart(
        labels["domains"], [d["domain"] for d in shown],
        [(labels["sent_first_try"], [d["accepted"] - d["deferred_then_accepted"] for d in shown]),
         (labels["deferred_then_sent"], [d["deferred_then_accepted"] for d in shown]),
         (labels["failed"], [d["failed"] for d in shown]),
         (labels["in_doubt"], [d["in_doubt"] for d in shown])],
        numbers.number, horizontal=True)
    width = timeline["bucket_seconds"]
    points = _filled(timeline)
    if points:
        pauses = {p["offset_seconds"] for p in points if p.get("pause")}
        peak = max((p["sent"] + p["sent_after_retry"] + p["failed"]) / width for p in points) or 1
        pictures["timeline"] = charts.line_chart(
            labels["timeline"], [numbers.number(p["offset_seconds"]) for p in points],
            [(labels["sent_first_try"], [p["sent"] / width for p in points]),
             (labels["sent_after_retry"], [p["sent_after_retry"] / width for p in points]),
             (labels["failed"], [p["failed"] / width for p in points]),
             (labels["pause"], [peak if p["offset_seconds"] in pauses else None for p in points])],
            numbers.number, major_every=max(1, len(points) // 8))
    values.update(report=report, charts=pictures, channels=CHANNELS)
    return render_template(environment(settings), CAMPAIGN_TEMPLATE, values)


def lists_page(report: dict[str, Any], settings: Settings, language: str | None = None) -> str:
    lists = report["lists"]
    labels, numbers, values = _base(settings, language or (lists[0]["language"] if lists else "it"))
    pictures = {}
    for entry in lists:
        sends = [e for e in entry["editions"] if e["campaign_id"] is not None]
        names = [e["edition"] for e in sends]  # slugs: short, and never two alike
        growth = charts.line_chart(
            f"{labels['growth']}: {entry['name']}", names,
            [(labels["subscribers_at_send"], [e["subscribers_at_send"] for e in sends])],
            numbers.number)
        flows = charts.bar_chart(
            f"{labels['joins']} / {labels['leaves']}: {entry['name']}", [labels["before_first"], *names],
            [(labels["joins"], [e["joins"] for e in entry["editions"]]),
             (labels["leaves"], [-e["leaves_total"] for e in entry["editions"]])],
            numbers.number, stacked=False)
        pictures[entry["name"]] = {"growth": growth, "flows": flows}
    values.update(report=report, charts=pictures, channels=CHANNELS)
    return render_template(environment(settings), LISTS_TEMPLATE, values)


def _filled(timeline: dict[str, Any]) -> list[dict[str, Any]]:
    """Every bucket from start to end (empty ones too, marked when inside a pause)."""
    points = timeline["points"]
    if not points:
        return []
    width = timeline["bucket_seconds"]
    by_offset = {p["offset_seconds"]: p for p in points}
    paused = [(p["from_seconds"], p["from_seconds"] + p["seconds"]) for p in timeline["pauses"]]
    filled = []
    for offset in range(0, points[-1]["offset_seconds"] + width, width):
        point = dict(by_offset.get(offset, {"offset_seconds": offset, "sent": 0, "sent_after_retry": 0,
                                            "failed": 0}))
        point["pause"] = any(start <= offset < end for start, end in paused)
        filled.append(point)
    return filled

