"""Unsubscribes from the web, group-committed: many requests, one transaction.

Mailbox providers POST RFC 8058 one-click unsubscribes in bursts right after a campaign,
while the send is writing to the same database. One ORM session and one commit per
request tops out near 350/s with second-long tails on SQLite. Here the caller verifies
the token (no database), queues the request and waits on a future; one writer thread
takes everything queued within a few milliseconds, applies it in ONE transaction of bulk
Core statements and commits, and only then resolves the futures. So a success means the
unsubscribe is committed, visible to every other connection (the sender's last check
before each SMTP batch included); when the batch fails, every request in it fails.

Each request has exactly the effect of ``consent.unsubscribe``: its memberships left, one
consent event per membership left, the subscriber's status derived again (bounced and
complained stay); repeating it changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, bindparam, insert, or_, select, tuple_, update

from wip_mailer.audience.consent import Actor, EventKind, derived_status, event_values
from wip_mailer.audience.links import preferences_url_maker
from wip_mailer.audience.selfservice import UnsubscribeView, Visitor, no_longer_listed, unsubscribe_claims
from wip_mailer.db import utcnow
from wip_mailer.errors import DatabaseError, WipMailerError
from wip_mailer.models import ConsentEvent, MailingList, Membership, MembershipStatus, Subscriber
from wip_mailer.settings import Settings

logger = logging.getLogger(__name__)

_MEMBERSHIP = Membership.__table__  # type: ignore[attr-defined]
_SUBSCRIBER = Subscriber.__table__  # type: ignore[attr-defined]
_LIST = MailingList.__table__  # type: ignore[attr-defined]
_EVENT = ConsentEvent.__table__  # type: ignore[attr-defined]
_LEFT = MembershipStatus.UNSUBSCRIBED.value


class UnsubscribeNotRecordedError(DatabaseError):
    """The batch holding this unsubscribe was not committed (or the writer is stopped)."""

    def __init__(self) -> None:
        super().__init__("Your unsubscribe could not be recorded just now; please try again in a minute.")


@dataclass(frozen=True)
class UnsubscribeRequest:
    """One verified unsubscribe: leave ``list_id`` (every list when None)."""

    subscriber_id: int
    list_id: int | None
    source: str
    ip: str | None = None
    user_agent: str | None = None


Outcome = UnsubscribeView | WipMailerError


def apply_unsubscribes(connection: Connection, settings: Settings,
                       requests: Sequence[UnsubscribeRequest]) -> list[Outcome]:
    """Apply ``requests`` in the caller's transaction; one outcome per request, in order.

    A request whose subscriber is gone gets a NotFoundError and does not disturb the others.
    Within one batch, a membership named twice is left by the first request only.
    """
    if not requests:
        return []
    now = utcnow()
    whole = {r.subscriber_id for r in requests if r.list_id is None}
    pairs = {(r.subscriber_id, r.list_id) for r in requests if r.list_id is not None}
    ids = {r.subscriber_id for r in requests}
    named = []
    if whole:
        named.append(_MEMBERSHIP.c.subscriber_id.in_(whole))
    if pairs:
        named.append(tuple_(_MEMBERSHIP.c.subscriber_id, _MEMBERSHIP.c.list_id).in_(pairs))
    # The UPDATE comes first: it takes the write lock at once (SQLite) or the row locks
    # (PostgreSQL), and RETURNING tells exactly which memberships this batch left.
    # "subscriber_id IN" lets SQLite use its index (a row-value IN alone scans the table).
    left = connection.execute(
        update(_MEMBERSHIP).where(_MEMBERSHIP.c.status != _LEFT, _MEMBERSHIP.c.subscriber_id.in_(ids),
                                  or_(*named))
        .values(status=_LEFT, unsubscribed_at=now)
        .returning(_MEMBERSHIP.c.subscriber_id, _MEMBERSHIP.c.list_id)).all()
    remaining: dict[int, set[int]] = {}
    for subscriber_id, list_id in left:
        remaining.setdefault(subscriber_id, set()).add(list_id)

    subscribers = {row.id: row for row in connection.execute(
        select(_SUBSCRIBER.c.id, _SUBSCRIBER.c.email, _SUBSCRIBER.c.status)
        .where(_SUBSCRIBER.c.id.in_(ids)))}
    list_ids = {r.list_id for r in requests if r.list_id is not None}
    list_names: dict[int, str] = {}
    if list_ids:
        list_names.update((row.id, row.name) for row in connection.execute(
            select(_LIST.c.id, _LIST.c.name).where(_LIST.c.id.in_(list_ids))))

    preferences_url = preferences_url_maker(settings)
    events: list[dict[str, object]] = []
    outcomes: list[Outcome] = []
    for request in requests:
        subscriber = subscribers.get(request.subscriber_id)
        if subscriber is None:
            outcomes.append(no_longer_listed())
            continue
        lists_left = remaining.get(request.subscriber_id, set())
        taken = set(lists_left) if request.list_id is None else lists_left & {request.list_id}
        lists_left -= taken
        actor = Actor(source=request.source, ip=request.ip, user_agent=request.user_agent)
        events.extend({**event_values(request.subscriber_id, list_id, EventKind.UNSUBSCRIBE, actor),
                       "at": now} for list_id in sorted(taken))
        outcomes.append(UnsubscribeView(
            subscriber.email, list_names.get(request.list_id) if request.list_id is not None else None,
            False, preferences_url(request.subscriber_id, request.list_id), bool(taken)))
    if events:
        connection.execute(insert(_EVENT), events)
        _refresh_statuses(connection, {sid: subscribers[sid].status for sid in remaining}, now)
    return outcomes


def _refresh_statuses(connection: Connection, current: dict[int, str], now: object) -> None:
    """``consent.refresh_status`` for many subscribers: two statements in all."""
    states: dict[int, set[str]] = {sid: set() for sid in current}
    for subscriber_id, status in connection.execute(
            select(_MEMBERSHIP.c.subscriber_id, _MEMBERSHIP.c.status)
            .where(_MEMBERSHIP.c.subscriber_id.in_(current))):
        states[subscriber_id].add(status)
    changes = []
    for subscriber_id, status in current.items():
        derived = derived_status(status, states[subscriber_id])
        if derived is not None and derived != status:
            changes.append({"b_id": subscriber_id, "b_status": str(derived)})
    if changes:
        connection.execute(update(_SUBSCRIBER).where(_SUBSCRIBER.c.id == bindparam("b_id"))
                           .values(status=bindparam("b_status"), updated_at=now), changes)


@dataclass
class _Queued:
    request: UnsubscribeRequest
    future: asyncio.Future[UnsubscribeView]
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.monotonic)


_STOP = object()


class UnsubscribeWriter:
    """One writer thread that group-commits unsubscribes for asyncio callers.

    It takes what was queued within ``window_seconds`` of the oldest waiting request (at
    most ``max_batch``) and commits it as one transaction. Started on first use (or by
    ``start``); ``close`` writes what is queued, then stops the thread.

    The thread shares the GIL with the event loop, so it wakes once per batch, not per
    request, and settles a whole batch's futures with one call into the loop: each
    hand-over between the two threads costs more than a request's share of the batch.
    """

    def __init__(self, engine: Engine, settings: Settings, *, window_seconds: float = 0.005,
                 max_batch: int = 500) -> None:
        self._engine = engine
        self._settings = settings
        self._window = window_seconds
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Queued | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # committed batches, for tests and benchmarks
        self.committed = 0  # requests in them

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._closed:
            raise UnsubscribeNotRecordedError()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="unsubscribe-writer", daemon=True)
            self._thread.start()

    async def unsubscribe(self, token: str, *, source: str, visitor: Visitor) -> UnsubscribeView:
        """Verify ``token`` (InvalidTokenError, nothing queued), queue the unsubscribe and
        return once it is committed; UnsubscribeNotRecordedError when it was not."""
        claims = unsubscribe_claims(self._settings, token)
        loop = asyncio.get_running_loop()
        queued = _Queued(UnsubscribeRequest(claims.subscriber_id, claims.list_id, source,
                                            visitor.ip, visitor.user_agent), loop.create_future(), loop)
        with self._lock:  # nothing may slip in behind close()'s stop mark
            self._start()
            self._queue.put(queued)
        return await queued.future

    def close(self, timeout: float = 30.0) -> None:
        """Write everything already queued, then stop the thread; later unsubscribes fail."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            assert isinstance(first, _Queued)
            # Sleep through the window rather than wake for each arrival; under load the
            # window is long gone and what is queued goes at once.
            time.sleep(max(first.queued_at + self._window - time.monotonic(), 0))
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Queued)
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Queued]) -> None:
        outcomes: list[Outcome]
        try:
            with self._engine.begin() as connection:
                outcomes = apply_unsubscribes(connection, self._settings, [item.request for item in batch])
        except Exception as exc:  # every request of the batch gets an error, never a success
            # The type only: the exception's text may quote SQL and addresses.
            logger.error("A batch of %d unsubscribes was not committed (%s).", len(batch), type(exc).__name__)
            outcomes = [UnsubscribeNotRecordedError() for _ in batch]
        else:
            self.batches += 1
            self.committed += len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[UnsubscribeView], Outcome]]] = {}
        for item, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(item.loop, []).append((item.future, outcome))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[UnsubscribeView], Outcome]]) -> None:
    for future, outcome in settled:
        if future.done():  # the request was cancelled meanwhile
            continue
        if isinstance(outcome, WipMailerError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
