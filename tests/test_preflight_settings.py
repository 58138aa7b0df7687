"""A real send with the template's placeholder settings is refused, naming the setting to change;
test copies, dry runs and demo installations go ahead."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.smtp_server import SmtpTestServer
from wip_mailer.preflight import placeholder_problems
from wip_mailer.settings import Settings, read_env_file

REAL = Settings(sender="Work in Progress <news@wip-mailer.eu>", base_url="https://news.wip-mailer.eu",
                archive_url="https://news.wip-mailer.eu/archive", secret_key="s" * 48,
                bounce_address="bounces@wip-mailer.eu")


def test_the_template_defaults_are_placeholders_each_named() -> None:
    problems = placeholder_problems(Settings())
    assert [p.split(" ")[0] for p in problems] == [
        "WIP_MAILER_BASE_URL", "WIP_MAILER_ARCHIVE_URL", "WIP_MAILER_FROM", "WIP_MAILER_SECRET_KEY"]
    assert "example.org" in problems[2] and "127.0.0.1" in problems[0]


def test_real_settings_pass_and_a_local_relay_is_normal() -> None:
    assert placeholder_problems(REAL) == []
    assert placeholder_problems(dataclasses.replace(REAL, smtp_host="127.0.0.1", smtp_port=25)) == []


@pytest.mark.parametrize(("change", "named"), [
    ({"base_url": "http://localhost:8000"}, "WIP_MAILER_BASE_URL"),
    ({"base_url": "http://[::1]:8000"}, "WIP_MAILER_BASE_URL"),
    ({"archive_url": "https://www.example.com/archive"}, "WIP_MAILER_ARCHIVE_URL"),
    ({"archive_url": "http://0.0.0.0/archive"}, "WIP_MAILER_ARCHIVE_URL"),
    ({"sender": "News <news@example.it>"}, "WIP_MAILER_FROM"),
    ({"sender": "news@lists.example.net"}, "WIP_MAILER_FROM"),
    ({"bounce_address": "Bounces <bounces@example.org>"}, "WIP_MAILER_BOUNCE_ADDRESS"),
    ({"bounce_address": "bounces@news.test"}, "WIP_MAILER_BOUNCE_ADDRESS"),
    ({"secret_key": ""}, "WIP_MAILER_SECRET_KEY"),
])
def test_each_placeholder_is_named(change: dict[str, str], named: str) -> None:
    problems = placeholder_problems(dataclasses.replace(REAL, **change))
    assert len(problems) == 1 and problems[0].startswith(named + " ")


def test_names_that_only_look_alike_are_not_placeholders() -> None:
    settings = dataclasses.replace(REAL, base_url="https://example-city.eu", sender="a@myexample.org")
    assert placeholder_problems(settings) == []


def test_a_demo_may_use_the_placeholders() -> None:
    assert placeholder_problems(Settings(demo=True)) == []


@pytest.fixture
def installed(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpTestServer) -> Path:
    """`wip-mailer init` as a new user runs it, an edition with one approved item, one subscriber."""
    monkeypatch.chdir(tmp_path)
    assert cli("init").exit_code == 0
    monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(smtp_server.port))
    for args in (("editions", "create", "2024-01", "--title", "Gennaio 2024"),
                 ("items", "add", "--edition", "2024-01", "--title", "Missione a Praia", "--body", "Testo."),
                 ("items", "approve", "--all", "--edition", "2024-01"),
                 ("lists", "create", "main", "--no-double-opt-in"),
                 ("subscribers", "add", "ada@wip-mailer.eu", "--list", "main", "--confirmed")):
        result = cli(*args)
        assert result.exit_code == 0, (args, result.stderr)
    return tmp_path


def test_a_real_send_with_inits_settings_is_refused_naming_the_settings(cli, installed: Path,
                                                                        smtp_server: SmtpTestServer) -> None:
    result = cli("send", "2024-01", "--list", "main", "--yes")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Edition '2024-01' cannot be sent: WIP_MAILER_BASE_URL is "
                                    "http://127.0.0.1:8000, an address of this machine")
    assert "WIP_MAILER_FROM uses the placeholder domain example.org" in result.stderr
    assert "WIP_MAILER_SECRET_KEY" not in result.stderr  # init wrote a fresh one
    assert smtp_server.messages == []
    check = cli("check", "2024-01")
    assert check.exit_code == 1 and "BLOCKING: WIP_MAILER_ARCHIVE_URL is http://127.0.0.1:8000/archive" \
        in check.stdout


def test_test_copies_and_dry_runs_still_go(cli, installed: Path, smtp_server: SmtpTestServer) -> None:
    dry = cli("send", "2024-01", "--list", "main", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    test = cli("send", "2024-01", "--list", "main", "--test-to", "editor@wip-mailer.eu")
    assert test.exit_code == 0, test.stderr
    assert [m.rcpt_tos for m in smtp_server.messages] == [["editor@wip-mailer.eu"]]


def test_init_demo_marks_the_installation_and_the_send_goes(cli, installed: Path,
                                                            smtp_server: SmtpTestServer) -> None:
    before = (installed / ".env").read_text()
    result = cli("init", "--demo")
    assert result.exit_code == 0 and "Set WIP_MAILER_DEMO=true in .env" in result.output
    assert (installed / ".env").read_text() == before.replace("WIP_MAILER_DEMO=false\n",
                                                              "WIP_MAILER_DEMO=true\n")
    assert cli("init", "--demo").output.count("WIP_MAILER_DEMO") == 0  # already marked: left alone
    sent = cli("send", "2024-01", "--list", "main", "--yes")
    assert sent.exit_code == 0, sent.stderr
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ada@wip-mailer.eu"]]


def test_init_demo_in_a_new_folder_writes_the_setting(cli, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / ".env").write_text("WIP_MAILER_SECRET_KEY=" + "k" * 40)  # from before the key
    monkeypatch.chdir(tmp_path / "old")
    assert "Set WIP_MAILER_DEMO=true" in cli("init", "--demo").output
    assert (tmp_path / "old" / ".env").read_text() == "WIP_MAILER_SECRET_KEY=" + "k" * 40 + \
        "\nWIP_MAILER_DEMO=true\n"
    monkeypatch.chdir(tmp_path)
    assert "(a demo installation)" in cli("init", "--demo").output
    assert read_env_file(tmp_path / ".env")["WIP_MAILER_DEMO"] == "true"
    other = tmp_path / "real"
    other.mkdir()
    monkeypatch.chdir(other)
    cli("init")
    assert read_env_file(other / ".env")["WIP_MAILER_DEMO"] == "false"
