"""Scheduling: editions, checks and reminders that run at a set time and survive restarts.

Two records in the same database, each the truth about one thing:

- ``scheduled_job`` rows (``models.ScheduledJob``) say *what* was scheduled and what became
  of it. A firing may run only after it claims its row with one conditional UPDATE
  (``scheduled → running``), so no job runs twice, whoever fires it and however often.
- APScheduler's ``SQLAlchemyJobStore`` (table ``apscheduler_jobs``, job id ``schedule-<id>``)
  keeps *when*: triggers, next run times, misfire grace. `wip-mailer schedule` writes there
  through a scheduler that never runs anything; `wip-mailer scheduler run` executes.

Only one `scheduler run` may work on a database: it holds the ``scheduler`` lease
(``wip_mailer.lease``), renewed every poll interval; a scheduler killed on this host is
taken over at once, one elsewhere when its lease expires. A second one refuses (or waits
with ``--wait``).

Nothing is dropped silently: a job whose time passed beyond the grace window while no
scheduler ran is marked ``missed`` (APScheduler's misfire event), and at start-up every row
left ``running`` by a crash is marked ``failed`` and every one-off row whose timer vanished is
marked ``missed``; each case is logged and shown by `wip-mailer schedule list`.

Modules: ``times`` (reading times and cron expressions), ``jobs`` (what is scheduled: rows,
timers, moving, cancelling, listing), ``actions`` (what a firing does), ``service`` (the running
scheduler: lease, reconciliation, firing).
"""

from wip_mailer.schedule.actions import ACTIONS, ActionContext, reminder_text
from wip_mailer.schedule.jobs import (
    ScheduleRequest,
    ScheduleView,
    _job_store_writer,
    add_schedule,
    cancel_schedule,
    job_id,
    list_schedules,
    move_schedule,
)
from wip_mailer.schedule.service import LeaseRefused, SchedulerService, fire, lease_holder
from wip_mailer.schedule.times import format_local, parse_at, parse_cron

__all__ = [
    "ACTIONS", "ActionContext", "LeaseRefused", "ScheduleRequest",
    "ScheduleView", "SchedulerService", "_job_store_writer", "add_schedule", "cancel_schedule",
    "fire", "format_local", "job_id", "lease_holder", "list_schedules", "move_schedule", "parse_at",
    "parse_cron", "reminder_text",
]
