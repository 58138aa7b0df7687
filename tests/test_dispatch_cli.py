"""`wip-mailer send` and `campaigns` end to end: the real sample edition, rendered and checked by
the render stage, sent to a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest

from tests.dispatch_helpers import make_audience
from tests.sample_edition import SLUG, import_sample
from tests.smtp_server import SmtpTestServer


@pytest.fixture
def sample_audience(engine, seed_path: Path, smtp_server: SmtpTestServer,
                    monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("WIP_MAILER_BASE_URL", "https://news.example.org")
    monkeypatch.setenv("WIP_MAILER_DEMO", "true")  # example.org addresses: a demo, or the send is refused
    import_sample(engine, seed_path)
    return make_audience(engine, 50, names=["Ada Rossi", "Zoë Müller"])


def test_send_delivers_the_sample_edition_once_to_each(cli, engine, sample_audience, smtp_server) -> None:
    result = cli("send", SLUG, "--list", "main", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "Campaign 1 finished: 50 sent, 0 deferred, 0 failed, 0 skipped (unsubscribed or suppressed), " \
           "0 in doubt." in result.stdout
    assert "Warning:" in result.stderr  # the sample has placeholder links: shown, not blocking
    assert smtp_server.received_by_address() == dict.fromkeys(sample_audience, 1)
    message = message_from_bytes(smtp_server.messages[0].data, policy=default)
    url = message["List-Unsubscribe"].strip("<>")
    assert url.startswith("https://news.example.org/u/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = message.get_body(("html",))
    text = message.get_body(("plain",))
    assert html is not None and text is not None
    assert f'href="{url}"' in html.get_content() and url in text.get_content()
    assert "personal.wip-mailer.invalid" not in smtp_server.messages[0].data.decode("ascii")

    listed = json.loads(cli("campaigns", "list", "--json").stdout)
    assert [(c["id"], c["edition"], c["status"], c["counts"]["sent"]) for c in listed] == [
        (1, SLUG, "finished", 50)]
    status = json.loads(cli("campaigns", "status", "1", "--json").stdout)
    assert status["summary"]["sent"] == 50 and status["problems"] == []
    again = cli("send", SLUG, "--list", "main", "--yes")
    assert again.exit_code == 1 and again.stderr.endswith(
        "Error: No active subscriber who has not already been sent this edition in main: nothing to send.\n")
    assert len(smtp_server.messages) == 50


def test_send_asks_before_sending(cli, sample_audience, smtp_server) -> None:
    result = cli("send", SLUG, "--list", "main")
    assert result.exit_code == 2
    assert "Send edition 2024-01 to 50 recipients? Pass --yes to confirm" in result.stderr
    assert smtp_server.messages == []


def test_the_confirmation_says_what_goes_out_from_whom_to_whom(cli, sample_audience, smtp_server) -> None:
    result = cli("send", SLUG, "--list", "main", "--segment", "language=it")
    assert result.exit_code == 2 and smtp_server.messages == []
    lines = result.stderr.splitlines()
    summary = lines[lines.index(f"Edition:    {SLUG}"):]
    assert summary[1].startswith("Subject:    Work in Progress")
    assert summary[2] == "From:       Work in Progress <newsletter@example.org>"
    assert summary[3] == "Lists:      main (segment: language=it)"
    recipients = int(summary[4].removeprefix("Recipients: "))
    assert 0 < recipients <= 50
    assert summary[5].startswith("Message:    ") and " KiB each (HTML " in summary[5]
    warnings = sum(1 for line in lines if line.startswith("Warning: "))
    assert warnings > 0 and summary[6] == f"Pre-flight: {warnings} warning(s)"
    assert f"Send edition {SLUG} to {recipients} recipients? Pass --yes" in result.stderr


def test_dry_run_and_test_copies_from_the_command_line(cli, sample_audience, smtp_server) -> None:
    dry = cli("send", SLUG, "--list", "main", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert dry.stdout.startswith("Dry run: built 50 messages") and "nothing was sent" in dry.stdout
    test = cli("send", SLUG, "--list", "main", "--test-to", "editor@example.org")
    assert test.exit_code == 0, test.stderr
    assert [m.rcpt_tos for m in smtp_server.messages] == [["editor@example.org"]]
    assert message_from_bytes(smtp_server.messages[0].data, policy=default)["Subject"].startswith("[TEST] ")
    assert json.loads(cli("campaigns", "list", "--json").stdout) == []


def test_unknown_things_are_one_line_errors(cli, sample_audience) -> None:
    result = cli("send", SLUG, "--list", "nope", "--yes")
    assert (result.exit_code, result.stderr) == (1, "Error: There is no list named 'nope'.\n")
    result = cli("campaigns", "status", "9")
    assert (result.exit_code, result.stderr) == (1, "Error: There is no campaign 9.\n")
    result = cli("send", SLUG, "--list", "main", "--rate", "fast", "--yes")
    assert result.exit_code == 2 and "not a rate such as 50/s" in result.stderr
