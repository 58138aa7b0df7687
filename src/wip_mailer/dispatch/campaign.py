"""Sending an edition as a campaign: the one code path behind `send`, `campaigns resume`
and the scheduler.

    pre-flight ─> audience count ─> confirm ─> freeze recipients + message ─> lease ─>
    settle a crashed run ─> runner ─> summary stored on the campaign
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from wip_mailer import audience
from wip_mailer.db import session_scope, utcnow
from wip_mailer.dispatch import ledger
from wip_mailer.dispatch.journal import Journal
from wip_mailer.dispatch.ratelimit import Pacer
from wip_mailer.dispatch.relays import relay_pool, relays_of, sender_factory
from wip_mailer.dispatch.runner import RunCounts, Runner, RunOutcome
from wip_mailer.dispatch.trial import dry_run, send_tests
from wip_mailer.dispatch.types import CampaignSummary, SendRequest, SummaryStatus
from wip_mailer.editorial import get_edition, set_edition_status
from wip_mailer.errors import DeliveryError, InvalidInputError, NotFoundError, StateError
from wip_mailer.lease import Lease, live_holder
from wip_mailer.models import Campaign, CampaignStatus, Edition, EditionStatus
from wip_mailer.personalise import MessageTemplate
from wip_mailer.render import RenderedEdition
from wip_mailer.settings import Settings

ACTIVE = (CampaignStatus.SENDING, CampaignStatus.PAUSED)


class CampaignStopped(DeliveryError):
    """A send stopped on an error (the server refused, could not be reached, or the lease was lost)."""

    def __init__(self, campaign_id: int, cause: DeliveryError, *, lease_lost: bool = False):
        super().__init__(str(cause))
        self.campaign_id = campaign_id
        self.cause = cause
        self.reply: str = getattr(cause, "reply", "")  # the server's reply, when it refused
        self.lease_lost = lease_lost

    def __str__(self) -> str:
        if self.lease_lost:  # the campaign goes on in the process that took it over
            return str(self.cause)
        return (f"{self.cause} Campaign {self.campaign_id} is paused; resume it with "
                f"`wip-mailer campaigns resume {self.campaign_id}`.")


class Progress(Protocol):
    """What the runner reports while it works (the CLI draws a rich progress bar)."""

    def start(self, total: int, done: int) -> None: ...
    def update(self, done: int) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


class PreflightReportLike(Protocol):
    blocking: Any
    warnings: Any
    rendered: RenderedEdition | None


Preflight = Callable[[Session, Settings, str], PreflightReportLike]


def _run_preflight(session: Session, settings: Settings, slug: str) -> PreflightReportLike:
    try:
        from wip_mailer.preflight import run_preflight  # the render stage's check (issue 4)
    except ImportError:
        raise StateError(
            "The pre-flight check (wip_mailer.preflight, from the rendering stage) is not installed, "
            "so no edition can be sent."
        ) from None
    return run_preflight(session, settings, slug)


def _active_campaign(session: Session, edition_id: int) -> Campaign | None:
    return session.exec(
        select(Campaign).where(Campaign.edition_id == edition_id, col(Campaign.status).in_(ACTIVE))
    ).first()


def _effective(settings: Settings, connections: int | None, rate: float | None) -> Settings:
    changes: dict[str, Any] = {}
    if connections is not None:
        if not 1 <= connections <= 64:
            raise InvalidInputError(f"--connections must be from 1 to 64, got {connections}.")
        changes["smtp_connections"] = connections
    if rate is not None:
        if rate < 0:
            raise InvalidInputError(f"The rate must be positive, got {rate}.")
        changes["rate_per_second"] = rate
    return dataclasses.replace(settings, **changes) if changes else settings


# --- the public entry points --------------------------------------------------------------

def send_edition(engine: Engine, settings: Settings, request: SendRequest, *,
                 confirm: Callable[[int], bool] | None = None, progress: Progress | None = None,
                 preflight: Preflight | None = None,
                 run: Callable[[int], CampaignSummary] | None = None) -> CampaignSummary:
    """Send an edition to the selected lists (or dry-run it, or send test copies).

    ``confirm(recipient_count)`` is asked before anything is sent; None means yes
    (the scheduler). ``run(campaign_id)``, when given, sends the frozen campaign instead of
    this process (``send --workers N``: ``workers.run_local_workers``). Raises StateError
    when the check blocks or the edition already has a campaign running, NotFoundError for
    an unknown edition or list.
    """
    settings = _effective(settings, request.connections, request.rate_per_second)
    if request.resume:
        with session_scope(engine) as session:
            edition = get_edition(session, request.slug)
            assert edition.id is not None
            campaign = _active_campaign(session, edition.id)
            if campaign is None or campaign.id is None:
                raise StateError(f"Edition {request.slug!r} has no paused or interrupted campaign to resume.")
            campaign_id = campaign.id
        return resume_campaign(engine, settings, campaign_id, progress=progress,
                               resend_in_doubt=request.resend_in_doubt)
    if not request.lists and not request.test_to:
        raise InvalidInputError("Name at least one list to send to (--list NAME).")

    with session_scope(engine) as session:
        edition = get_edition(session, request.slug)
        assert edition.id is not None
        edition_id = edition.id
        lists = audience.resolve_lists(session, request.lists)
        report = (preflight or _run_preflight)(session, settings, request.slug)
    if report.blocking:
        problems = "; ".join(str(problem) for problem in report.blocking)
        raise StateError(f"Edition {request.slug!r} cannot be sent: {problems}.")
    for warning in report.warnings or ():
        if progress is not None:
            progress.note(f"Warning: {warning}")
    rendered = report.rendered
    if rendered is None:
        raise StateError(f"Edition {request.slug!r} could not be rendered by the pre-flight check.")
    list_names = {lst.id: lst.name for lst in lists if lst.id is not None}

    if request.test_to:
        return send_tests(settings, rendered, request.test_to, list_names)

    with session_scope(engine) as session:
        running = _active_campaign(session, edition_id)
        if running is not None:
            raise _already_running(session, request.slug, running)
        unsent = (ledger.not_already_sent(edition_id),)
        count = audience.count_recipients(session, request.lists, request.segment, unsent)
        resent = count == 0 and ledger.edition_was_sent(session, edition_id)
    if count == 0:
        note = " who has not already been sent this edition" if resent else ""
        raise StateError(f"No active subscriber{note} in {', '.join(request.lists)}: nothing to send.")
    if request.dry_run:
        return dry_run(engine, settings, rendered, request, list_names, unsent)
    if confirm is not None and not confirm(count):
        return CampaignSummary(None, count, 0, 0, 0, 0, 0, SummaryStatus.NOT_CONFIRMED)

    relays_of(settings)  # a malformed WIP_MAILER_SMTP_RELAYS stops here, before any campaign
    campaign_id = _start_campaign(engine, edition_id, request, lists, rendered)
    if run is not None:
        return run(campaign_id)
    return _run_campaign(engine, settings, campaign_id, progress=progress)


def resume_campaign(engine: Engine, settings: Settings, campaign_id: int, *,
                    progress: Progress | None = None, resend_in_doubt: bool = False,
                    connections: int | None = None, rate_per_second: float | None = None) -> CampaignSummary:
    """Carry on a paused or crashed campaign: nobody already sent is sent again.

    With ``resend_in_doubt`` a finished campaign is reopened too, to resend only the
    messages it left in doubt (there is nothing else left to send in it).
    """
    settings = _effective(settings, connections, rate_per_second)
    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise NotFoundError(f"There is no campaign {campaign_id}.")
        reopen = resend_in_doubt and campaign.status == CampaignStatus.FINISHED
        if reopen and ledger.state_counts(session, campaign_id)["in_doubt"] == 0:
            raise StateError(f"Campaign {campaign_id} is finished and has no message in doubt: "
                             "nothing to resend.")
        if campaign.status not in ACTIVE and not reopen:
            raise StateError(f"Campaign {campaign_id} is {campaign.status}; only a paused or interrupted "
                             "campaign can be resumed (or a finished one with --resend-in-doubt).")
        if reopen:
            _reopen(session, campaign)
    return _run_campaign(engine, settings, campaign_id, progress=progress, resend_in_doubt=resend_in_doubt)


# --- steps ----------------------------------------------------------------------------------

def _reopen(session: Session, campaign: Campaign) -> None:
    """A finished campaign becomes paused again, so its in-doubt messages can be resent."""
    edition = session.get(Edition, campaign.edition_id)
    if edition is not None and _active_campaign(session, campaign.edition_id) is not None:
        raise StateError(f"Edition {edition.slug!r} has another unfinished campaign: finish it first.")
    campaign.status = CampaignStatus.PAUSED
    session.add(campaign)

def _already_running(session: Session, slug: str, campaign: Campaign) -> StateError:
    sender = live_holder(session.connection(), f"campaign:{campaign.id}")
    if campaign.status == CampaignStatus.SENDING and sender is not None:
        return StateError(
            f"Edition {slug!r} is being sent right now by campaign {campaign.id} "
            f"({sender}); a second send would mail people twice. Pause it with "
            f"`wip-mailer campaigns pause {campaign.id}`."
        )
    state = "was interrupted (its sender stopped)" if campaign.status == CampaignStatus.SENDING \
        else "is paused"
    return StateError(
        f"Edition {slug!r} has an unfinished campaign {campaign.id}, which {state}: resume it with "
        f"`wip-mailer send {slug} --resume` (or `wip-mailer campaigns resume {campaign.id}`)."
    )


def _start_campaign(engine: Engine, edition_id: int, request: SendRequest, lists: list[Any],
                    rendered: RenderedEdition) -> int:
    """Create the campaign and freeze its recipients and message, in one transaction.

    The recipients are chosen again here, not taken from the confirmation's count: whoever
    was sent this edition meanwhile, or left, is not frozen."""
    try:
        with session_scope(engine) as session:
            campaign = Campaign(
                edition_id=edition_id, status=CampaignStatus.SENDING,
                audience={"lists": list(request.lists), "list_ids": [lst.id for lst in lists],
                          "segment": request.segment},
                subject=rendered.subject, body_html=rendered.html, body_text=rendered.text,
                started_at=utcnow(),
            )
            session.add(campaign)
            session.flush()
            assert campaign.id is not None
            selection = audience.recipients_query(session, request.lists, request.segment,
                                                  (ledger.not_already_sent(edition_id),))
            campaign.recipient_count = ledger.freeze_recipients(session, campaign.id, selection)
            edition = session.get(Edition, edition_id)
            assert edition is not None
            set_edition_status(session, edition, EditionStatus.SENDING)
            campaign_id, frozen = campaign.id, campaign.recipient_count
    except IntegrityError:
        raise StateError(
            f"Edition {request.slug!r} is being sent by another process that started just now; "
            "this send did nothing."
        ) from None
    ledger.analyze_after_freeze(engine, frozen)
    return campaign_id


def campaign_lease(engine: Engine, settings: Settings, campaign_id: int) -> Lease:
    """The lease one process holds while it sends a campaign (its token fences every write)."""
    return Lease(engine, f"campaign:{campaign_id}", settings.lease_seconds)


@contextmanager
def _signals_interrupt(runner: Runner) -> Iterator[None]:
    """Ctrl-C and a service manager's SIGTERM pause the campaign: the first one asks the runner
    to finish the messages in flight, a second one stops at once.

    A flag, not an exception: a KeyboardInterrupt raised in the middle of a database write
    could leave a transaction open (and the database locked) while the run winds down.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    asked = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal asked
        if asked:
            raise KeyboardInterrupt
        asked = True
        runner.interrupt()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _take_lease(engine: Engine, settings: Settings, campaign_id: int) -> Lease:
    lease = campaign_lease(engine, settings, campaign_id)
    holder = lease.acquire()
    if holder is not None:
        raise StateError(
            f"Campaign {campaign_id} is being sent right now by {holder}; "
            "a second send would mail people twice."
        )
    return lease


def _settle_previous_run(engine: Engine, settings: Settings, campaign_id: int, resend_in_doubt: bool
                         ) -> list[str]:
    """Settle what a crashed or stalled runner left ``sending``; with the flag, requeue in-doubt rows."""
    notes: list[str] = []
    recovery = ledger.recover_orphans(engine, campaign_id, Path(settings.journal_dir))
    if recovery.sent or recovery.requeued or recovery.in_doubt:
        notes.append(
            f"Settled the interrupted run: {recovery.sent} confirmed sent, {recovery.requeued} "
            f"not yet sent (queued again), {recovery.in_doubt} in doubt (not resent)."
        )
    if resend_in_doubt:
        requeued = ledger.requeue_in_doubt(engine, campaign_id)
        notes.append(f"{requeued} in-doubt message(s) queued again to be resent.")
    return notes


def _run(engine: Engine, settings: Settings, campaign_id: int, lease: Lease,
         progress: Progress | None) -> RunOutcome:
    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        if campaign.status not in ACTIVE:  # cancelled (or finished) before this process took the lease
            raise StateError(f"Campaign {campaign_id} is {campaign.status}; nothing was sent.")
        campaign.status = CampaignStatus.SENDING
        campaign.stop_request = None  # a request for an earlier run is spent
        total = campaign.recipient_count
        list_ids = campaign.audience.get("list_ids", [])
        rendered = RenderedEdition(campaign.subject, campaign.body_html, campaign.body_text)
        names = {lst.id: lst.name for lst in session.exec(select_lists(list_ids)).all()}
        done = settled_count(ledger.state_counts(session, campaign_id))
    template = MessageTemplate(settings, rendered, campaign_id=campaign_id, list_names=names)
    journal = Journal(Path(settings.journal_dir), campaign_id, lease.token)
    if progress is not None:
        progress.start(total, done)

    def on_progress(counts: RunCounts) -> None:
        if progress is not None:
            progress.update(done + counts.sent + counts.failed + counts.skipped + counts.in_doubt)

    pool = relay_pool(settings)
    runner = Runner(
        engine, settings, campaign_id=campaign_id, list_ids=list_ids, template=template, lease=lease,
        journal=journal, connections=pool.connections if pool else settings.smtp_connections,
        pacer=Pacer(settings.rate_per_second, settings.rate_per_hour),
        on_progress=on_progress, on_note=progress.note if progress is not None else None,
        connect=sender_factory(pool),
    )
    if pool is not None:
        pool.runner_options(runner.stop, runner.on_note)
    outcome = None
    try:
        with _signals_interrupt(runner):
            outcome = runner.run()
        return outcome
    finally:
        # The journal is removed once no row depends on it; a runner that lost its lease
        # keeps it, for the successor that settles its rows.
        with engine.connect() as connection:
            settled = ledger.state_counts(connection, campaign_id)["sending"] == 0
        journal.close(remove=settled and outcome is not None and not outcome.lease_lost)


def _finish(engine: Engine, campaign_id: int, lease: Lease, outcome: RunOutcome | None,
            notes: list[str]) -> CampaignSummary:
    """Store the campaign's status and summary and give the lease back, in one fenced step."""
    with engine.connect() as connection:
        counts = ledger.state_counts(connection, campaign_id)
    unfinished = counts["queued"] + counts["sending"] + counts["deferred"]
    status = CampaignStatus.PAUSED
    if outcome is not None and outcome.lease_lost:
        status = CampaignStatus.SENDING  # not ours any more: its new owner carries on
    elif outcome is not None and outcome.error is None and not outcome.interrupted and unfinished == 0:
        status = CampaignStatus.FINISHED
    summary = make_summary(campaign_id, counts, status, notes)

    if outcome is not None and outcome.stopped_by:
        notes.append(f"Paused by `wip-mailer campaigns {outcome.stopped_by}` from another process.")
        summary = make_summary(campaign_id, counts, status, notes)

    def store(connection: sa.Connection) -> None:
        values: dict[str, Any] = {"status": status, "summary": summary.as_dict(), "stop_request": None}
        if status == CampaignStatus.FINISHED:
            values["finished_at"] = utcnow()
        connection.execute(sa.update(Campaign).where(col(Campaign.id) == campaign_id).values(**values))

    if not (outcome is not None and outcome.lease_lost) and lease.release(then=store) \
            and status == CampaignStatus.FINISHED:
        with session_scope(engine) as session:
            campaign = session.get(Campaign, campaign_id)
            edition = session.get(Edition, campaign.edition_id) if campaign else None
            if edition is not None:
                set_edition_status(session, edition, EditionStatus.SENT)
    return summary


def _run_campaign(engine: Engine, settings: Settings, campaign_id: int, *,
                  progress: Progress | None, resend_in_doubt: bool = False) -> CampaignSummary:
    """The send, as named steps: take the lease → settle the previous run → run → finish."""
    lease = _take_lease(engine, settings, campaign_id)
    notes: list[str] = []
    outcome: RunOutcome | None = None
    try:
        notes = _settle_previous_run(engine, settings, campaign_id, resend_in_doubt)
        for note in notes:
            if progress is not None:
                progress.note(note)
        outcome = _run(engine, settings, campaign_id, lease, progress)
    finally:
        if progress is not None:
            progress.stop()
        summary = _finish(engine, campaign_id, lease, outcome, notes)
    if outcome.error is not None:
        raise CampaignStopped(campaign_id, outcome.error, lease_lost=outcome.lease_lost)
    return summary


def select_lists(list_ids: list[int]) -> Any:
    from wip_mailer.models import MailingList

    return select(MailingList).where(col(MailingList.id).in_(list_ids))


def settled_count(counts: Mapping[str, int]) -> int:
    """Deliveries with a final outcome (what a progress bar counts as done)."""
    return counts["sent"] + counts["failed"] + counts["skipped"] + counts["in_doubt"]


def make_summary(campaign_id: int, counts: Mapping[str, int], status: CampaignStatus, notes: list[str]
                 ) -> CampaignSummary:
    return CampaignSummary(
        campaign_id=campaign_id, recipients=sum(counts.values()), sent=counts["sent"],
        deferred=counts["deferred"], failed=counts["failed"], skipped=counts["skipped"],
        in_doubt=counts["in_doubt"], status=SummaryStatus(status),
        queued=counts["queued"] + counts["sending"], notes=tuple(notes),
    )
