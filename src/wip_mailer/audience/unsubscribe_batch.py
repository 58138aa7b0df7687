"""Unsubscribes from the web, group-committed: many requests, one transaction.

Mailbox providers POST RFC 8058 one-click unsubscribes in bursts right after a campaign,
while the send is writing to the same database. One ORM session and one commit per
request tops out near 350/s with second-long tails on SQLite. Here the web process
verifies the token (no database) and queues the request; what is queued within a few
milliseconds goes as one batch to a writer process, which applies it in ONE transaction
of bulk Core statements, commits, and only then answers. Each request's future is
settled from that answer: a success means the unsubscribe is committed and visible to
every other connection (the sender's last check before each SMTP batch included); when
the batch fails or the writer dies, every request in it fails.

Why a process and not a thread: a writer thread shares the GIL with the event loop, and
each SQLite call (each row fetched) hands the GIL over and then waits up to the switch
interval to get it back from the busy loop, so under a burst batches took tens of
milliseconds and the hand-overs cost more CPU than batching saved (measured under 64
connections: ~640 µs of CPU per POST with a thread; ~380 µs in the web process plus ~150
in the writer with a process, on the other core). Sending each request to the writer as
it comes, and letting the writer batch, measured worse (~200 µs in the writer): one line
a batch it is.

Each request has exactly the effect of ``consent.unsubscribe``: its memberships left, one
consent event per membership left, the subscriber's status derived again (bounced and
complained stay); repeating it changes nothing.

The writer process is this module run as ``python -m wip_mailer.audience.unsubscribe_batch``:
JSON lines on stdin (first the database URL, then one batch a line) and one answer a line
on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import Connection, Engine, bindparam, insert, or_, select, tuple_, update

from wip_mailer import db
from wip_mailer.audience.consent import Actor, EventKind, derived_status, event_values
from wip_mailer.audience.links import preferences_url_maker
from wip_mailer.audience.selfservice import UnsubscribeView, Visitor, no_longer_listed, unsubscribe_claims
from wip_mailer.errors import DatabaseError, WipMailerError
from wip_mailer.models import ConsentEvent, MailingList, Membership, MembershipStatus, Subscriber
from wip_mailer.settings import Settings

logger = logging.getLogger(__name__)

_MEMBERSHIP = Membership.__table__  # type: ignore[attr-defined]
_SUBSCRIBER = Subscriber.__table__  # type: ignore[attr-defined]
_LIST = MailingList.__table__  # type: ignore[attr-defined]
_EVENT = ConsentEvent.__table__  # type: ignore[attr-defined]
_LEFT = MembershipStatus.UNSUBSCRIBED.value
WRITER_MODULE = "wip_mailer.audience.unsubscribe_batch"


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
    campaign_id: int | None = None  # named by the link: the leave is attributed to that campaign


@dataclass(frozen=True)
class Applied:
    """What one request did: for the page, and to tell a repeat from a first time."""

    email: str
    list_name: str | None  # None: every list (or the list is gone)
    changed: bool


def apply_unsubscribes(connection: Connection,
                       requests: Sequence[UnsubscribeRequest]) -> list[Applied | None]:
    """Apply ``requests`` in the caller's transaction; one outcome per request, in order.

    None for a request whose subscriber is gone; it does not disturb the others. Within
    one batch, a membership named twice is left by the first request only.
    """
    if not requests:
        return []
    now = db.utcnow()
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

    events: list[dict[str, object]] = []
    outcomes: list[Applied | None] = []
    for request in requests:
        subscriber = subscribers.get(request.subscriber_id)
        if subscriber is None:
            outcomes.append(None)
            continue
        lists_left = remaining.get(request.subscriber_id, set())
        taken = set(lists_left) if request.list_id is None else lists_left & {request.list_id}
        lists_left -= taken
        actor = Actor(source=request.source, ip=request.ip, user_agent=request.user_agent)
        events.extend({**event_values(request.subscriber_id, list_id, EventKind.UNSUBSCRIBE, actor,
                                      request.campaign_id),
                       "at": now} for list_id in sorted(taken))
        list_name = None if request.list_id is None else list_names.get(request.list_id)
        outcomes.append(Applied(subscriber.email, list_name, bool(taken)))
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


def writer_main(lines: IO[str], answers: IO[str]) -> None:
    """The writer process: the database URL, then one batch a line; one answer a line."""
    engine = db.make_engine(json.loads(lines.readline())["database_url"])
    with engine.connect():  # fail here, before the web process counts on this writer
        pass
    answers.write('{"ready": true}\n')
    answers.flush()
    for line in lines:
        requests = [UnsubscribeRequest(*fields) for fields in json.loads(line)]
        answer: dict[str, Any]
        try:
            with engine.begin() as connection:
                applied = apply_unsubscribes(connection, requests)
        except Exception as exc:  # the whole batch is rolled back: every request fails
            # The type only: the exception's text may quote SQL and addresses.
            logger.error("A batch of %d unsubscribes was not committed (%s).", len(requests),
                         type(exc).__name__)
            answer = {"failed": type(exc).__name__}
        else:
            answer = {"applied": [None if a is None else [a.email, a.list_name, a.changed] for a in applied]}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    engine.dispose()


class UnsubscribeWriter:
    """Group-commits the unsubscribes of one event loop through a writer process.

    What is queued within ``window_seconds`` of the oldest waiting request (at most
    ``max_batch``) goes as one batch; one batch is at the writer at a time, the next
    gathers meanwhile. The process is started by ``start`` (or on first use) and again
    after it died; ``aclose`` writes what is queued, then stops it.
    """

    def __init__(self, engine: Engine, settings: Settings, *, window_seconds: float = 0.005,
                 max_batch: int = 500) -> None:
        self._database_url = engine.url.render_as_string(hide_password=False)
        self._settings = settings
        self._preferences_url = preferences_url_maker(settings)
        self._window = window_seconds
        self._max_batch = max_batch
        self._queue: list[tuple[UnsubscribeRequest, asyncio.Future[Applied | None]]] = []
        self._first_queued_at = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._closed = False
        self.batches = 0  # committed batches, for tests and benchmarks
        self.committed = 0  # requests in them

    @property
    def writer_pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the writer process now rather than at the first unsubscribe; if it cannot
        start, the first batch tries again (and fails its requests if it still cannot)."""
        with contextlib.suppress(UnsubscribeNotRecordedError):
            await self._writer()

    async def unsubscribe(self, token: str, *, source: str, visitor: Visitor) -> UnsubscribeView:
        """Verify ``token`` (InvalidTokenError, nothing queued), queue the unsubscribe and
        return once it is committed; UnsubscribeNotRecordedError when it was not."""
        claims = unsubscribe_claims(self._settings, token)
        if self._closed:
            raise UnsubscribeNotRecordedError()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Applied | None] = loop.create_future()
        if not self._queue:
            self._first_queued_at = loop.time()
        self._queue.append((UnsubscribeRequest(claims.subscriber_id, claims.list_id, source, visitor.ip,
                                               visitor.user_agent, claims.campaign_id), future))
        self._wake.set()
        if self._task is None:
            self._task = loop.create_task(self._batches())
        applied = await future
        if applied is None:
            raise no_longer_listed()
        return UnsubscribeView(applied.email, applied.list_name, False,
                               self._preferences_url(claims.subscriber_id, claims.list_id), applied.changed)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Write everything already queued, then stop the writer; later unsubscribes fail."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._process is not None:
            await self._stop_process(timeout)

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                continue
            delay = self._first_queued_at + self._window - loop.time()
            if delay > 0 and not self._closed:
                await asyncio.sleep(delay)
            batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
            # those left over have waited a whole window already: they go next, at once
            self._first_queued_at = loop.time() - self._window
            try:
                outcomes = await self._write([request for request, _ in batch])
            except Exception:  # whatever went wrong, nobody may wait for ever
                logger.exception("The unsubscribe writer failed.")
                outcomes = [UnsubscribeNotRecordedError() for _ in batch]
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its request was cancelled meanwhile
                    continue
                if isinstance(outcome, WipMailerError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _write(self, requests: list[UnsubscribeRequest]) -> list[Applied | WipMailerError | None]:
        try:
            process = await self._writer()
        except UnsubscribeNotRecordedError as error:
            return [error for _ in requests]
        assert process.stdin is not None and process.stdout is not None
        line = json.dumps([[r.subscriber_id, r.list_id, r.source, r.ip, r.user_agent, r.campaign_id]
                           for r in requests])
        try:
            process.stdin.write(line.encode() + b"\n")
            await process.stdin.drain()
            answer_line = await process.stdout.readline()
        except (OSError, ValueError):  # a broken pipe, or an answer past the limit
            answer_line = b""
        if not answer_line:  # the writer died: maybe before, maybe after its commit
            logger.error("The unsubscribe writer stopped; it is started again for the next batch.")
            await self._stop_process(5.0)
            return [UnsubscribeNotRecordedError() for _ in requests]
        answer = json.loads(answer_line)
        if "failed" in answer:
            return [UnsubscribeNotRecordedError() for _ in requests]
        self.batches += 1
        self.committed += len(requests)
        return [None if a is None else Applied(a[0], a[1], a[2]) for a in answer["applied"]]

    async def _writer(self) -> asyncio.subprocess.Process:
        if self._process is not None and self._process.returncode is not None:
            logger.error("The unsubscribe writer had stopped (exit status %s); starting a new one.",
                         self._process.returncode)
        if self._process is None or self._process.returncode is not None:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", WRITER_MODULE, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, limit=1 << 24)
            assert process.stdin is not None and process.stdout is not None
            # The URL (with any password) goes through the pipe, not the command line.
            process.stdin.write(json.dumps({"database_url": self._database_url}).encode() + b"\n")
            if not await process.stdout.readline():  # it could not open the database
                await process.wait()
                logger.error("The unsubscribe writer did not start (exit status %s).", process.returncode)
                raise UnsubscribeNotRecordedError()
            self._process = process
        return self._process

    async def _stop_process(self, timeout: float) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()  # end of input: the writer finishes and exits
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()


if __name__ == "__main__":
    # Ctrl-C and systemd's stop signal reach the whole process group: the writer stops only
    # at the end of its input, once the web process has sent it everything and closed the pipe
    # (or died), so nothing sent to it is cut off.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    writer_main(sys.stdin, sys.stdout)
