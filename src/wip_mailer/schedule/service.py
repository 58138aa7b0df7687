"""`wip-mailer scheduler run`: the lease, the start-up reconciliation, the scheduler."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from wip_mailer.db import explain_database_error, session_scope, utcnow
from wip_mailer.errors import StateError, WipMailerError
from wip_mailer.lease import Holder, Lease, holder
from wip_mailer.models import (
    Edition,
    EditionStatus,
    ScheduledJob,
    ScheduleKind,
    ScheduleStatus,
    apscheduler_jobs,
)
from wip_mailer.schedule.actions import ACTIONS, ActionContext
from wip_mailer.schedule.jobs import (
    ACTIVE_STATUSES,
    JOB_STORE,
    _job_options,
    _job_store_writer,
    _restore_edition,
    _schedule_id,
    _set_status,
    job_id,
)
from wip_mailer.schedule.times import _duration, format_local
from wip_mailer.settings import Settings

log = logging.getLogger("wip_mailer.schedule")

LEASE_NAME = "scheduler"
INTERNAL_STORE = "internal"  # the heartbeat, kept in memory only
HEARTBEAT_JOB = "wip-mailer-heartbeat"


# --- the lease: one scheduler per database -----------------------------------------------

def lease_holder(engine: Engine) -> Holder | None:
    """The scheduler currently holding the database, if any."""
    return holder(engine, LEASE_NAME)


# --- the service -------------------------------------------------------------------------

# How early a timer may fire and still claim its one-time job (clocks of two processes).
_EARLY_FIRING = timedelta(seconds=1)

_running: SchedulerService | None = None
_running_lock = threading.Lock()


def fire(schedule_id: int) -> None:
    """What APScheduler calls (by reference, so the stored job survives restarts)."""
    service = _running
    if service is None:
        raise RuntimeError("no `wip-mailer scheduler run` is active in this process")
    service.run_job(schedule_id)


class LeaseRefused(StateError):
    """Another scheduler holds the database."""


class SchedulerService:
    """`wip-mailer scheduler run`: the lease, the start-up reconciliation, the scheduler."""

    def __init__(self, engine: Engine, settings: Settings, owner: str | None = None):
        self.engine = engine
        self.settings = settings
        self.poll = settings.scheduler_poll_seconds
        self.lease = Lease(engine, LEASE_NAME, max(15.0, 6 * self.poll), token=owner)
        self.owner = self.lease.token
        self.grace = timedelta(seconds=settings.scheduler_grace_seconds)
        self.lost_lease = False
        self._stop = threading.Event()
        self._scheduler: BackgroundScheduler | None = None

    # The whole life of the service; returns when ``stop`` is set (or the lease is lost).
    def run(self, stop: threading.Event, wait_for_lease: bool = False) -> None:
        global _running
        self._stop = stop
        self._take_lease(wait_for_lease)
        if stop.is_set():
            return
        with _running_lock:
            if _running is not None:
                self.lease.release()
                raise StateError("A scheduler is already running in this process.")
            _running = self
        try:
            self._reconcile()
            self._start()
            while not stop.wait(0.2):
                pass
        finally:
            self._shutdown()
            with _running_lock:
                _running = None
        if self.lost_lease:
            raise StateError(
                "The scheduler lost its database lease to another process and stopped, so that "
                "no job runs twice."
            )

    def _take_lease(self, wait: bool) -> None:
        waiting = False
        while (current := self.lease.acquire()) is not None:
            if not wait:
                until = format_local(current.expires_at, self.settings.tz)
                who = f" ({current.token}, lease valid until {until})"
                raise LeaseRefused(
                    f"Another scheduler is already running on this database{who}: stop it first, "
                    "or start this one with --wait to take over when it stops."
                )
            if not waiting:
                log.info("Another scheduler holds the database; waiting for it to stop.")
                waiting = True
            if self._stop.wait(self.poll):
                return
        log.info("Scheduler %s holds the database lease.", self.owner)

    def _reconcile(self) -> None:
        """Settle what a previous scheduler left behind, before any job can fire."""
        with session_scope(self.engine) as session:
            timers = set(session.execute(sa.select(apscheduler_jobs.c.id)).scalars().all())
            rows = session.exec(
                select(ScheduledJob, Edition.slug)
                .join(Edition, col(Edition.id) == col(ScheduledJob.edition_id))
                .where(col(ScheduledJob.status).in_(ACTIVE_STATUSES))
            ).all()
        now = utcnow()
        for job, slug in rows:
            assert job.id is not None
            label = f"Schedule #{job.id} ({job.kind} {slug})"
            if job.status == ScheduleStatus.RUNNING:
                self._settle_interrupted(job, slug, label)
            elif job_id(job.id) not in timers and job.cron is None and job.run_at is not None \
                    and job.run_at <= now:
                message = (f"missed: its timer was gone when the scheduler started (due "
                           f"{format_local(job.run_at, ZoneInfo(job.timezone))}); it did not run")
                self._finish(job.id, ScheduleStatus.MISSED, message, expected=(ScheduleStatus.SCHEDULED,))
                log.warning("%s %s.", label, message)
            elif job_id(job.id) not in timers:
                with _job_store_writer(self.engine, self.settings) as writer:
                    writer.add_job(**_job_options(job, slug, self.settings))
                log.warning("%s had no timer in the job store; it was restored.", label)

    def _settle_interrupted(self, job: ScheduledJob, slug: str, label: str) -> None:
        assert job.id is not None
        if job.cron:
            message = "its last run was interrupted when the scheduler stopped"
            self._finish(job.id, ScheduleStatus.SCHEDULED, message, expected=(ScheduleStatus.RUNNING,))
        else:
            message = "interrupted: the scheduler stopped while this job ran; it is not run again"
            if job.kind == ScheduleKind.SEND:
                message += f" (finish the sending with `wip-mailer send {slug} --resume`)"
            self._finish(job.id, ScheduleStatus.FAILED, message, expected=(ScheduleStatus.RUNNING,))
        log.error("%s %s.", label, message)

    def _start(self) -> None:
        scheduler = BackgroundScheduler(
            timezone=self.settings.tz,
            jobstores={
                JOB_STORE: SQLAlchemyJobStore(engine=self.engine),
                INTERNAL_STORE: MemoryJobStore(),
            },
            executors={"default": ThreadPoolExecutor(max_workers=4)},
        )
        scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        scheduler.add_listener(self._on_error, EVENT_JOB_ERROR)
        scheduler.start(paused=True)
        # The grace window is the running service's setting, whatever it was when a job was added.
        grace = self.settings.scheduler_grace_seconds
        for stored in scheduler.get_jobs(jobstore=JOB_STORE):
            if stored.misfire_grace_time != grace:
                stored.modify(misfire_grace_time=grace)
        # Waking every poll interval makes the scheduler see jobs other processes add to the
        # store, renews the lease and drops timers of cancelled jobs.
        scheduler.add_job(
            self._heartbeat, "interval", seconds=self.poll, id=HEARTBEAT_JOB, jobstore=INTERNAL_STORE,
            coalesce=True, max_instances=1, misfire_grace_time=None,
        )
        self._scheduler = scheduler
        self._drop_stale_timers()
        waiting = len(scheduler.get_jobs(jobstore=JOB_STORE))
        log.info(
            "Scheduler started: %d job(s) waiting; grace window %ss; looking for new jobs every %ss.",
            waiting, grace, f"{self.poll:g}",
        )
        scheduler.resume()

    def _shutdown(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            log.info("Stopping: waiting for running jobs to finish.")
            scheduler.shutdown(wait=True)
        if not self.lost_lease:
            self.lease.release()
        log.info("Scheduler stopped.")

    def _heartbeat(self) -> None:
        if not self.lease.renew():
            self.lost_lease = True
            log.error("The database lease was taken by another scheduler; stopping.")
            self._stop.set()
            return
        self._drop_stale_timers()

    def _drop_stale_timers(self) -> None:
        """Remove timers of jobs cancelled (or deleted) since they were added."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        ids = {_schedule_id(job.id): job.id for job in scheduler.get_jobs(jobstore=JOB_STORE)}
        known = {i for i in ids if i is not None}
        with session_scope(self.engine) as session:
            active = set(session.exec(
                select(ScheduledJob.id)
                .where(col(ScheduledJob.id).in_(known))
                .where(col(ScheduledJob.status).in_(ACTIVE_STATUSES))
            ).all())
        for schedule_id, apscheduler_id in ids.items():
            if schedule_id not in active:
                try:
                    scheduler.remove_job(apscheduler_id, jobstore=JOB_STORE)
                    log.info("Dropped the timer of %s (cancelled).", apscheduler_id)
                except JobLookupError:
                    pass  # it fired or was removed meanwhile

    # --- firing ----------------------------------------------------------------------------

    def run_job(self, schedule_id: int, fired_at: datetime | None = None) -> None:
        """Claim and run a job whose timer fired (at ``fired_at``, now by default)."""
        with session_scope(self.engine) as session:
            # A one-time job moved to a later time (`schedule move`) is not run by its old timer.
            claimed = _set_status(session, schedule_id, ScheduleStatus.RUNNING, None,
                                  expected=(ScheduleStatus.SCHEDULED,), claimed_by=self.owner,
                                  due_by=(fired_at or utcnow()) + _EARLY_FIRING)
            row = session.get(ScheduledJob, schedule_id)
            edition = session.get(Edition, row.edition_id) if row is not None else None
        if row is None or edition is None:
            log.warning("Schedule #%d no longer exists; nothing to do.", schedule_id)
            return
        label = f"Schedule #{schedule_id} ({row.kind} {edition.slug})"
        if not claimed:
            if row.status == ScheduleStatus.SCHEDULED and row.run_at is not None:
                log.info("%s was moved to %s; its old timer is ignored.", label,
                         format_local(row.run_at, ZoneInfo(row.timezone)))
            else:
                log.info("%s is %s; it is not run again.", label, row.status)
            return
        log.info("%s starts.", label)
        retired = bool(row.cron) and edition.status == EditionStatus.SENT
        status: str
        if retired:
            status, message = ScheduleStatus.DONE, f"stopped: the edition {edition.slug} has been sent"
        elif row.kind == ScheduleKind.SEND and edition.status != EditionStatus.SCHEDULED:
            status, message = ScheduleStatus.FAILED, (
                f"not sent: the edition {edition.slug} is {edition.status}, no longer scheduled")
        else:
            status, message = self._perform(row, edition)
        failed = status == ScheduleStatus.FAILED
        if row.cron and not retired:
            # A recurring job waits for its next time; its last outcome stays in the message.
            status, message = ScheduleStatus.SCHEDULED, f"last run: {message}"
        self._finish(schedule_id, status, message, expected=(ScheduleStatus.RUNNING,), counted=not retired)
        log.log(logging.ERROR if failed else logging.INFO, "%s %s.", label, message.rstrip("."))
        if retired and self._scheduler is not None:
            with suppress(JobLookupError):
                self._scheduler.remove_job(job_id(schedule_id), jobstore=JOB_STORE)

    def _perform(self, row: ScheduledJob, edition: Edition) -> tuple[str, str]:
        action = ACTIONS.get(row.kind)
        if action is None:
            return ScheduleStatus.FAILED, f"failed: no action for the kind {row.kind!r}"
        context = ActionContext(self.engine, self.settings, row, edition.slug, edition.title)
        try:
            outcome = action(context)
        except WipMailerError as exc:
            verb = "not sent" if row.kind == ScheduleKind.SEND else "failed"
            return ScheduleStatus.FAILED, f"{verb}: {exc}"
        except DBAPIError as exc:  # the job's message is shown by `schedule list`: no SQL, no addresses
            return ScheduleStatus.FAILED, f"failed: {explain_database_error(exc, self.settings.database_url)}"
        except Exception as exc:
            log.exception("Schedule #%s raised an unexpected error.", row.id)
            return ScheduleStatus.FAILED, f"failed: unexpected {type(exc).__name__}: {exc}"
        return ScheduleStatus.DONE, f"done: {outcome}"

    def _finish(
        self, schedule_id: int, status: str, message: str, expected: Sequence[str], counted: bool = False
    ) -> bool:
        values: dict[str, Any] = {}
        if counted:
            values = {"run_count": col(ScheduledJob.run_count) + 1, "last_run_at": utcnow()}
        with session_scope(self.engine) as session:
            changed = _set_status(session, schedule_id, status, message, expected, **values)
            job = session.get(ScheduledJob, schedule_id)
            if changed and job is not None and status in (
                ScheduleStatus.FAILED, ScheduleStatus.MISSED, ScheduleStatus.CANCELLED
            ):
                _restore_edition(session, job)
        return changed

    # --- APScheduler events ------------------------------------------------------------------

    def _on_missed(self, event: JobExecutionEvent) -> None:
        schedule_id = _schedule_id(event.job_id)
        if schedule_id is None:
            return
        with session_scope(self.engine) as session:
            job = session.get(ScheduledJob, schedule_id)
            slug = session.get(Edition, job.edition_id).slug if job is not None else "?"  # type: ignore[union-attr]
        if job is None:
            return
        tz = ZoneInfo(job.timezone)
        late = utcnow() - event.scheduled_run_time
        message = (
            f"missed: due {format_local(event.scheduled_run_time, tz)}, it was "
            f"{_duration(late)} late, beyond the grace window of {_duration(self.grace)}"
        )
        label = f"Schedule #{schedule_id} ({job.kind} {slug})"
        if job.cron:
            self._finish(schedule_id, ScheduleStatus.SCHEDULED, f"last run {message}",
                         expected=(ScheduleStatus.SCHEDULED,))
            log.warning("%s %s; it waits for its next time.", label, message)
            return
        if self._finish(schedule_id, ScheduleStatus.MISSED, message, expected=(ScheduleStatus.SCHEDULED,)):
            hint = f"; schedule it again with `wip-mailer schedule {slug} --at ...`"
            log.warning("%s %s%s.", label, message, hint)

    def _on_error(self, event: JobExecutionEvent) -> None:
        schedule_id = _schedule_id(event.job_id)
        if schedule_id is None:
            log.error("Internal job %s failed: %s", event.job_id, event.exception)
            return
        self._finish(schedule_id, ScheduleStatus.FAILED, f"failed: {event.exception}",
                     expected=(ScheduleStatus.RUNNING,))
