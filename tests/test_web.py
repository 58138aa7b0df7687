"""The web endpoint over real HTTP: uvicorn on a free loopback port, httpx as the client."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy import Engine
from sqlmodel import select

from tests.smtp_server import SmtpTestServer, free_port
from tests.web_helpers import membership_status, path_of
from wip_mailer import db
from wip_mailer.audience import preferences_url, select_recipients, selfservice, unsubscribe_url
from wip_mailer.audience.consent import Actor, join_list
from wip_mailer.audience.lists import create_list
from wip_mailer.models import ConsentEvent, MailingList, Subscriber
from wip_mailer.settings import Settings, load_settings
from wip_mailer.tokens import InvalidTokenError, Purpose, make_token
from wip_mailer.web import create_app


@pytest.fixture
def settings(workdir: Path, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    port = free_port()
    monkeypatch.setenv("WIP_MAILER_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(smtp_server.port))
    return load_settings()


@dataclass
class Site:
    base: str
    client: httpx.Client


@pytest.fixture
def site(settings: Settings, engine: Engine) -> Iterator[Site]:
    port = int(settings.base_url.rsplit(":", 1)[1])
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    with httpx.Client(base_url=settings.base_url, follow_redirects=False, timeout=10,
                      headers={"User-Agent": "test-mail-provider/1.0"}) as client:
        yield Site(settings.base_url, client)
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def member(engine: Engine) -> tuple[int, int, int]:
    """(subscriber id, stampa list id, partner list id): an active member of both lists."""
    with db.session_scope(engine) as session:
        stampa = create_list(session, "stampa", double_opt_in=True)
        partner = create_list(session, "partner", double_opt_in=True, public=True)
        subscriber = Subscriber(email="lettore@example.org", name="Lettore")
        session.add(subscriber)
        session.flush()
        for mailing_list in (stampa, partner):
            join_list(session, subscriber, mailing_list, confirmed=True, actor=Actor("test"))
        assert subscriber.id and stampa.id and partner.id
        return subscriber.id, stampa.id, partner.id


def _events(engine: Engine) -> list[ConsentEvent]:
    with db.session_scope(engine) as session:
        return list(session.exec(select(ConsentEvent).order_by(ConsentEvent.id)).all())


def test_get_shows_a_page_and_changes_nothing(site, settings, engine, member) -> None:
    subscriber_id, stampa_id, _ = member
    events_before = len(_events(engine))
    response = site.client.get(path_of(unsubscribe_url(settings, subscriber_id, stampa_id), site.base))
    assert response.status_code == 200
    assert "lettore@example.org" in response.text
    assert "Sì, cancellami" in response.text and "Yes, unsubscribe me" in response.text
    assert response.headers["referrer-policy"] == "no-referrer"
    assert membership_status(engine, subscriber_id, stampa_id) == "active"
    assert len(_events(engine)) == events_before


def test_one_click_post_unsubscribes_at_once(site, settings, engine, member, cli) -> None:
    subscriber_id, stampa_id, _ = member
    path = path_of(unsubscribe_url(settings, subscriber_id, stampa_id), site.base)
    response = site.client.post(path, data={"List-Unsubscribe": "One-Click"})  # urlencoded, no cookie
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "Cancellazione avvenuta" in response.text

    shown = json.loads(cli("subscribers", "show", "lettore@example.org", "--json").stdout)
    assert {m["list"]: m["status"] for m in shown["memberships"]} == {
        "stampa": "unsubscribed", "partner": "active"}
    event = _events(engine)[-1]
    assert (event.kind, event.list_id, event.source) == ("unsubscribe", stampa_id, "one-click (RFC 8058)")
    assert (event.ip, event.user_agent) == ("127.0.0.1", "test-mail-provider/1.0")

    with db.session_scope(engine) as session:
        assert list(select_recipients(session, ["stampa"])) == []
        assert [r.email for r in select_recipients(session, ["partner"])] == ["lettore@example.org"]

    again = site.client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert len([e for e in _events(engine) if e.kind == "unsubscribe"]) == 1


def test_multipart_post_and_the_page_form(site, settings, engine, member) -> None:
    subscriber_id, stampa_id, partner_id = member
    path = path_of(unsubscribe_url(settings, subscriber_id, stampa_id), site.base)
    response = site.client.post(path, files={"List-Unsubscribe": (None, "One-Click")})
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200
    assert membership_status(engine, subscriber_id, stampa_id) == "unsubscribed"

    # The confirmation form on the GET page posts to the same URL.
    other = path_of(unsubscribe_url(settings, subscriber_id, partner_id), site.base)
    page = site.client.get(other).text
    action = re.search(r'<form method="post" action="([^"]+)"', page)
    assert action is not None and action.group(1) == site.base + other
    assert site.client.post(other, data={"confirm": "yes"}).status_code == 200
    assert membership_status(engine, subscriber_id, partner_id) == "unsubscribed"
    assert _events(engine)[-1].source == "unsubscribe page"
    with db.session_scope(engine) as session:
        assert session.get(Subscriber, subscriber_id).status == "unsubscribed"  # type: ignore[union-attr]


def _changed(text: str, index: int) -> str:
    """``text`` with the character at ``index`` replaced by its base64 neighbour."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    swapped = alphabet[(alphabet.index(text[index]) ^ 1)]
    return text[:index] + swapped + text[index + 1:]


def test_every_single_character_change_is_refused(settings, engine, member) -> None:
    subscriber_id, stampa_id, _ = member
    token = unsubscribe_url(settings, subscriber_id, stampa_id).rsplit("/", 1)[1]
    with db.session_scope(engine) as session:
        assert selfservice.unsubscribe_view(session, settings, token).subscribed
        for index, char in enumerate(token):
            for other in ("A", "B", "." if char != "." else "x"):
                if other == char:
                    continue
                bad = token[:index] + other + token[index + 1:]
                with pytest.raises(InvalidTokenError):
                    selfservice.unsubscribe_view(session, settings, bad)


def test_tampered_wrong_purpose_and_unknown_tokens_change_nothing(site, settings, engine, member) -> None:
    subscriber_id, stampa_id, _ = member
    path = path_of(unsubscribe_url(settings, subscriber_id, stampa_id), site.base)
    signature_start = path.rindex(".") + 1
    tampered = _changed(path, len("/u/") + 1)  # in the payload (the ids)
    signature_changed = _changed(path, signature_start + 2)
    last_changed = _changed(path, len(path) - 1)  # only base64 padding bits may differ
    wrong_purpose = "/u/" + preferences_url(settings, subscriber_id, stampa_id).rsplit("/", 1)[1]
    events_before = len(_events(engine))
    for bad in (tampered, signature_changed, last_changed, wrong_purpose):
        for method in ("GET", "POST"):
            response = site.client.request(method, bad, data={"List-Unsubscribe": "One-Click"}
                                           if method == "POST" else None)
            assert response.status_code == 400, (bad, method)
            assert "Nothing was changed" in response.text
    unknown = path_of(unsubscribe_url(settings, 999_999, stampa_id), site.base)
    assert site.client.post(unknown, data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert membership_status(engine, subscriber_id, stampa_id) == "active"
    assert len(_events(engine)) == events_before


def test_double_opt_in_through_email_and_confirmation_link(site, settings, engine, smtp_server, cli,
                                                          monkeypatch) -> None:
    with db.session_scope(engine) as session:
        create_list(session, "stampa", double_opt_in=True, description="Giornalisti")
    result = cli("subscribers", "add", "Nuova@Example.org", "--list", "stampa", "--name", "Nuova Lettrice")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["nuova@example.org on stampa: pending",
                                          "Sent 1 confirmation email(s)."]
    assert json.loads(cli("subscribers", "show", "nuova@example.org", "--json").stdout)["status"] == "pending"

    [received] = smtp_server.messages
    assert received.rcpt_tos == ["nuova@example.org"]
    message = received.message
    assert message["To"] == "Nuova Lettrice <nuova@example.org>"
    assert "stampa" in message["Subject"]
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    link = re.search(r"(http://\S+/confirm/\S+)", text)
    assert link is not None

    with db.session_scope(engine) as session:  # still pending: never selected
        assert list(select_recipients(session, ["stampa"])) == []
    # GET (a link scanner's prefetch, or the person) only shows the button; POST confirms.
    page = site.client.get(path_of(link.group(1), site.base))
    assert page.status_code == 200 and "Confermo l'iscrizione" in unescape(page.text)
    assert "Iscrizione confermata" not in page.text
    assert json.loads(cli("subscribers", "show", "nuova@example.org", "--json").stdout)["status"] == "pending"
    assert [e.kind for e in _events(engine)] == ["request"]
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action is not None and action.group(1) == link.group(1)
    response = site.client.post(path_of(link.group(1), site.base))
    assert response.status_code == 200
    assert "Iscrizione confermata" in response.text
    shown = json.loads(cli("subscribers", "show", "nuova@example.org", "--json").stdout)
    assert (shown["status"], shown["memberships"][0]["status"]) == ("active", "active")
    kinds = [(e.kind, e.source, e.text_version) for e in _events(engine)]
    assert kinds == [("request", "cli", "1"), ("confirm", "confirmation link", "1")]
    again = site.client.get(path_of(link.group(1), site.base))  # a second visit says so, harmlessly
    assert again.status_code == 200 and "Iscrizione confermata" in again.text
    assert site.client.post(path_of(link.group(1), site.base)).status_code == 200
    assert len(_events(engine)) == 2

    # An expired confirmation link is refused.
    with db.session_scope(engine) as session:
        ids = (session.execute(sa.select(Subscriber.id).where(Subscriber.email == "nuova@example.org")
                               ).scalar_one(),
               session.execute(sa.select(MailingList.id).where(MailingList.name == "stampa")).scalar_one())
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - (settings.confirm_days + 1) * 86400)
    old = make_token(settings.secret_key, Purpose.CONFIRM, ids[0], ids[1])
    monkeypatch.setattr(time, "time", real_time)
    for response in (site.client.get(f"/confirm/{old}"), site.client.post(f"/confirm/{old}")):
        assert response.status_code == 400
        assert "scaduto" in response.text and "expired" in response.text


def test_preferences_page_joins_and_leaves(site, settings, engine, member) -> None:
    subscriber_id, stampa_id, partner_id = member
    path = path_of(preferences_url(settings, subscriber_id, stampa_id), site.base)
    page = site.client.get(path)
    assert page.status_code == 200
    assert page.text.count('type="checkbox" name="list"') == 2
    response = site.client.post(path, data={"list": [str(partner_id)]})
    assert response.status_code == 200 and "Preferenze salvate" in response.text
    assert membership_status(engine, subscriber_id, stampa_id) == "unsubscribed"
    assert membership_status(engine, subscriber_id, partner_id) == "active"
    site.client.post(path, data={"list": [str(stampa_id), str(partner_id)]})
    assert membership_status(engine, subscriber_id, stampa_id) == "active"
    assert _events(engine)[-1].source == "preferences page"


def test_subscribe_form_feeds_double_opt_in(site, engine, smtp_server, member) -> None:
    page = site.client.get("/subscribe/partner")
    assert page.status_code == 200
    assert site.client.get("/subscribe/stampa").status_code == 404  # not public
    refused = site.client.post("/subscribe/partner", data={"email": "x@example.net"})
    assert refused.status_code == 400  # consent not given
    bad = site.client.post("/subscribe/partner", data={"email": "not-an-address", "consent": "yes"})
    assert bad.status_code == 400
    assert "L'indirizzo email non è valido" in unescape(bad.text)
    assert "The email address is not valid" in bad.text
    assert smtp_server.messages == []

    # A name with a line break (a forged header) is refused with one sentence, not mended.
    injected = site.client.post("/subscribe/partner", data={
        "email": "Curiosa@Example.net", "name": "Curiosa\r\nBcc: spy@example.org", "consent": "yes"})
    assert injected.status_code == 400
    assert "Il nome deve stare su una riga" in injected.text and "The name must be one line" in injected.text
    assert smtp_server.messages == []

    response = site.client.post("/subscribe/partner", data={
        "email": "Curiosa@Example.net", "name": "Curiosa  Rossi", "consent": "yes"})
    assert response.status_code == 200
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["curiosa@example.net"]
    assert received.message["Bcc"] is None
    assert received.message["To"] == "Curiosa Rossi <curiosa@example.net>"
    with db.session_scope(engine) as session:
        subscriber = session.exec(select(Subscriber).where(Subscriber.email == "curiosa@example.net")).one()
        assert subscriber.status == "pending"
        event = session.exec(select(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber.id)).one()
    assert (event.kind, event.source, event.ip) == ("request", "subscribe form", "127.0.0.1")


def test_serve_command_in_a_subprocess(settings, engine, member, workdir) -> None:
    subscriber_id, stampa_id, _ = member
    port = int(settings.base_url.rsplit(":", 1)[1])
    archive = workdir / "archive"
    (archive / "2024-01").mkdir(parents=True)
    (archive / "2024-01" / "index.html").write_text("<h1>Gennaio-Febbraio</h1>", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "wip_mailer", "serve", "--port", str(port), "--archive", str(archive)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(f"Serving on http://127.0.0.1:{port}")
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{settings.base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.1)
        response = httpx.post(unsubscribe_url(settings, subscriber_id, stampa_id),
                              data={"List-Unsubscribe": "One-Click"}, timeout=10)
        assert (response.status_code, response.headers.get("location")) == (200, None)
        assert membership_status(engine, subscriber_id, stampa_id) == "unsubscribed"
        page = httpx.get(f"{settings.base_url}/archive/2024-01/", timeout=10)
        assert (page.status_code, page.text) == (200, "<h1>Gennaio-Febbraio</h1>")
        assert httpx.get(f"{settings.base_url}/archive/../.env", timeout=10).status_code == 404
    finally:
        process.terminate()
        process.communicate(timeout=15)
