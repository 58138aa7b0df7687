"""Date labels as editors write them ("9-11 gennaio", "Fino al 5 maggio") → start/end dates.

The label itself is kept verbatim on the item; the dates are derived from it so the
assembler can order items without a position. Labels usually carry no year: it is
inferred from the edition's period (a "Dicembre-Gennaio" edition puts "15 gennaio" in
the next year). A label that cannot be read returns ``None``; the caller keeps it and warns.
"""

from __future__ import annotations

import calendar
import itertools
import re
import unicodedata
from dataclasses import dataclass
from datetime import date

MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    [
        ("gennaio", "gen", "january", "jan"),
        ("febbraio", "feb", "february"),
        ("marzo", "mar", "march"),
        ("aprile", "apr", "april"),
        ("maggio", "mag", "may"),
        ("giugno", "giu", "june", "jun"),
        ("luglio", "lug", "july", "jul"),
        ("agosto", "ago", "august", "aug"),
        ("settembre", "set", "sett", "september", "sep", "sept"),
        ("ottobre", "ott", "october", "oct"),
        ("novembre", "nov", "november"),
        ("dicembre", "dic", "december", "dec"),
    ],
    start=1,
):
    for _name in _names:
        MONTHS[_name] = _number

# Words that carry no date information: weekdays, articles, "of".
_IGNORED = {
    "lunedi", "martedi", "mercoledi", "giovedi", "venerdi", "sabato", "domenica",
    "lun", "mer", "gio", "ven", "sab", "dom",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "il", "lo", "l", "la", "i", "del", "di", "the", "of", "on",
}
_SEASONS = {"primavera", "estate", "autunno", "inverno", "spring", "summer", "autumn", "fall", "winter"}
_RANGE_WORDS = {"-", "/", "al", "all", "alla", "allo", "a", "to", "until", "till", "through", "thru"}
_LIST_WORDS = {",", "e", "ed", "and", "&"}

# Prefixes that leave one end of the span open.
_UNTIL = re.compile(r"^(?:(?:fino|sino)\s+(?:alla|allo|all|al|ad|a)|entro\s+(?:il|l)|until|till|through"
                    r"|up\s+to|by)(?:\s+|$)")
_FROM = re.compile(r"^(?:a\s+partire\s+(?:dalla|dall|dal|da)|a\s+decorrere\s+(?:dall|dal)|dalla|dall|dal|da"
                   r"|from|starting(?:\s+from|\s+on)?|as\s+of|since)(?:\s+|$)")
_CLOSING = re.compile(r"\b(?:al|all|alla|allo|a|to|until|till|and)\b")
_TOKEN = re.compile(r"\d+|[^\W\d_]+\.?|[-/,&]")


@dataclass(frozen=True)
class DateSpan:
    """What a label says: ``start`` or ``end`` is None for open spans ("Fino al 5 maggio")."""

    start: date | None
    end: date | None


@dataclass
class _Point:
    day: int | None = None
    month: int | None = None
    year: int | None = None


# "29/03/2025", "29.3", "1/4/25": day first, as the office writes. Not before a month name:
# there "5/6 marzo" is two days.
_NUMERIC_DATE = re.compile(r"\b(\d{1,2})[./](\d{1,2})(?:[./](\d{4}|\d{2}))?\b(?!\s*(?:"
                          + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\b)")
_MONTH_NAMES = ["gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto",
                "settembre", "ottobre", "novembre", "dicembre"]


def _numeric_to_words(match: re.Match[str]) -> str:
    day, month, year = match[1], int(match[2]), match[3]
    if not 1 <= month <= 12:
        return match[0]
    year_words = f" {2000 + int(year) if len(year) == 2 else year}" if year else ""
    return f"{int(day)} {_MONTH_NAMES[month - 1]}{year_words}"


def _normalise(label: str) -> str:
    text = unicodedata.normalize("NFKD", label)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.lower().replace("*", " ").replace("_", " ")
    text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)  # dashes of every width
    text = re.sub(r"['’`]", " ", text)  # dall'8 → dall 8
    text = re.sub(r"(\d)\s*(?:°|º|ª|st|nd|rd|th)\b", r"\1", text)  # 1°, 1st
    text = re.sub(r"(?<=\d)\s*°", "", text)
    text = _NUMERIC_DATE.sub(_numeric_to_words, text)
    text = re.sub(r"^\((.*)\)$", r"\1", text.strip())  # "(maggio)", as a date after a title
    text = re.sub(r"[.:;!]+\s*$", "", text.strip())
    return re.sub(r"\s+", " ", text).strip()


def _tokens(text: str) -> list[str] | None:
    tokens = _TOKEN.findall(text)
    leftover = _TOKEN.sub("", text).strip()
    if leftover:
        return None
    return [t.rstrip(".") if t.rstrip(".") in MONTHS else t for t in tokens]


def _points(tokens: list[str]) -> list[_Point] | None:
    """Split tokens into dates at range/list words; a segment holds day, month, year."""
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token in _RANGE_WORDS or token in _LIST_WORDS:
            if segments[-1]:
                segments.append([])
        elif token in _IGNORED:
            continue
        else:
            segments[-1].append(token)
    points: list[_Point] = []
    for segment in segments:
        if not segment:
            continue
        months = [MONTHS[t] for t in segment if t in MONTHS]
        numbers = [int(t) for t in segment if t.isdigit()]
        unknown = [t for t in segment if t not in MONTHS and not t.isdigit()]
        if unknown:
            return None
        days = [n for n in numbers if 1 <= n <= 31 and len(str(n)) <= 2]
        years = [n for n in numbers if 1900 <= n <= 2200]
        if len(days) + len(years) != len(numbers) or len(years) > 1:
            return None
        if len(months) > 1 and not days:  # "gennaio febbraio": two month-only dates
            points.extend(_Point(month=m) for m in months)
            if years:
                points[-1].year = years[0]
            continue
        if len(days) > 1 or len(months) > 1:
            return None
        points.append(_Point(days[0] if days else None, months[0] if months else None,
                             years[0] if years else None))
    return points or None


def _fill_months(points: list[_Point]) -> bool:
    # Italian puts the month after the days ("9-11 gennaio"), English often before
    # ("January 9-11"): a day without a month borrows the next month, else the previous.
    for i, point in enumerate(points):
        if point.month is None:
            later = next((p.month for p in points[i + 1:] if p.month), None)
            earlier = next((p.month for p in reversed(points[:i]) if p.month), None)
            point.month = later or earlier
            if point.month is None:
                return False
    return True


def _span_of(point: _Point, year: int) -> tuple[date, date] | None:
    assert point.month is not None
    last = calendar.monthrange(year, point.month)[1]
    if point.day is None:
        return date(year, point.month, 1), date(year, point.month, last)
    if point.day > last:
        return None
    day = date(year, point.month, point.day)
    return day, day


def _resolve(points: list[_Point], first_year: int) -> tuple[date, date] | None:
    """Dates for the points, rolling the year forward when the label crosses New Year."""
    explicit = next((p.year for p in points if p.year), None)
    year = first_year
    if explicit is not None:
        # A year written once ("29 gennaio - 2 febbraio 2024") applies to the span's end.
        year = explicit
        if points[0].year is None and points[-1].year == explicit and len(points) > 1:
            months = [p.month for p in points]
            if any(a and b and b < a for a, b in itertools.pairwise(months)):
                year = explicit - 1
    spans: list[tuple[date, date]] = []
    for point in points:
        if point.year is not None:
            year = point.year
        span = _span_of(point, year)
        if span is None:
            return None
        if spans and span[0] < spans[-1][0] and point.year is None:
            span = _span_of(point, year + 1)
            if span is None:
                return None
            year += 1
        spans.append(span)
    start = min(s[0] for s in spans)
    end = max(s[1] for s in spans)
    return start, end


def _distance(span: tuple[date, date], period: tuple[date, date]) -> int:
    if span[1] < period[0]:
        return (period[0] - span[1]).days
    if span[0] > period[1]:
        return (span[0] - period[1]).days
    return 0


def parse_date_label(
    label: str | None,
    *,
    year: int | None = None,
    period: tuple[date, date] | None = None,
) -> DateSpan | None:
    """Read an Italian or English date label; ``None`` when it cannot be read.

    ``period`` (the edition's start and end) picks the year for labels without one: the
    year that puts the dates nearest the period. Without a period, ``year`` is used.
    """
    if not label or not label.strip():
        return None
    text = _normalise(label)
    open_end: str | None = None
    if match := _UNTIL.match(text):
        open_end, text = "until", text[match.end():]
    elif (match := _FROM.match(text)) and not _CLOSING.search(text[match.end():]):
        open_end, text = "from", text[match.end():]
    elif match:  # "dal 3 al 5 marzo", "from 3 to 5 March": a closed range
        text = text[match.end():]
    tokens = _tokens(text)
    if not tokens:
        return None
    points = _points(tokens)
    if points is None or not _fill_months(points):
        return None
    if open_end and len(points) != 1:
        return None

    if any(p.year for p in points):
        resolved = _resolve(points, points[0].year or 0)
    else:
        candidates = []
        base = period[0].year if period else year if year is not None else date.today().year
        for first_year in (base - 1, base, base + 1):
            span = _resolve(points, first_year)
            if span is not None:
                candidates.append(span)
        if not candidates:
            return None
        if period is None:
            resolved = next((s for s in candidates if s[0].year == base), candidates[0])
        else:
            resolved = min(candidates, key=lambda s: (_distance(s, period), abs(s[0].year - base)))
    if resolved is None:
        return None
    start, end = resolved
    if open_end == "until":
        return DateSpan(None, end)
    if open_end == "from":
        return DateSpan(start, None)
    return DateSpan(start, end)


def looks_like_date_label(text: str) -> bool:
    """Whether a short line reads as a date label, even one ``parse_date_label`` cannot read."""
    if parse_date_label(text, year=2000) is not None:
        return True
    normal = _normalise(text)
    if len(normal) > 60 or normal.endswith("."):
        return False
    words = set(re.findall(r"[^\W\d_]+", normal))
    return bool(words & (set(MONTHS) - {"mar", "set", "dec", "may"} | _SEASONS)) or bool(
        re.match(r"^(?:fino|a partire|dal|entro|until|from|data|date|tbc|tbd|da definire)\b", normal)
    )
