"""`wip-mailer bounces receive`: a small SMTP server that the MTA forwards the bounce address to.

It accepts only the bounce address itself (the mailto unsubscribe address) and VERP
addresses of it whose HMAC verifies; anything else gets 550. Each message is written
to the spool (a Maildir: tmp/, fsync, rename into new/) *before* the 250 reply, so
nothing accepted is lost; a worker then processes new/ through the same code path as
`bounces process` and moves each message to cur/ once its outcome is committed. A
message whose processing fails stays in new/ and is retried.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine

from wip_mailer.errors import InvalidInputError, SettingsError
from wip_mailer.feedback.effects import Processed, process_message
from wip_mailer.personalise import read_verp
from wip_mailer.settings import Settings

log = logging.getLogger("wip_mailer.feedback")
RETRY_SECONDS = 30.0
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


class Spool:
    """A Maildir whose new/ holds the messages accepted and not yet processed."""

    def __init__(self, path: Path):
        self.path = path
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)

    def store(self, data: bytes) -> Path:
        """Write durably, then make visible: a crash leaves the message whole or absent."""
        name = f"{time.time():.6f}.{uuid.uuid4().hex}.{socket.gethostname().replace('/', '_')}"
        tmp = self.path / "tmp" / name
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        final = self.path / "new" / name
        os.rename(tmp, final)
        directory = os.open(self.path / "new", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return final

    def pending(self) -> list[Path]:
        return sorted((self.path / "new").iterdir())

    def drain(self, process: Callable[[bytes], Processed]) -> tuple[int, int]:
        """Process every pending message; returns (processed, failed). Failed ones stay."""
        done = failed = 0
        for path in self.pending():
            try:
                process(path.read_bytes())
            except Exception:
                log.exception("processing %s failed; it stays in the spool and is retried", path.name)
                failed += 1
                continue
            os.rename(path, self.path / "cur" / f"{path.name}:2,S")
            done += 1
        return done, failed


def accepts(settings: Settings, address: str) -> bool:
    """The bounce address itself, or one of its VERP addresses with a valid HMAC."""
    bounce = parseaddr(settings.bounce_address)[1].lower()
    address = address.strip().strip("<>").lower()
    return address == bounce or read_verp(settings, address) is not None


class BounceHandler:
    def __init__(self, settings: Settings, spool: Spool, wake: threading.Event):
        self.settings = settings
        self.spool = spool
        self.wake = wake

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if not accepts(self.settings, address):
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        # The address it came to, where classify() looks for the VERP address (as an MTA writes it).
        head = b"".join(b"Delivered-To: " + rcpt.encode("ascii", "replace") + b"\r\n"
                        for rcpt in envelope.rcpt_tos)
        try:
            self.spool.store(head + content)
        except OSError as exc:
            log.error("cannot store a message in the spool: %s", exc)
            return "451 4.3.0 Cannot store the message now; try again later"
        self.wake.set()
        return "250 2.0.0 Stored"


class Receiver:
    """The SMTP listener and the worker that processes the spool."""

    def __init__(self, engine: Engine, settings: Settings, host: str, port: int):
        if not settings.bounce_address:
            raise SettingsError("WIP_MAILER_BOUNCE_ADDRESS is not set: the receiver accepts mail only "
                                "for the bounce address and its VERP addresses.")
        settings.require_secret_key()
        self.engine = engine
        self.settings = settings
        self.spool = Spool(Path(settings.bounce_spool_dir))
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.controller = Controller(BounceHandler(settings, self.spool, self.wake), hostname=host,
                                     port=port, data_size_limit=MAX_MESSAGE_BYTES, decode_data=False)
        self._worker = threading.Thread(target=self._work, name="bounce-worker", daemon=True)

    def _process(self, raw: bytes) -> Processed:
        return process_message(self.engine, self.settings, raw, "smtp")

    def _work(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()
            _done, failed = self.spool.drain(self._process)
            self.wake.wait(RETRY_SECONDS if failed else 5.0)

    def start(self) -> None:
        try:
            self.controller.start()
        except (OSError, RuntimeError) as exc:
            host, port = self.controller.hostname, self.controller.port
            raise InvalidInputError(
                f"Cannot listen for SMTP on {host}:{port}: {getattr(exc, 'strerror', None) or exc}."
            ) from None
        self._worker.start()

    def stop(self) -> None:
        self.controller.stop()
        self.stopping.set()
        self.wake.set()
        if self._worker.is_alive():
            self._worker.join(timeout=60)

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
