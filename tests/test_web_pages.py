"""The public pages over real HTTP (uvicorn on loopback, httpx): one-click bodies of any
encoding, confirmation by POST, the subscribe form against bots, every page in Italian and
English, the front page, the archive's links and its feed's type."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html import unescape
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine
from sqlmodel import select

from tests.sample_edition import import_sample
from tests.smtp_server import SmtpTestServer, free_port
from tests.web_helpers import membership_status, path_of
from wip_mailer import db
from wip_mailer.archive import build_archive
from wip_mailer.audience import confirm_url, preferences_url, unsubscribe_url
from wip_mailer.audience.consent import Actor, join_list
from wip_mailer.audience.lists import create_list
from wip_mailer.browser import find_chromium, measure_appearance
from wip_mailer.models import ConsentEvent, Subscriber
from wip_mailer.settings import Settings, load_settings
from wip_mailer.web import create_app

PRIVACY = "https://www.example.org/privacy/newsletter"


@contextmanager
def serving(settings: Settings, engine: Engine, archive: Path | None = None) -> Iterator[httpx.Client]:
    port = int(settings.base_url.rsplit(":", 1)[1])
    app = create_app(settings, engine, archive_dir=archive)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=settings.base_url, follow_redirects=False, timeout=20) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def make_settings(workdir: Path, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
                  ) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        monkeypatch.setenv("WIP_MAILER_BASE_URL", f"http://127.0.0.1:{free_port()}")
        monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(smtp_server.port))
        monkeypatch.setenv("WIP_MAILER_PRIVACY_URL", PRIVACY)
        for key, value in env.items():
            monkeypatch.setenv(f"WIP_MAILER_{key}", value)
        return load_settings()
    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def member(engine: Engine) -> tuple[int, int, int]:
    return _members(engine)


def _members(engine: Engine) -> tuple[int, int, int]:
    """(subscriber, stampa list (not public), partner list (public)): active on both."""
    with db.session_scope(engine) as session:
        stampa = create_list(session, "stampa", double_opt_in=True)
        partner = create_list(session, "partner", double_opt_in=True, public=True, description="Partner")
        subscriber = Subscriber(email="lettore@example.org", name="Lettore")
        session.add(subscriber)
        session.flush()
        for mailing_list in (stampa, partner):
            join_list(session, subscriber, mailing_list, confirmed=True, actor=Actor("test"))
        assert subscriber.id and stampa.id and partner.id
        return subscriber.id, stampa.id, partner.id


# RFC 8058 §8.3, as printed: the declared boundary ("---FormBoundaryjWmhtjORrn") does not
# match the delimiter lines, which need two more hyphens; a strict parser finds no part.
RFC_8058_BODY = (b"---FormBoundaryjWmhtjORrn\r\n"
                 b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n'
                 b"\r\n"
                 b"One-Click\r\n"
                 b"---FormBoundaryjWmhtjORrn--\r\n")
RFC_8058_TYPE = "multipart/form-data; boundary=---FormBoundaryjWmhtjORrn"


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_rfc_8058_printed_multipart_bytes_unsubscribe(settings, engine, member, newline: bytes) -> None:
    subscriber_id, stampa_id, partner_id = member
    with serving(settings, engine) as client:
        response = client.post(path_of(unsubscribe_url(settings, subscriber_id, stampa_id),
                                       settings.base_url),
                               content=RFC_8058_BODY.replace(b"\r\n", newline),
                               headers={"Content-Type": RFC_8058_TYPE})
    assert response.status_code == 200 and "location" not in response.headers
    assert "Cancellazione avvenuta" in response.text and "has been unsubscribed" in response.text
    assert membership_status(engine, subscriber_id, stampa_id) == "unsubscribed"
    assert membership_status(engine, subscriber_id, partner_id) == "active"
    with db.session_scope(engine) as session:
        event = session.exec(select(ConsentEvent).order_by(ConsentEvent.id.desc())).first()  # type: ignore[union-attr]
        assert event is not None and (event.kind, event.source) == ("unsubscribe", "one-click (RFC 8058)")


@pytest.mark.parametrize("content, content_type", [
    (b"", None),
    (b"List-Unsubscribe=One-Click", "text/plain"),
    (b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded; charset=utf-8"),
    (b"--xyz\r\nContent-Disposition: form-data; name=List-Unsubscribe\r\n\r\nOne-Click\r\n--xyz--\r\n",
     "multipart/form-data; boundary=xyz"),
    (b"\x00\xff garbage", "application/octet-stream"),
], ids=["empty", "text-plain", "urlencoded", "multipart-unquoted-name", "garbage"])
def test_a_post_to_the_signed_url_unsubscribes_whatever_the_encoding(settings, engine, member, content,
                                                                      content_type) -> None:
    subscriber_id, stampa_id, _ = member
    headers = {"Content-Type": content_type} if content_type else {}
    with serving(settings, engine) as client:
        response = client.post(path_of(unsubscribe_url(settings, subscriber_id, stampa_id),
                                       settings.base_url),
                               content=content, headers=headers)
    assert response.status_code == 200
    assert membership_status(engine, subscriber_id, stampa_id) == "unsubscribed"


@pytest.mark.parametrize("content, content_type", [
    (b"List-Unsubscribe=Something-Else", "application/x-www-form-urlencoded"),
    (RFC_8058_BODY.replace(b"One-Click", b"Two-Clicks"), RFC_8058_TYPE),
], ids=["urlencoded", "rfc-multipart"])
def test_a_body_that_says_something_else_changes_nothing(settings, engine, member, content,
                                                         content_type) -> None:
    subscriber_id, stampa_id, _ = member
    with serving(settings, engine) as client:
        response = client.post(path_of(unsubscribe_url(settings, subscriber_id, stampa_id),
                                       settings.base_url),
                               content=content, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert "Nulla è stato modificato" in response.text and "Nothing was changed" in response.text
    assert membership_status(engine, subscriber_id, stampa_id) == "active"


def _pending(engine: Engine) -> tuple[int, int]:
    with db.session_scope(engine) as session:
        mailing_list = create_list(session, "nuovi", double_opt_in=True, public=True)
        subscriber = Subscriber(email="nuova@example.org", name="Nuova", status="pending")
        session.add(subscriber)
        session.flush()
        join_list(session, subscriber, mailing_list, confirmed=False, actor=Actor("test"))
        assert subscriber.id and mailing_list.id
        return subscriber.id, mailing_list.id


def test_confirm_get_changes_nothing_and_post_confirms(settings, engine) -> None:
    subscriber_id, list_id = _pending(engine)
    path = path_of(confirm_url(settings, subscriber_id, list_id), settings.base_url)
    with serving(settings, engine) as client:
        for _ in range(3):  # a link scanner may fetch it several times, with HEAD too
            page = client.get(path, headers={"User-Agent": "Microsoft Defender Safe Links"})
            assert page.status_code == 200 and "Confermo l'iscrizione" in unescape(page.text)
            assert client.head(path).status_code in (200, 405)
        assert membership_status(engine, subscriber_id, list_id) == "pending"
        confirmed = client.post(path)
        assert confirmed.status_code == 200
        assert "Iscrizione confermata" in confirmed.text and "is confirmed" in confirmed.text
    assert membership_status(engine, subscriber_id, list_id) == "active"


async def _burst(base: str, count: int, data: dict[str, str]) -> list[int]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        answers = await asyncio.gather(*[client.post("/subscribe/partner", data=data) for _ in range(count)])
    return [a.status_code for a in answers]


@pytest.mark.parametrize("limits", [{}, {"SUBSCRIBE_PER_IP_PER_HOUR": "1000",
                                         "SUBSCRIBE_PER_ADDRESS_PER_HOUR": "1000"}],
                         ids=["default-limits", "limits-out-of-the-way"])
def test_a_burst_of_50_subscribes_for_one_address_sends_one_email(make_settings, smtp_server, limits) -> None:
    settings = make_settings(**limits)
    engine = db.create_database(settings.database_url)
    _members(engine)
    form = {"email": "Bersaglio@Example.net", "name": "Bersaglio", "consent": "yes"}
    with serving(settings, engine):
        answers = asyncio.run(_burst(settings.base_url, 50, form))
    assert set(answers) <= {200, 429} and answers.count(200) >= 1
    if not limits:
        assert answers.count(429) >= 50 - settings.subscribe_per_address_per_hour
    assert [m.rcpt_tos for m in smtp_server.messages] == [["bersaglio@example.net"]]
    engine.dispose()


def test_a_filled_honeypot_sends_nothing(settings, engine, member, smtp_server) -> None:
    with serving(settings, engine) as client:
        form = client.get("/subscribe/partner").text
        assert 'name="website_leave_empty"' in form and 'tabindex="-1"' in form
        response = client.post("/subscribe/partner", data={
            "email": "robot@example.net", "consent": "yes", "website_leave_empty": "https://spam.example"})
        assert response.status_code == 200 and "Controlla la tua posta" in response.text  # as usual
    assert smtp_server.messages == []
    with db.session_scope(engine) as session:
        assert session.exec(select(Subscriber).where(Subscriber.email == "robot@example.net")).first() is None


def test_the_per_ip_limit_answers_429(make_settings, smtp_server) -> None:
    settings = make_settings(SUBSCRIBE_PER_IP_PER_HOUR="3")
    engine = db.create_database(settings.database_url)
    _members(engine)
    with serving(settings, engine) as client:
        answers = [client.post("/subscribe/partner", data={"email": f"p{n}@example.net", "consent": "yes"})
                   for n in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert answers[-1].headers["retry-after"] == "3600"
    assert "Troppe richieste" in answers[-1].text and "Too many requests" in answers[-1].text
    assert len(smtp_server.messages) == 3
    engine.dispose()


def _both(page: str, italian: str, english: str) -> None:
    """Both texts are on the page, as read: tags dropped, entities decoded, spaces collapsed."""
    text = " ".join(unescape(re.sub(r"<[^>]+>", "", page)).split())
    assert italian in text, italian
    assert english in text, english


def test_every_public_page_in_italian_and_english(settings, engine, member, smtp_server) -> None:
    subscriber_id, stampa_id, partner_id = member
    unsubscribe = path_of(unsubscribe_url(settings, subscriber_id, stampa_id), settings.base_url)
    with serving(settings, engine) as client:
        home = client.get("/")
        assert home.status_code == 200
        _both(home.text, "Iscriviti", "Subscribe")
        assert "/subscribe/partner" in home.text and "/subscribe/stampa" not in home.text
        _both(client.get("/subscribe").text, "Archivio dei numeri", "Past issues")

        form = client.get("/subscribe/partner")
        _both(form.text, "Iscriviti a Work in Progress", "We will send you an email")
        assert f'href="{PRIVACY}"' in form.text  # the privacy notice, linked from the form

        for data, italian, english in [
            ({"email": "x@example.net"}, "occorre accettare l'informativa",
             "Please accept the privacy notice"),
            ({"email": "non-un-indirizzo", "consent": "yes"}, "L'indirizzo email non è valido",
             "The email address is not valid"),
            ({"email": "a@example.net", "name": "A\r\nBcc: b@example.org", "consent": "yes"},
             "Il nome deve stare su una riga", "The name must be one line"),
        ]:
            refused = client.post("/subscribe/partner", data=data)
            assert refused.status_code == 400
            _both(refused.text, italian, english)

        private = client.get("/subscribe/stampa")  # exists, but not public
        assert private.status_code == 404
        _both(private.text, "non è aperta alle iscrizioni", "is not open to subscriptions")
        assert "scaduto" not in private.text and "expired" not in private.text
        missing = client.get("/subscribe/nessuna")
        assert missing.status_code == 404
        _both(missing.text, "non è aperta alle iscrizioni", "is not open to subscriptions")

        sent = client.post("/subscribe/partner", data={"email": "nuova@example.net", "consent": "yes"})
        _both(sent.text, "Controlla la tua posta", "If the address is valid")

        _both(client.get(unsubscribe).text, "Cancellazione dalla newsletter", "Do you want")
        done = client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
        _both(done.text, "non riceverà più la lista «stampa» di Work in Progress",
              "has been unsubscribed from “stampa” and will receive")
        assert "di <em>Work in Progress</em>" in done.text  # the space around the list name kept

        preferences = path_of(preferences_url(settings, subscriber_id, stampa_id), settings.base_url)
        _both(client.get(preferences).text, "Le tue liste", "Tick the lists you want")
        _both(client.post(preferences, data={"list": [str(partner_id)]}).text, "Preferenze salvate",
              "Preferences saved")

        bad_link = client.get("/u/WzEsMV0.not-a-real-signature")
        assert bad_link.status_code == 400
        _both(bad_link.text, "Il collegamento non è valido o è scaduto",
              "The link is not valid or has expired")
        bad_confirm = client.post("/confirm/WzEsMV0.not-a-real-signature")
        _both(bad_confirm.text, "Il collegamento non è valido", "The link is not valid")
        nowhere = client.get("/nowhere")
        assert nowhere.status_code == 404
        _both(nowhere.text, "Questa pagina non esiste", "This page does not exist")

    # The confirmation email links the privacy notice too.
    [email] = smtp_server.messages
    message = email.message
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert f'href="{PRIVACY}"' in html and PRIVACY in text


def test_front_page_redirects_to_a_served_archive_with_links_and_an_atom_feed(
        settings, engine, seed_path, workdir) -> None:
    import_sample(engine, seed_path)
    with db.session_scope(engine) as session:
        archive = workdir / "archive"
        build_archive(session, settings, archive, include_unsent=True)
    with serving(settings, engine, archive) as client:
        front = client.get("/")
        assert front.status_code == 302 and front.headers["location"] == "/archive/"
        feed = client.get("/archive/feed.xml")
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("application/atom+xml")
        page = client.get("/archive/2024-01/")
        assert page.status_code == 200
        for href in (f"{settings.archive_url}/", f"{settings.archive_url}/feed.xml",
                     f"{settings.base_url}/subscribe"):
            assert f'href="{href}"' in page.text, href
        index = client.get("/archive/")
        assert f'href="{settings.base_url}/subscribe"' in index.text
        assert client.get("/subscribe").status_code == 200


@pytest.mark.chromium
@pytest.mark.skipif(find_chromium() is None, reason="headless Chromium is not installed (Debian `chromium`)")
@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_pages_in_the_theme_readable_light_and_dark(settings, engine, member, seed_path, workdir,
                                                    dark: bool) -> None:
    subscriber_id, stampa_id, _ = member
    import_sample(engine, seed_path)
    with db.session_scope(engine) as session:
        build_archive(session, settings, workdir / "archive", include_unsent=True)
    with serving(settings, engine, workdir / "archive") as client:
        pages = [client.get("/subscribe/partner").text,
                 client.get(path_of(unsubscribe_url(settings, subscriber_id, stampa_id),
                                    settings.base_url)).text,
                 client.get("/subscribe/stampa").text, client.get("/archive/").text]
    for html in pages:
        for width in (375, 1024):
            seen = measure_appearance(html, width, dark=dark)
            assert seen.scheme == ("dark" if dark else "light")
            assert not seen.layout.scrolls_horizontally, seen.layout.overflowing
            assert seen.lowest().contrast >= 4.5, seen.lowest()
            heading = seen.lowest("heading")
            # the theme's accent: maroon on white, or its light pink on the dark paper
            assert heading.colour == ("rgb(244, 163, 187)" if dark else "rgb(138, 21, 56)"), heading
