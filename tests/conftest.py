"""Shared fixtures: a working folder with its own settings and database, a real SMTP server."""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from tests.postgres import pg_engine  # noqa: F401  (a fixture for every test module)
from tests.smtp_server import SmtpTestServer
from wip_mailer import db, editorial
from wip_mailer.cli import main
from wip_mailer.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "seed" / "work-in-progress-2024-01-gennaio-febbraio.md"
TEST_SECRET = "test-secret-key-0123456789abcdefghijklmnop"
# Why a test skips when ../shared is absent: not a missing service, so CI lets it skip.
SEED_ABSENT = "(../shared is absent)"


def needs_ci_service(item: pytest.Item) -> bool:
    """Whether the test uses a service CI provides: PostgreSQL or Chromium."""
    return "pg_engine" in getattr(item, "fixturenames", ()) or any(
        item.get_closest_marker(name) is not None for name in ("postgres", "chromium"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On CI, where .ci/run installs Chromium and PostgreSQL runs, such a test may not skip."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and needs_ci_service(item) and os.environ.get("CI")
            and SEED_ABSENT not in str(report.longrepr)):
        report.outcome = "failed"
        report.longrepr = f"CI provides this test's service, yet it skipped: {report.longrepr}"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No WIP_MAILER_* from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("WIP_MAILER_"):
            monkeypatch.delenv(key)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working folder with a secret key set, as after `wip-mailer init`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WIP_MAILER_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("WIP_MAILER_DATABASE_URL", f"sqlite:///{tmp_path / 'wip.db'}")
    return tmp_path


@pytest.fixture
def settings(workdir: Path) -> Settings:
    return load_settings()


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = db.create_database(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpTestServer]:
    """A real aiosmtpd server on loopback that records (and can fault) what it gets."""
    server = SmtpTestServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def edition_2024(engine: Engine) -> str:
    """An empty draft edition 2024-01 (Gennaio-Febbraio 2024) with the default sections."""
    with db.session_scope(engine) as session:
        editorial.create_edition(session, "2024-01", "Gennaio-Febbraio 2024",
                                 date(2024, 1, 1), date(2024, 2, 29))
    return "2024-01"


@pytest.fixture
def send_settings(settings: Settings, smtp_server: SmtpTestServer, workdir: Path) -> Settings:
    """Settings that send to the test server, with retries and timeouts short enough for tests."""
    return dataclasses.replace(
        settings, smtp_port=smtp_server.port, smtp_timeout=5.0, retry_base_seconds=0.05,
        retry_deadline_seconds=20.0, journal_dir=str(workdir / "journal"),
        bounce_address="bounces@example.org",
    )


@pytest.fixture
def cli() -> CliRunnerHelper:
    return CliRunnerHelper()


class CliRunnerHelper:
    """Runs `wip-mailer` in-process, keeping stdout and stderr apart."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(main, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def seed_path() -> Path:
    if not SEED.exists():
        pytest.skip(f"the sample edition is not at {SEED} {SEED_ABSENT}")
    return SEED


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every attempt to resolve or connect fails, and is recorded."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network access attempted during rendering")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts


@pytest.fixture
def dkim_key(tmp_path: Path) -> tuple[Path, bytes]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test DKIM key")
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
