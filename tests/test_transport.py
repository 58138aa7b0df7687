from email.message import EmailMessage

import pytest

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
