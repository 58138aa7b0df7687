"""No header or SMTP command injection, whatever the entry: refused where the value is written,
and never put on the wire by the message builder or the SMTP connection."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from tests.dispatch_helpers import make_audience
from tests.smtp_server import SmtpTestServer
from wip_mailer import db
from wip_mailer.dispatch.connection import Connection, Outcome, SenderRefusedError
from wip_mailer.errors import SettingsError
from wip_mailer.fields import CONTROL_CHARACTERS, control_character
from wip_mailer.models import Campaign, Delivery, Edition, Subscriber
from wip_mailer.personalise import (
    HeaderInjectionError,
    Outgoing,
    UnsendableAddressError,
    mailbox_header,
    wire_address,
)
from wip_mailer.settings import load_settings

SLUG = "2026-12"
INJECTED_RCPT = "editor@example.org\r\nRCPT TO:<evil@example.net>"


@pytest.fixture
def ready(cli, engine, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """An edition with one approved item that passes the check, sending to the test server."""
    monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("WIP_MAILER_BASE_URL", "https://news.example.org")
    monkeypatch.setenv("WIP_MAILER_DEMO", "true")  # example.org addresses: a demo, or the send is refused
    for args in (("editions", "create", SLUG, "--title", "Dicembre 2026"),
                 ("items", "add", "--edition", SLUG, "--title", "Mostra", "--body", "Una mostra."),
                 ("items", "approve", "--edition", SLUG, "--all")):
        result = cli(*args)
        assert result.exit_code == 0, result.stderr
    return SLUG


def _one_sentence(stderr: str) -> str:
    assert stderr.count("\n") == 1 and stderr.startswith("Error: "), stderr
    assert "SQL" not in stderr and "Traceback" not in stderr
    return stderr


# --- --test-to -----------------------------------------------------------------------------

def test_a_test_address_with_a_line_break_is_refused_before_anything_is_sent(cli, ready, smtp_server) -> None:
    result = cli("send", ready, "--test-to", "boss@example.org", "--test-to", INJECTED_RCPT)
    assert result.exit_code == 1
    assert "The --test-to address 'editor@example.org\\r\\nRCPT TO:<evil@example.net>' contains a line " \
           "break" in _one_sentence(result.stderr)
    assert smtp_server.handler.rcpt_seen == [] and smtp_server.messages == []

    good = cli("send", ready, "--test-to", "Boss@Example.org")
    assert good.exit_code == 0, good.stderr
    assert smtp_server.handler.rcpt_seen == ["boss@example.org"]


def test_the_connection_never_writes_an_address_that_ends_the_command(send_settings, smtp_server) -> None:
    connection = Connection(send_settings)
    try:
        data = b"Subject: x\r\n\r\nx\r\n.\r\n"
        bad_rcpt = Outgoing("news@example.org", INJECTED_RCPT, "m1@example.org", data)
        result = connection.send(bad_rcpt)
        assert result.outcome is Outcome.FAILED and "not sent" in result.reply
        bad_from = dataclasses.replace(bad_rcpt, envelope_from="news@example.org>\r\nRSET",
                                       recipient="ok@example.net")
        with pytest.raises(SenderRefusedError, match="nothing was sent"):
            connection.send(bad_from)
    finally:
        connection.close()
    assert smtp_server.handler.rcpt_seen == [] and smtp_server.messages == []


@pytest.mark.parametrize("address", [INJECTED_RCPT, "a@example.org>", "a b@example.org", "a\x01@example.org"])
def test_the_message_builder_refuses_an_address_that_cannot_go_on_the_wire(address: str) -> None:
    with pytest.raises(UnsendableAddressError, match="not sent"):
        wire_address(address)


# --- subject and title ---------------------------------------------------------------------

@pytest.mark.parametrize(("option", "value", "field"), [
    ("--subject", "Work in Progress\r\nBcc: all@example.net", "subject"),
    ("--subject", "Work in Progress\x01", "subject"),
    ("--title", "Dicembre\n2026", "edition title"),
])
def test_a_line_break_in_subject_or_title_is_refused(cli, engine, option, value, field) -> None:
    args = ["editions", "create", "2026-12", "--title", "Dicembre 2026", option, value]
    result = cli(*args)
    assert result.exit_code == 1
    assert _one_sentence(result.stderr).startswith(f"Error: The {field} ")
    assert "which is not allowed: it must be one line of printable text." in result.stderr
    with db.session_scope(engine) as session:
        assert session.exec(select(Edition)).all() == []


def test_a_stored_subject_with_a_line_break_blocks_check_and_send(cli, engine, ready, smtp_server) -> None:
    with db.session_scope(engine) as session:  # a row written before the check at entry existed
        session.execute(sa.update(Edition).values(subject="Work in Progress\r\nBcc: all@example.net"))
    make_audience(engine, 3)
    check = cli("check", ready)
    assert check.exit_code != 0 and "Ready to send" not in check.stdout
    assert "The subject 'Work in Progress\\r\\nBcc: all@example.net' contains a line break" in (
        check.stdout + check.stderr)
    sent = cli("send", ready, "--list", "main", "--yes")
    assert sent.exit_code == 1 and "contains a line break" in _one_sentence(sent.stderr)
    with db.session_scope(engine) as session:
        assert session.exec(select(Campaign)).all() == []  # nothing left half-started
        assert session.exec(select(Edition)).one().status == "draft"
    assert smtp_server.messages == []


# --- subscriber names and attributes -------------------------------------------------------

@pytest.mark.parametrize(("name", "kind"), [("Ada\x01", "a control character (U+0001)"),
                                            ("Ada\r\nBcc: all@example.net", "a line break")])
def test_a_name_with_control_characters_is_refused_at_entry(cli, engine, name, kind) -> None:
    assert cli("lists", "create", "stampa").exit_code == 0
    result = cli("subscribers", "add", "ada@example.org", "--list", "stampa", "--name", name, "--confirmed")
    assert result.exit_code == 1
    assert _one_sentence(result.stderr) == (
        f"Error: The subscriber name contains {kind}, which is not allowed: it must be one line of "
        "printable text.\n")
    with db.session_scope(engine) as session:
        assert session.exec(select(Subscriber)).all() == []


def test_an_attribute_value_with_control_characters_is_refused(cli, engine) -> None:
    assert cli("lists", "create", "stampa").exit_code == 0
    result = cli("subscribers", "add", "ada@example.org", "--list", "stampa", "--attr", "sector=arte\x1b[2J",
                 "--confirmed")
    assert result.exit_code == 1
    assert "The value of the attribute 'sector' contains a control character (U+001B)" in _one_sentence(
        result.stderr)


def test_import_rejects_names_and_attributes_with_control_characters_by_line(cli, engine, tmp_path) -> None:
    assert cli("lists", "create", "stampa", "--no-double-opt-in").exit_code == 0
    source = tmp_path / "people.csv"
    source.write_bytes(b"email,name,attr.sector\n"
                       b"ok@example.org,Ok,arte\n"
                       b"ctrl@example.org,Ada\x01,arte\n"
                       b"attr@example.org,Eve,ar\x07te\n"
                       b'cell@example.org,"Line one\nline two",musica\n')
    result = cli("subscribers", "import", str(source), "--list", "stampa")
    output = result.stdout + result.stderr
    assert "4 rows: 2 added, 0 activated, 0 updated, 0 unchanged, 2 rejected." in output
    assert f"{source}:3: the name contains a control character (U+0001), which cannot go in an email " \
           "header" in output
    assert f"{source}:4: the attribute sector contains a control character (U+0007)" in output
    with db.session_scope(engine) as session:
        names = dict(session.execute(sa.select(Subscriber.email, Subscriber.name)).all())
    # A spreadsheet cell's own line break (Alt+Enter) is layout and is joined, as before.
    assert names == {"ok@example.org": "Ok", "cell@example.org": "Line one line two"}


def test_a_stored_name_with_a_control_byte_fails_that_delivery_only(cli, engine, ready, smtp_server) -> None:
    emails = make_audience(engine, 4, names=["Ada", "Eve\x01Bcc"])
    result = cli("send", ready, "--list", "main", "--yes")
    assert result.exit_code == 0, result.stderr
    assert sorted(smtp_server.received_by_address()) == [emails[0], emails[2]]
    assert all(b"\x01" not in message.data for message in smtp_server.messages)
    with db.session_scope(engine) as session:
        failed = {d.email: d.last_reply for d in session.exec(select(Delivery)) if d.state == "failed"}
    assert sorted(failed) == [emails[1], emails[3]]
    assert all("contains a control character (U+0001)" in reply for reply in failed.values())


@pytest.mark.parametrize("name", ["Ada\x01", "Ada\x7f", "Ada\u2028Bcc: x@example.net", "Ada\tX"])
def test_the_message_builder_never_puts_a_control_character_in_a_header(name: str) -> None:
    with pytest.raises(HeaderInjectionError, match=r"^The name contains a"):
        mailbox_header(name, "ada@example.org")


def test_every_forbidden_character_is_one_that_isprintable_refuses() -> None:
    """control_character() trusts str.isprintable() to clear a value without the pattern."""
    forbidden = [c for c in map(chr, range(sys.maxunicode + 1)) if CONTROL_CHARACTERS.match(c)]
    assert len(forbidden) == 32 + 33 + 2
    assert not any(c.isprintable() for c in forbidden)
    assert [control_character(f"Ada{c}") for c in ("\x00", "\x85", "\u2028", "\t")] == [
        "a control character (U+0000)", "a line break", "a line break", "a tab"]
    assert control_character("Ada\u00a0Lovelace\u200b") is None  # not printable, yet allowed


# --- settings ------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["FROM", "REPLY_TO", "BOUNCE_ADDRESS", "DKIM_DOMAIN", "DKIM_SELECTOR"])
def test_header_bound_settings_with_a_line_break_are_refused_naming_the_key(key: str, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f'WIP_MAILER_{key}="news@example.org\\nBcc: all@example.net"\n', encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load_settings({}, env)
    assert str(caught.value) == (f"WIP_MAILER_{key} contains a line break; a setting must be one line of "
                                 "printable text.")


def test_a_from_setting_with_a_control_byte_stops_every_command(cli, workdir, monkeypatch) -> None:
    monkeypatch.setenv("WIP_MAILER_FROM", "Work\x01in Progress <news@example.org>")
    result = cli("editions", "list")
    assert result.exit_code == 2
    assert _one_sentence(result.stderr) == (
        "Error: WIP_MAILER_FROM contains a control character (U+0001); a setting must be one line of "
        "printable text.\n")


# --- lists ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["stampa\nBcc", "stampa\x01", "stampa\r"])
def test_list_names_with_control_characters_are_refused(cli, engine, name) -> None:
    result = cli("lists", "create", name)
    assert result.exit_code == 1 and "is not a valid list name" in _one_sentence(result.stderr)


def test_lists_toml_with_control_characters_is_refused(cli, engine, tmp_path) -> None:
    bad_name = tmp_path / "names.toml"
    bad_name.write_text('[lists."stampa\\u0001"]\ndescription = "x"\n', encoding="utf-8")
    result = cli("lists", "sync", str(bad_name))
    assert result.exit_code == 1 and "is not a valid list name" in _one_sentence(result.stderr)
    bad_description = tmp_path / "description.toml"
    bad_description.write_text('[lists.stampa]\ndescription = "Giornalisti\\r\\nBcc: x"\n', encoding="utf-8")
    result = cli("lists", "sync", str(bad_description))
    assert result.exit_code == 1
    assert "The description of lists.stampa in" in _one_sentence(result.stderr)
    assert "contains a line break" in result.stderr
    described = cli("lists", "create", "stampa", "--description", "Giornalisti\x01")
    assert described.exit_code == 1 and "contains a control character" in _one_sentence(described.stderr)
    assert cli("lists", "list", "--json").stdout.strip() == "[]"
