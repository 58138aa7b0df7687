"""Segments and recipient selection, on SQLite and (when reachable) PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from wip_mailer import db
from wip_mailer.audience import (
    InvalidSegmentError,
    count_recipients,
    parse_segment,
    select_recipients,
    suppress,
    unsubscribe,
)
from wip_mailer.audience.consent import Actor, join_list
from wip_mailer.audience.lists import create_list
from wip_mailer.errors import InvalidInputError
from wip_mailer.models import MailingList, Subscriber

PEOPLE = [
    # email, language, country, organisation, tags, attributes, lists
    ("it-press@example.org", "it", "IT", "Quotidiano", ["press"], {"sector": "media"}, ["stampa"]),
    ("en-press@example.net", "en", "GB", "Weekly", ["press", "eu"], {}, ["stampa", "partner"]),
    ("fr@example.net", "fr", "FR", "Ville de Lyon", ["partner"], {"sector": "culture"}, ["partner"]),
    ("de@example.org", "de", "DE", "Stadt", [], {}, ["partner"]),
    ("en-city@example.org", "en", "US", "City of Example", ["old"], {}, ["partner"]),
]


def _populate(engine: Engine) -> None:
    with db.session_scope(engine) as session:
        made = {name: create_list(session, name, double_opt_in=False) for name in ("stampa", "partner")}
        for email, language, country, organisation, tags, attributes, names in PEOPLE:
            subscriber = Subscriber(email=email, language=language, country=country,
                                    organisation=organisation, tags=tags, attributes=attributes)
            session.add(subscriber)
            session.flush()
            for name in names:
                join_list(session, subscriber, made[name], confirmed=True, actor=Actor("test"))


def _select(engine: Engine, lists: list[str], segment: str | None = None) -> list[str]:
    """The selected addresses, after checking that the aggregate count agrees with them."""
    with db.session_scope(engine) as session:
        chosen = sorted(r.email for r in select_recipients(session, lists, segment))
        assert count_recipients(session, lists, segment) == len(chosen), segment
        return chosen


CASES = [
    ("language=en", ["en-city@example.org", "en-press@example.net"]),
    ("LANGUAGE = EN", ["en-city@example.org", "en-press@example.net"]),
    ("language!=en", ["de@example.org", "fr@example.net", "it-press@example.org"]),
    ("tag=press", ["en-press@example.net", "it-press@example.org"]),
    ("tag!=press", ["de@example.org", "en-city@example.org", "fr@example.net"]),
    ("country in (FR, de)", ["de@example.org", "fr@example.net"]),
    ("country not in (FR,DE,IT)", ["en-city@example.org", "en-press@example.net"]),
    ("tag in (eu, partner)", ["en-press@example.net", "fr@example.net"]),
    ("language=en and tag=press", ["en-press@example.net"]),
    ("tag=press or country=FR", ["en-press@example.net", "fr@example.net", "it-press@example.org"]),
    ("(language=en or language=fr) and not tag=old", ["en-press@example.net", "fr@example.net"]),
    ('organisation="ville de lyon"', ["fr@example.net"]),
    ("domain=example.net", ["en-press@example.net", "fr@example.net"]),
    ("attr.sector=culture", ["fr@example.net"]),
    ("attr.sector!=culture", ["de@example.org", "en-city@example.org", "en-press@example.net",
                              "it-press@example.org"]),
    ("domain='%'", []),  # LIKE wildcards are escaped
]


def _check_cases(engine: Engine) -> None:
    _populate(engine)
    everyone = sorted(p[0] for p in PEOPLE)
    assert _select(engine, ["stampa", "partner"]) == everyone
    for segment, expected in CASES:
        assert _select(engine, ["stampa", "partner"], segment) == expected, segment


def test_segments_on_sqlite(engine) -> None:
    _check_cases(engine)


@pytest.mark.postgres
def test_segments_on_postgresql(pg_engine) -> None:
    _check_cases(pg_engine)


def _check_exclusions(engine: Engine) -> None:
    _populate(engine)
    with db.session_scope(engine) as session:
        ids = dict(session.execute(sa.select(MailingList.name, MailingList.id)).all())
        partner_id, stampa_id = ids["partner"], ids["stampa"]
        recipients = list(select_recipients(session, ["stampa", "partner"]))
    assert len(recipients) == len({r.email for r in recipients}) == 5
    both = next(r for r in recipients if r.email == "en-press@example.net")
    assert both.list_id == min(partner_id, stampa_id)  # the same list for one address every time
    assert [r.subscriber_id for r in recipients] == sorted(r.subscriber_id for r in recipients)

    with db.session_scope(engine) as session:
        fr = session.execute(sa.select(Subscriber.id).where(Subscriber.email == "fr@example.net")
                             ).scalar_one()
        assert unsubscribe(session, fr, partner_id, source="test") is True
        assert unsubscribe(session, fr, partner_id, source="test") is False  # harmless repeat
        suppress(session, "de@example.org", "manual")  # suppressed but status left active
        suppress(session, "it-press@example.org", "bounced")
    assert _select(engine, ["stampa", "partner"]) == ["en-city@example.org", "en-press@example.net"]
    # Leaving one list keeps the other.
    with db.session_scope(engine) as session:
        en = session.execute(sa.select(Subscriber.id).where(Subscriber.email == "en-press@example.net")
                             ).scalar_one()
        unsubscribe(session, en, stampa_id, source="test")
    assert _select(engine, ["stampa"]) == []
    assert _select(engine, ["partner"]) == ["en-city@example.org", "en-press@example.net"]
    # The database hashes the address as email_hash does: a non-ASCII one, suppressed as typed
    # (mixed case, spaces), is left out too.
    with db.session_scope(engine) as session:
        zoe = Subscriber(email="zoë.ñúñez@exämple.org")
        session.add(zoe)
        session.flush()
        join_list(session, zoe, session.get(MailingList, partner_id), confirmed=True, actor=Actor("test"))
    assert "zoë.ñúñez@exämple.org" in _select(engine, ["partner"])
    with db.session_scope(engine) as session:
        suppress(session, " Zoë.Ñúñez@Exämple.org ", "manual")
    assert _select(engine, ["partner"]) == ["en-city@example.org", "en-press@example.net"]


def test_one_copy_per_address_and_exclusions(engine) -> None:
    _check_exclusions(engine)


@pytest.mark.postgres
def test_one_copy_per_address_and_exclusions_on_postgresql(pg_engine) -> None:
    _check_exclusions(pg_engine)


@pytest.mark.parametrize(("segment", "message"), [
    ("", "The segment '' is empty."),
    ("colour=red", "The segment 'colour=red' uses the unknown field 'colour'; known fields are language, "
                   "country, organisation, name, email, domain, tag, attr.NAME."),
    ("language", "The segment 'language' has the end after 'language' where =, != or in was expected."),
    ("language=", "The segment 'language=' has the end where a value for 'language' was expected."),
    ("country in (FR, DE", "The segment 'country in (FR, DE' ends too early: ')' expected after the "
                           "values of 'country in'."),
    ("(language=en", "The segment '(language=en' ends too early: ')' expected after a parenthesised "
                     "condition."),
    ("language=en tag=press", "The segment 'language=en tag=press' has an unexpected 'tag' at character 13."),
    ("language=en and", "The segment 'language=en and' ends too early."),
    ("language=\"en", "The segment 'language=\"en' has an unexpected '\"' at character 10."),
    ("language ! en", "The segment 'language ! en' has an unexpected '!' at character 10."),
])
def test_malformed_segment_names_the_problem(segment: str, message: str) -> None:
    with pytest.raises(InvalidSegmentError) as caught:
        parse_segment(segment)
    assert str(caught.value) == message
    assert isinstance(caught.value, InvalidInputError)


def test_malformed_segment_in_cli_is_one_line(cli, engine) -> None:
    _populate(engine)
    result = cli("subscribers", "list", "--segment", "language==en")
    assert result.exit_code == 1
    assert result.stderr == ("Error: The segment 'language==en' has '=' where a value for 'language' "
                             "was expected.\n")
    result = cli("subscribers", "list", "--list", "partner", "--segment", "tag=partner or tag=old")
    assert result.exit_code == 0
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [
        "en-city@example.org", "fr@example.net"]
