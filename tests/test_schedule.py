"""Scheduling in one process: times and DST, the job store, the lease, claims, the service."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tests.schedule_helpers import (
    edition_status,
    in_seconds,
    make_edition,
    make_list,
    row,
    service_thread,
    wait_until,
)
from wip_mailer import schedule as core
from wip_mailer.db import session_scope, utcnow
from wip_mailer.errors import InvalidInputError, NotFoundError, StateError
from wip_mailer.models import Edition, ScheduledJob, apscheduler_jobs

ROME = ZoneInfo("Europe/Rome")
JAN_2024 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def fast(settings, smtp_server):
    """Settings for a scheduler that polls often and mails the test SMTP server."""
    return dataclasses.replace(settings, scheduler_poll_seconds=0.2, smtp_port=smtp_server.port)


# --- reading times -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01 09:00", datetime(2024, 3, 1, 8, 0, tzinfo=UTC)),  # CET, UTC+1
        ("2024-07-01 09:00:30", datetime(2024, 7, 1, 7, 0, 30, tzinfo=UTC)),  # CEST, UTC+2
        ("2024-03-01T09:00+01:00", datetime(2024, 3, 1, 8, 0, tzinfo=UTC)),
        ("2024-03-01T09:00:00Z", datetime(2024, 3, 1, 9, 0, tzinfo=UTC)),
        ("2024-03-01 09:00-05:00", datetime(2024, 3, 1, 14, 0, tzinfo=UTC)),
    ],
)
def test_at_is_read_in_the_timezone_unless_it_has_an_offset(text, expected) -> None:
    value = core.parse_at(text, ROME, now=JAN_2024)
    assert value == expected
    assert value.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2024-03-01", "The time '2024-03-01' is not in the form YYYY-MM-DD HH:MM[:SS] (Europe/Rome time) "
                       "or ISO 8601 with an offset such as 2024-03-01T09:00+01:00."),
        ("tomorrow 9am", "The time 'tomorrow 9am' is not in the form YYYY-MM-DD HH:MM[:SS] (Europe/Rome "
                         "time) or ISO 8601 with an offset such as 2024-03-01T09:00+01:00."),
        ("2024-02-30 09:00", "The time '2024-02-30 09:00' is not a valid date and time."),
        ("2023-12-31 09:00", "The time '2023-12-31 09:00' (2023-12-31 09:00 CET) is in the past: "
                             "give a future time."),
        ("2024-03-31 02:30", "2024-03-31 02:30 does not exist in Europe/Rome (the clocks go forward "
                             "that night): choose another time."),
        ("2024-10-27 02:30", "2024-10-27 02:30 happens twice in Europe/Rome (the clocks go back that "
                             "night): give the offset, 2024-10-27T02:30+02:00 or 2024-10-27T02:30+01:00."),
    ],
)
def test_bad_times_are_refused_with_one_sentence(text, message) -> None:
    with pytest.raises(InvalidInputError) as caught:
        core.parse_at(text, ROME, now=JAN_2024)
    assert str(caught.value) == message


def test_the_fold_can_be_given_with_its_offset() -> None:
    first = core.parse_at("2024-10-27T02:30+02:00", ROME, now=JAN_2024)
    second = core.parse_at("2024-10-27T02:30+01:00", ROME, now=JAN_2024)
    assert second - first == timedelta(hours=1)


# --- the job store: what `schedule` writes -----------------------------------------------

def test_send_at_nine_on_dst_days_is_stored_as_nine_local(engine, settings) -> None:
    make_edition(engine, "2024-03")
    make_edition(engine, "2024-10")
    make_list(engine)
    spring = core.add_schedule(engine, settings, core.ScheduleRequest(
        "2024-03", at="2024-03-31 09:00", lists=("newsletter",)), now=JAN_2024)
    autumn = core.add_schedule(engine, settings, core.ScheduleRequest(
        "2024-10", at="2024-10-27 09:00", lists=("newsletter",)), now=JAN_2024)
    # The morning after the clocks change, 09:00 is 07:00 UTC in spring and 08:00 in autumn.
    assert spring.run_at == datetime(2024, 3, 31, 7, 0, tzinfo=UTC)
    assert autumn.run_at == datetime(2024, 10, 27, 8, 0, tzinfo=UTC)
    # APScheduler's job store holds the same instants as its next run times.
    assert spring.next_run_at == spring.run_at
    assert autumn.next_run_at == autumn.run_at
    assert spring.when == "2024-03-31 09:00 CEST"
    assert autumn.when == "2024-10-27 09:00 CET"


def test_a_daily_nine_oclock_rule_stays_at_nine_local_across_dst(engine, settings) -> None:
    make_edition(engine)
    view = core.add_schedule(engine, settings, core.ScheduleRequest(
        "2024-03", kind="reminder", cron="0 9 * * *", notify=("editor@example.org",)))
    # The trigger as APScheduler reads it back from the job store.
    with core._job_store_writer(engine, settings) as writer:
        stored = writer.get_job(core.job_id(view.id))
    assert stored is not None
    times = fire_times(stored.trigger, datetime(2024, 3, 29, 12, 0, tzinfo=ROME), 4)
    assert [t.astimezone(ROME).strftime("%m-%d %H:%M %Z") for t in times] == [
        "03-30 09:00 CET", "03-31 09:00 CEST", "04-01 09:00 CEST", "04-02 09:00 CEST"]
    assert [t.astimezone(UTC).hour for t in times] == [8, 7, 7, 7]
    autumn = fire_times(stored.trigger, datetime(2024, 10, 25, 12, 0, tzinfo=ROME), 3)
    assert [t.astimezone(UTC).hour for t in autumn] == [7, 8, 8]  # 26 Oct CEST, 27-28 Oct CET
    assert {t.astimezone(ROME).hour for t in autumn} == {9}


def fire_times(trigger, start: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times after ``start``, as APScheduler's loop asks for them."""
    times: list[datetime] = []
    previous, now = None, start
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        times.append(previous)
        now = previous + timedelta(seconds=1)
    return times


def test_scheduling_a_send_marks_the_edition_and_cancelling_restores_it(engine, settings) -> None:
    make_edition(engine, status="ready")
    make_list(engine)
    view = core.add_schedule(engine, settings, core.ScheduleRequest(
        "2024-03", at=in_seconds(3600), lists=("newsletter",)))
    assert edition_status(engine) == "scheduled"
    with pytest.raises(StateError) as caught:
        core.add_schedule(engine, settings, core.ScheduleRequest(
            "2024-03", at=in_seconds(7200), lists=("newsletter",)))
    assert str(caught.value) == (
        f"The edition 2024-03 is already scheduled to be sent as #{view.id}: cancel it first with "
        f"`wip-mailer schedule cancel {view.id}`.")
    cancelled = core.cancel_schedule(engine, view.id)
    assert cancelled.status == "cancelled"
    assert cancelled.next_run_at is None
    assert edition_status(engine) == "ready"
    with pytest.raises(StateError, match=f"#{view.id} is cancelled and can no longer be cancelled"):
        core.cancel_schedule(engine, view.id)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (core.ScheduleRequest("2024-03", at="2030-01-01 09:00"),
         "Say which list(s) to send to with --list NAME."),
        (core.ScheduleRequest("2024-03", cron="0 9 * * *", lists=("newsletter",)),
         "A send cannot recur (an edition goes out once): use --at; --cron is for check and "
         "reminder jobs."),
        (core.ScheduleRequest("2024-03", at="2030-01-01 09:00", lists=("nobody",)),
         "There is no list named 'nobody'."),
        (core.ScheduleRequest("1999-01", at="2030-01-01 09:00", lists=("newsletter",)),
         "There is no edition with slug '1999-01'."),
        (core.ScheduleRequest("2024-03", kind="check", cron="61 9 * * *"),
         "The cron rule '61 9 * * *' is not valid"),
        (core.ScheduleRequest("2024-03", kind="reminder", at="2030-01-01 09:00", notify=("not-mail",)),
         "The reminder address 'not-mail' is not an email address."),
        (core.ScheduleRequest("2024-03", at="2030-01-01 09:00", lists=("newsletter",), segment="country ="),
         "The segment 'country =' has the end where a value for 'country' was expected."),
        (core.ScheduleRequest("2024-03", kind="check"),
         "Give either --at (one time) or --cron (a recurring rule), not both."),
    ],
)
def test_bad_requests_store_nothing(engine, settings, request_, message) -> None:
    make_edition(engine)
    make_list(engine)
    with pytest.raises(Exception) as caught:
        core.add_schedule(engine, settings, request_)
    assert str(caught.value).startswith(message)
    assert core.list_schedules(engine) == []
    with engine.connect() as connection:
        assert connection.execute(select(apscheduler_jobs.c.id)).all() == []
    assert edition_status(engine) == "ready"


# --- the lease (wip_mailer.lease, tested in tests/test_lease.py) -------------------------

def test_a_second_service_refuses(engine, fast) -> None:
    with service_thread(engine, fast):
        second = core.SchedulerService(engine, fast)
        import threading

        with pytest.raises(core.LeaseRefused, match="Another scheduler is already running on this database"):
            second.run(threading.Event())


# --- firing --------------------------------------------------------------------------------

def test_a_reminder_fires_and_reaches_the_smtp_server(engine, fast, smtp_server) -> None:
    make_edition(engine)
    with service_thread(engine, fast):
        view = core.add_schedule(engine, fast, core.ScheduleRequest(
            "2024-03", kind="reminder", at=in_seconds(1), notify=("editor@example.org",)))
        assert wait_until(lambda: row(engine, view.id).status == "done", timeout=8)
    assert [m.rcpt_tos for m in smtp_server.messages] == [["editor@example.org"]]
    message = smtp_server.messages[0].message
    assert message["Subject"] == "Reminder: Marzo-Aprile 2024 (2024-03)"
    assert "No send is scheduled for it yet." in message.get_content()
    done = row(engine, view.id)
    assert done.run_count == 1
    assert done.message == "done: reminder sent to editor@example.org"


def test_a_job_added_while_the_service_runs_is_picked_up(engine, fast, smtp_server, cli) -> None:
    # The service is already asleep when another process (here: the CLI) writes the job.
    make_edition(engine)
    with service_thread(engine, fast):
        time.sleep(0.5)
        result = cli("schedule", "2024-03", "--kind", "reminder", "--at", in_seconds(1),
                     "--to", "editor@example.org")
        assert result.exit_code == 0, result.output
        assert "No scheduler is running" not in result.output
        assert wait_until(lambda: len(smtp_server.messages) == 1, timeout=5)
    assert len(smtp_server.messages) == 1


def test_a_failing_check_at_fire_time_stops_the_send(engine, fast, monkeypatch, caplog) -> None:
    calls = []

    def blocked_send(context: core.ActionContext) -> str:
        calls.append(context.slug)
        raise StateError("The edition 2024-03 fails its pre-flight check: 2 links are placeholders.")

    monkeypatch.setitem(core.ACTIONS, "send", blocked_send)
    make_edition(engine, status="ready")
    make_list(engine)
    caplog.set_level(logging.INFO, logger="wip_mailer.schedule")
    with service_thread(engine, fast):
        view = core.add_schedule(engine, fast, core.ScheduleRequest(
            "2024-03", at=in_seconds(1), lists=("newsletter",)))
        assert wait_until(lambda: row(engine, view.id).status == "failed", timeout=8)
    assert calls == ["2024-03"]
    expected = (f"Schedule #{view.id} (send 2024-03) not sent: The edition 2024-03 fails its "
                "pre-flight check: 2 links are placeholders.")
    assert expected in [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert edition_status(engine) == "ready"  # back where it was, to be fixed and rescheduled


def test_a_firing_is_claimed_once(engine, settings, monkeypatch) -> None:
    calls = []
    monkeypatch.setitem(core.ACTIONS, "check", lambda context: calls.append(context.job.id) or "ok")
    make_edition(engine)
    view = core.add_schedule(engine, settings, core.ScheduleRequest(
        "2024-03", kind="check", at=in_seconds(3600)))
    service = core.SchedulerService(engine, settings)
    service.run_job(view.id, fired_at=view.run_at)
    service.run_job(view.id, fired_at=view.run_at)  # e.g. the timer survived a crash and fires again
    core.SchedulerService(engine, settings).run_job(view.id, fired_at=view.run_at)  # or another one
    assert calls == [view.id]
    assert row(engine, view.id).status == "done"
    assert row(engine, view.id).run_count == 1


def test_a_recurring_job_returns_to_scheduled_and_stops_once_the_edition_is_sent(
    engine, settings, monkeypatch
) -> None:
    calls = []
    monkeypatch.setitem(core.ACTIONS, "check", lambda context: calls.append(1) or "check passed")
    make_edition(engine)
    view = core.add_schedule(engine, settings, core.ScheduleRequest("2024-03", kind="check",
                                                                    cron="0 9 * * *"))
    service = core.SchedulerService(engine, settings)
    service.run_job(view.id)
    after_first = row(engine, view.id)
    assert (after_first.status, after_first.message, after_first.run_count) == (
        "scheduled", "last run: done: check passed", 1)
    with session_scope(engine) as session:
        edition = session.exec(select(Edition).where(Edition.slug == "2024-03")).scalar_one()
        edition.status = "sent"
    service.run_job(view.id)
    final = row(engine, view.id)
    assert (final.status, final.message) == ("done", "stopped: the edition 2024-03 has been sent")
    assert calls == [1]


def test_start_up_settles_what_a_crash_left_behind(engine, fast, caplog) -> None:
    make_edition(engine)
    running = core.add_schedule(engine, fast, core.ScheduleRequest(
        "2024-03", kind="check", at=in_seconds(3600)))
    vanished = core.add_schedule(engine, fast, core.ScheduleRequest(
        "2024-03", kind="check", at=in_seconds(3600)))
    lost_future = core.add_schedule(engine, fast, core.ScheduleRequest(
        "2024-03", kind="check", at=in_seconds(3600)))
    with session_scope(engine) as session:
        # A scheduler died while running the first; the second's timer was consumed and its due
        # time passed; the third lost its timer (e.g. `schedule` died halfway).
        session.get(ScheduledJob, running.id).status = "running"
        session.get(ScheduledJob, vanished.id).run_at = utcnow() - timedelta(minutes=5)
    with engine.begin() as connection:
        connection.execute(apscheduler_jobs.delete().where(
            apscheduler_jobs.c.id.in_([core.job_id(vanished.id), core.job_id(lost_future.id)])))
    caplog.set_level(logging.INFO, logger="wip_mailer.schedule")
    with service_thread(engine, fast):
        pass
    assert row(engine, running.id).status == "failed"
    assert row(engine, running.id).message.startswith("interrupted: the scheduler stopped while this job ran")
    assert row(engine, vanished.id).status == "missed"
    assert row(engine, vanished.id).message.startswith("missed: its timer was gone")
    assert row(engine, lost_future.id).status == "scheduled"
    assert core.list_schedules(engine)[2].next_run_at is not None  # its timer is back
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3


def test_a_cancelled_job_does_not_fire_and_its_timer_is_dropped(engine, fast, smtp_server) -> None:
    make_edition(engine)
    view = core.add_schedule(engine, fast, core.ScheduleRequest(
        "2024-03", kind="reminder", at=in_seconds(1), notify=("editor@example.org",)))
    core.cancel_schedule(engine, view.id)
    with service_thread(engine, fast):
        time.sleep(1.8)
        with engine.connect() as connection:
            assert connection.execute(select(apscheduler_jobs.c.id)).all() == []
    assert smtp_server.messages == []
    assert row(engine, view.id).status == "cancelled"


def test_a_moved_job_fires_at_its_new_time_and_not_at_its_old_one(engine, fast, smtp_server, caplog) -> None:
    # The service already holds the old timer when the job is moved from another "process".
    make_edition(engine)
    view = core.add_schedule(engine, fast, core.ScheduleRequest(
        "2024-03", kind="reminder", at=in_seconds(3), notify=("editor@example.org",)))
    with caplog.at_level(logging.INFO), service_thread(engine, fast):
        time.sleep(0.3)
        moved = core.move_schedule(engine, fast, view.id, in_seconds(6))
        assert moved.run_at is not None and moved.run_at > view.run_at  # type: ignore[operator]
        time.sleep(3.5)  # past the old time
        assert smtp_server.messages == []
        assert row(engine, view.id).status == "scheduled"
        assert wait_until(lambda: row(engine, view.id).status == "done", timeout=8)
    assert len(smtp_server.messages) == 1
    assert smtp_server.messages[0].received_at >= moved.run_at.timestamp() - 0.5
    assert row(engine, view.id).run_count == 1


def test_the_old_timer_of_a_moved_job_cannot_claim_it(engine, settings, caplog) -> None:
    # The moment between the row's new time and the replaced timer: a firing then is refused.
    make_edition(engine)
    view = core.add_schedule(engine, settings, core.ScheduleRequest(
        "2024-03", kind="reminder", at=in_seconds(60), notify=("editor@example.org",)))
    core.move_schedule(engine, settings, view.id, in_seconds(3600))
    service = core.SchedulerService(engine, settings)
    with caplog.at_level(logging.INFO):
        service.run_job(view.id, fired_at=view.run_at)  # the old timer, at its old time
    assert row(engine, view.id).status == "scheduled"
    assert row(engine, view.id).run_count == 0
    assert "was moved to" in caplog.text


def test_only_a_pending_one_time_job_can_be_moved(engine, settings) -> None:
    make_edition(engine)
    recurring = core.add_schedule(engine, settings, core.ScheduleRequest(
        "2024-03", kind="check", cron="0 9 * * mon"))
    with pytest.raises(InvalidInputError, match="recurs"):
        core.move_schedule(engine, settings, recurring.id, in_seconds(60))
    once = core.add_schedule(engine, settings, core.ScheduleRequest(
        "2024-03", kind="check", at=in_seconds(60)))
    core.cancel_schedule(engine, once.id)
    with pytest.raises(StateError, match="is cancelled and can no longer be moved"):
        core.move_schedule(engine, settings, once.id, in_seconds(60))
    with pytest.raises(InvalidInputError, match="in the past"):
        core.move_schedule(engine, settings, once.id, "2020-01-01 09:00")
    with pytest.raises(NotFoundError, match="no scheduled job #99"):
        core.move_schedule(engine, settings, 99, in_seconds(60))


# --- the CLI -------------------------------------------------------------------------------

def test_cli_schedule_list_and_cancel(engine, cli) -> None:
    make_edition(engine)
    make_list(engine)
    added = cli("schedule", "2024-03", "--at", "2030-03-01 09:00", "--list", "newsletter")
    assert added.exit_code == 0, added.stderr
    assert added.output == (
        "Scheduled #1: send 2024-03 to newsletter at 2030-03-01 09:00 CET (2030-03-01 08:00 UTC).\n"
        "No scheduler is running: start `wip-mailer scheduler run` so that it runs.\n")
    listed = cli("schedule", "list", "--json")
    data = json.loads(listed.output)
    assert [(d["id"], d["edition"], d["kind"], d["status"], d["lists"]) for d in data] == [
        (1, "2024-03", "send", "scheduled", ["newsletter"])]
    assert data[0]["run_at"] == "2030-03-01T08:00:00+00:00"
    assert data[0]["next_run_at"] == "2030-03-01T08:00:00+00:00"
    text = cli("schedule", "list")
    assert text.output == "#1  scheduled  2030-03-01 09:00 CET  send 2024-03 to newsletter\n"
    moved = cli("schedule", "move", "1", "--at", "2030-03-02 10:30")
    assert moved.exit_code == 0, moved.stderr
    assert moved.output == "Moved #1: send 2024-03 to newsletter at 2030-03-02 10:30 CET.\n"
    assert json.loads(cli("schedule", "list", "--json").output)[0]["next_run_at"] == (
        "2030-03-02T09:30:00+00:00")  # the timer moved with the row
    cancelled = cli("schedule", "cancel", "1")
    assert cancelled.output == "Cancelled #1: send 2024-03 to newsletter at 2030-03-02 10:30 CET.\n"
    assert cli("schedule", "list", "--status", "scheduled").output == "No scheduled jobs.\n"


def test_cli_errors_are_one_line(engine, cli) -> None:
    make_edition(engine)
    make_list(engine)
    past = cli("schedule", "add", "2024-03", "--at", "2020-01-01 09:00", "--list", "newsletter")
    assert past.exit_code == 1
    assert past.stderr == (
        "Error: The time '2020-01-01 09:00' (2020-01-01 09:00 CET) is in the past: give a future time.\n")
    missing = cli("schedule", "cancel", "42")
    assert missing.stderr == "Error: There is no scheduled job #42.\n"
    assert edition_status(engine) == "ready"


def test_scheduler_settings_are_read_and_checked(tmp_path) -> None:
    from wip_mailer.errors import SettingsError
    from wip_mailer.settings import load_settings

    absent = tmp_path / "absent.env"
    defaults = load_settings({}, absent)
    assert (defaults.scheduler_grace_seconds, defaults.scheduler_poll_seconds) == (3600, 5.0)
    tuned = load_settings({"WIP_MAILER_SCHEDULER_GRACE_SECONDS": "600",
                           "WIP_MAILER_SCHEDULER_POLL_SECONDS": "0.5"}, absent)
    assert (tuned.scheduler_grace_seconds, tuned.scheduler_poll_seconds) == (600, 0.5)
    with pytest.raises(SettingsError) as caught:
        load_settings({"WIP_MAILER_SCHEDULER_GRACE_SECONDS": "0"}, absent)
    assert str(caught.value) == (
        "WIP_MAILER_SCHEDULER_GRACE_SECONDS must be a whole number from 1 to 2592000, got '0'.")


def test_the_systemd_unit_runs_an_existing_command(cli) -> None:
    from pathlib import Path

    unit = Path(__file__).resolve().parents[1] / "scripts" / "systemd" / "wip-mailer-scheduler.service"
    exec_start = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    args = exec_start.split()[1:]
    assert args == ["scheduler", "run", "--wait"]
    assert cli(*args, "--help").exit_code == 0


def test_cli_recurring_reminder_shows_its_next_time(engine, cli) -> None:
    make_edition(engine)
    added = cli("schedule", "add", "2024-03", "--kind", "reminder", "--cron", "0 9 1 1 *",
                "--to", "Editor <Editor@Example.org>")
    assert added.exit_code == 0, added.stderr
    next_year = utcnow().astimezone(ROME).year + 1
    assert added.output.startswith(
        f"Scheduled #1: reminder 2024-03 at cron '0 9 1 1 *' "
        f"(Europe/Rome, next {next_year}-01-01 09:00 CET).")
    listed = json.loads(cli("schedule", "list", "--json").output)
    assert listed[0]["notify"] == ["Editor@example.org"]
    assert listed[0]["next_run_at"] == f"{next_year}-01-01T08:00:00+00:00"


def test_a_scheduled_check_runs_the_real_preflight(engine, settings) -> None:
    from tests.schedule_helpers import approve_an_item

    settings = dataclasses.replace(settings, demo=True)  # the template's example.org sender
    make_edition(engine)
    blocked = core.add_schedule(engine, settings, core.ScheduleRequest(
        "2024-03", kind="check", at=in_seconds(3600)))
    service = core.SchedulerService(engine, settings)
    service.run_job(blocked.id, fired_at=blocked.run_at)
    failed = row(engine, blocked.id)
    assert failed.status == "failed"
    assert failed.message == (
        "failed: The check of 2024-03 found 1 blocking problem(s): Edition '2024-03' has no "
        "approved items; nothing to send.")
    approve_an_item(engine)  # the editor fixes the edition; the next check passes
    passing = core.add_schedule(engine, settings, core.ScheduleRequest(
        "2024-03", kind="check", at=in_seconds(3600)))
    service.run_job(passing.id, fired_at=passing.run_at)
    done = row(engine, passing.id)
    assert done.status == "done"
    assert done.message.startswith("done: check passed with ")
    assert edition_status(engine) == "ready"  # a check never changes the edition


def test_a_scheduled_check_judges_a_real_send_and_names_placeholder_settings(engine, settings) -> None:
    from tests.schedule_helpers import approve_an_item

    make_edition(engine)
    approve_an_item(engine)
    job = core.add_schedule(engine, settings, core.ScheduleRequest("2024-03", kind="check",
                                                                   at=in_seconds(3600)))
    core.SchedulerService(engine, settings).run_job(job.id, fired_at=job.run_at)
    failed = row(engine, job.id)
    assert failed.status == "failed"
    assert "WIP_MAILER_FROM uses the placeholder domain example.org" in failed.message
