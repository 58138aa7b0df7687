"""Opening SMTP connections as the settings say (none | starttls | tls, AUTH), and the DKIM
signature every message carries when a key is configured.

Shared by dispatch (bulk sending), audience (confirmation emails) and schedule (reminders).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path

from wip_mailer.errors import DeliveryError, SettingsError
from wip_mailer.settings import Settings

# Headers the DKIM signature covers (RFC 8058 §4 asks for the List-Unsubscribe pair).
DKIM_HEADERS = (
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"List-Id",
    b"List-Unsubscribe", b"List-Unsubscribe-Post", b"Reply-To", b"MIME-Version", b"Content-Type",
)
# Oversigned (RFC 6376 §8.15): named once more than they occur, so a second copy added
# above the signature (a forged Subject:, another List-Unsubscribe:) breaks it. Reply-To is
# oversigned too: signed when present, and its absence is signed when it is not.
DKIM_OVERSIGNED = (
    b"From", b"To", b"Subject", b"Date", b"List-Unsubscribe", b"List-Unsubscribe-Post", b"Reply-To",
)


# --- DKIM ----------------------------------------------------------------------------------

class DkimSigner:
    """Signs finished messages with the configured key (dkimpy, relaxed/relaxed)."""

    def __init__(self, settings: Settings):
        if not (settings.dkim_selector and settings.dkim_domain):
            raise SettingsError(
                "WIP_MAILER_DKIM_KEY_FILE is set, so WIP_MAILER_DKIM_SELECTOR and "
                "WIP_MAILER_DKIM_DOMAIN must be set too."
            )
        try:
            self.key = Path(settings.dkim_key_file).read_bytes()
        except OSError as exc:
            raise SettingsError(
                f"WIP_MAILER_DKIM_KEY_FILE {settings.dkim_key_file} cannot be read: {exc.strerror}."
            ) from None
        self.selector = settings.dkim_selector.encode("ascii")
        self.domain = settings.dkim_domain.encode("ascii")

    def signature(self, message: bytes) -> bytes:
        import dkim

        try:
            return bytes(dkim.sign(message, self.selector, self.domain, self.key,
                                   canonicalize=(b"relaxed", b"relaxed"),
                                   include_headers=[*DKIM_HEADERS, *DKIM_OVERSIGNED]))
        except dkim.KeyFormatError:
            raise SettingsError("WIP_MAILER_DKIM_KEY_FILE does not hold a PEM private key.") from None


def wire_bytes(settings: Settings, message: EmailMessage, signer: DkimSigner | None = None) -> bytes:
    """``message`` as it goes to the server: CRLF lines, DKIM-signed when a key is configured
    (a confirmation email is judged by the receiver like any other)."""
    data = message.as_bytes(policy=SMTP_POLICY)
    if signer is None and settings.dkim_enabled:
        signer = DkimSigner(settings)
    return signer.signature(data) + data if signer is not None else data


# --- connections -----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # Verifies certificates and host names; built once (it costs ~20 ms) and shared.
    return ssl.create_default_context()


def connect(settings: Settings) -> smtplib.SMTP:
    """A connected, authenticated SMTP client; raises DeliveryError with a clear sentence."""
    host, port, timeout = settings.smtp_host, settings.smtp_port, settings.smtp_timeout
    # EHLO names the sending domain, not whatever the host's name lookup gives ("localhost").
    client: smtplib.SMTP
    try:
        if settings.smtp_security == "tls":
            client = smtplib.SMTP_SSL(host, port, local_hostname=settings.helo_name, timeout=timeout,
                                      context=_tls_context())
        else:
            client = smtplib.SMTP(host, port, local_hostname=settings.helo_name, timeout=timeout)
        # The final dot goes out in a write of its own (see dispatch.connection): without
        # NODELAY, Nagle's algorithm would hold it until the body's last segment is acknowledged.
        if client.sock is not None:
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.ehlo()
        if settings.smtp_security == "starttls":
            client.starttls(context=_tls_context())
            client.ehlo()
        if settings.smtp_user:
            client.login(settings.smtp_user, settings.smtp_password)
    except smtplib.SMTPAuthenticationError:
        raise DeliveryError(
            f"The SMTP server {host}:{port} refused the login for {settings.smtp_user!r}: "
            "check WIP_MAILER_SMTP_USER and WIP_MAILER_SMTP_PASSWORD."
        ) from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"TLS with the SMTP server {host}:{port} failed: {exc.reason}.") from None
    except smtplib.SMTPNotSupportedError:
        raise DeliveryError(
            f"The SMTP server {host}:{port} does not offer STARTTLS or AUTH as configured."
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        reason = _connect_reason(exc)
        raise DeliveryError(f"Cannot connect to the SMTP server {host}:{port}: {reason}.") from None
    return client


def _connect_reason(exc: OSError | smtplib.SMTPException) -> str:
    """Why a session could not start, in words (smtplib's own messages show bytes and tuples)."""
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, smtplib.SMTPServerDisconnected) and "timed out" in str(exc):
        return "timed out waiting for the server's reply"  # smtplib reports a read timeout so
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        # Busy servers greet and hang up; a TLS-only port (465) says nothing to a plain client.
        return ("the server closed the connection before the session started "
                "(too busy, or it expects WIP_MAILER_SMTP_SECURITY=tls)")
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        reply = f"{exc.smtp_code} {' '.join(text.split())}".strip()
        if isinstance(exc, smtplib.SMTPConnectError):
            return f"the server refused the connection ({reply})"
        return f"the server replied {reply}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def send_single(settings: Settings, message: EmailMessage) -> None:
    """Send one message on its own connection (confirmation emails, tests)."""
    client = connect(settings)
    try:
        envelope_from = settings.bounce_address or settings.sender_address
        recipient = parseaddr(str(message["To"]))[1]
        client.sendmail(envelope_from, [recipient], wire_bytes(settings, message))
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(f"The SMTP server refused {message['To']}: {exc.recipients}.") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"Sending to {message['To']} failed: {exc}.") from None
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
