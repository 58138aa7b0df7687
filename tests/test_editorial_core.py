"""Editions, sections, items and approval in the store."""

from datetime import date

import pytest
from sqlalchemy import Engine

from wip_mailer import db, editorial, overview
from wip_mailer.errors import InvalidInputError, NotFoundError, StateError
from wip_mailer.models import EditionStatus, ItemStatus


@pytest.fixture
def slug(edition_2024: str) -> str:
    return edition_2024


def _add(engine: Engine, slug: str, title: str, label: str | None = None, **kwargs: object) -> int:
    with db.session_scope(engine) as session:
        change = editorial.add_item(session, slug, title=title, date_label=label,
                                    body_md=f"Testo di {title}.", **kwargs)  # type: ignore[arg-type]
        assert change.item.id is not None
        return change.item.id


def _titles(engine: Engine, slug: str, **kwargs: object) -> list[str]:
    with db.session_scope(engine) as session:
        return [i.title for i in editorial.list_items(session, slug, **kwargs)]  # type: ignore[arg-type]


def test_new_edition_has_the_usual_sections(engine: Engine, slug: str) -> None:
    with db.session_scope(engine) as session:
        edition = editorial.get_edition(session, slug)
        assert (edition.status, edition.language) == (EditionStatus.DRAFT, "it")
        assert [(s.name, s.position) for s in editorial.sections_of(session, edition)] == [
            ("Top News", 1), ("Approfondimenti", 2), ("Coming Soon", 3)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("2024-01", "Altro"), "There is already an edition with slug '2024-01'."),
        (("2024 01", "Titolo"), "The slug '2024 01' is not valid: use letters, digits, '-', '.' or '_' "
                                "(e.g. 2024-01)."),
        (("2024-03", "  "), "The edition title must not be empty."),
        (("2024-03", "Marzo", date(2024, 3, 31), date(2024, 3, 1)),
         "The period ends (2024-03-01) before it starts (2024-03-31)."),
    ],
)
def test_bad_editions_are_refused(engine: Engine, slug: str, args: tuple, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught, db.session_scope(engine) as session:
        editorial.create_edition(session, *args)
    assert str(caught.value) == message
    with engine.connect() as connection:
        assert [e["slug"] for e in overview.editions(connection)] == ["2024-01"]


def test_unknown_edition_and_item(engine: Engine) -> None:
    with pytest.raises(NotFoundError, match=r"^There is no edition with slug 'nope'\.$"), \
            db.session_scope(engine) as session:
        editorial.get_edition(session, "nope")
    with pytest.raises(NotFoundError, match=r"^There is no item with id 42\.$"), \
            db.session_scope(engine) as session:
        editorial.approve_items(session, [42], by="ada")


def test_item_dates_come_from_the_label_in_the_edition_year(engine: Engine, slug: str) -> None:
    item_id = _add(engine, slug, "Missione", "29 gennaio - 2 febbraio")
    with db.session_scope(engine) as session:
        item = editorial.get_item(session, item_id)
        assert (item.start_date, item.end_date) == (date(2024, 1, 29), date(2024, 2, 2))
        change = editorial.edit_item(session, item_id, date_label="più avanti")
        assert (change.item.date_label, change.item.start_date) == ("più avanti", None)
        assert change.warnings == ["the date label 'più avanti' could not be read; it is kept without dates."]


def test_items_without_position_go_in_by_start_date(engine: Engine, slug: str) -> None:
    _add(engine, slug, "B", "10 gennaio", position=1)
    _add(engine, slug, "D", "20 gennaio", position=2)
    _add(engine, slug, "A", "5 gennaio")
    _add(engine, slug, "C", "15 gennaio")
    _add(engine, slug, "E", None)  # no date: last
    _add(engine, slug, "F", "Fino al 12 gennaio")  # only an end date: sorted by it
    assert _titles(engine, slug) == ["A", "B", "F", "C", "D", "E"]


def test_move_renumbers_the_section_in_reading_order(engine: Engine, slug: str) -> None:
    ids = [_add(engine, slug, t, f"{d} gennaio") for t, d in (("A", 1), ("B", 2), ("C", 3))]
    with db.session_scope(engine) as session:
        editorial.move_item(session, ids[2], position=1)
    assert _titles(engine, slug) == ["C", "A", "B"]
    with db.session_scope(engine) as session:
        editorial.move_item(session, ids[0], section="Coming Soon")
        editorial.move_item(session, ids[1], section="Eventi")  # a new section goes last
        edition = editorial.get_edition(session, slug)
        sections = [s.name for s in editorial.sections_of(session, edition)]
    assert sections == ["Top News", "Approfondimenti", "Coming Soon", "Eventi"]
    assert _titles(engine, slug) == ["C", "A", "B"]
    with db.session_scope(engine) as session:
        editorial.move_item(session, ids[1], position=1, section="top news")  # names match in any case
    assert _titles(engine, slug) == ["B", "C", "A"]


def test_approve_reject_and_edit_of_an_approved_item(engine: Engine, slug: str) -> None:
    first, second, third = (_add(engine, slug, t, f"{d} febbraio") for t, d in (("A", 1), ("B", 2), ("C", 3)))
    with db.session_scope(engine) as session:
        assert len(editorial.approve_items(session, [first, second], by="ada")) == 2
        assert editorial.approve_items(session, [first], by="bob") == []  # already approved: unchanged
        assert len(editorial.reject_items(session, [third], by="ada")) == 1
        item = editorial.get_item(session, first)
        assert (item.status, item.status_by) == (ItemStatus.APPROVED, "ada")
        assert item.status_at is not None
    assert _titles(engine, slug, statuses=[ItemStatus.APPROVED]) == ["A", "B"]
    with db.session_scope(engine) as session:
        unchanged = editorial.edit_item(session, first, title="A")
        assert unchanged.item.status == ItemStatus.APPROVED and unchanged.warnings == []
        changed = editorial.edit_item(session, first, body_md="Nuovo testo.")
        assert changed.item.status == ItemStatus.DRAFT
        assert changed.warnings == ["it was approved; its content changed, so it is a draft again."]
        assert editorial.approve_all(session, slug, by="ada") == 2  # A again, and the rejected C
    assert _titles(engine, slug, statuses=[ItemStatus.APPROVED]) == ["A", "B", "C"]


def test_edition_status_moves(engine: Engine, slug: str) -> None:
    with db.session_scope(engine) as session:
        edition = editorial.get_edition(session, slug)
        for status in ("ready", "draft", "ready", "scheduled", "sending", "sent"):
            editorial.set_edition_status(session, edition, status)
            assert edition.status == status
        assert edition.sent_at is not None
        with pytest.raises(StateError, match=r"^Edition '2024-01' is sent and cannot become draft\.$"):
            editorial.set_edition_status(session, edition, "draft")
        with pytest.raises(InvalidInputError, match=r"^'gone' is not an edition status"):
            editorial.set_edition_status(session, edition, "gone")


def test_items_of_a_sent_edition_cannot_change(engine: Engine, slug: str) -> None:
    item_id = _add(engine, slug, "A", "1 febbraio")
    with db.session_scope(engine) as session:
        edition = editorial.get_edition(session, slug)
        editorial.set_edition_status(session, edition, "sending")
        editorial.set_edition_status(session, edition, "sent")
    message = r"^Edition '2024-01' is sent: its items can no longer change\.$"
    for action in (
        lambda s: editorial.approve_items(s, [item_id], by="ada"),
        lambda s: editorial.approve_all(s, slug, by="ada"),
        lambda s: editorial.reject_items(s, [item_id], by="ada"),
        lambda s: editorial.edit_item(s, item_id, title="B"),
        lambda s: editorial.move_item(s, item_id, position=1),
        lambda s: editorial.add_item(s, slug, title="Nuovo"),
    ):
        with pytest.raises(StateError, match=message), db.session_scope(engine) as session:
            action(session)
    with db.session_scope(engine) as session:
        item = editorial.get_item(session, item_id)
        assert (item.status, item.title) == (ItemStatus.DRAFT, "A")
        assert len(editorial.list_items(session, slug)) == 1


def test_approving_an_empty_edition_says_so(engine: Engine, slug: str) -> None:
    with pytest.raises(StateError, match=r"^Edition '2024-01' has no items to approve\.$"), \
            db.session_scope(engine) as session:
        editorial.approve_all(session, slug, by="ada")
