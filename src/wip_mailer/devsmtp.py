"""An embedded SMTP server that stores every message in a Maildir (for newcomers and tests)."""

from __future__ import annotations

import mailbox
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from wip_mailer.errors import InvalidInputError


@dataclass(frozen=True)
class Received:
    key: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    size: int


class MaildirHandler:
    """aiosmtpd handler: each accepted message becomes one file in the Maildir."""

    def __init__(self, maildir: Path, on_message: Callable[[Received], None] | None = None):
        self.maildir = mailbox.Maildir(str(maildir), create=True)
        self.on_message = on_message
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        headers = BytesHeaderParser(policy=default_policy).parsebytes(content)
        with self._lock:
            key = self.maildir.add(content)
        received = Received(
            key=key,
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            subject=str(headers.get("Subject", "")),
            size=len(content),
        )
        if self.on_message:
            self.on_message(received)
        return "250 Message accepted for delivery"


class CaptureServer:
    """A real SMTP server on a loopback port, run in a background thread."""

    def __init__(self, host: str, port: int, maildir: Path,
                 on_message: Callable[[Received], None] | None = None):
        self.handler = MaildirHandler(maildir, on_message)
        # Messages are large single-line HTML in naive senders; accept generous sizes.
        self.controller = Controller(
            self.handler, hostname=host, port=port, data_size_limit=50 * 1024 * 1024,
            server_kwargs={"decode_data": False},
        )

    def start(self) -> None:
        try:
            self.controller.start()
        except (OSError, RuntimeError) as exc:
            host, port = self.controller.hostname, self.controller.port
            raise InvalidInputError(
                f"Cannot listen for SMTP on {host}:{port}: {getattr(exc, 'strerror', None) or exc}."
            ) from None

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> CaptureServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
