"""Personalisation: pre-encoded segments must decode to exactly the str.replace result."""

from __future__ import annotations

import html
import random
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import dkim
import pytest

from tests.dispatch_helpers import PREFS, UNSUB, rendered_edition
from wip_mailer.audience import preferences_url, unsubscribe_url
from wip_mailer.errors import InvalidInputError
from wip_mailer.personalise import (
    Addressee,
    HeaderInjectionError,
    MessageTemplate,
    UnsendableAddressError,
    delivery_message_id,
    qp_segment,
    verp_address,
)
from wip_mailer.render import RenderedEdition
from wip_mailer.settings import Settings, load_settings
from wip_mailer.tokens import Purpose, read_token

SECRET = "personalise-test-secret-0123456789abcdef"


def make_settings(**extra: str) -> Settings:
    env = {"WIP_MAILER_SECRET_KEY": SECRET, "WIP_MAILER_BASE_URL": "https://news.example.org",
           "WIP_MAILER_FROM": "Città di Torino – Work in Progress <newsletter@torino.example.org>", **extra}
    return load_settings(env, Path("/nonexistent/.env"))


def parse(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def expected_parts(settings: Settings, rendered: RenderedEdition, subscriber_id: int, list_id: int,
                   campaign_id: int | None = None) -> tuple[str, str]:
    """The straightforward personalisation the fast path must equal (the unsubscribe link of a
    campaign's message names the campaign)."""
    unsub = unsubscribe_url(settings, subscriber_id, list_id, campaign_id)
    prefs = preferences_url(settings, subscriber_id, list_id)
    text = rendered.text.replace(UNSUB, unsub).replace(PREFS, prefs)
    body = rendered.html.replace(UNSUB, html.escape(unsub)).replace(PREFS, html.escape(prefs))
    return text, body


def decoded_parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    body = message.get_body(("html",))
    assert text is not None and body is not None
    return (text.get_content().replace("\r\n", "\n"), body.get_content().replace("\r\n", "\n"))


def test_parts_decode_to_the_plainly_personalised_html_and_text() -> None:
    settings = make_settings(WIP_MAILER_BOUNCE_ADDRESS="bounces@torino.example.org")
    rendered = rendered_edition()
    template = MessageTemplate(settings, rendered, campaign_id=7, list_names={3: "Newsletter IT"})
    for subscriber_id in (1, 42, 123456789):
        addressee = Addressee("ada@example.net", "Ada Rossi", subscriber_id, 3, 1000 + subscriber_id)
        outgoing = template.build(addressee)
        message = parse(outgoing.message_bytes)
        assert decoded_parts(message) == expected_parts(settings, rendered, subscriber_id, 3, 7)


def test_every_header_a_bulk_sender_needs() -> None:
    settings = make_settings(WIP_MAILER_BOUNCE_ADDRESS="bounces@torino.example.org",
                             WIP_MAILER_REPLY_TO="relint@torino.example.org")
    template = MessageTemplate(settings, rendered_edition(), campaign_id=7, list_names={3: "Newsletter IT"})
    outgoing = template.build(Addressee("ada@example.net", "Àda Rössi-Ünver", 5, 3, 99))
    message = parse(outgoing.message_bytes)
    assert message["From"] == "Città di Torino – Work in Progress <newsletter@torino.example.org>"
    assert message["To"] == "Àda Rössi-Ünver <ada@example.net>"
    assert message["Subject"] == "Work in Progress – Gennaio-Febbraio 2024"
    assert message["Reply-To"] == "relint@torino.example.org"
    assert message["Date"].datetime is not None
    assert message["Message-ID"] == f"<{delivery_message_id(settings, 7, 99)}>"
    assert message["List-Id"] == "Città di Torino – Work in Progress <newsletter-it.torino.example.org>"
    unsub = unsubscribe_url(settings, 5, 3, 7)  # the link names the campaign
    token = unsub.rpartition("/")[2]
    assert message["List-Unsubscribe"] == (
        f"<{unsub}>, <mailto:bounces@torino.example.org?subject=unsubscribe%20{token}>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert read_token(SECRET, Purpose.UNSUBSCRIBE, token).subscriber_id == 5
    # The envelope: one recipient, a VERP return path naming the delivery.
    assert outgoing.recipient == "ada@example.net"
    assert outgoing.envelope_from == verp_address(settings, 99)
    assert outgoing.envelope_from.startswith("bounces+99-") and outgoing.envelope_from.endswith(
        "@torino.example.org")
    raw_headers = outgoing.message_bytes.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in raw_headers and "Àda".encode() not in raw_headers  # RFC 2047, 7-bit headers


def test_without_a_bounce_address_the_unsubscribe_header_is_https_only() -> None:
    settings = make_settings()
    outgoing = MessageTemplate(settings, rendered_edition()).build(Addressee("a@example.net", "", 1, 1))
    message = parse(outgoing.message_bytes)
    assert message["List-Unsubscribe"] == f"<{unsubscribe_url(settings, 1, 1)}>"
    assert message["To"] == "a@example.net"
    assert outgoing.envelope_from == "newsletter@torino.example.org"


def test_crlf_only_and_no_line_over_998_bytes() -> None:
    rendered = rendered_edition(items=200)  # the HTML is one line of ~45 KB
    assert max(len(line) for line in rendered.html.split("\n")) > 998
    outgoing = MessageTemplate(make_settings(), rendered).build(Addressee("a@example.net", "A" * 150, 1, 1))
    data = outgoing.message_bytes
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    body_lines = data.split(b"\r\n\r\n", 1)[1].split(b"\r\n")
    assert max(len(line) for line in body_lines) <= 76  # quoted-printable's own limit


def test_smtp_data_is_dot_stuffed_and_terminated() -> None:
    template = MessageTemplate(make_settings(), rendered_edition())
    outgoing = template.build(Addressee("a@example.net", "", 1, 1))
    assert outgoing.smtp_data.endswith(b"\r\n.\r\n")
    assert b"\r\n.Riga" in outgoing.message_bytes  # the text part has lines starting with a dot
    stuffed = outgoing.smtp_data[:-3]
    assert all(not line.startswith(b".") or line.startswith(b"..") for line in stuffed.split(b"\r\n"))
    assert stuffed.replace(b"\r\n..", b"\r\n.") == outgoing.message_bytes


@pytest.mark.parametrize("name", ["Ada\r\nBcc: victim@example.com", "Ada\nBcc: x@example.com", "Ada\rX"])
def test_a_name_with_a_line_break_is_refused(name: str) -> None:
    template = MessageTemplate(make_settings(), rendered_edition())
    with pytest.raises(HeaderInjectionError, match="contains a line break"):
        template.build(Addressee("a@example.net", name, 1, 1))


def test_a_subject_with_a_line_break_is_refused() -> None:
    rendered = rendered_edition(subject="Work in Progress\r\nBcc: everyone@example.com")
    with pytest.raises(HeaderInjectionError) as caught:
        MessageTemplate(make_settings(), rendered)
    assert str(caught.value).startswith("The subject 'Work in Progress\\r\\nBcc")


def test_an_edition_without_an_unsubscribe_link_is_refused() -> None:
    rendered = RenderedEdition("Subject", "<p>no link</p>", f"text {UNSUB}")
    with pytest.raises(InvalidInputError, match="HTML part has no unsubscribe link"):
        MessageTemplate(make_settings(), rendered)


def test_international_addresses() -> None:
    template = MessageTemplate(make_settings(), rendered_edition())
    expected = "ada@" + "città.example".encode("idna").decode()
    assert expected.startswith("ada@xn--")
    assert template.build(Addressee("ada@città.example", "", 1, 1)).recipient == expected
    with pytest.raises(UnsendableAddressError, match="SMTPUTF8"):
        template.build(Addressee("àda@example.net", "", 1, 1))


def test_awkward_texts_survive_the_segment_encoding() -> None:
    """Random texts with QP traps: '=', dots and spaces at line ends, U+0085/U+2028, 75-char edges."""
    rng = random.Random(20240101)
    alphabet = [*"abc xyz=.\t", "\n", "\r\n", "à", "€", "\u0085", "\u2028", "😀", "=3D", "  \n"]
    settings = make_settings(WIP_MAILER_BASE_URL="https://news.example.org/p?a=b&c=d")
    for case in range(150):
        def chunk() -> str:
            return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 74, 75, 76, 77, 150, 400])))
        text = chunk() + UNSUB + chunk() + PREFS + chunk() + UNSUB + chunk()
        body = "<p>" + chunk() + f'<a href="{UNSUB}">x</a>' + chunk()
        rendered = RenderedEdition("Subject", body, text)
        outgoing = MessageTemplate(settings, rendered).build(Addressee("a@example.net", "", case, 2))
        message = parse(outgoing.message_bytes)
        expected = tuple(part.replace("\r\n", "\n").replace("\r", "\n")
                         for part in expected_parts(settings, rendered, case, 2))
        assert decoded_parts(message) == expected, f"case {case}"
        assert max(len(line) for line in outgoing.message_bytes.split(b"\r\n")) <= 998


def test_a_segment_never_ends_with_a_line_over_76() -> None:
    for length in range(70, 80):
        encoded = qp_segment("x" * length, last=False)
        assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
        assert encoded.endswith(b"=\r\n")


def dns_returning(record: bytes, name: bytes = b"wip._domainkey.torino.example.org."):
    def dnsfunc(query: bytes, timeout: int = 5) -> bytes | None:
        return record if query == name else None  # the one thing faked: DNS
    return dnsfunc


def test_dkim_signature_covers_the_unsubscribe_headers_and_verifies(dkim_key: tuple[Path, bytes]) -> None:
    key, record = dkim_key
    settings = make_settings(WIP_MAILER_DKIM_KEY_FILE=str(key), WIP_MAILER_DKIM_SELECTOR="wip",
                             WIP_MAILER_DKIM_DOMAIN="torino.example.org")
    outgoing = MessageTemplate(settings, rendered_edition()).build(Addressee("a@example.net", "Àda", 1, 1, 5))
    data = outgoing.message_bytes
    assert dkim.verify(data, dnsfunc=dns_returning(record))
    signature = parse(data)["DKIM-Signature"]
    signed = {h.strip().lower() for h in signature.split("h=")[1].split(";")[0].replace(" ", "").split(":")}
    assert {"from", "subject", "list-unsubscribe", "list-unsubscribe-post"} <= signed
    tampered = data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                            b"List-Unsubscribe-Post: List-Unsubscribe=One-Clack")
    assert not dkim.verify(tampered, dnsfunc=dns_returning(record))


def _signed_and_tampered(dkim_key: tuple[Path, bytes], extra: bytes, **env: str) -> tuple[bytes, bytes]:
    key, _record = dkim_key
    settings = make_settings(WIP_MAILER_DKIM_KEY_FILE=str(key), WIP_MAILER_DKIM_SELECTOR="wip",
                             WIP_MAILER_DKIM_DOMAIN="torino.example.org", **env)
    data = MessageTemplate(settings, rendered_edition()).build(Addressee("a@example.net", "Ada", 1, 1, 5)
                                                               ).message_bytes
    assert data.startswith(b"DKIM-Signature:"), "the signature is the first header"
    return data, extra + data  # a header added above the signature, as a forwarder could


@pytest.mark.parametrize("extra", [
    b"Subject: =?utf-8?q?Vinci_un_premio?=\r\n",
    b"List-Unsubscribe: <https://attacker.example.net/u>\r\n",
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
    b"From: Someone Else <ceo@torino.example.org>\r\n",
    b"To: other@example.net\r\n",
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n",
    b"Reply-To: attacker@example.net\r\n",
], ids=["subject", "list-unsubscribe", "list-unsubscribe-post", "from", "to", "date", "reply-to"])
def test_a_header_added_above_the_signature_breaks_it(dkim_key: tuple[Path, bytes], extra: bytes) -> None:
    """Oversigning: each header is named once more than it occurs, so a second copy (which a
    reader would see first) no longer verifies."""
    _key, record = dkim_key
    data, tampered = _signed_and_tampered(dkim_key, extra)
    assert dkim.verify(data, dnsfunc=dns_returning(record))
    assert not dkim.verify(tampered, dnsfunc=dns_returning(record))


def test_reply_to_is_signed_when_present(dkim_key: tuple[Path, bytes]) -> None:
    _key, record = dkim_key
    data, _ = _signed_and_tampered(dkim_key, b"", WIP_MAILER_REPLY_TO="redazione@torino.example.org")
    assert b"\r\nReply-To: redazione@torino.example.org\r\n" in data
    assert dkim.verify(data, dnsfunc=dns_returning(record))
    changed = data.replace(b"Reply-To: redazione@", b"Reply-To: attacker@")
    assert not dkim.verify(changed, dnsfunc=dns_returning(record))
    signed = parse(data)["DKIM-Signature"].split("h=")[1].split(";")[0].replace(" ", "").lower().split(":")
    assert signed.count("reply-to") == 2 and signed.count("subject") == 2


@pytest.mark.parametrize("length", range(60, 90))
def test_every_encoded_line_is_at_most_76_characters(length: int) -> None:
    """binascii encodes a space at a line's end as =20 past the limit; the segments stay within."""
    text = f"{'a' * length} \n{'b' * length}\t\n  \n{'c' * (length - 3)}=  \n"
    html = f"<p>{'d' * length} </p>\n<p class=\"item-date\">9-11 gennaio </p>\n"
    rendered = RenderedEdition("Subject", html + f'<a href="{UNSUB}">x</a>', text + UNSUB)
    settings = make_settings()
    data = MessageTemplate(settings, rendered).build(Addressee("a@example.net", "", 1, 2)).message_bytes
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    assert decoded_parts(parse(data)) == tuple(
        p.replace("\r\n", "\n") for p in expected_parts(settings, rendered, 1, 2))
