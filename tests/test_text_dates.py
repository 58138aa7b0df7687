"""Date labels as editors write them → start/end dates."""

from datetime import date

import pytest

from wip_mailer.text.dates import DateSpan, looks_like_date_label, parse_date_label

JAN_FEB_2024 = (date(2024, 1, 1), date(2024, 2, 29))
DEC_JAN = (date(2024, 12, 1), date(2025, 1, 31))


@pytest.mark.parametrize(
    ("label", "start", "end"),
    [
        # every shape found in the Gennaio-Febbraio 2024 sample
        ("9-11 gennaio", date(2024, 1, 9), date(2024, 1, 11)),
        ("17 gennaio", date(2024, 1, 17), date(2024, 1, 17)),
        ("29 febbraio", date(2024, 2, 29), date(2024, 2, 29)),  # leap day: the edition's year
        ("29 gennaio - 2 febbraio", date(2024, 1, 29), date(2024, 2, 2)),
        ("16 gennaio - 17 marzo", date(2024, 1, 16), date(2024, 3, 17)),
        ("Fino al 5 maggio", None, date(2024, 5, 5)),
        ("A partire dal 7 febbraio", date(2024, 2, 7), None),
        ("gennaio febbraio", date(2024, 1, 1), date(2024, 2, 29)),
        ("5 e 24 gennaio", date(2024, 1, 5), date(2024, 1, 24)),
        ("marzo", date(2024, 3, 1), date(2024, 3, 31)),  # the Coming Soon entry
        # other ways of writing them
        ("**10-11 febbraio**", date(2024, 2, 10), date(2024, 2, 11)),
        ("dal 3 al 5 marzo", date(2024, 3, 3), date(2024, 3, 5)),
        ("dall'8 al 10 gennaio", date(2024, 1, 8), date(2024, 1, 10)),
        ("Dal 28 febbraio al 2 marzo", date(2024, 2, 28), date(2024, 3, 2)),
        ("sabato 10 e domenica 11 febbraio", date(2024, 2, 10), date(2024, 2, 11)),
        ("1° febbraio", date(2024, 2, 1), date(2024, 2, 1)),
        ("5, 12 e 19 febbraio", date(2024, 2, 5), date(2024, 2, 19)),
        ("9 – 11 gennaio", date(2024, 1, 9), date(2024, 1, 11)),
        ("Gennaio-Febbraio", date(2024, 1, 1), date(2024, 2, 29)),
        ("gennaio e febbraio", date(2024, 1, 1), date(2024, 2, 29)),
        ("entro il 15 gennaio", None, date(2024, 1, 15)),
        ("fino a marzo", None, date(2024, 3, 31)),
        # a year in the label wins over the edition's
        ("24 gennaio 2025", date(2025, 1, 24), date(2025, 1, 24)),
        ("29 gennaio - 2 febbraio 2023", date(2023, 1, 29), date(2023, 2, 2)),
        ("1° dicembre 2023", date(2023, 12, 1), date(2023, 12, 1)),
        ("marzo 2024", date(2024, 3, 1), date(2024, 3, 31)),
        # English editions
        ("January 9-11", date(2024, 1, 9), date(2024, 1, 11)),
        ("9-11 January", date(2024, 1, 9), date(2024, 1, 11)),
        ("January 29 - February 2", date(2024, 1, 29), date(2024, 2, 2)),
        ("Until 5 May", None, date(2024, 5, 5)),
        ("From February 7", date(2024, 2, 7), None),
        ("from 3 to 5 March", date(2024, 3, 3), date(2024, 3, 5)),
        ("Feb 1st", date(2024, 2, 1), date(2024, 2, 1)),
    ],
)
def test_labels_of_a_january_february_edition(label: str, start: date | None, end: date | None) -> None:
    assert parse_date_label(label, period=JAN_FEB_2024) == DateSpan(start, end)


@pytest.mark.parametrize(
    ("label", "start", "end"),
    [
        ("15 gennaio", date(2025, 1, 15), date(2025, 1, 15)),  # January of a Dec-Jan edition: next year
        ("20 dicembre", date(2024, 12, 20), date(2024, 12, 20)),
        ("28 dicembre - 3 gennaio", date(2024, 12, 28), date(2025, 1, 3)),
        ("30 dicembre - 2 gennaio", date(2024, 12, 30), date(2025, 1, 2)),
        ("dicembre gennaio", date(2024, 12, 1), date(2025, 1, 31)),
        ("Fino al 10 gennaio", None, date(2025, 1, 10)),
        ("Dicembre-Gennaio 2025", date(2024, 12, 1), date(2025, 1, 31)),  # year written once, at the end
        ("novembre", date(2024, 11, 1), date(2024, 11, 30)),
    ],
)
def test_labels_of_an_edition_across_new_year(label: str, start: date | None, end: date | None) -> None:
    assert parse_date_label(label, period=DEC_JAN) == DateSpan(start, end)


def test_without_a_period_the_given_year_is_used() -> None:
    assert parse_date_label("9-11 gennaio", year=2031) == DateSpan(date(2031, 1, 9), date(2031, 1, 11))
    assert parse_date_label("28 dicembre - 3 gennaio", year=2031) == DateSpan(
        date(2031, 12, 28), date(2032, 1, 3)
    )


@pytest.mark.parametrize(
    "label",
    ["", "   ", "data da definire", "30 febbraio", "31 aprile", "Primavera 2024", "9-11", "prossimamente",
     "32 gennaio", "gennaio 9 10 11 febbraio", "Fino al 5 e 6 maggio", "Conferenza finale a Bruxelles"],
)
def test_unreadable_labels_give_none(label: str) -> None:
    assert parse_date_label(label, period=JAN_FEB_2024) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("9-11 gennaio", True), ("Fino al 5 maggio", True), ("Primavera 2024", True), ("data da definire", True),
     ("Missione a Praia", False), ("Black History Month", False), ("Capodanno cinese sotto la Mole", False),
     ("Il progetto prosegue nel 2024 con nuove attività e incontri in gennaio e febbraio.", False)],
)
def test_looks_like_date_label(text: str, expected: bool) -> None:
    assert looks_like_date_label(text) is expected
