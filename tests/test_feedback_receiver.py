"""`wip-mailer bounces receive` over real SMTP, and bounces end to end with real processes:
a send whose SMTP server rejects one address with 550 5.1.1, then an asynchronous DSN for
another address of the same campaign delivered to the receiver; both are suppressed and
left out of the next send."""

from __future__ import annotations

import dataclasses
import json
import signal
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.dispatch_helpers import make_audience
from tests.feedback_helpers import BOUNCES
from tests.schedule_helpers import approve_an_item, make_edition, process_env, wait_until
from tests.smtp_server import SmtpTestServer, free_port
from wip_mailer.audience import is_suppressed
from wip_mailer.db import session_scope
from wip_mailer.feedback.effects import process_message
from wip_mailer.feedback.receiver import Receiver, Spool
from wip_mailer.models import Delivery, InboundMessage, Subscriber
from wip_mailer.personalise import delivery_message_id, verp_address
from wip_mailer.settings import Settings

BOUNCE_ADDRESS = "bounces@example.org"


def dsn_for(settings: Settings, delivery: Delivery) -> tuple[str, bytes]:
    """A Postfix DSN (the fixture) about ``delivery``: its VERP address and the bytes."""
    assert delivery.id is not None
    verp = verp_address(settings, delivery.id)
    raw = (BOUNCES / "postfix.eml").read_bytes()
    raw = (raw.replace(b"bounces+101-d8a0de32@example.org", verp.encode())
              .replace(b"wip.7.101.bcef837e14@example.org",
                       delivery_message_id(settings, delivery.campaign_id, delivery.id).encode())
              .replace(b"anna.rossi@example.net", delivery.email.encode())
              .replace(b"20261203081201.4Fq3k21nVz9sT", f"dsn-{delivery.id}".encode()))
    return verp, crlf(raw)


def crlf(raw: bytes) -> bytes:
    """As it goes over SMTP."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ReceiverProcess:
    def __init__(self, workdir: Path, env: dict[str, str], port: int):
        self.log_path = workdir / "receiver.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wip_mailer", "bounces", "receive", "--port", str(port)],
            cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        assert wait_until(lambda: _listening(port) or self.process.poll() is not None, 20), self.log
        assert self.process.poll() is None, self.log

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()


def _send(workdir: Path, env: dict[str, str], slug: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wip_mailer", "send", slug, "--list", "main", "--yes"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=120)


def test_smtp_reject_and_later_dsn_both_suppress_and_leave_the_next_send(
        engine: Engine, settings: Settings, workdir: Path, smtp_server: SmtpTestServer) -> None:
    make_edition(engine, "2024-03")
    approve_an_item(engine, "2024-03")
    audience = make_audience(engine, 5)
    rejected, bounced_later = audience[1], audience[3]
    smtp_server.faults.rcpt_replies[rejected] = [f"550 5.1.1 <{rejected}>: Recipient address rejected"]
    port = free_port()
    env = process_env(settings, smtp_server.port, bounce_address=BOUNCE_ADDRESS,
                      bounce_spool_dir=str(workdir / "spool"), smtp_timeout="10")
    sent = _send(workdir, env, "2024-03")
    assert sent.returncode == 0, sent.stderr
    assert "4 sent" in sent.stdout and "1 failed" in sent.stdout
    settings = dataclasses.replace(settings, bounce_address=BOUNCE_ADDRESS)
    with session_scope(engine) as session:
        delivery = session.exec(select(Delivery).where(Delivery.email == bounced_later)).one()
        assert is_suppressed(session, rejected) and not is_suppressed(session, bounced_later)
    verp, dsn = dsn_for(settings, delivery)

    receiver = ReceiverProcess(workdir, env, port)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPRecipientsRefused):  # only our addresses are taken
                client.sendmail("", ["someone@example.org"], b"Subject: hi\r\n\r\nhello\r\n")
            forged = verp.replace(verp.split("-")[-1].split("@")[0], "00000000")
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("", [forged], dsn)
            assert client.sendmail("", [verp], dsn) == {}

        def suppressed() -> bool:
            with session_scope(engine) as session:
                return is_suppressed(session, bounced_later)

        assert wait_until(suppressed, 30), receiver.log
    finally:
        assert receiver.stop() == 0, receiver.log

    with session_scope(engine) as session:
        statuses = dict(session.exec(select(Subscriber.email, Subscriber.status)).all())
        inbound = session.exec(select(InboundMessage)).one()
    assert statuses[rejected] == statuses[bounced_later] == "bounced"
    assert inbound.kind == "hard" and inbound.matched and inbound.delivery_id == delivery.id
    assert sorted((workdir / "spool" / "cur").iterdir()) and not list((workdir / "spool" / "new").iterdir())

    status = subprocess.run([sys.executable, "-m", "wip_mailer", "campaigns", "status", "1", "--json"],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    bounces = json.loads(status.stdout)["bounces"]
    assert (bounces["hard"], bounces["soft"], bounces["complaints"]) == (2, 0, 0)
    assert bounces["hard_rate"] == pytest.approx(2 / 5)
    shown = subprocess.run(
        [sys.executable, "-m", "wip_mailer", "subscribers", "show", bounced_later, "--json"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert [e["kind"] for e in json.loads(shown.stdout)["history"]] == ["bounce"]

    # The next edition goes to the three others only.
    make_edition(engine, "2024-05")
    approve_an_item(engine, "2024-05")
    before = len(smtp_server.messages)
    assert _send(workdir, env, "2024-05").returncode == 0
    later = {address for message in smtp_server.messages[before:] for address in message.rcpt_tos}
    assert later == set(audience) - {rejected, bounced_later}


def test_a_message_is_stored_before_250_and_retried_when_processing_fails(
        engine: Engine, settings: Settings, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = dataclasses.replace(settings, bounce_address=BOUNCE_ADDRESS,
                                   bounce_spool_dir=str(workdir / "spool"))
    make_audience(engine, 1)
    attempts: list[bytes] = []

    def failing(self: Receiver, raw: bytes):  # type: ignore[no-untyped-def]
        attempts.append(raw)
        raise RuntimeError("the database is away")

    monkeypatch.setattr(Receiver, "_process", failing)
    port = free_port()
    reply = crlf((BOUNCES / "out-of-office.eml").read_bytes())
    with Receiver(engine, settings, "127.0.0.1", port), smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.sendmail("", [BOUNCE_ADDRESS.upper()], reply) == {}
        assert wait_until(lambda: bool(attempts), 10)
    spool = Spool(workdir / "spool")
    [kept] = spool.pending()  # accepted, failed, still there
    assert kept.read_bytes().endswith(reply)
    assert kept.read_bytes().startswith(f"Delivered-To: {BOUNCE_ADDRESS.upper()}\r\n".encode())
    done, failed = spool.drain(lambda raw: process_message(engine, settings, raw, "smtp"))
    assert (done, failed) == (1, 0) and spool.pending() == []
    with session_scope(engine) as session:
        assert session.exec(select(InboundMessage.kind)).one() == "auto-reply"


def test_the_receiver_needs_a_bounce_address(engine: Engine, settings: Settings) -> None:
    from wip_mailer.errors import SettingsError

    with pytest.raises(SettingsError, match="WIP_MAILER_BOUNCE_ADDRESS"):
        Receiver(engine, settings, "127.0.0.1", free_port())


def test_the_systemd_unit_runs_an_existing_command(cli) -> None:
    unit = Path(__file__).resolve().parents[1] / "scripts" / "systemd" / "wip-mailer-bounces.service"
    exec_start = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    args = exec_start.split()[1:]
    assert args == ["bounces", "receive", "--host", "127.0.0.1", "--port", "2526"]
    assert cli(*args, "--help").exit_code == 0
