"""Unsubscribes from the web, group-committed: many requests, one transaction.

Mailbox providers POST RFC 8058 one-click unsubscribes in bursts right after a campaign,
while the send is writing to the same database. One ORM session and one commit per
request tops out near 350/s with second-long tails on SQLite. Here the web process
verifies the token (no database) and hands the request to a writer process; the writer
takes what arrives within a few milliseconds, applies it in ONE transaction of bulk Core
statements, commits, and only then answers for the batch. A success therefore means the
unsubscribe is committed and visible to every other connection (the sender's last check
before each SMTP batch included); when the batch fails, or the writer dies before
answering, every request in it fails.

Why a process and not a thread: a writer thread shares the GIL with the event loop, and
each SQLite call (each row fetched) hands the GIL over and then waits up to the switch
interval to get it back from the busy loop, so under a burst batches took tens of
milliseconds and the hand-overs cost more CPU than batching saved (measured under 64
connections: ~640 µs of CPU per POST with a thread; ~380 µs in the web process plus ~170
in the writer with a process, on the other core).

Each request has exactly the effect of ``consent.unsubscribe``: its memberships left, one
consent event per membership left, the subscriber's status derived again (bounced and
complained stay); repeating it changes nothing.

The writer is this module run as ``python -m wip_mailer.audience.unsubscribe_batch``: JSON
lines on stdin (its settings with the database URL, then one numbered request a line) and
one answer a line on stdout for each batch, after its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select as io_select
import sys
import time
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
        events.extend({**event_values(request.subscriber_id, list_id, EventKind.UNSUBSCRIBE, actor),
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


class _Lines:
    """Lines from a pipe, with a timeout (select on the descriptor, no Python buffering)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self.ended = False

    def next(self, timeout: float | None) -> bytes | None:
        """The next line; None at the end of input or when ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if self.ended:
                return None
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not io_select.select([self._fd], [], [], wait)[0]:
                return None
            chunk = os.read(self._fd, 1 << 16)
            self.ended = not chunk
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


def writer_main(fd: int, answers: IO[str]) -> None:
    """The writer process. Input: its settings, then one request a line, each with its
    sequence number. It takes what arrives within the window of the first waiting line (at
    most max_batch), applies and commits it, and answers one line a batch."""
    lines = _Lines(fd)
    first = lines.next(None)
    if first is None:
        return
    config = json.loads(first)
    window, max_batch = float(config["window_seconds"]), int(config["max_batch"])
    engine = db.make_engine(config["database_url"])
    with engine.connect():  # fail here, before the web process counts on this writer
        pass
    answers.write('{"ready": true}\n')
    answers.flush()
    while (line := lines.next(None)) is not None:
        batch = [json.loads(line)]
        deadline = time.monotonic() + window
        while len(batch) < max_batch and (line := lines.next(deadline - time.monotonic())) is not None:
            batch.append(json.loads(line))
        sequence = [fields[0] for fields in batch]
        answer: dict[str, Any]
        try:
            with engine.begin() as connection:
                applied = apply_unsubscribes(connection,
                                             [UnsubscribeRequest(*fields[1:]) for fields in batch])
        except Exception as exc:  # the whole batch is rolled back: every request in it fails
            # The type only: the exception's text may quote SQL and addresses.
            logger.error("A batch of %d unsubscribes was not committed (%s).", len(batch), type(exc).__name__)
            answer = {"failed": sequence}
        else:
            answer = {"applied": [[number, None if a is None else [a.email, a.list_name, a.changed]]
                                  for number, a in zip(sequence, applied, strict=True)]}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    engine.dispose()


class UnsubscribeWriter:
    """Group-commits the unsubscribes of one event loop through a writer process.

    Each verified request goes to the writer at once, numbered; the writer batches what
    arrives within ``window_seconds`` (at most ``max_batch``), commits, and answers for the
    batch, and meanwhile the next batch gathers in the pipe: the writer never waits for the
    event loop. The process is started by ``start`` (or on first use) and again after it
    died; ``aclose`` lets it write what it was sent, then stops it.
    """

    def __init__(self, engine: Engine, settings: Settings, *, window_seconds: float = 0.005,
                 max_batch: int = 500) -> None:
        self._config = {"database_url": engine.url.render_as_string(hide_password=False),
                        "window_seconds": window_seconds, "max_batch": max_batch}
        self._settings = settings
        self._preferences_url = preferences_url_maker(settings)
        self._process: asyncio.subprocess.Process | None = None
        self._answers: asyncio.Task[None] | None = None  # reads the process's answers
        self._starting: asyncio.Lock | None = None
        self._waiting: dict[int, tuple[asyncio.Future[Applied | None], asyncio.subprocess.Process]] = {}
        self._sequence = 0
        self._closed = False
        self.batches = 0  # committed batches, for tests and benchmarks
        self.committed = 0  # requests in them

    @property
    def writer_pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the writer process now rather than at the first unsubscribe; if it cannot
        start, the first unsubscribe tries again (and fails if it still cannot)."""
        with contextlib.suppress(UnsubscribeNotRecordedError):
            await self._writer()

    async def unsubscribe(self, token: str, *, source: str, visitor: Visitor) -> UnsubscribeView:
        """Verify ``token`` (InvalidTokenError, nothing sent), send the unsubscribe to the
        writer and return once it is committed; UnsubscribeNotRecordedError when it was not."""
        claims = unsubscribe_claims(self._settings, token)
        if self._closed:
            raise UnsubscribeNotRecordedError()
        process = await self._writer()
        assert process.stdin is not None
        self._sequence += 1
        future: asyncio.Future[Applied | None] = asyncio.get_running_loop().create_future()
        self._waiting[self._sequence] = (future, process)
        process.stdin.write(json.dumps([self._sequence, claims.subscriber_id, claims.list_id, source,
                                        visitor.ip, visitor.user_agent]).encode() + b"\n")
        applied = await future
        if applied is None:
            raise no_longer_listed()
        return UnsubscribeView(applied.email, applied.list_name, False,
                               self._preferences_url(claims.subscriber_id, claims.list_id), applied.changed)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Let the writer commit what it was sent, then stop it; later unsubscribes fail."""
        self._closed = True
        process, answers = self._process, self._answers
        if process is None or answers is None:
            return
        assert process.stdin is not None
        process.stdin.close()  # end of input: the writer finishes its last batch and exits
        try:
            await asyncio.wait_for(asyncio.shield(answers), timeout)
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            await answers
        self._process = None

    async def _writer(self) -> asyncio.subprocess.Process:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:  # a burst on a stopped writer starts one, not one each
            if self._process is not None and self._answers is not None and not self._answers.done():
                return self._process
            if self._closed:
                raise UnsubscribeNotRecordedError()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", WRITER_MODULE, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, limit=1 << 24)
            assert process.stdin is not None and process.stdout is not None
            # The URL (with any password) goes through the pipe, not the command line.
            process.stdin.write(json.dumps(self._config).encode() + b"\n")
            if not await process.stdout.readline():  # it could not open the database
                await process.wait()
                logger.error("The unsubscribe writer did not start (exit status %s).", process.returncode)
                raise UnsubscribeNotRecordedError()
            self._process = process
            self._answers = asyncio.get_running_loop().create_task(self._read_answers(process))
            return process

    async def _read_answers(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while line := await process.stdout.readline():
                answer = json.loads(line)
                if "applied" in answer:
                    self.batches += 1
                    self.committed += len(answer["applied"])
                    for number, a in answer["applied"]:
                        self._settle(number, None if a is None else Applied(a[0], a[1], a[2]))
                for number in answer.get("failed", []):
                    self._settle(number, UnsubscribeNotRecordedError())
        except (OSError, ValueError):  # a broken pipe, an answer past the limit
            logger.exception("Reading the unsubscribe writer's answers failed.")
        # The writer stopped (or died: maybe before, maybe after a commit): whatever it
        # did not answer for fails, and the next unsubscribe starts a new writer.
        for number, (_, sent_to) in list(self._waiting.items()):
            if sent_to is process:
                self._settle(number, UnsubscribeNotRecordedError())
        if process.returncode is None and not self._closed:
            logger.error("The unsubscribe writer stopped answering; it is started again when needed.")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()

    def _settle(self, number: int, outcome: Applied | WipMailerError | None) -> None:
        waiting = self._waiting.pop(number, None)
        if waiting is None or waiting[0].done():  # unknown, or its request was cancelled
            return
        if isinstance(outcome, WipMailerError):
            waiting[0].set_exception(outcome)
        else:
            waiting[0].set_result(outcome)


if __name__ == "__main__":
    writer_main(sys.stdin.fileno(), sys.stdout)
