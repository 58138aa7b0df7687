"""Send workers: processes, on one host or several, sharing the running campaigns.

``wip-mailer worker`` runs a ``Worker``; ``wip-mailer send --workers N`` freezes the campaign
and runs N of them as local processes (``run_local_workers``), drawing one progress bar.

Leases per worker, not per campaign: a worker holds its own lease ``worker:<token>`` and
claims rows with that token (the same fenced claims as one sender, ``ledger.claim_batch``),
only while the campaign is ``sending``, nobody asked it to stop and no process holds it
alone (the campaign lease, which a single `send` holds for the whole run and a worker
holds only for a moment to settle rows or finish the campaign). So the campaign stays
``sending`` while any worker holds live claims.

A worker killed with SIGKILL leaves its claimed rows ``sending``; another worker settles
them (``ledger.recover_orphans``) once the dead worker's lease is gone: at once when it
ran on this host (its process is gone), after ``WIP_MAILER_LEASE_SECONDS`` from another
host. The in-doubt policy is the single sender's: with the dead worker's journal (the
settling worker runs on the same host, same ``WIP_MAILER_JOURNAL_DIR``) at most one
message per connection is left in doubt; without it, every row it had claimed and not
yet recorded — at most about one claim batch (``WIP_MAILER_WORKER_CLAIM_BATCH``) plus the
results of one flush interval.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from wip_mailer.db import session_scope, utcnow
from wip_mailer.dispatch import ledger
from wip_mailer.dispatch.campaign import Progress, campaign_lease, make_summary, select_lists, settled_count
from wip_mailer.dispatch.journal import Journal
from wip_mailer.dispatch.ratelimit import Pacer
from wip_mailer.dispatch.relays import relay_pool, sender_factory
from wip_mailer.dispatch.runner import RunCounts, Runner, RunOutcome
from wip_mailer.dispatch.types import CampaignSummary
from wip_mailer.editorial import set_edition_status
from wip_mailer.errors import DeliveryError, StateError
from wip_mailer.lease import LEASE, Lease, new_token
from wip_mailer.models import Campaign, CampaignStatus, DeliveryState, Edition, EditionStatus
from wip_mailer.personalise import MessageTemplate
from wip_mailer.render import RenderedEdition
from wip_mailer.settings import Settings

IDLE_POLL_SECONDS = 0.5  # how often an idle worker looks for work and for gone workers' rows
CAMPAIGN = ledger.CAMPAIGN
DELIVERY = ledger.DELIVERY


def worker_conditions(campaign_id: int) -> list[sa.ColumnElement[bool]]:
    """What a worker's claim adds to the fence: the campaign is being sent, nobody asked it to
    stop, and no process holds it alone (a single `send`, or a settling worker)."""
    return [
        sa.exists().where(CAMPAIGN.c.id == campaign_id, CAMPAIGN.c.status == CampaignStatus.SENDING,
                          CAMPAIGN.c.stop_request.is_(None)),
        ~sa.exists().where(LEASE.c.name == f"campaign:{campaign_id}", LEASE.c.expires_at > utcnow()),
    ]


@dataclass
class _CampaignKit:
    list_ids: list[int]
    template: MessageTemplate
    journal: Journal


@dataclass
class WorkerReport:
    counts: RunCounts = field(default_factory=RunCounts)
    campaigns: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)
    error: DeliveryError | None = None


class Worker:
    def __init__(self, engine: Engine, settings: Settings, *, campaign_id: int | None = None,
                 once: bool = False, on_note: Callable[[str], None] | None = None):
        self.engine = engine
        self.settings = settings
        self.campaign_id = campaign_id
        self.once = once
        self.on_note = on_note
        token = new_token()
        self.lease = Lease(engine, f"worker:{token}", settings.lease_seconds, token=token)
        self.stop = threading.Event()
        self.report = WorkerReport()
        self._runner: Runner | None = None
        self._kits: dict[int, _CampaignKit] = {}
        self._last_renew = 0.0

    def _note(self, text: str) -> None:
        if self.on_note is not None:
            self.on_note(text)

    def interrupt(self) -> None:
        """SIGTERM: finish the messages in flight, hand the unsent claims back at once, stop."""
        self.stop.set()
        runner = self._runner
        if runner is not None:
            runner.interrupt("Stopping: finishing the messages in flight, handing back the rest ...")

    # ---- the loop ---------------------------------------------------------------------
    def run(self) -> WorkerReport:
        if self.lease.acquire() is not None:  # a fresh token: only a clash of tokens could refuse
            raise StateError("This worker could not take its lease; start it again.")
        self._last_renew = time.monotonic()
        try:
            while not self.stop.is_set():
                campaign_id = self._next_campaign()
                if campaign_id is not None:
                    outcome = self._run_on(campaign_id)
                    if outcome.lease_lost or (outcome.error is not None and self._stop_for(campaign_id,
                                                                                            outcome)):
                        break
                    self._tidy()
                    continue
                self._tidy()
                if self.once and not self._running_campaigns():
                    break
                self.stop.wait(IDLE_POLL_SECONDS)
                self._renew_if_due()
        finally:
            for kit in self._kits.values():
                with self.engine.connect() as connection:
                    mine = connection.execute(
                        sa.select(sa.func.count()).where(DELIVERY.c.worker == self.lease.token,
                                                         DELIVERY.c.state == DeliveryState.SENDING)).scalar()
                kit.journal.close(remove=not mine)  # kept for whoever settles rows still ours
            self.lease.release()
        return self.report

    def _renew_if_due(self) -> None:
        if time.monotonic() - self._last_renew >= self.lease.renew_every:
            if not self.lease.renew():
                self.report.error = DeliveryError("This worker lost its lease (it was stalled for longer "
                                                  "than WIP_MAILER_LEASE_SECONDS); it stopped.")
                self.stop.set()
            self._last_renew = time.monotonic()

    def _scope(self) -> list[sa.ColumnElement[bool]]:
        conditions = [CAMPAIGN.c.status == CampaignStatus.SENDING]
        if self.campaign_id is not None:
            conditions.append(CAMPAIGN.c.id == self.campaign_id)
        return conditions

    def _running_campaigns(self) -> list[int]:
        with self.engine.connect() as connection:
            return list(connection.execute(
                sa.select(CAMPAIGN.c.id).where(*self._scope()).order_by(CAMPAIGN.c.id)).scalars())

    def _next_campaign(self) -> int | None:
        """The first running campaign in scope with rows queued or due now."""
        now = utcnow()
        due = sa.or_(sa.and_(DELIVERY.c.state == DeliveryState.QUEUED, DELIVERY.c.next_attempt_at.is_(None)),
                     sa.and_(DELIVERY.c.state == DeliveryState.DEFERRED, DELIVERY.c.next_attempt_at <= now))
        with self.engine.connect() as connection:
            for campaign_id in connection.execute(
                    sa.select(CAMPAIGN.c.id).where(*self._scope(), CAMPAIGN.c.stop_request.is_(None))
                    .order_by(CAMPAIGN.c.id)).scalars():
                has_work = connection.execute(sa.select(DELIVERY.c.id).where(
                    DELIVERY.c.campaign_id == campaign_id, due).limit(1)).first()
                alone = connection.execute(sa.select(LEASE.c.token).where(
                    LEASE.c.name == f"campaign:{campaign_id}", LEASE.c.expires_at > now)).first()
                if has_work is not None and alone is None:
                    return int(campaign_id)
        return None

    def _kit(self, campaign_id: int) -> _CampaignKit:
        kit = self._kits.get(campaign_id)
        if kit is None:
            with session_scope(self.engine) as session:
                campaign = session.get(Campaign, campaign_id)
                assert campaign is not None
                list_ids = list(campaign.audience.get("list_ids", []))
                rendered = RenderedEdition(campaign.subject, campaign.body_html, campaign.body_text)
                names = {lst.id: lst.name for lst in session.exec(select_lists(list_ids)).all()}
            kit = _CampaignKit(list_ids, MessageTemplate(self.settings, rendered, campaign_id=campaign_id,
                                                         list_names=names),
                               Journal(Path(self.settings.journal_dir), campaign_id, self.lease.token))
            self._kits[campaign_id] = kit
        return kit

    def _run_on(self, campaign_id: int) -> RunOutcome:
        kit = self._kit(campaign_id)
        self.report.campaigns.add(campaign_id)
        pool = relay_pool(self.settings)
        runner = Runner(
            self.engine, self.settings, campaign_id=campaign_id, list_ids=kit.list_ids,
            template=kit.template, lease=self.lease, journal=kit.journal,
            connections=pool.connections if pool else self.settings.smtp_connections,
            pacer=Pacer(self.settings.rate_per_second, self.settings.rate_per_hour), on_note=self.on_note,
            batch=self.settings.worker_claim_batch,
            claim_conditions=lambda: worker_conditions(campaign_id), wait_for_retries=False,
            connect=sender_factory(pool),
        )
        if pool is not None:
            pool.runner_options(runner.stop, self.on_note)
        self._runner = runner
        try:
            if self.stop.is_set():
                return RunOutcome()
            outcome = runner.run()
        finally:
            self._runner = None
            self._last_renew = time.monotonic()  # the runner renewed the lease as it went
        for state in ("sent", "deferred", "failed", "skipped", "in_doubt"):
            setattr(self.report.counts, state,
                    getattr(self.report.counts, state) + getattr(outcome.counts, state))
        if outcome.error is not None:
            self.report.error = outcome.error
        return outcome

    def _stop_for(self, campaign_id: int, outcome: RunOutcome) -> bool:
        """A send error (no relay left, the sender refused, too many failures): pause the campaign,
        as a single sender would; this worker carries on with others unless it serves only it."""
        from wip_mailer.dispatch.control import pause_campaign

        self._note(f"Campaign {campaign_id}: {outcome.error} Pausing it.")
        try:
            pause_campaign(self.engine, self.settings, campaign_id)
        except StateError as exc:  # already paused by another worker, or its workers are slow to stop
            self._note(str(exc))
        return self.campaign_id is not None

    # ---- settling and finishing ---------------------------------------------------------
    def _tidy(self) -> None:
        """Settle the rows of gone workers and finish the campaigns with nothing left to send."""
        for campaign_id in self._running_campaigns():
            with self.engine.connect() as connection:
                alive, gone = ledger.claimants(connection, campaign_id)
                counts = ledger.state_counts(connection, campaign_id)
            unfinished = counts["queued"] + counts["sending"] + counts["deferred"]
            if gone or (unfinished == 0 and not alive):
                self._settle(campaign_id)

    def _settle(self, campaign_id: int) -> None:
        lease = campaign_lease(self.engine, self.settings, campaign_id)
        if lease.acquire() is not None:
            return  # another worker (or a single `send`) is at it
        recovered = ledger.Recovery()
        try:
            recovered = ledger.recover_orphans(self.engine, campaign_id, Path(self.settings.journal_dir))
        except BaseException:
            lease.release()
            raise
        if recovered.sent or recovered.requeued or recovered.in_doubt:
            self._note(f"Campaign {campaign_id}: settled the rows of a stopped worker: {recovered.sent} "
                       f"confirmed sent, {recovered.requeued} queued again, {recovered.in_doubt} in doubt.")
        with self.engine.connect() as connection:
            counts = ledger.state_counts(connection, campaign_id)
        finished = counts["queued"] + counts["sending"] + counts["deferred"] == 0

        stored: list[int] = []

        def store(connection: sa.Connection) -> None:
            summary = make_summary(campaign_id, counts, CampaignStatus.FINISHED, [])
            stored.append(connection.execute(
                sa.update(CAMPAIGN).where(CAMPAIGN.c.id == campaign_id,
                                          CAMPAIGN.c.status == CampaignStatus.SENDING)
                .values(status=CampaignStatus.FINISHED, summary=summary.as_dict(), finished_at=utcnow(),
                        stop_request=None)).rowcount)

        lease.release(then=store if finished else None)
        if stored == [1]:  # this worker finished it (another may have, a moment earlier)
            with session_scope(self.engine) as session:
                campaign = session.get(Campaign, campaign_id)
                edition = session.get(Edition, campaign.edition_id) if campaign else None
                if edition is not None and edition.status == EditionStatus.SENDING:
                    set_edition_status(session, edition, EditionStatus.SENT)
            self.report.finished.add(campaign_id)
            self._note(f"Campaign {campaign_id} finished.")


# --- `send --workers N`: local worker processes -------------------------------------------

def worker_command(campaign_id: int, connections: int | None, rate: float | None) -> list[str]:
    command = [sys.executable, "-m", "wip_mailer", "worker", "--campaign", str(campaign_id), "--once"]
    if connections is not None:
        command += ["--connections", str(connections)]
    if rate:
        command += ["--rate", f"{rate}/s"]
    return command


def run_local_workers(engine: Engine, settings: Settings, campaign_id: int, workers: int, *,
                      progress: Progress | None = None, connections: int | None = None,
                      rate_per_second: float | None = None,
                      environ: dict[str, str] | None = None) -> CampaignSummary:
    """Run ``workers`` worker processes on the campaign until it is finished (or paused),
    drawing one progress bar from the ledger. Ctrl-C or SIGTERM stops them (each finishes
    its messages in flight) and pauses the campaign."""
    from wip_mailer.dispatch.control import pause_campaign

    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        total = campaign.recipient_count
    per_worker_rate = (rate_per_second / workers) if rate_per_second else None
    command = worker_command(campaign_id, connections, per_worker_rate)
    env = {**os.environ, **(environ or {})}
    processes: list[subprocess.Popen[bytes]] = []
    stopped = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopped
        stopped = True
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for _ in range(workers):
            # A process group of their own: a Ctrl-C reaches them once, from here, as SIGTERM.
            processes.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, start_new_session=True))
        if progress is not None:
            with engine.connect() as connection:
                progress.start(total, settled_count(ledger.state_counts(connection, campaign_id)))
        while any(process.poll() is None for process in processes):
            time.sleep(0.2)
            if progress is not None:
                with engine.connect() as connection:
                    progress.update(settled_count(ledger.state_counts(connection, campaign_id)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait()
        if progress is not None:
            progress.stop()
    notes = [f"Sent by {workers} worker processes (exit codes {[p.returncode for p in processes]})."]
    with session_scope(engine) as session:
        status = session.get(Campaign, campaign_id).status  # type: ignore[union-attr]
    if status == CampaignStatus.SENDING:  # stopped before the end, or every worker failed
        try:
            pause_campaign(engine, settings, campaign_id)
        except StateError as exc:
            notes.append(str(exc))
        if stopped:
            notes.append("Stopped on request.")
    with session_scope(engine) as session:
        status = session.get(Campaign, campaign_id).status  # type: ignore[union-attr]
        counts = ledger.state_counts(session, campaign_id)
    if status == CampaignStatus.CANCELLED:
        notes.append(f"Campaign {campaign_id} was cancelled meanwhile.")
        status = CampaignStatus.PAUSED  # what a summary can say: not finished, not being sent
    return make_summary(campaign_id, counts, CampaignStatus(status), notes)

