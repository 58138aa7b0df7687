"""The runner: N sending threads fed by one coordinator that owns every database write.

    coordinator (calling thread)             sender threads (one SMTP connection each)
    ─ claims batches of rows ──work queue──> build message → rate limit → journal B →
    ─ flushes results every 100 / 50 ms <──results queue── SMTP → journal A|R → result
    ─ renews the campaign lease, reports progress

smtplib releases the GIL while it waits on the socket, so threads overlap their I/O.
Only the coordinator talks to the database: SQLite sees one writer per process, and
a flush is one transaction however many results it carries.

Exactly-once, precisely: a row is ``sent`` only after a 2xx; a row is claimed by one
runner only; after a crash, ``ledger.recover_orphans`` reads the journal, so the rows
left in doubt are the messages whose final dot had been sent and whose reply was not
yet journaled — at most one per connection.

Fencing: every claim and result write carries the runner's lease token (see
``ledger``), and right before each final dot a sender journals ``B`` and then checks,
without the database, that the lease cannot have been taken yet (``Lease.still_valid``).
A runner frozen past its lease therefore wakes to withdraw its messages, not send them:
the ones its successor requeued (no ``B``) go out once, from the successor; the ones it
had journaled were left in doubt by the successor and go out at most once, from it.

A late unsubscribe wins: right before each message a sender asks the database whether
the person is still subscribed and not suppressed (``ledger.HandOverCheck``). What is
left is the messages already in an SMTP transaction: at most one per connection.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from wip_mailer.db import utcnow
from wip_mailer.dispatch import ledger
from wip_mailer.dispatch.connection import Connection, Outcome, SenderRefusedError, SendResult, SmtpSender
from wip_mailer.dispatch.journal import Journal
from wip_mailer.dispatch.ledger import Claim, HandOverCheck, Result
from wip_mailer.dispatch.ratelimit import Pacer
from wip_mailer.errors import DeliveryError, InvalidInputError
from wip_mailer.lease import Lease
from wip_mailer.models import DeliveryState
from wip_mailer.personalise import Addressee, MessageTemplate, Outgoing
from wip_mailer.settings import Settings

CLAIM_BATCH = 400
FLUSH_RESULTS = 400
FLUSH_SECONDS = 0.2
STOP_POLL_SECONDS = 1.0  # how often the coordinator looks for `campaigns pause|cancel`
RESEND_ON_NEW_CONNECTION = 3  # times a message is resent after a 421 or a dropped session
CONNECT_ATTEMPTS = 4  # per thread, with 0.5, 1, 2 s pauses, before the run stops
FAILURE_BREAKER = 50  # this many permanent failures in a row with no success: stop and pause


@dataclass
class RunCounts:
    """What happened in this run (the ledger holds the campaign's totals)."""

    sent: int = 0
    deferred: int = 0
    failed: int = 0
    skipped: int = 0
    in_doubt: int = 0

    def add(self, state: str) -> None:
        if state in ("sent", "deferred", "failed", "skipped", "in_doubt"):
            setattr(self, state, getattr(self, state) + 1)


@dataclass
class _Item:
    claim: Claim
    resends: int = 0


@dataclass
class _Requeue:
    item: _Item


@dataclass
class RunOutcome:
    counts: RunCounts = field(default_factory=RunCounts)
    interrupted: bool = False
    stopped_by: str | None = None  # "pause" or "cancel": asked from another process
    error: DeliveryError | None = None
    lease_lost: bool = False


class Runner:
    def __init__(self, engine: Engine, settings: Settings, *, campaign_id: int, list_ids: Sequence[int],
                 template: MessageTemplate, lease: Lease, journal: Journal, connections: int,
                 pacer: Pacer, on_progress: Callable[[RunCounts], None] | None = None,
                 on_note: Callable[[str], None] | None = None,
                 connect: Callable[[Settings], SmtpSender] = Connection, batch: int | None = None,
                 claim_conditions: Callable[[], Sequence[Any]] | None = None,
                 wait_for_retries: bool = True):
        self.engine = engine
        self.settings = settings
        self.campaign_id = campaign_id
        self.list_ids = list(list_ids)
        self.template = template
        self.lease = lease
        self.worker = lease.token
        self.journal = journal
        self.connections = max(1, connections)
        self.pacer = pacer
        self.connect = connect
        # A worker (``workers``) claims only while the campaign is its to share, and returns once
        # nothing is due instead of sleeping until the next retry (it may serve other campaigns).
        self.claim_conditions = claim_conditions
        self.waits_for_retries = wait_for_retries
        self._renew_now = threading.Event()  # a sender found the lease past its local validity
        self.on_progress = on_progress
        self.on_note = on_note
        self.stop = threading.Event()
        self.work: queue.Queue[_Item | None] = queue.Queue()
        self.results: queue.Queue[Result | _Requeue] = queue.Queue()
        self.outcome = RunOutcome()
        self._pending: list[Result] = []
        self._outstanding = 0  # items handed to threads whose result has not come back
        self._fatal: DeliveryError | None = None
        self._failures_in_row = 0
        # Claims run ahead of sending by at most ~half a second at the configured rate, so an
        # unsubscribe is honoured for every row not yet claimed (checked at claim time).
        per_second = settings.rate_per_second or (settings.rate_per_hour / 3600.0)
        most = batch or CLAIM_BATCH
        self.batch = most if not pacer.limited else max(
            self.connections, min(most, int(per_second / 2)))

    def interrupt(self, note: str = "Interrupted: finishing the messages in flight "
                                     "(Ctrl-C again to stop at once) ...") -> None:
        """Stop claiming, let the messages in flight finish, hand the rest back (Ctrl-C, SIGTERM,
        `campaigns pause`)."""
        if not self.outcome.interrupted:
            self.outcome.interrupted = True
            self._note(note)
        self.stop.set()

    def _look_for_stop_request(self) -> None:
        request = ledger.stop_request(self.engine, self.campaign_id)
        if request:
            self.outcome.stopped_by = request
            self.interrupt(f"Asked to {request} from another process (`wip-mailer campaigns {request}`): "
                           "finishing the messages in flight ...")

    # ---- coordinator --------------------------------------------------------------------
    def run(self) -> RunOutcome:
        threads = [threading.Thread(target=self._sender, name=f"wip-sender-{n}", daemon=True)
                   for n in range(self.connections)]
        for thread in threads:
            thread.start()
        try:
            try:
                self._loop()
            except KeyboardInterrupt:
                self.interrupt()
            self.stop.set()
            self._drain()
        finally:
            for _ in threads:
                self.work.put(None)
        for thread in threads:
            thread.join(timeout=self.settings.smtp_timeout + 5)
        self.outcome.error = self._fatal
        return self.outcome

    def _loop(self) -> None:
        exhausted_at: float | None = None
        last_flush = last_renew = last_stop_poll = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if exhausted_at is not None and now - exhausted_at > 1.0:
                exhausted_at = None  # look again: deferred rows may have come due
            if exhausted_at is None and self.work.qsize() < self.batch // 2 + self.connections:
                extra = self.claim_conditions() if self.claim_conditions is not None else ()
                claims, skipped = ledger.claim_batch(self.engine, self.campaign_id, self.list_ids,
                                                     self.lease, self.batch, extra)
                self.outcome.counts.skipped += skipped
                for claim in claims:
                    self.work.put(_Item(claim))
                self._outstanding += len(claims)
                if not claims and not skipped:
                    exhausted_at = now
            self._collect(timeout=0.01)
            now = time.monotonic()
            if len(self._pending) >= FLUSH_RESULTS or (self._pending and now - last_flush >= FLUSH_SECONDS):
                self._flush()
                last_flush = now
            if now - last_renew >= self.lease.renew_every or self._renew_now.is_set():
                self._renew()
                last_renew = now
            if now - last_stop_poll >= STOP_POLL_SECONDS:
                self._look_for_stop_request()
                last_stop_poll = now
            if exhausted_at is not None and self._outstanding == 0:
                self._flush()
                if not self.waits_for_retries or not self._wait_for_retries():
                    return
                exhausted_at = None

    def _wait_for_retries(self) -> bool:
        """Sleep until the next deferred row is due; False when there is none (the run is done)."""
        due = ledger.next_retry_at(self.engine, self.campaign_id)
        if due is None:
            return False
        seconds = (due - utcnow()).total_seconds()
        if seconds > 0:
            self._note(f"Waiting {seconds:.0f} s for the next retry of deferred recipients "
                       "(Ctrl-C pauses) ...")
            deadline = time.monotonic() + seconds
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.stop.wait(min(STOP_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                self._renew_if_due()
                self._look_for_stop_request()
        return True

    _last_wait_renew = 0.0

    def _renew_if_due(self) -> None:
        if time.monotonic() - self._last_wait_renew >= self.lease.renew_every:
            self._renew()
            self._last_wait_renew = time.monotonic()

    def _collect(self, timeout: float) -> None:
        try:
            item = self.results.get(timeout=timeout)
        except queue.Empty:
            return
        received = 0
        while True:
            if isinstance(item, _Requeue):
                self.work.put(item.item)
            else:
                self._pending.append(item)
                self._outstanding -= 1
                received += 1
                self.outcome.counts.add(item.state)
            try:
                item = self.results.get_nowait()
            except queue.Empty:
                break
        if received and self.on_progress is not None:
            self.on_progress(self.outcome.counts)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            ledger.record_results(self.engine, pending)
        except BaseException:
            self._pending = pending + self._pending  # kept for the next flush; the journal has them too
            raise

    def _renew(self) -> None:
        self._renew_now.clear()
        if not self.lease.renew():
            self.outcome.lease_lost = True
            self._fatal = DeliveryError(
                f"Campaign {self.campaign_id}: this send lost its lease (it was stalled, e.g. stopped or "
                "suspended, for longer than WIP_MAILER_LEASE_SECONDS) and another process took the "
                "campaign over; it stopped without sending anything more."
            )
            self.stop.set()

    def _drain(self) -> None:
        """After a stop: let the threads finish what they hold, hand back the rest, flush."""
        deadline = time.monotonic() + self.settings.smtp_timeout * 2 + 10
        while self._outstanding > 0 and time.monotonic() < deadline:
            self._collect(timeout=0.05)  # the threads hand back every item they have not started
        self._flush()

    def _note(self, text: str) -> None:
        if self.on_note is not None:
            self.on_note(text)

    # ---- sender threads -----------------------------------------------------------------
    def _sender(self) -> None:
        connection = self.connect(self.settings)
        check = HandOverCheck(self.engine, self.list_ids)
        try:
            while True:
                item = self.work.get()
                if item is None:
                    return
                if self.stop.is_set():
                    self.results.put(self._hand_back(item))
                    continue
                try:
                    self.results.put(self._deliver(connection, check, item))
                except DeliveryError as exc:  # cannot connect, or the sender is refused
                    self._fatal = self._fatal or exc
                    self.stop.set()
                    self.results.put(self._hand_back(item))
                except Exception as exc:  # a bug must not lose the row: hand it back, stop the run
                    self._fatal = self._fatal or DeliveryError(
                        f"Sending stopped on an unexpected error: {exc!r}.")
                    self.stop.set()
                    self.results.put(self._hand_back(item))
        finally:
            connection.close()
            check.close()

    def _result(self, claim: Claim, state: str, reply: str, **details: Any) -> Result:
        return Result(claim.delivery_id, claim.email, self.worker, state, reply, **details)

    def _hand_back(self, item: _Item) -> Result:
        return self._result(item.claim, DeliveryState.QUEUED, "")

    def _lease_still_valid(self) -> bool:
        if self.lease.still_valid():
            return True
        self._renew_now.set()  # the coordinator renews at once, or finds the lease lost and stops
        return False

    def _deliver(self, connection: SmtpSender, check: HandOverCheck, item: _Item) -> Result | _Requeue:
        claim = item.claim
        try:
            message = self.template.build(Addressee(claim.email, claim.name, claim.subscriber_id,
                                                    claim.list_id, claim.delivery_id))
        except InvalidInputError as exc:  # e.g. a name with a line break: refused, never sent
            return self._result(claim, DeliveryState.FAILED, f"not sent: {exc}")
        self.pacer.wait(self.stop)
        if not self._lease_still_valid():
            return self._hand_back(item)
        skip = check.skip_reason(claim)
        if skip is not None:
            return self._result(claim, DeliveryState.SKIPPED, skip)
        result = self._send_with_reconnect(connection, message, claim.delivery_id)
        if result.outcome is Outcome.ACCEPTED:
            self.journal.accepted(claim.delivery_id)
            self._failures_in_row = 0
            return self._result(claim, DeliveryState.SENT, result.reply, message_id=message.message_id,
                                relay=connection.relay)
        if result.outcome is Outcome.IN_DOUBT:
            return self._result(claim, DeliveryState.IN_DOUBT, f"in doubt: {result.reply}",
                                message_id=message.message_id)
        self.journal.rejected(claim.delivery_id)
        if result.outcome is Outcome.WITHDRAWN:
            return self._hand_back(item)
        if result.outcome is Outcome.RETRY and item.resends < RESEND_ON_NEW_CONNECTION:
            item.resends += 1
            return _Requeue(item)
        if result.outcome is Outcome.FAILED:
            self._count_failure(result.reply)
            return self._result(claim, DeliveryState.FAILED, result.reply, hard_bounce=result.hard_bounce)
        return self._defer(claim, result.reply)

    def _send_with_reconnect(self, connection: SmtpSender, message: Outgoing, delivery_id: int) -> SendResult:
        """Send, reconnecting after a failed connect with growing pauses before giving up."""
        def before_dot() -> bool:
            # Journal first: a runner frozen right here is found with ``B`` by its successor,
            # which leaves the row in doubt instead of sending it again.
            self.journal.begin(delivery_id)
            return self._lease_still_valid()

        pause = 0.5
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                return connection.send(message, before_dot=before_dot)
            except SenderRefusedError:
                raise
            except DeliveryError:
                if attempt == CONNECT_ATTEMPTS - 1 or self.stop.is_set():
                    raise
                self.stop.wait(pause)
                pause *= 2
        raise AssertionError("unreachable")

    def _defer(self, claim: Claim, reply: str) -> Result:
        """Exponential backoff from the first attempt, until the retry deadline."""
        now = utcnow()
        delay = self.settings.retry_base_seconds * 2 ** max(claim.attempts - 1, 0)
        next_attempt = now + timedelta(seconds=delay)
        deadline = claim.first_attempt_at + timedelta(seconds=self.settings.retry_deadline_seconds)
        if next_attempt > deadline:
            return self._result(claim, DeliveryState.FAILED,
                                f"gave up after {claim.attempts} attempts (retry deadline reached); "
                                f"last reply: {reply}")
        return self._result(claim, DeliveryState.DEFERRED, reply, next_attempt_at=next_attempt)

    def _count_failure(self, reply: str) -> None:
        # Shared counter, updated from several threads: a lost increment only delays the breaker.
        self._failures_in_row += 1
        if self._failures_in_row >= FAILURE_BREAKER:
            self._fatal = self._fatal or DeliveryError(
                f"The SMTP server refused {self._failures_in_row} recipients in a row (last: {reply}); "
                "sending stopped so that a server problem does not fail the whole list."
            )
            self.stop.set()
