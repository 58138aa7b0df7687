import os
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import click

from tests.smtp_server import free_port
from wip_mailer import __version__
from wip_mailer.cli import main
from wip_mailer.settings import read_env_file


def test_version(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.output == f"wip-mailer, version {__version__}\n"


def test_init_twice_is_harmless(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = cli("init")
    assert first.exit_code == 0, first.output
    assert "Wrote .env with a new secret key" in first.output
    secret = read_env_file(tmp_path / ".env")["WIP_MAILER_SECRET_KEY"]
    second = cli("init")
    assert second.exit_code == 0
    assert "Kept the existing .env." in second.output
    assert "wip-mailer.db is ready (schema" in second.output
    assert read_env_file(tmp_path / ".env")["WIP_MAILER_SECRET_KEY"] == secret


def test_db_upgrade_on_current_database(cli, engine) -> None:
    result = cli("db", "upgrade")
    assert result.exit_code == 0
    assert result.output.startswith("Database already at the latest schema")


def test_db_upgrade_without_database(cli, workdir: Path) -> None:
    result = cli("db", "upgrade")
    assert result.exit_code == 1
    assert result.stderr == f"Error: No database at {workdir / 'wip.db'}: run `wip-mailer init` first.\n"


def test_malformed_setting_is_one_line_with_exit_2(cli, workdir: Path, monkeypatch) -> None:
    monkeypatch.setenv("WIP_MAILER_SMTP_SECURITY", "ssl")
    result = cli("db", "upgrade")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: WIP_MAILER_SMTP_SECURITY must be one of none, starttls, tls, got 'ssl'.\n"
    )


def test_malformed_env_file(cli, workdir: Path) -> None:
    (workdir / ".env").write_text("WIP_MAILER_SMTP_HOST=localhost\n=oops\n")
    result = cli("init")
    assert result.exit_code == 2
    assert result.stderr == "Error: The settings file .env has a malformed line 2: expected KEY=VALUE.\n"


def test_unwritable_directory(cli, workdir: Path, monkeypatch) -> None:
    monkeypatch.setenv("WIP_MAILER_DATABASE_URL", "sqlite:////nonexistent-dir/wip.db")
    result = cli("init")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: Cannot create the database /nonexistent-dir/wip.db: "
        "folder /nonexistent-dir does not exist.\n"
    )


def test_unknown_command_and_option(cli) -> None:
    result = cli("frobnicate")
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.stderr
    result = cli("init", "--colour")
    assert result.exit_code == 2
    assert "No such option '--colour'" in result.stderr


def _all_commands(group, prefix=()):
    context = click.Context(group)  # list_commands/get_command: the top level loads lazily
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


def test_every_command_has_help_with_an_example(cli) -> None:
    commands = list(_all_commands(main))
    assert len(commands) >= 4
    for path, _command in commands:
        result = cli(*path, "--help")
        assert result.exit_code == 0, path
        assert "Example:" in result.output, f"`wip-mailer {' '.join(path)}` has no example"


def test_every_list_and_show_command_takes_json() -> None:
    for path, command in _all_commands(main):
        if path[-1] in ("list", "show"):
            assert any(p.name == "as_json" for p in command.params), path


def test_no_traceback_without_debug(cli, workdir: Path, monkeypatch) -> None:
    monkeypatch.setenv("WIP_MAILER_DATABASE_URL", "sqlite:////nonexistent-dir/wip.db")
    assert "Traceback" not in cli("db", "upgrade").output


def test_dev_smtp_stores_messages_in_maildir(tmp_path: Path) -> None:
    port = free_port()
    maildir = tmp_path / "outbox"
    process = subprocess.Popen(
        [sys.executable, "-m", "wip_mailer", "dev-smtp", "--port", str(port), "--maildir", str(maildir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith(f"Listening for SMTP on 127.0.0.1:{port}")
        message = EmailMessage()
        message["From"] = "editor@example.org"
        message["To"] = "reader@example.net"
        message["Subject"] = "Prova di invio"
        message.set_content("Ciao!\n")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(message)
        line = process.stdout.readline()
        assert "editor@example.org -> reader@example.net: 'Prova di invio'" in line
        files = list((maildir / "new").iterdir())
        assert len(files) == 1
        assert b"Subject: Prova di invio" in files[0].read_bytes()
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "Stopped." in out


def test_dev_smtp_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "wip_mailer", "dev-smtp", "--port", str(port),
             "--maildir", str(tmp_path / "o")],
            capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: Cannot listen for SMTP on 127.0.0.1:{port}")
    assert result.stderr.count("\n") == 1
    time.sleep(0)
