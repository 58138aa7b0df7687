"""A real SMTP server for tests (aiosmtpd on loopback) that records messages and injects faults.

Faults are set per test: a reply for a recipient (or every address of a domain) at RCPT or DATA, a 421 after N
messages, a connection dropped before the final dot, or after it with or without the
message stored, a slow reply (before or after storing). Everything accepted is recorded,
with the times its MAIL FROM and its final dot arrived.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import SMTP as SMTP_POLICY
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_at: float = 0.0  # time.time() when its MAIL FROM arrived
    received_at: float = 0.0  # ... and when its final dot did

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data, policy=SMTP_POLICY)


@dataclass
class Faults:
    rcpt_replies: dict[str, list[str]] = field(default_factory=dict)  # address -> replies, used in turn
    # domain -> replies at RCPT for each address of that domain, used in turn per address
    # (["451 ...", "250"]: every address there is deferred once, then accepted)
    domain_rcpt_replies: dict[str, list[str]] = field(default_factory=dict)
    data_replies: dict[str, list[str]] = field(default_factory=dict)
    close_after_messages: int | None = None  # reply 421 and close after this many messages
    drop_after_messages: int | None = None  # drop the connection (no reply, not stored) after this many
    data_delay_seconds: float = 0.0  # wait this long before storing and replying
    drop_before_dot: int = 0  # this many DATA commands: answer 354, read 64 KiB, hang up
    store_then_drop: int = 0  # this many messages: store, then hang up without replying
    store_then_delay_seconds: float = 0.0  # store at once, answer this much later
    always_421: bool = False  # every message: reply 421 and close, store nothing (a relay in trouble)


class FaultyHandler:
    def __init__(self) -> None:
        self.messages: list[ReceivedMessage] = []
        self.faults = Faults()
        self.lock = threading.Lock()
        self.accepted_in_session: dict[int, int] = {}
        self.rcpt_seen: list[str] = []

    @staticmethod
    def _take(replies: dict[str, list[str]], address: str) -> str | None:
        queue = replies.get(address.lower())
        if queue:
            return queue.pop(0) if len(queue) > 1 else queue[0]
        return None

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.mail_at = time.time()  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        with self.lock:
            domain = address.rpartition("@")[2].lower()
            if address.lower() not in self.faults.rcpt_replies and domain in self.faults.domain_rcpt_replies:
                self.faults.rcpt_replies[address.lower()] = list(self.faults.domain_rcpt_replies[domain])
            reply = self._take(self.faults.rcpt_replies, address)
            self.rcpt_seen.append(address.lower())
        if reply and not reply.startswith("250"):  # a queued "250" means: accept this time
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.faults.data_delay_seconds:
            await asyncio.sleep(self.faults.data_delay_seconds)
        key = id(session)
        with self.lock:
            count = self.accepted_in_session.get(key, 0)
            if self.faults.drop_after_messages is not None and count >= self.faults.drop_after_messages:
                self.faults.drop_after_messages = None
                server.transport.close()  # type: ignore[union-attr]
                return "421 dropped"  # never reaches the client
            if self.faults.always_421:
                asyncio.get_running_loop().call_soon(server.transport.close)  # type: ignore[union-attr]
                return "421 4.3.2 Too busy, try another relay"
            if self.faults.close_after_messages is not None and count >= self.faults.close_after_messages:
                self.faults.close_after_messages = None
                # Close right after this reply is written (push happens before the next loop turn;
                # close() flushes the buffer), so the client reads the 421 and then sees EOF.
                asyncio.get_running_loop().call_soon(server.transport.close)  # type: ignore[union-attr]
                return "421 4.3.2 Service shutting down"
            for address in envelope.rcpt_tos:
                reply = self._take(self.faults.data_replies, address)
                if reply and not reply.startswith("250"):
                    return reply
            self.accepted_in_session[key] = count + 1
            self.messages.append(ReceivedMessage(
                envelope.mail_from or "", list(envelope.rcpt_tos), envelope.original_content or b"",
                getattr(envelope, "mail_at", 0.0), time.time(),
            ))
            if self.faults.store_then_drop > 0:
                self.faults.store_then_drop -= 1
                server.transport.close()  # type: ignore[union-attr]
                return "250 never seen"
        if self.faults.store_then_delay_seconds:
            await asyncio.sleep(self.faults.store_then_delay_seconds)
        return "250 OK queued"

    def take_drop_before_dot(self) -> bool:
        with self.lock:
            if self.faults.drop_before_dot > 0:
                self.faults.drop_before_dot -= 1
                return True
        return False


class FaultySMTP(SMTP):
    """aiosmtpd's server, able to hang up in the middle of DATA (before the final dot).

    Its receive buffer is small, so a message larger than the client's send buffer is still
    being written when the server hangs up: the hang-up really lands before the final dot.
    """

    RECEIVE_BUFFER = 64 * 1024

    def connection_made(self, transport: Any) -> None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                                      self.RECEIVE_BUFFER)
        super().connection_made(transport)

    async def smtp_DATA(self, arg: str) -> None:
        handler = self.event_handler
        if self.envelope is not None and self.envelope.rcpt_tos and handler.take_drop_before_dot():
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readexactly(self.RECEIVE_BUFFER)  # part of the message, then hang up
            assert self.transport is not None
            self.transport.close()
            return
        await super().smtp_DATA(arg)


class FaultyController(Controller):
    def factory(self) -> SMTP:
        return FaultySMTP(self.handler, **self.SMTP_kwargs)


class SmtpTestServer:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None, **kwargs: Any):
        self.handler = FaultyHandler()
        self.host = host
        self.port = port or free_port()
        self.controller = FaultyController(self.handler, hostname=host, port=self.port,
                                     data_size_limit=50 * 1024 * 1024, **kwargs)

    @property
    def messages(self) -> list[ReceivedMessage]:
        return self.handler.messages

    def received_by_address(self) -> dict[str, int]:
        """How many messages each envelope recipient got."""
        counts: dict[str, int] = {}
        for message in self.messages:
            for address in message.rcpt_tos:
                counts[address.lower()] = counts.get(address.lower(), 0) + 1
        return counts

    @property
    def faults(self) -> Faults:
        return self.handler.faults

    def start(self) -> None:
        self.controller.start()

    def stop_listening(self) -> None:
        """Refuse new connections from now on; the sessions already open go on to their end."""
        server = self.controller.server
        assert server is not None
        self.controller.loop.call_soon_threadsafe(server.close)

    def stop(self) -> None:
        self.controller.stop()
