"""What an editor schedules: ``scheduled_job`` rows and their timers in the job store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from wip_mailer.db import session_scope, utcnow
from wip_mailer.editorial import get_edition, set_edition_status
from wip_mailer.errors import InvalidInputError, NotFoundError, StateError
from wip_mailer.models import (
    Edition,
    EditionStatus,
    ScheduledJob,
    ScheduleKind,
    ScheduleStatus,
    apscheduler_jobs,
)
from wip_mailer.schedule.times import format_local, make_trigger, parse_at, parse_cron
from wip_mailer.settings import Settings

JOB_STORE = "default"  # APScheduler's SQLAlchemyJobStore in our database

ACTIVE_STATUSES = (ScheduleStatus.SCHEDULED, ScheduleStatus.RUNNING)
SCHEDULABLE_EDITION_STATUSES = (EditionStatus.DRAFT, EditionStatus.READY)


def job_id(schedule_id: int) -> str:
    """The APScheduler job id of a ``scheduled_job`` row."""
    return f"schedule-{schedule_id}"


def _schedule_id(apscheduler_job_id: str) -> int | None:
    prefix, _, number = apscheduler_job_id.partition("-")
    return int(number) if prefix == "schedule" and number.isdigit() else None



# --- what an editor schedules ----------------------------------------------------------

@dataclass(frozen=True)
class ScheduleRequest:
    """One `wip-mailer schedule` call; ``at`` and ``cron`` are as typed (exactly one)."""

    slug: str
    kind: str = ScheduleKind.SEND
    at: str | None = None
    cron: str | None = None
    lists: tuple[str, ...] = ()
    segment: str | None = None
    notify: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduleView:
    """A scheduled job as `schedule list` shows it."""

    id: int
    slug: str
    kind: str
    status: str
    run_at: datetime | None
    cron: str | None
    timezone: str
    next_run_at: datetime | None  # from APScheduler's job store; None once it has fired
    lists: tuple[str, ...]
    segment: str | None
    notify: tuple[str, ...]
    message: str
    run_count: int
    last_run_at: datetime | None
    created_at: datetime

    @property
    def when(self) -> str:
        tz = ZoneInfo(self.timezone)
        if self.cron:
            upcoming = f", next {format_local(self.next_run_at, tz)}" if self.next_run_at else ""
            return f"cron '{self.cron}' ({self.timezone}{upcoming})"
        assert self.run_at is not None
        return format_local(self.run_at, tz)

    def describe(self) -> str:
        what = f"{self.kind} {self.slug}"
        if self.lists:
            what += " to " + ", ".join(self.lists)
        if self.segment:
            what += f" where {self.segment}"
        return what

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "edition": self.slug, "kind": self.kind, "status": self.status,
            "run_at": self.run_at, "cron": self.cron, "timezone": self.timezone,
            "next_run_at": self.next_run_at, "lists": list(self.lists), "segment": self.segment,
            "notify": list(self.notify), "message": self.message, "run_count": self.run_count,
            "last_run_at": self.last_run_at, "created_at": self.created_at,
        }


class _StoreOnlyScheduler(BaseScheduler):
    """A scheduler that is never unpaused: it only writes jobs into the shared job store.

    APScheduler builds jobs (trigger, next run time, serialised state) through a scheduler;
    this one has no thread and no wake-up, so the CLI never runs a job itself.
    """

    def wakeup(self) -> None:
        pass  # nothing ever runs here

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)


@contextmanager
def _job_store_writer(engine: Engine, settings: Settings) -> Iterator[BaseScheduler]:
    scheduler = _StoreOnlyScheduler(
        timezone=settings.tz, jobstores={JOB_STORE: SQLAlchemyJobStore(engine=engine)}
    )
    scheduler.start(paused=True)
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=False)


def _job_options(job: ScheduledJob, slug: str, settings: Settings) -> dict[str, Any]:
    assert job.id is not None
    return {
        "func": "wip_mailer.schedule:fire",  # by name: stored jobs outlive module layouts
        "trigger": make_trigger(job),
        "args": (job.id,),
        "id": job_id(job.id),
        "name": f"#{job.id} {job.kind} {slug}",
        "jobstore": JOB_STORE,
        "misfire_grace_time": settings.scheduler_grace_seconds,
        "coalesce": True,  # a recurring job that missed several runs runs once
        "max_instances": 1,
        "replace_existing": True,
    }


def add_schedule(
    engine: Engine, settings: Settings, request: ScheduleRequest, now: datetime | None = None
) -> ScheduleView:
    """Record a job and give it a timer in APScheduler's job store; returns what was stored."""
    from wip_mailer.audience import resolve_lists
    from wip_mailer.audience.segments import parse_segment

    tz = settings.tz
    kind = _kind(request.kind)
    if (request.at is None) == (request.cron is None):
        raise InvalidInputError("Give either --at (one time) or --cron (a recurring rule), not both.")
    run_at = parse_at(request.at, tz, now) if request.at is not None else None
    if request.cron is not None:
        if kind == ScheduleKind.SEND:
            raise InvalidInputError(
                "A send cannot recur (an edition goes out once): use --at; --cron is for "
                "check and reminder jobs."
            )
        parse_cron(request.cron, tz)
    if kind == ScheduleKind.SEND and not request.lists:
        raise InvalidInputError("Say which list(s) to send to with --list NAME.")
    if request.segment:
        parse_segment(request.segment)  # a typo is reported now, not at send time
    notify = _notify_addresses(request.notify, settings) if kind == ScheduleKind.REMINDER else ()

    with session_scope(engine) as session:
        edition = get_edition(session, request.slug)
        resolve_lists(session, request.lists)  # every list must exist now, not at send time
        before = None
        if kind == ScheduleKind.SEND:
            before = _claim_edition_for_send(session, edition)
        assert edition.id is not None
        job = ScheduledJob(
            edition_id=edition.id, kind=kind, run_at=run_at, cron=request.cron,
            timezone=tz.key, lists=list(request.lists), segment=request.segment or None,
            notify=list(notify), edition_status_before=before,
        )
        session.add(job)
        session.flush()
    try:
        with _job_store_writer(engine, settings) as writer:
            writer.add_job(**_job_options(job, request.slug, settings))
    except BaseException:
        _forget(engine, job)
        raise
    return _views(engine, [job.id])[0]


def _kind(kind: str) -> ScheduleKind:
    try:
        return ScheduleKind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in ScheduleKind)
        raise InvalidInputError(f"The job kind {kind!r} is not one of {choices}.") from None


def _notify_addresses(addresses: Sequence[str], settings: Settings) -> tuple[str, ...]:
    wanted = list(addresses) or [settings.reply_to or settings.sender]
    normalised = []
    for raw in wanted:
        address = raw.rpartition("<")[2].rstrip(">").strip() if "<" in raw else raw.strip()
        try:
            normalised.append(validate_email(address, check_deliverability=False).normalized)
        except EmailNotValidError:
            raise InvalidInputError(f"The reminder address {raw!r} is not an email address.") from None
    return tuple(dict.fromkeys(normalised))


def _claim_edition_for_send(session: Session, edition: Edition) -> str:
    if edition.status == EditionStatus.SCHEDULED:
        pending = session.exec(
            select(ScheduledJob)
            .where(ScheduledJob.edition_id == edition.id)
            .where(ScheduledJob.kind == ScheduleKind.SEND)
            .where(col(ScheduledJob.status).in_(ACTIVE_STATUSES))
        ).first()
        hint = f" as #{pending.id}: cancel it first with `wip-mailer schedule cancel {pending.id}`" \
            if pending else ""
        raise StateError(f"The edition {edition.slug} is already scheduled to be sent{hint}.")
    if edition.status not in SCHEDULABLE_EDITION_STATUSES:
        raise StateError(
            f"The edition {edition.slug} is {edition.status}: only a draft or ready edition "
            "can be scheduled."
        )
    before = edition.status
    set_edition_status(session, edition, EditionStatus.SCHEDULED, expect=before)
    return before


def _restore_edition(session: Session, job: ScheduledJob) -> None:
    """Put a send's edition back to what it was, unless something else moved it since."""
    if job.kind != ScheduleKind.SEND or not job.edition_status_before:
        return
    edition = session.get(Edition, job.edition_id)
    if edition is not None and edition.status == EditionStatus.SCHEDULED:
        set_edition_status(session, edition, job.edition_status_before, expect=EditionStatus.SCHEDULED)


def _forget(engine: Engine, job: ScheduledJob) -> None:
    with session_scope(engine) as session:
        row = session.get(ScheduledJob, job.id)
        if row is not None:
            _restore_edition(session, row)
            session.delete(row)


def cancel_schedule(engine: Engine, schedule_id: int) -> ScheduleView:
    """Cancel a job that has not started; its timer is dropped now or by the running scheduler."""
    with session_scope(engine) as session:
        job = session.get(ScheduledJob, schedule_id)
        if job is None:
            raise NotFoundError(f"There is no scheduled job #{schedule_id}.")
        changed = _set_status(session, schedule_id, ScheduleStatus.CANCELLED, "cancelled",
                              expected=(ScheduleStatus.SCHEDULED,))
        if not changed:
            session.refresh(job)
            raise StateError(
                f"Scheduled job #{schedule_id} is {job.status} and can no longer be cancelled."
            )
        _restore_edition(session, job)
    # The timer stays in APScheduler's store until a scheduler drops it (a store is changed
    # only by a scheduler, under its lock); were it to fire first, its claim would fail.
    return _views(engine, [schedule_id])[0]


def move_schedule(
    engine: Engine, settings: Settings, schedule_id: int, at: str, now: datetime | None = None
) -> ScheduleView:
    """Give a one-time job that has not started a new time (row and timer alike).

    The row's ``run_at`` changes first, in one conditional UPDATE; a firing of the old timer
    in the moment before its replacement is refused by the claim's ``due_by`` check, so a
    moved send never goes out at its old time.
    """
    run_at = parse_at(at, settings.tz, now)
    with session_scope(engine) as session:
        job = session.get(ScheduledJob, schedule_id)
        if job is None:
            raise NotFoundError(f"There is no scheduled job #{schedule_id}.")
        if job.cron:
            raise InvalidInputError(
                f"Scheduled job #{schedule_id} recurs (cron '{job.cron}'): cancel it and add a new rule."
            )
        moved = _set_status(session, schedule_id, ScheduleStatus.SCHEDULED, None,
                            expected=(ScheduleStatus.SCHEDULED,), run_at=run_at,
                            timezone=settings.tz.key)
        if not moved:
            session.refresh(job)
            raise StateError(f"Scheduled job #{schedule_id} is {job.status} and can no longer be moved.")
        session.refresh(job)
        slug = session.get_one(Edition, job.edition_id).slug
    with _job_store_writer(engine, settings) as writer:
        writer.add_job(**_job_options(job, slug, settings))  # replaces the old timer
    return _views(engine, [schedule_id])[0]


def list_schedules(engine: Engine, statuses: Sequence[str] = ()) -> list[ScheduleView]:
    query = select(ScheduledJob.id)
    if statuses:
        query = query.where(col(ScheduledJob.status).in_(list(statuses)))
    with session_scope(engine) as session:
        ids = [i for i in session.exec(query.order_by(col(ScheduledJob.id))).all() if i is not None]
    return _views(engine, ids)


def _views(engine: Engine, ids: Sequence[int | None]) -> list[ScheduleView]:
    with session_scope(engine) as session:
        rows = session.exec(
            select(ScheduledJob, Edition.slug)
            .join(Edition, col(Edition.id) == col(ScheduledJob.edition_id))
            .where(col(ScheduledJob.id).in_([i for i in ids if i is not None]))
            .order_by(col(ScheduledJob.id))
        ).all()
        timers = {
            timer_id: stamp for timer_id, stamp in
            session.execute(sa.select(apscheduler_jobs.c.id, apscheduler_jobs.c.next_run_time))
        }
    views = []
    for job, slug in rows:
        assert job.id is not None
        stamp = timers.get(job_id(job.id))
        views.append(ScheduleView(
            id=job.id, slug=slug, kind=job.kind, status=job.status, run_at=job.run_at,
            cron=job.cron, timezone=job.timezone,
            next_run_at=(datetime.fromtimestamp(stamp, UTC)
                         if stamp is not None and job.status in ACTIVE_STATUSES else None),
            lists=tuple(job.lists), segment=job.segment, notify=tuple(job.notify),
            message=job.message, run_count=job.run_count, last_run_at=job.last_run_at,
            created_at=job.created_at,
        ))
    return views


def _set_status(
    session: Session, schedule_id: int, status: str, message: str | None,
    expected: Sequence[str], due_by: datetime | None = None, **values: Any,
) -> bool:
    """Move a row to ``status`` only if it is in one of ``expected`` (and, with ``due_by``,
    only a recurring row or a one-time row due by then): one atomic UPDATE."""
    if message is not None:
        values["message"] = message
    query = (
        sa.update(ScheduledJob)
        .where(col(ScheduledJob.id) == schedule_id)
        .where(col(ScheduledJob.status).in_(list(expected)))
    )
    if due_by is not None:
        query = query.where(sa.or_(col(ScheduledJob.run_at).is_(None), col(ScheduledJob.run_at) <= due_by))
    result = session.execute(
        query.values(status=status, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
