"""`lists report` over three real sends: joins and leaves per edition (by channel), bounces and
complaints, members by language and country, checked against the consent events and the
ledger; each leave goes through the path that really records it (the one-click function, a
mailto unsubscribe through the feedback stage, the preferences page, an admin, an ARF)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from tests.dispatch_helpers import make_edition, preflight_with, rendered_edition
from tests.report_helpers import arf
from tests.smtp_server import SmtpTestServer
from wip_mailer import browser
from wip_mailer.audience import preferences_url, unsubscribe_url
from wip_mailer.audience.selfservice import Visitor, save_preferences, unsubscribe_by_token
from wip_mailer.audience.subscribers import Profile, add_subscriber, remove_subscriber
from wip_mailer.db import session_scope
from wip_mailer.dispatch import SendRequest, send_edition
from wip_mailer.feedback.effects import process_message
from wip_mailer.models import Campaign, ConsentEvent, Delivery, Edition, Membership, Subscriber
from wip_mailer.reports import lists_page, lists_report
from wip_mailer.reports.lists import CHANNELS
from wip_mailer.settings import Settings
from wip_mailer.web import ONE_CLICK_SOURCE

SLUGS = ("2024-01", "2024-03", "2024-05")
TITLES = ("Gennaio-Febbraio 2024", "Marzo-Aprile 2024", "Maggio-Giugno 2024")


def _join(engine: Engine, settings: Settings, emails: list[str], lists: list[str]) -> None:
    for n, email in enumerate(emails):
        add_subscriber(engine, settings, email, lists, confirmed=True, source="cli",
                       profile=Profile(language=("it", "en")[n % 2], country=("IT", "FR", "ES")[n % 3]))


def _ids(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        return {s.email: s.id for s in session.exec(select(Subscriber)).scalars()}


def _token(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.fixture
def three_editions(engine: Engine, send_settings: Settings, smtp_server: SmtpTestServer) -> dict[str, Any]:
    settings = send_settings
    from wip_mailer.audience.lists import create_list

    with session_scope(engine) as session:
        create_list(session, "main", description="", language="it", double_opt_in=False)
        create_list(session, "stampa", description="", language="it", double_opt_in=False, public=True)
    _join(engine, settings, [f"a{n}@torino.example" for n in range(30)], ["main"])
    _join(engine, settings, [f"p{n}@press.example" for n in range(10)], ["main", "stampa"])
    campaigns = []
    for round_, slug in enumerate(SLUGS):
        with session_scope(engine) as session:
            session.get(Edition, make_edition(engine, slug)).title = TITLES[round_]
        summary = send_edition(engine, settings, SendRequest(slug, ("main", "stampa")),
                               preflight=preflight_with(rendered_edition()))
        campaigns.append(summary.campaign_id)
        ids = _ids(engine)
        received = {m.rcpt_tos[0]: m for m in smtp_server.messages}  # the latest message each
        # after each send: new people join, and some leave, each by another channel
        _join(engine, settings, [f"n{round_}-{n}@lyon.example" for n in range(5 + round_)], ["main"])
        base = 3 * round_
        with session_scope(engine) as session:
            link = unsubscribe_url(settings, ids[f"a{base}@torino.example"], 1, summary.campaign_id)
            unsubscribe_by_token(session, settings, _token(link), source=ONE_CLICK_SOURCE, visitor=Visitor())
            prefs = preferences_url(settings, ids[f"a{base + 1}@torino.example"], 1)
            save_preferences(session, settings, _token(prefs), set(), Visitor())  # leaves main
            remove_subscriber(session, f"a{base + 2}@torino.example", "main")  # an admin
        mailto = unsubscribe_url(settings, ids[f"a{base + 20}@torino.example"], 1, summary.campaign_id)
        message = (f"From: <a{base + 20}@torino.example>\r\nTo: bounces@example.org\r\n"
                   f"Subject: unsubscribe {_token(mailto)}\r\nMessage-ID: <u{round_}@torino.example>\r\n"
                   "\r\nunsubscribe\r\n").encode()
        assert process_message(engine, settings, message, "maildir").kind == "unsubscribe"
        if round_ == 1:  # a press subscriber reports the second edition as spam
            assert process_message(engine, settings, arf(received["p3@press.example"]), "maildir").matched
    return {"campaigns": campaigns, "settings": settings}


def test_joins_and_leaves_per_edition_match_the_consent_events(engine: Engine,
                                                                three_editions: dict[str, Any]) -> None:
    report = lists_report(engine)
    with session_scope(engine) as session:
        events = session.exec(select(ConsentEvent)).scalars().all()
        starts = [session.get(Campaign, c).started_at for c in three_editions["campaigns"]]
        deliveries = session.exec(select(Delivery)).scalars().all()
        members = session.exec(select(Membership, Subscriber).join(
            Subscriber, Subscriber.id == Membership.subscriber_id)).all()
    assert [entry["name"] for entry in report["lists"]] == ["main", "stampa"]
    for list_id, entry in enumerate(report["lists"], start=1):
        editions = entry["editions"]
        assert [e["edition"] for e in editions] == [None, *SLUGS]
        for period, row in enumerate(editions):
            low = starts[period - 1] if period else None
            high = starts[period] if period < len(starts) else None
            mine = [e for e in events if e.list_id == list_id and (low is None or e.at >= low)
                    and (high is None or e.at < high)]
            assert row["joins"] == sum(e.kind in ("subscribe", "confirm") for e in mine)
            leaves = Counter(_channel(e.source) for e in mine if e.kind == "unsubscribe")
            assert row["leaves"] == {name: leaves.get(name, 0) for name in CHANNELS}
            assert row["leaves_total"] == sum(leaves.values())
            if period:
                campaign_id, start = three_editions["campaigns"][period - 1], starts[period - 1]
                on_list = {m.subscriber_id for m, _ in members
                           if m.list_id == list_id and m.subscribed_at <= start
                           and (m.unsubscribed_at is None or m.unsubscribed_at > start)}
                assert row["subscribers_at_send"] == sum(
                    d.campaign_id == campaign_id and d.subscriber_id in on_list for d in deliveries)
        active = [s for m, s in members if m.list_id == list_id and m.status == "active"]
        assert entry["members"]["active"] == len(active)
        assert entry["active_by_language"] == dict(Counter(s.language for s in active))
        assert entry["active_by_country"] == dict(Counter(s.country for s in active))

    main = report["lists"][0]["editions"]
    # what the fixture did: 40 joined before the first send; after send k, 5 + k joined, and
    # one left by each of the link, the preferences page, an admin and mailto
    assert [e["joins"] for e in main] == [40, 5, 6, 7]
    for row in main[1:]:
        assert {k: row["leaves"][k] for k in ("link", "preferences", "admin", "mailto")} == {
            "link": 1, "preferences": 1, "admin": 1, "mailto": 1}
    assert [e["subscribers_at_send"] for e in main[1:]] == [40, 40 - 4 + 5, 40 - 8 + 5 + 6 - 1]
    assert [e["subscribers_at_send"] for e in report["lists"][1]["editions"][1:]] == [10, 10, 9]
    # the complaint about edition 2, by someone on both lists: on that edition of each, and
    # its leaves (one per list) are complaints
    complaints = [[e["complaints"] for e in lst["editions"]] for lst in report["lists"]]
    assert complaints == [[0, 0, 1, 0], [0, 0, 1, 0]]
    assert sum(e["leaves"]["complaint"] for lst in report["lists"] for e in lst["editions"]) == 2


def _channel(source: str) -> str:
    if source in ("one-click (RFC 8058)", "unsubscribe page"):
        return "link"
    if source.startswith("mailto"):
        return "mailto"
    if source == "preferences page":
        return "preferences"
    if source.startswith("complaint"):
        return "complaint"
    return "admin"


def test_the_cli_report_and_page(engine: Engine, three_editions: dict[str, Any], cli: Any,
                                 workdir: Any) -> None:
    result = cli("lists", "report", "--list", "stampa", "--json", "--html", str(workdir / "lists.html"))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == lists_report(engine, "stampa")
    html = (workdir / "lists.html").read_text(encoding="utf-8")
    assert "<script" not in html and html.count("<svg") == 2 and "<figcaption>" in html
    result = cli("lists", "report", "--list", "nope")
    assert result.exit_code == 1 and result.stderr.strip() == "Error: There is no list named 'nope'."


@pytest.mark.chromium
def test_the_lists_page_fits_a_phone(engine: Engine, three_editions: dict[str, Any]) -> None:
    if browser.find_chromium() is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    html = lists_page(lists_report(engine), three_editions["settings"])
    for width in (375, 1024):
        if os.environ.get("REPORT_SCREENSHOT_DIR"):  # docs/, made by hand
            browser.screenshot(html, Path(os.environ["REPORT_SCREENSHOT_DIR"]) / f"lists-{width}.png", width)
        layout = browser.measure_layout(html, width)
        assert not layout.scrolls_horizontally and layout.overflowing == (), (width, layout.overflowing)
