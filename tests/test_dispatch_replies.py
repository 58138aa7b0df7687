"""Other mail servers' replies during a send: each recipient ends sent once, deferred or failed with
its reason, none lost, none sent twice; a server-wide refusal pauses the campaign with one sentence.

The servers are real: aiosmtpd on loopback (tests/smtp_server.py), and for what aiosmtpd cannot
be made to do (a 421 greeting, a hang-up after the greeting, a silent server) a scripted socket
server on loopback.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator

import pytest
from aiosmtpd.smtp import AuthResult
from sqlalchemy import Engine
from sqlmodel import select

from tests.dispatch_helpers import make_audience, make_edition, preflight_with, rendered_edition
from tests.smtp_server import SmtpTestServer, free_port
from wip_mailer.db import session_scope
from wip_mailer.dispatch import SendRequest, send_edition
from wip_mailer.dispatch.connection import is_hard_bounce
from wip_mailer.errors import DeliveryError
from wip_mailer.models import Campaign, Delivery, Subscriber, Suppression
from wip_mailer.settings import Settings

SLUG = "2024-01"


def send(engine: Engine, settings: Settings):  # type: ignore[no-untyped-def]
    return send_edition(engine, settings, SendRequest(slug=SLUG, lists=("main",)),
                        preflight=preflight_with(rendered_edition(items=3)))


def deliveries(engine: Engine) -> dict[str, Delivery]:
    with session_scope(engine) as session:
        return {d.email: d for d in session.exec(select(Delivery)).all()}


def campaign_status(engine: Engine) -> str:
    with session_scope(engine) as session:
        return str(session.exec(select(Campaign)).one().status)


def suppressed(engine: Engine) -> set[str]:
    with session_scope(engine) as session:
        return {s.email for s in session.exec(select(Subscriber).where(Subscriber.status == "bounced"))}


# ---- classification ------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "reply", "hard"), [
    (550, "550 5.1.1 The email account that you tried to reach does not exist. 5.1.1 Please try", True),
    (550, "550 No such user here", True),
    (550, "550 Requested action not taken: mailbox unavailable", True),
    (553, "553 sorry, that domain isn't in my list of allowed rcpthosts", False),
    (550, "550 Relaying denied", False),
    (550, "550 Message rejected as spam by Content Filtering", False),
    (554, "554 5.7.1 Rejected by policy", False),
    (550, "550 5.7.1 Service unavailable; client host blocked using Spamhaus", False),
    (552, "552 5.2.2 Mailbox full", False),
    (552, "552 Requested mail action aborted: exceeded storage allocation", False),
    (554, "554 Transaction failed", False),
    (551, "551 User not local; please try <user@example.net>", True),
    (450, "450 4.1.1 Mailbox temporarily unavailable", False),
])
def test_which_replies_are_hard_bounces(code: int, reply: str, hard: bool) -> None:
    assert is_hard_bounce(code, reply) is hard


# ---- per-recipient replies ----------------------------------------------------------------------

def test_gmail_style_multi_line_replies(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 6)
    gone, full, policy, later = emails[1], emails[2], emails[3], emails[4]
    smtp_server.faults.rcpt_replies = {
        gone: ["550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
               "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
               "550 5.1.1 unnecessary spaces. https://support.example.org/mail/?p=NoSuchUser"],
        full: ["552-5.2.2 The recipient's inbox is out of storage space.\r\n"
               "552 5.2.2 Please direct the recipient to https://support.example.org/?p=OverQuota"],
        later: ["451-4.7.1 Greylisted, please try again later\r\n451 4.7.1 See https://example.org/grey",
                "250 OK"],
    }
    smtp_server.faults.data_replies = {policy: ["554 5.7.1 Message rejected by policy"]}
    summary = send(engine, send_settings)
    ledger = deliveries(engine)
    assert smtp_server.received_by_address() == {e: 1 for e in emails if e not in (gone, full, policy)}
    assert ledger[gone].state == "failed"
    assert ledger[gone].last_reply.startswith("550 5.1.1 The email account that you tried to reach")
    assert "unnecessary spaces" in ledger[gone].last_reply and "\n" not in ledger[gone].last_reply
    assert ledger[full].state == "failed" and "out of storage space" in ledger[full].last_reply
    assert ledger[policy].state == "failed"
    assert ledger[policy].last_reply == "554 5.7.1 Message rejected by policy"
    assert ledger[later].state == "sent" and ledger[later].attempts == 2
    assert suppressed(engine) == {gone}  # mailbox full and policy are not the address's fault
    assert (summary.sent, summary.failed, summary.deferred) == (3, 3, 0)
    assert campaign_status(engine) == "finished"


def test_replies_without_enhanced_codes(engine, send_settings, smtp_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 4)
    smtp_server.faults.rcpt_replies = {emails[0]: ["550 No such user here"],
                                       emails[1]: ["550 Relaying denied"],
                                       emails[2]: ["450 Mailbox busy", "250 OK"]}
    summary = send(engine, send_settings)
    ledger = deliveries(engine)
    assert [ledger[e].state for e in emails] == ["failed", "failed", "sent", "sent"]
    assert suppressed(engine) == {emails[0]}
    assert smtp_server.received_by_address() == {emails[2]: 1, emails[3]: 1}
    assert (summary.sent, summary.failed) == (2, 2)


def test_a_server_with_pipelining(engine, send_settings, smtp_server) -> None:
    """MAIL, RCPT and DATA go in one write; a refused RCPT still leaves the session usable."""
    async def offer_pipelining(server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    smtp_server.handler.handle_EHLO = offer_pipelining  # type: ignore[attr-defined]
    make_edition(engine)
    emails = make_audience(engine, 8)
    smtp_server.faults.rcpt_replies = {emails[2]: ["550 5.1.1 No such user"],
                                       emails[5]: ["450 4.2.1 Try again later", "250 OK"]}
    summary = send(engine, send_settings)
    assert smtp_server.received_by_address() == {e: 1 for e in emails if e != emails[2]}
    assert deliveries(engine)[emails[5]].attempts == 2
    assert (summary.sent, summary.failed) == (7, 1)


# ---- server-wide refusals: the campaign pauses, nothing is lost ---------------------------------

def _paused_with_nothing_lost(engine: Engine, emails: list[str]) -> None:
    assert campaign_status(engine) == "paused"
    assert {d.state for d in deliveries(engine).values()} == {"queued"}
    assert len(deliveries(engine)) == len(emails)
    with session_scope(engine) as session:
        assert session.exec(select(Suppression)).all() == []


def test_starttls_required_while_security_is_none(engine, send_settings, smtp_server) -> None:
    async def require_starttls(server, session, envelope, address, options):  # type: ignore[no-untyped-def]
        return "530 5.7.0 Must issue a STARTTLS command first"

    smtp_server.handler.handle_MAIL = require_starttls  # type: ignore[attr-defined]
    make_edition(engine)
    emails = make_audience(engine, 5)
    with pytest.raises(DeliveryError) as caught:
        send(engine, send_settings)
    message = str(caught.value)
    assert message.startswith(
        f"The SMTP server 127.0.0.1:{smtp_server.port} requires an encrypted connection "
        "(530 5.7.0 Must issue a STARTTLS command first): set WIP_MAILER_SMTP_SECURITY=starttls")
    assert "resume it with `wip-mailer campaigns resume 1`" in message
    assert smtp_server.messages == []
    _paused_with_nothing_lost(engine, emails)


def test_authentication_required(engine, send_settings, smtp_server) -> None:
    async def require_auth(server, session, envelope, address, options):  # type: ignore[no-untyped-def]
        return "530 5.7.0 Authentication required"

    smtp_server.handler.handle_MAIL = require_auth  # type: ignore[attr-defined]
    make_edition(engine)
    emails = make_audience(engine, 3)
    with pytest.raises(DeliveryError, match=r"requires a login \(530 5\.7\.0 Authentication required\): "
                                            r"set WIP_MAILER_SMTP_USER and WIP_MAILER_SMTP_PASSWORD"):
        send(engine, send_settings)
    _paused_with_nothing_lost(engine, emails)


@pytest.fixture
def auth_server() -> Iterator[SmtpTestServer]:
    def refuse(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        return AuthResult(success=False, handled=False)

    server = SmtpTestServer(authenticator=refuse, auth_require_tls=False)
    server.start()
    yield server
    server.stop()


def test_a_refused_login(engine, send_settings, auth_server) -> None:
    make_edition(engine)
    emails = make_audience(engine, 3)
    settings = dataclasses.replace(send_settings, smtp_port=auth_server.port, smtp_user="newsletter",
                                   smtp_password="wrong-password")
    with pytest.raises(DeliveryError) as caught:
        send(engine, settings)
    message = str(caught.value)
    assert message.startswith(f"The SMTP server 127.0.0.1:{auth_server.port} refused the login for "
                              "'newsletter': check WIP_MAILER_SMTP_USER and WIP_MAILER_SMTP_PASSWORD.")
    assert "wrong-password" not in message
    assert auth_server.messages == []
    _paused_with_nothing_lost(engine, emails)


class ScriptedServer:
    """A loopback TCP server that greets (or not) as told, then hangs up or stays silent."""

    def __init__(self, greeting: bytes | None, hold_seconds: float = 0.0):
        self.greeting = greeting
        self.hold = hold_seconds
        self.port = free_port()
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                if self.greeting is not None:
                    conn.sendall(self.greeting)
                self._stop.wait(self.hold)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.mark.parametrize(("greeting", "hold", "expected"), [
    (b"421 4.7.0 Too many connections from your host, try again later\r\n", 0.0,
     "the server refused the connection (421 4.7.0 Too many connections from your host, try again later)"),
    (b"220 mail.example.org ESMTP\r\n", 0.0, "the server closed the connection before the session started"),
    (None, 3.0, "timed out"),
], ids=["421-greeting", "hang-up-after-greeting", "silent"])
def test_a_server_that_will_not_talk(engine, send_settings, greeting, hold, expected) -> None:
    server = ScriptedServer(greeting, hold)
    try:
        make_edition(engine)
        emails = make_audience(engine, 4)
        settings = dataclasses.replace(send_settings, smtp_port=server.port, smtp_timeout=0.5)
        with pytest.raises(DeliveryError) as caught:
            send(engine, settings)
    finally:
        server.close()
    message = str(caught.value)
    assert message.startswith(f"Cannot connect to the SMTP server 127.0.0.1:{server.port}: ")
    assert expected in message, message
    assert message.count(". ") <= 2 and "\n" not in message and "b'" not in message
    assert server.connections >= 2  # it tried again before giving up
    _paused_with_nothing_lost(engine, emails)
