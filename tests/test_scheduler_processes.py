"""`wip-mailer scheduler run` as real processes: firing, restarts, grace window, two schedulers.

The observable job here is a reminder, which goes through the real SMTP client to the test
server; the end-to-end send of an edition is in test_schedule_send.py.
"""

from __future__ import annotations

import time

import pytest

from tests.schedule_helpers import (
    SchedulerProcess,
    in_seconds,
    make_edition,
    process_env,
    row,
    wait_until,
)
from wip_mailer import schedule as core


@pytest.fixture
def reminder(engine, settings):
    """Schedule a reminder ``seconds`` from now; returns its id."""
    make_edition(engine)

    def add(seconds: float) -> int:
        return core.add_schedule(engine, settings, core.ScheduleRequest(
            "2024-03", kind="reminder", at=in_seconds(seconds), notify=("editor@example.org",))).id

    return add


def test_a_job_fires_in_a_real_scheduler_and_sigterm_stops_it_cleanly(
    workdir, engine, settings, smtp_server, reminder
) -> None:
    job = reminder(2)
    scheduler = SchedulerProcess(workdir, process_env(settings, smtp_server.port), "a")
    assert scheduler.wait_for("Scheduler started: 1 job(s) waiting"), scheduler.log
    assert wait_until(lambda: len(smtp_server.messages) == 1, timeout=8), scheduler.log
    assert scheduler.wait_for(
        f"Schedule #{job} (reminder 2024-03) done: reminder sent to editor@example.org.")
    assert scheduler.stop() == 0
    assert "SIGTERM received; stopping." in scheduler.log
    assert scheduler.log.rstrip().endswith("Scheduler stopped.")
    assert " INFO " in scheduler.log and "alembic" not in scheduler.log  # only our own lines
    assert row(engine, job).status == "done"
    assert core.lease_holder(engine) is None  # released on the way out
    assert smtp_server.messages[0].message["Subject"] == "Reminder: Marzo-Aprile 2024 (2024-03)"


def test_a_job_due_while_stopped_runs_once_within_the_grace_window(
    workdir, engine, settings, smtp_server, reminder
) -> None:
    job = reminder(1)
    env = process_env(settings, smtp_server.port, scheduler_grace_seconds="60")
    time.sleep(2.5)  # the scheduler is down when the job is due
    first = SchedulerProcess(workdir, env, "first")
    assert first.wait_for(f"Schedule #{job} (reminder 2024-03) done"), first.log
    assert first.stop() == 0
    # Restarted again, it does not run the job a second time.
    second = SchedulerProcess(workdir, env, "second")
    assert second.wait_for("Scheduler started: 0 job(s) waiting"), second.log
    time.sleep(1)
    assert second.stop() == 0
    assert len(smtp_server.messages) == 1
    assert row(engine, job).status == "done"
    assert row(engine, job).run_count == 1


def test_a_job_due_beyond_the_grace_window_is_reported_missed(
    workdir, engine, settings, smtp_server, reminder
) -> None:
    job = reminder(1)
    env = process_env(settings, smtp_server.port, scheduler_grace_seconds="1")
    time.sleep(3)
    scheduler = SchedulerProcess(workdir, env, "late")
    assert scheduler.wait_for(f"Schedule #{job} (reminder 2024-03) missed: due "), scheduler.log
    assert scheduler.wait_for("beyond the grace window of 1s; schedule it again with "
                              "`wip-mailer schedule 2024-03 --at ...`.")
    assert scheduler.stop() == 0
    missed = row(engine, job)
    assert missed.status == "missed"
    assert missed.message.startswith("missed: due ")
    assert smtp_server.messages == []
    listed = core.list_schedules(engine, ("missed",))
    assert [view.id for view in listed] == [job]


def test_a_second_scheduler_refuses_and_the_job_runs_once(
    workdir, engine, settings, smtp_server, reminder
) -> None:
    env = process_env(settings, smtp_server.port)
    first = SchedulerProcess(workdir, env, "first")
    assert first.wait_for("Scheduler started"), first.log
    second = SchedulerProcess(workdir, env, "second")
    assert second.process.wait(10) == 1
    assert "Error: Another scheduler is already running on this database (" in second.log
    # One waiting with --wait takes over when the first stops, and does not repeat its work.
    standby = SchedulerProcess(workdir, env, "standby", "--wait")
    assert standby.wait_for("Another scheduler holds the database; waiting for it to stop.")
    job = reminder(1.5)
    assert wait_until(lambda: row(engine, job).status == "done", timeout=8), first.log
    assert first.stop() == 0
    assert standby.wait_for("Scheduler started: 0 job(s) waiting"), standby.log
    later = reminder(1)
    assert wait_until(lambda: row(engine, later).status == "done", timeout=8), standby.log
    assert standby.stop() == 0
    assert len(smtp_server.messages) == 2
    assert f"Schedule #{job} " not in standby.log
    assert f"Schedule #{later} " not in first.log


def test_after_kill_9_a_new_scheduler_on_this_host_takes_over_at_once(
    workdir, engine, settings, smtp_server, reminder
) -> None:
    env = process_env(settings, smtp_server.port, scheduler_poll_seconds="5")  # a 30 s lease
    killed = SchedulerProcess(workdir, env, "killed")
    assert killed.wait_for("Scheduler started"), killed.log
    killed.process.kill()  # kill -9: the lease row stays behind, unexpired
    killed.process.wait()
    killed.stop()
    left = core.lease_holder(engine)
    assert left is not None and f":{killed.process.pid}:" in left.token
    started = time.monotonic()
    successor = SchedulerProcess(workdir, env, "successor")
    assert successor.wait_for("Scheduler started"), successor.log
    assert time.monotonic() - started < 10  # far less than the 30 s the dead lease had left
    assert f":{successor.process.pid}:" in core.lease_holder(engine).token
    job = reminder(1)
    assert wait_until(lambda: row(engine, job).status == "done", timeout=8), successor.log
    assert successor.stop() == 0
