"""One SMTP session used for many messages (after GNU Mailman's Connection).

Opened lazily, closed after ``cap`` messages (servers limit messages per session)
and closed on any error; the next message opens a fresh one. The transaction is
driven step by step instead of ``smtplib.SMTP.sendmail`` because

- the payload is already CRLF and dot-stuffed by ``personalise`` once per edition,
  so sendmail's per-message ``_fix_eols``/``_quote_periods`` regex passes over 60 KB
  are pure waste at thousands of messages per second;
- MAIL, RCPT and DATA go in one write when the server offers PIPELINING (RFC 2920);
- the final dot is the moment of hand-over, and it is kept apart from the body.

The body is written first, then, if the server has not hung up meanwhile, ``before_dot``
runs (the runner journals ``B`` and checks its lease there; it may withdraw the message,
which closes the session so the server discards the body), and only then the ``.``.
Before the dot nothing can have been stored, so any failure is safe to retry. After it,
anything but a clear reply — a timeout (which smtplib reports as a disconnection), a hang-up,
a garbled reply — means the server may have the message: ``IN_DOUBT``, never retried.

Every outcome is one ``SendResult``; nothing here touches the database.
"""

from __future__ import annotations

import re
import select
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from wip_mailer.errors import DeliveryError
from wip_mailer.fields import UNSAFE_IN_ADDRESS
from wip_mailer.personalise import Outgoing
from wip_mailer.settings import Settings
from wip_mailer.transport import connect

# Reply codes (RFC 5321 §4.2.3).
OK, WILL_FORWARD, START_DATA = 250, 251, 354
SERVICE_CLOSING = 421
AUTHENTICATION_REQUIRED = 530  # "Must issue a STARTTLS command first" or "Authentication required"
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # 2xx after the data: the server took responsibility
    RETRY = "retry"  # not accepted because of the session (421, drop, timeout before data): resend now
    DEFERRED = "deferred"  # 4xx for this message: retry later
    FAILED = "failed"  # 5xx for this message: never retry
    IN_DOUBT = "in_doubt"  # the final dot was sent and no clear reply came: the server may have it
    WITHDRAWN = "withdrawn"  # ``before_dot`` declined: the session was closed before the dot


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    reply: str
    hard_bounce: bool = False  # a 5xx that says the address itself is bad: suppress it


def _peer_spoke_or_left(client: smtplib.SMTP) -> bool:
    """Whether the socket is readable in the middle of DATA: a hang-up, a reset or a stray reply."""
    sock = client.sock
    if sock is None:
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class SenderRefusedError(DeliveryError):
    """The server refuses the sender itself (5xx to MAIL FROM): every message would fail."""

    def __init__(self, message: str, reply: str = ""):
        super().__init__(message)
        self.reply = reply  # the server's words, for whoever wants more than the sentence


def _reply_text(code: int, message: bytes) -> str:
    text = message.decode("utf-8", "replace").replace("\n", " ").strip()
    return f"{code} {text}".strip()[:500]


# Words that put the blame on the message, the sender or the relay rather than on the
# address, in replies that carry no enhanced status code ("550 Relaying denied").
_NOT_THE_ADDRESS = re.compile(
    r"relay|rcpthosts|spam|polic|block|blacklist|blocklist|listed|reputation|denied|reject|content|virus"
    r"|dmarc|spf|dkim|authenticat|not allowed|too many|rate limit|quota|storage|full|size|too large",
    re.IGNORECASE)


def is_hard_bounce(code: int, reply: str) -> bool:
    """Whether a 5xx reply says the address itself is bad, so that it must be suppressed.

    With an enhanced code (RFC 3463): X.1.x, the address (but X.1.7 and X.1.8 are the
    sender's), and X.2.1, mailbox disabled; mailbox full (X.2.2), message too big (X.2.3),
    policy (X.7.x), system and content rejections are failures of this message only.
    Without one, 550/551/553 count unless the text blames something else.
    """
    if code < 500:
        return False
    text = reply.split(" ", 1)[1] if " " in reply else ""
    match = _ENHANCED.match(text)
    if match:
        subject, detail = int(match[2]), int(match[3])
        return match[1] == "5" and ((subject == 1 and detail not in (7, 8)) or (subject, detail) == (2, 1))
    return code in (550, 551, 553) and not _NOT_THE_ADDRESS.search(text)


class SmtpSender(Protocol):
    """What a sending thread uses: a ``Connection``, or a ``relays.RelayConnection`` over several."""

    @property
    def relay(self) -> str: ...  # the relay the last message went to, recorded in the ledger

    def send(self, message: Outgoing, before_dot: Callable[[], bool] | None = None) -> SendResult: ...
    def close(self) -> None: ...


class Connection:
    def __init__(self, settings: Settings, cap: int | None = None):
        self.settings = settings
        self.cap = cap or settings.smtp_messages_per_connection
        self._client: smtplib.SMTP | None = None
        self._pipelining = False
        self._dot_sent = False
        self.sent_in_session = 0
        self.sessions = 0
        self.relay = f"{settings.smtp_host}:{settings.smtp_port}"  # recorded with each message sent

    # -- session ------------------------------------------------------------------------
    def _session(self) -> smtplib.SMTP:
        if self._client is None:
            client = connect(self.settings)  # raises DeliveryError with a clear sentence
            self._client = client
            self._pipelining = client.has_extn("pipelining")
            self.sent_in_session = 0
            self.sessions += 1
        return self._client

    def close(self, *, polite: bool = True) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if polite:
                client.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            client.close()

    def _reply(self, client: smtplib.SMTP) -> tuple[int, str]:
        code, message = client.getreply()
        return code, _reply_text(code, message)

    # -- one message --------------------------------------------------------------------
    def send(self, message: Outgoing, before_dot: Callable[[], bool] | None = None) -> SendResult:
        """Send one message; ``before_dot`` runs just before the final dot and may withdraw it.

        Raises DeliveryError only when the server cannot be reached or refuses the sender.
        """
        client = self._session()
        self._dot_sent = False
        try:
            result = self._transaction(client, message, before_dot)
        except (OSError, smtplib.SMTPException) as exc:  # timeouts, hang-ups, resets
            self.close(polite=False)
            reason = str(exc) or type(exc).__name__
            if self._dot_sent:
                return SendResult(Outcome.IN_DOUBT, f"no reply after the end of the message ({reason}); "
                                                    "the server may have it, so it is not resent")
            return SendResult(Outcome.RETRY, f"connection lost before the end of the message ({reason}); "
                                             "resent on a new connection")
        if result.outcome in (Outcome.RETRY, Outcome.IN_DOUBT, Outcome.WITHDRAWN):
            self.close(polite=False)
        elif self.sent_in_session >= self.cap:
            self.close()
        return result

    def _transaction(self, client: smtplib.SMTP, message: Outgoing,
                     before_dot: Callable[[], bool] | None) -> SendResult:
        # Defence in depth: an address that could end the command early never goes out.
        if UNSAFE_IN_ADDRESS.search(message.envelope_from):
            raise SenderRefusedError(f"The envelope sender {message.envelope_from[:80]!r} contains a space, "
                                     "a control character or an angle bracket; nothing was sent.")
        if UNSAFE_IN_ADDRESS.search(message.recipient):
            return SendResult(Outcome.FAILED, "the recipient address contains a space, a control character "
                                              "or an angle bracket; not sent")
        mail = f"MAIL FROM:<{message.envelope_from}>\r\n".encode("ascii")
        rcpt = f"RCPT TO:<{message.recipient}>\r\n".encode("ascii")
        if self._pipelining:
            client.send(mail + rcpt + b"DATA\r\n")
            replies = [self._reply(client), self._reply(client), self._reply(client)]
        else:
            replies = []
            for command in (mail, rcpt, b"DATA\r\n"):
                client.send(command)
                replies.append(self._reply(client))
                if replies[-1][0] not in (OK, WILL_FORWARD, START_DATA):
                    break
        (mail_code, mail_reply) = replies[0]
        if any(code == SERVICE_CLOSING for code, _ in replies):
            reply = next(text for code, text in replies if code == SERVICE_CLOSING)
            return SendResult(Outcome.RETRY, reply)
        if mail_code != OK:
            self._abort(client, replies)
            if mail_code == AUTHENTICATION_REQUIRED:
                raise SenderRefusedError(self._session_refused(mail_reply), mail_reply)
            if mail_code >= 500:
                raise SenderRefusedError(
                    f"The SMTP server refuses the sender {message.envelope_from}: {mail_reply}.", mail_reply)
            return SendResult(Outcome.DEFERRED, mail_reply)
        rcpt_code, rcpt_reply = replies[1] if len(replies) > 1 else (0, "")
        if rcpt_code not in (OK, WILL_FORWARD):
            self._abort(client, replies)
            if rcpt_code >= 500:
                return SendResult(Outcome.FAILED, rcpt_reply, is_hard_bounce(rcpt_code, rcpt_reply))
            return SendResult(Outcome.DEFERRED, rcpt_reply)
        data_code, data_reply = replies[2] if len(replies) > 2 else (0, "")
        if data_code != START_DATA:
            self._abort(client, replies)
            outcome = Outcome.FAILED if data_code >= 500 else Outcome.DEFERRED
            return SendResult(outcome, data_reply)
        return self._hand_over(client, message.smtp_data, before_dot)

    def _hand_over(self, client: smtplib.SMTP, data: bytes, before_dot: Callable[[], bool] | None
                   ) -> SendResult:
        """Write the body, then the final dot, and read the one reply that says what became of it."""
        assert data.endswith(b"\r\n.\r\n")
        client.send(data[:-3])
        if _peer_spoke_or_left(client):
            # The server hung up (or broke the protocol) before the end of the message: it cannot
            # have stored it (RFC 5321 §4.1.1.4), so it is safe to send again.
            return SendResult(Outcome.RETRY, "the server closed the connection before the end of the "
                                             "message; resent on a new connection")
        if before_dot is not None and not before_dot():
            return SendResult(Outcome.WITHDRAWN, "withdrawn before the end of the message")
        self._dot_sent = True
        client.send(data[-3:])
        code, reply = self._reply(client)  # a timeout or hang-up here raises: in doubt (see send)
        self.sent_in_session += 1
        if 200 <= code < 300:
            return SendResult(Outcome.ACCEPTED, reply)
        if code == SERVICE_CLOSING:
            return SendResult(Outcome.RETRY, reply)  # a clear "not taken, closing"
        if 500 <= code < 600:
            return SendResult(Outcome.FAILED, reply, is_hard_bounce(code, reply))
        if 400 <= code < 500:
            return SendResult(Outcome.DEFERRED, reply)
        return SendResult(Outcome.IN_DOUBT, f"unreadable reply after the end of the message ({reply}); "
                                            "the server may have it, so it is not resent")

    def _session_refused(self, reply: str) -> str:
        """One sentence for a 530 to MAIL: the session needs TLS or a login the settings lack."""
        where = f"The SMTP server {self.settings.smtp_host}:{self.settings.smtp_port}"
        if "tls" in reply.lower() and self.settings.smtp_security == "none":
            return (f"{where} requires an encrypted connection ({reply}): set WIP_MAILER_SMTP_SECURITY="
                    "starttls (or tls on port 465); nothing was sent.")
        if not self.settings.smtp_user:
            return (f"{where} requires a login ({reply}): set WIP_MAILER_SMTP_USER and "
                    "WIP_MAILER_SMTP_PASSWORD; nothing was sent.")
        return f"{where} refuses to send for this session ({reply}); nothing was sent."

    def _abort(self, client: smtplib.SMTP, replies: list[tuple[int, str]]) -> None:
        """End a refused transaction so the session can carry on with the next message."""
        if replies and len(replies) == 3 and replies[2][0] == START_DATA:
            client.send(b".\r\n")  # a server that said 354 anyway gets an empty message to reject
            self._reply(client)
        client.send(b"RSET\r\n")
        self._reply(client)
