"""Helpers for the scheduling tests: editions and lists in the store, a scheduler to run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from tests.conftest import TEST_SECRET
from wip_mailer import schedule as core
from wip_mailer.db import session_scope, utcnow
from wip_mailer.models import Edition, Item, MailingList, ScheduledJob, Section
from wip_mailer.settings import Settings


def make_edition(engine: Engine, slug: str = "2024-03", status: str = "ready") -> None:
    with session_scope(engine) as session:
        session.add(Edition(slug=slug, title="Marzo-Aprile 2024", status=status))


def approve_an_item(engine, slug="2024-03", title="Delegazione da Lione") -> None:
    """What an editor does after scheduling: add and approve an item."""
    from sqlmodel import select

    with session_scope(engine) as session:
        edition = session.exec(select(Edition).where(Edition.slug == slug)).one()
        section = Section(edition_id=edition.id, name="Notizie", position=1)
        session.add(section)
        session.flush()
        session.add(Item(edition_id=edition.id, section_id=section.id, title=title,
                         date_label="5 marzo", body_md="Una delegazione in visita a Torino.",
                         status="approved", position=1))


def make_list(engine: Engine, name: str = "newsletter") -> None:
    with session_scope(engine) as session:
        session.add(MailingList(name=name))


def edition_status(engine: Engine, slug: str = "2024-03") -> str:
    with session_scope(engine) as session:
        from sqlmodel import select

        return session.exec(select(Edition.status).where(Edition.slug == slug)).one()


def row(engine: Engine, schedule_id: int) -> ScheduledJob:
    with session_scope(engine) as session:
        found = session.get(ScheduledJob, schedule_id)
        assert found is not None
        return found


def in_seconds(seconds: float) -> str:
    """An ISO 8601 time with offset, ``seconds`` from now (what an editor could type)."""
    return (utcnow() + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@contextmanager
def service_thread(engine: Engine, settings: Settings) -> Iterator[core.SchedulerService]:
    """The real scheduler service, in a thread of this process, stopped at the end."""
    stop = threading.Event()
    service = core.SchedulerService(engine, settings)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            service.run(stop)
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert wait_until(lambda: core.lease_holder(engine) is not None or bool(failures)), "did not start"
    try:
        yield service
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "the scheduler did not stop"
        if failures:
            raise failures[0]


class SchedulerProcess:
    """`python -m wip_mailer scheduler run` as a real process, logging to a file."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str, *args: str):
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wip_mailer", "scheduler", "run", *args],
            cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float = 10.0) -> bool:
        wait_until(lambda: text in self.log or self.process.poll() is not None, timeout)
        return text in self.log

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, as systemd does; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()


def process_env(settings: Settings, smtp_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIP_MAILER_")}
    env.update({
        "WIP_MAILER_DATABASE_URL": settings.database_url,
        "WIP_MAILER_SECRET_KEY": TEST_SECRET,
        "WIP_MAILER_SMTP_HOST": "127.0.0.1",
        "WIP_MAILER_SMTP_PORT": str(smtp_port),
        "WIP_MAILER_SCHEDULER_POLL_SECONDS": "0.2",
        "WIP_MAILER_DEMO": "true",  # the template's example.org sender: a demo, or sends are refused
        "PYTHONUNBUFFERED": "1",
    })
    env.update({f"WIP_MAILER_{k.upper()}": v for k, v in extra.items()})
    return env
