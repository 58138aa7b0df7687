from email.message import EmailMessage

import pytest

from tests.test_personalise import dns_returning
from wip_mailer.errors import DeliveryError
from wip_mailer.settings import load_settings
from wip_mailer.transport import send_single


def _settings(port: int, **extra: str):
    env = {"WIP_MAILER_SMTP_HOST": "127.0.0.1", "WIP_MAILER_SMTP_PORT": str(port),
           "WIP_MAILER_SMTP_TIMEOUT": "5", **extra}
    from pathlib import Path

    return load_settings(env, Path("/nonexistent/.env"))


def test_send_single_reaches_the_server(smtp_server) -> None:
    message = EmailMessage()
    message["From"] = "Work in Progress <newsletter@example.org>"
    message["To"] = "Ada Rossi <ada@example.net>"
    message["Subject"] = "Conferma"
    message.set_content("ciao\n")
    send_single(_settings(smtp_server.port), message)
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ada@example.net"]]
    assert smtp_server.messages[0].mail_from == "newsletter@example.org"


def test_unreachable_server_is_one_sentence() -> None:
    from tests.smtp_server import free_port

    port = free_port()
    with pytest.raises(DeliveryError) as caught:
        send_single(_settings(port), EmailMessage())
    assert str(caught.value) == f"Cannot connect to the SMTP server 127.0.0.1:{port}: Connection refused."


def test_starttls_against_a_server_without_it(smtp_server) -> None:
    with pytest.raises(DeliveryError, match="does not offer STARTTLS"):
        send_single(_settings(smtp_server.port, WIP_MAILER_SMTP_SECURITY="starttls"), EmailMessage())


class _HeloRecorder:
    """An aiosmtpd handler that keeps the name each client gave in EHLO/HELO."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.names.append(session.host_name)
        return "250 OK"


@pytest.mark.parametrize("env, expected", [
    ({}, "torino.example.org"),  # the sender's domain, not the host's name lookup
    ({"WIP_MAILER_SMTP_HELO_NAME": "mail.torino.example.org"}, "mail.torino.example.org"),
])
def test_ehlo_names_the_sending_domain_or_the_setting(env: dict[str, str], expected: str) -> None:
    from aiosmtpd.controller import Controller

    from tests.smtp_server import free_port

    recorder = _HeloRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = _settings(port, WIP_MAILER_FROM="Work in Progress <newsletter@torino.example.org>", **env)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = settings.sender, "a@example.net", "Ciao"
        message.set_content("ciao")
        send_single(settings, message)
    finally:
        controller.stop()
    assert recorder.names == [expected]


def test_a_malformed_helo_name_is_refused() -> None:
    from wip_mailer.errors import SettingsError

    with pytest.raises(SettingsError, match="WIP_MAILER_SMTP_HELO_NAME must be a host name"):
        _settings(25, WIP_MAILER_SMTP_HELO_NAME="bad name")
    with pytest.raises(SettingsError, match="WIP_MAILER_SMTP_HELO_NAME contains a line break"):
        _settings(25, WIP_MAILER_SMTP_HELO_NAME="mail.example.org\r\nMAIL FROM")


def test_confirmation_emails_are_dkim_signed_like_the_newsletter(smtp_server, dkim_key) -> None:
    """A confirmation email is judged by the receiver like any other: with a key set, both the
    one-message path and the shared-connection path sign it, and the signature verifies."""
    import dkim

    from wip_mailer.audience.confirmation import ConfirmationRequest, send_confirmations

    key, record = dkim_key
    settings = _settings(smtp_server.port, WIP_MAILER_DKIM_KEY_FILE=str(key), WIP_MAILER_DKIM_SELECTOR="wip",
                         WIP_MAILER_DKIM_DOMAIN="torino.example.org",
                         WIP_MAILER_SECRET_KEY="transport-test-secret-0123456789abcdef")
    requests = [ConfirmationRequest(n, 1, f"persona{n}@example.net", f"Persona {n}", "it", "stampa", "")
                for n in (1, 2, 3)]
    assert send_confirmations(settings, requests[:1]) == 1
    assert send_confirmations(settings, requests[1:]) == 2
    received = smtp_server.messages
    assert [m.rcpt_tos for m in received] == [[r.email] for r in requests]
    for message in received:
        assert message.data.startswith(b"DKIM-Signature:")
        assert dkim.verify(message.data, dnsfunc=dns_returning(record))
