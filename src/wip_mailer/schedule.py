"""Scheduling: editions, checks and reminders that run at a set time and survive restarts.

Two records in the same database, each the truth about one thing:

- ``scheduled_job`` rows (``models.ScheduledJob``) say *what* was scheduled and what became
  of it. A firing may run only after it claims its row with one conditional UPDATE
  (``scheduled → running``), so no job runs twice, whoever fires it and however often.
- APScheduler's ``SQLAlchemyJobStore`` (table ``apscheduler_jobs``, job id ``schedule-<id>``)
  keeps *when*: triggers, next run times, misfire grace. `wip-mailer schedule` writes there
  through a scheduler that never runs anything; `wip-mailer scheduler run` executes.

Only one `scheduler run` may work on a database: it holds a lease row (``scheduler_lease``)
taken with a conditional UPDATE or INSERT, renewed every poll interval and expiring so that a
crashed scheduler blocks nobody for long. A second one refuses (or waits with ``--wait``).

Nothing is dropped silently: a job whose time passed beyond the grace window while no
scheduler ran is marked ``missed`` (APScheduler's misfire event), and at start-up every row
left ``running`` by a crash is marked ``failed`` and every one-off row whose timer vanished is
marked ``missed``; each case is logged and shown by `wip-mailer schedule list`.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, col, select

from wip_mailer.db import explain_database_error, session_scope, utcnow
from wip_mailer.errors import InvalidInputError, NotFoundError, StateError, WipMailerError
from wip_mailer.models import (
    Edition,
    EditionStatus,
    ScheduledJob,
    ScheduleKind,
    SchedulerLease,
    ScheduleStatus,
    apscheduler_jobs,
)
from wip_mailer.settings import Settings

log = logging.getLogger("wip_mailer.schedule")

LEASE_NAME = "scheduler"
JOB_STORE = "default"  # APScheduler's SQLAlchemyJobStore in our database
INTERNAL_STORE = "internal"  # the heartbeat, kept in memory only
HEARTBEAT_JOB = "wip-mailer-heartbeat"

ACTIVE_STATUSES = (ScheduleStatus.SCHEDULED, ScheduleStatus.RUNNING)
SCHEDULABLE_EDITION_STATUSES = (EditionStatus.DRAFT, EditionStatus.READY)

_AT_PATTERN = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?"
)


def job_id(schedule_id: int) -> str:
    """The APScheduler job id of a ``scheduled_job`` row."""
    return f"schedule-{schedule_id}"


def _schedule_id(apscheduler_job_id: str) -> int | None:
    prefix, _, number = apscheduler_job_id.partition("-")
    return int(number) if prefix == "schedule" and number.isdigit() else None


# --- reading and showing times ---------------------------------------------------------

def parse_at(text: str, tz: ZoneInfo, now: datetime | None = None) -> datetime:
    """``YYYY-MM-DD HH:MM[:SS]`` in ``tz``, or ISO 8601 with an offset, as aware UTC.

    A wall-clock time that does not exist (the spring-forward gap) or exists twice (the
    autumn fold) in ``tz`` is refused rather than guessed; a time in the past is refused.
    """
    raw = text.strip()
    if not _AT_PATTERN.fullmatch(raw):
        raise InvalidInputError(
            f"The time {text!r} is not in the form YYYY-MM-DD HH:MM[:SS] ({tz.key} time) "
            "or ISO 8601 with an offset such as 2024-03-01T09:00+01:00."
        )
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInputError(f"The time {text!r} is not a valid date and time.") from None
    if value.tzinfo is None:
        value = _localise(value, tz)
    value = value.astimezone(UTC)
    now = now or utcnow()
    if value <= now:
        raise InvalidInputError(
            f"The time {text!r} ({format_local(value, tz)}) is in the past: give a future time."
        )
    return value


def _localise(naive: datetime, tz: ZoneInfo) -> datetime:
    earlier, later = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    if earlier.utcoffset() == later.utcoffset():
        return earlier
    shown = naive.strftime("%Y-%m-%d %H:%M")
    if earlier.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
        raise InvalidInputError(
            f"{shown} does not exist in {tz.key} (the clocks go forward that night): "
            "choose another time."
        )
    iso = naive.strftime("%Y-%m-%dT%H:%M")
    raise InvalidInputError(
        f"{shown} happens twice in {tz.key} (the clocks go back that night): give the offset, "
        f"{iso}{_offset(earlier)} or {iso}{_offset(later)}."
    )


def _offset(value: datetime) -> str:
    text = value.strftime("%z")
    return f"{text[:3]}:{text[3:]}"


def format_local(value: datetime, tz: ZoneInfo) -> str:
    """``2024-03-01 09:00 CET``: how an editor reads a stored UTC time."""
    local = value.astimezone(tz)
    seconds = ":%S" if local.second else ""
    return local.strftime(f"%Y-%m-%d %H:%M{seconds} %Z")


def parse_cron(expression: str, tz: ZoneInfo) -> CronTrigger:
    """A crontab line (minute hour day month weekday) read in ``tz``."""
    try:
        trigger = CronTrigger.from_crontab(expression.strip(), timezone=tz)
    except ValueError as exc:
        raise InvalidInputError(
            f"The cron rule {expression!r} is not valid ({exc}); write five fields, "
            "minute hour day month weekday, e.g. '0 9 * * mon'."
        ) from None
    if trigger.get_next_fire_time(None, datetime.now(tz)) is None:
        raise InvalidInputError(f"The cron rule {expression!r} never fires again.")
    return trigger


def make_trigger(job: ScheduledJob) -> BaseTrigger:
    tz = ZoneInfo(job.timezone)
    if job.cron:
        return parse_cron(job.cron, tz)
    assert job.run_at is not None
    return DateTrigger(run_date=job.run_at, timezone=tz)


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
        "func": fire,
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
        edition = _edition(session, request.slug)
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


def _edition(session: Session, slug: str) -> Edition:
    edition = session.exec(select(Edition).where(Edition.slug == slug)).first()
    if edition is None:
        raise NotFoundError(f"There is no edition {slug!r}.")
    return edition


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
    # Compare-and-set, so that two `schedule` commands racing for one edition cannot both win.
    won = session.execute(
        sa.update(Edition)
        .where(col(Edition.id) == edition.id, col(Edition.status) == before)
        .values(status=EditionStatus.SCHEDULED, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if getattr(won, "rowcount", 0) != 1:
        raise StateError(f"The edition {edition.slug} changed while it was being scheduled; try again.")
    _set_edition_status(session, edition, EditionStatus.SCHEDULED)  # the loaded copy still says `before`
    return before


def _set_edition_status(session: Session, edition: Edition, status: str) -> None:
    from wip_mailer.editorial import set_edition_status

    set_edition_status(session, edition, status)


def _restore_edition(session: Session, job: ScheduledJob) -> None:
    """Put a send's edition back to what it was, unless something else moved it since."""
    if job.kind != ScheduleKind.SEND or not job.edition_status_before:
        return
    edition = session.get(Edition, job.edition_id)
    if edition is not None and edition.status == EditionStatus.SCHEDULED:
        _set_edition_status(session, edition, job.edition_status_before)


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
    expected: Sequence[str], **values: Any,
) -> bool:
    """Move a row to ``status`` only if it is in one of ``expected``: one atomic UPDATE."""
    if message is not None:
        values["message"] = message
    result = session.execute(
        sa.update(ScheduledJob)
        .where(col(ScheduledJob.id) == schedule_id)
        .where(col(ScheduledJob.status).in_(list(expected)))
        .values(status=status, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


# --- the lease: one scheduler per database -----------------------------------------------

@dataclass(frozen=True)
class LeaseHolder:
    owner: str
    expires_at: datetime


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def acquire_lease(engine: Engine, owner: str, ttl_seconds: float) -> bool:
    """Take the lease if it is free, expired or already ours (a conditional UPDATE or INSERT)."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl_seconds)
    table = SchedulerLease.__table__  # type: ignore[attr-defined]
    with engine.begin() as connection:
        taken = connection.execute(
            sa.update(table)
            .where(table.c.name == LEASE_NAME)
            .where(sa.or_(table.c.owner == owner, table.c.expires_at < now))
            .values(owner=owner, acquired_at=now, expires_at=expires)
        ).rowcount
    if taken == 1:
        return True
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.insert(table).values(name=LEASE_NAME, owner=owner, acquired_at=now, expires_at=expires)
            )
    except IntegrityError:
        return False  # another scheduler holds it
    return True


def renew_lease(engine: Engine, owner: str, ttl_seconds: float) -> bool:
    """Extend our lease; False if it is no longer ours (we stalled and another took it)."""
    table = SchedulerLease.__table__  # type: ignore[attr-defined]
    with engine.begin() as connection:
        renewed = connection.execute(
            sa.update(table)
            .where(table.c.name == LEASE_NAME, table.c.owner == owner)
            .values(expires_at=utcnow() + timedelta(seconds=ttl_seconds))
        ).rowcount
    return bool(renewed == 1)


def release_lease(engine: Engine, owner: str) -> None:
    table = SchedulerLease.__table__  # type: ignore[attr-defined]
    with engine.begin() as connection:
        connection.execute(sa.delete(table).where(table.c.name == LEASE_NAME, table.c.owner == owner))


def lease_holder(engine: Engine) -> LeaseHolder | None:
    """The scheduler currently holding the lease, if any and not expired."""
    with session_scope(engine) as session:
        lease = session.get(SchedulerLease, LEASE_NAME)
    if lease is None or lease.expires_at <= utcnow():
        return None
    return LeaseHolder(lease.owner, lease.expires_at)


# --- what a firing does ----------------------------------------------------------------

@dataclass(frozen=True)
class ActionContext:
    engine: Engine
    settings: Settings
    job: ScheduledJob
    slug: str
    title: str


def _send_action(context: ActionContext) -> str:
    # Exactly the path of `wip-mailer send`: dispatch runs the pre-flight check itself and
    # raises StateError when it blocks.
    from wip_mailer.dispatch import SendRequest, send_edition

    job = context.job
    summary = send_edition(
        context.engine, context.settings,
        SendRequest(slug=context.slug, lists=tuple(job.lists), segment=job.segment),
    )
    return (
        f"campaign {summary.campaign_id} {summary.status}: {summary.sent} sent, "
        f"{summary.deferred} deferred, {summary.failed} failed, {summary.skipped} skipped "
        f"of {summary.recipients}"
    )


def _check_action(context: ActionContext) -> str:
    from wip_mailer.preflight import run_preflight

    with session_scope(context.engine) as session:
        report = run_preflight(session, context.settings, context.slug)
    blocking, warnings = list(report.blocking), list(report.warnings)
    if blocking:
        raise StateError(
            f"The check of {context.slug} found {len(blocking)} blocking problem(s): "
            + "; ".join(str(problem) for problem in blocking)
        )
    return f"check passed with {len(warnings)} warning(s)"


def _reminder_action(context: ActionContext) -> str:
    from wip_mailer.transport import send_single

    body = reminder_text(context.engine, context.settings, context.job, context.slug, context.title)
    subject = " ".join(f"Reminder: {context.title} ({context.slug})".split())  # one header line
    for address in context.job.notify:
        message = EmailMessage()
        message["From"] = context.settings.sender
        message["To"] = address
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=context.settings.sender_domain or None)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body)
        send_single(context.settings, message)
    return f"reminder sent to {', '.join(context.job.notify)}"


def reminder_text(engine: Engine, settings: Settings, job: ScheduledJob, slug: str, title: str) -> str:
    upcoming = [
        view for view in list_schedules(engine, (ScheduleStatus.SCHEDULED,))
        if view.slug == slug and view.kind == ScheduleKind.SEND
    ]
    with session_scope(engine) as session:
        status = _edition(session, slug).status
    lines = [
        f"This is reminder #{job.id} about the edition {title} ({slug}).",
        f"Its status is {status}.",
    ]
    if upcoming:
        lines.append("It is scheduled to be sent:")
        lines += [f"  #{view.id} on {view.when} to {', '.join(view.lists)}" for view in upcoming]
    else:
        lines.append("No send is scheduled for it yet.")
    lines.append(f"Check it with: wip-mailer check {slug}")
    return "\n".join(lines) + "\n"


# kind -> what a firing does; each returns a one-line outcome or raises WipMailerError.
ACTIONS: dict[str, Callable[[ActionContext], str]] = {
    ScheduleKind.SEND: _send_action,
    ScheduleKind.CHECK: _check_action,
    ScheduleKind.REMINDER: _reminder_action,
}


# --- the service -------------------------------------------------------------------------

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
        self.owner = owner or new_owner_id()
        self.poll = settings.scheduler_poll_seconds
        self.lease_ttl = max(15.0, 6 * self.poll)
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
                release_lease(self.engine, self.owner)
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
        while not acquire_lease(self.engine, self.owner, self.lease_ttl):
            holder = lease_holder(self.engine)
            if not wait:
                who = (f" ({holder.owner}, lease valid until {holder.expires_at:%H:%M:%S} UTC)"
                       if holder else "")
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
            release_lease(self.engine, self.owner)
        log.info("Scheduler stopped.")

    def _heartbeat(self) -> None:
        if not renew_lease(self.engine, self.owner, self.lease_ttl):
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

    def run_job(self, schedule_id: int) -> None:
        with session_scope(self.engine) as session:
            claimed = _set_status(session, schedule_id, ScheduleStatus.RUNNING, None,
                                  expected=(ScheduleStatus.SCHEDULED,), claimed_by=self.owner)
            row = session.get(ScheduledJob, schedule_id)
            edition = session.get(Edition, row.edition_id) if row is not None else None
        if row is None or edition is None:
            log.warning("Schedule #%d no longer exists; nothing to do.", schedule_id)
            return
        label = f"Schedule #{schedule_id} ({row.kind} {edition.slug})"
        if not claimed:
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


def _duration(value: timedelta) -> str:
    seconds = max(0, int(value.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


__all__ = [
    "ACTIONS", "ActionContext", "LeaseRefused", "ScheduleRequest",
    "ScheduleView", "SchedulerService", "acquire_lease", "add_schedule", "cancel_schedule",
    "fire", "format_local", "lease_holder", "list_schedules", "parse_at", "parse_cron",
    "release_lease", "renew_lease",
]
