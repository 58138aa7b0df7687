"""The scheduler on PostgreSQL: the job store, the lease and the claim on a real server."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from tests.schedule_helpers import in_seconds, make_edition, row, service_thread, wait_until
from wip_mailer import schedule as core

pytestmark = pytest.mark.postgres


def test_a_job_fires_once_on_postgresql(pg_engine, settings, smtp_server) -> None:
    fast = dataclasses.replace(settings, scheduler_poll_seconds=0.2, smtp_port=smtp_server.port)
    make_edition(pg_engine)
    view = core.add_schedule(pg_engine, fast, core.ScheduleRequest(
        "2024-03", kind="reminder", at=in_seconds(1), notify=("editor@example.org",)))
    assert view.next_run_at == view.run_at  # the timer is in the PostgreSQL job store
    with service_thread(pg_engine, fast):
        with pytest.raises(core.LeaseRefused):
            core.SchedulerService(pg_engine, fast).run(threading.Event())
        assert wait_until(lambda: row(pg_engine, view.id).status == "done", timeout=8)
    core.SchedulerService(pg_engine, fast).run_job(view.id)  # a late duplicate firing
    assert len(smtp_server.messages) == 1
    assert row(pg_engine, view.id).run_count == 1
