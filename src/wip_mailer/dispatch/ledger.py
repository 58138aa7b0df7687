"""The delivery ledger: one row per (campaign, subscriber), written in batches.

State machine of a row::

    queued ──claim──> sending ──> sent | deferred | failed | skipped | in_doubt
    deferred ──claim when due──> sending          in_doubt ──(--resend-in-doubt)──> queued

Rules that make "exactly once" hold with batched writes:

- A batch is *claimed* in one statement (``UPDATE ... WHERE id IN (SELECT ... LIMIT n
  [FOR UPDATE SKIP LOCKED]) RETURNING``), so two runners — threads, processes or
  machines on PostgreSQL — never get the same row.
- A row becomes ``sent`` only after the server's 2xx reply, in the next results flush.
- After a crash, the rows still ``sending`` are settled with the runner's journal
  (see ``journal.py``): at most one per SMTP connection is left in doubt.
- Fencing: a runner claims only while its campaign lease is its own (the claim's WHERE
  holds ``lease.fence()``), marks each claimed row with its lease token (``worker``), and
  writes a result only where the row is still ``sending`` for that token. A runner that
  was frozen past its lease and wakes up changes nothing its successor owns.

Everything here is plain SQL through SQLAlchemy Core (the ORM's per-object work would
cost more than the SMTP transaction at thousands of messages per second).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, SQLModel

from wip_mailer.audience import email_hash, record_hard_bounce
from wip_mailer.db import utcnow
from wip_mailer.dispatch.journal import journal_path, read_journal
from wip_mailer.lease import LEASE, Lease, holder_is_dead
from wip_mailer.models import (
    DeliveryState,
    MembershipStatus,
    SubscriberStatus,
)

DELIVERY = SQLModel.metadata.tables["delivery"]
CAMPAIGN = SQLModel.metadata.tables["campaign"]
SUBSCRIBER = SQLModel.metadata.tables["subscriber"]
MEMBERSHIP = SQLModel.metadata.tables["membership"]
SUPPRESSION = SQLModel.metadata.tables["suppression"]

TERMINAL = (DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.SKIPPED, DeliveryState.IN_DOUBT)
UNFINISHED = (DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.DEFERRED)


@dataclass(frozen=True)
class Claim:
    """A delivery a runner now owns (state ``sending``) with what is needed to build its message."""

    delivery_id: int
    subscriber_id: int
    list_id: int | None
    email: str
    name: str
    attempts: int
    first_attempt_at: datetime
    email_hash: str


@dataclass(frozen=True)
class Result:
    """The outcome of one claimed delivery, waiting to be flushed."""

    delivery_id: int
    email: str
    worker: str  # the lease token the row was claimed with: the write's fence
    state: str  # a DeliveryState, or QUEUED to hand back a row that was not attempted
    reply: str
    message_id: str | None = None
    next_attempt_at: datetime | None = None
    hard_bounce: bool = False
    relay: str | None = None  # the relay that accepted it (several relays: ``relays``)


# --- freezing the recipients --------------------------------------------------------------

def _sent_this_edition(edition_id: int) -> sa.Select[Any]:
    """Deliveries of an earlier campaign of this edition that sent (or may have sent) it."""
    return (
        sa.select(DELIVERY.c.subscriber_id)
        .join(CAMPAIGN, CAMPAIGN.c.id == DELIVERY.c.campaign_id)
        .where(CAMPAIGN.c.edition_id == edition_id)
        .where(DELIVERY.c.state.in_([DeliveryState.SENT, DeliveryState.IN_DOUBT, DeliveryState.SENDING]))
    )


def not_already_sent(edition_id: int) -> sa.ColumnElement[bool]:
    """SQL on ``subscriber``: no earlier campaign of this edition sent (or may have sent) to them."""
    return ~_sent_this_edition(edition_id).where(DELIVERY.c.subscriber_id == SUBSCRIBER.c.id).exists()


def edition_was_sent(session: Session, edition_id: int) -> bool:
    """Whether any earlier campaign of this edition sent (or may have sent) to anyone."""
    query = _sent_this_edition(edition_id).where(DELIVERY.c.subscriber_id.is_not(None)).limit(1)
    return session.execute(query).first() is not None


def freeze_recipients(session: Session, campaign_id: int, selection: sa.Select[Any]) -> int:
    """Write one ``queued`` row per recipient of ``selection`` (``audience.recipients_query``);
    returns how many.

    One ``INSERT ... SELECT`` in the session's transaction: the rows never leave the database
    (a million in seconds, where streaming them through Python cost a minute), in subscriber
    order, so the ledger's ids follow it as before.
    """
    chosen = selection.order_by(None).subquery("recipient")
    rows = sa.select(
        sa.literal(campaign_id), chosen.c.subscriber_id, chosen.c.list_id, chosen.c.email,
        sa.literal(DeliveryState.QUEUED.value), sa.literal(0), sa.literal(""),
        sa.literal(utcnow(), DELIVERY.c.updated_at.type),
    ).order_by(chosen.c.subscriber_id)
    insert = sa.insert(DELIVERY).from_select(
        ["campaign_id", "subscriber_id", "list_id", "email", "state", "attempts", "last_reply", "updated_at"],
        rows).execution_options(preserve_rowcount=True)  # an INSERT's rowcount is dropped otherwise
    return session.connection().execute(insert).rowcount


ANALYZE_AFTER = 50_000  # rows; below that the planner's guess does no harm


def analyze_after_freeze(engine: Engine, rows: int) -> None:
    """PostgreSQL statistics right after a large freeze is committed, not when autovacuum comes
    by: without them the planner takes the freshly filled ledger for empty, and every claim
    reads the whole campaign (ANALYZE inside the freeze's own transaction does not see its rows)."""
    if engine.dialect.name == "postgresql" and rows >= ANALYZE_AFTER:
        _analyze(engine)


def _analyze(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE delivery")


class _ClaimStatistics:
    """ANALYZE again after every ``ANALYZE_AFTER`` rows this process claims on PostgreSQL.

    Statistics from the freeze still say every row is queued: once most are sent, the planner
    walks the primary key past them for each claim (measured: 1 s per claim of 100 at row
    700,000 of 1,000,000) instead of the claim index. Autovacuum would analyze in time, but
    it may be off or slow on a busy server; ANALYZE samples a fixed number of rows (~0.1 s).
    """

    def __init__(self) -> None:
        self._claimed = 0
        self._lock = threading.Lock()

    def claimed(self, engine: Engine, rows: int) -> None:
        if engine.dialect.name != "postgresql":
            return
        with self._lock:
            self._claimed += rows
            due = self._claimed >= ANALYZE_AFTER
            if due:
                self._claimed = 0
        if due:
            _analyze(engine)


_claim_statistics = _ClaimStatistics()


# --- claiming batches ---------------------------------------------------------------------

def _claim_rows(connection: sa.Connection, campaign_id: int, lease: Lease, limit: int,
                now: datetime, extra: Sequence[sa.ColumnElement[bool]] = ()
                ) -> list[sa.Row[tuple[int, int | None, int | None, str, int, datetime]]]:
    rows: list[sa.Row[tuple[int, int | None, int | None, str, int, datetime]]] = []
    due_retries = (DELIVERY.c.state == DeliveryState.DEFERRED, DELIVERY.c.next_attempt_at <= now)
    fresh = (DELIVERY.c.state == DeliveryState.QUEUED, DELIVERY.c.next_attempt_at.is_(None))
    for condition in (due_retries, fresh):
        wanted = limit - len(rows)
        if wanted <= 0:
            break
        pick = (sa.select(DELIVERY.c.id).where(DELIVERY.c.campaign_id == campaign_id, *condition)
                .order_by(DELIVERY.c.id).limit(wanted))
        if connection.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)  # concurrent workers skip each other's rows
        claim = (
            sa.update(DELIVERY)
            .where(DELIVERY.c.id.in_(pick.scalar_subquery()), lease.fence(), *extra)
            .values(state=DeliveryState.SENDING, worker=lease.token, attempts=DELIVERY.c.attempts + 1,
                    first_attempt_at=sa.func.coalesce(DELIVERY.c.first_attempt_at, now), updated_at=now)
            .returning(DELIVERY.c.id, DELIVERY.c.subscriber_id, DELIVERY.c.list_id, DELIVERY.c.email,
                       DELIVERY.c.attempts, DELIVERY.c.first_attempt_at)
        )
        rows.extend(connection.execute(claim).all())
    return rows


def _skip_reasons(connection: sa.Connection, rows: Sequence[sa.Row], list_ids: Sequence[int]
                  ) -> tuple[dict[int, str], dict[int, str], dict[int, str]]:
    """Names of the claimed subscribers, and why some must not be sent to any more."""
    subscriber_ids = [row.subscriber_id for row in rows if row.subscriber_id is not None]
    subscribers = {
        row.id: row for row in connection.execute(
            sa.select(SUBSCRIBER.c.id, SUBSCRIBER.c.name, SUBSCRIBER.c.status)
            .where(SUBSCRIBER.c.id.in_(subscriber_ids)))
    }
    members = set(connection.execute(
        sa.select(MEMBERSHIP.c.subscriber_id).where(
            MEMBERSHIP.c.subscriber_id.in_(subscriber_ids), MEMBERSHIP.c.list_id.in_(list_ids),
            MEMBERSHIP.c.status == MembershipStatus.ACTIVE)
    ).scalars())
    hashes = {email_hash(row.email): row.id for row in rows}
    suppressed = {
        hashes[row.email_hash]: row.reason for row in connection.execute(
            sa.select(SUPPRESSION.c.email_hash, SUPPRESSION.c.reason)
            .where(SUPPRESSION.c.email_hash.in_(list(hashes))))
    }
    names: dict[int, str] = {}
    skips: dict[int, str] = {}
    for row in rows:
        subscriber = subscribers.get(row.subscriber_id)
        if subscriber is None:
            skips[row.id] = "skipped: the subscriber was erased after the campaign started"
        elif subscriber.status != SubscriberStatus.ACTIVE:
            skips[row.id] = f"skipped: the subscriber became {subscriber.status} after the campaign started"
        elif row.id in suppressed:
            skips[row.id] = f"skipped: the address is suppressed ({suppressed[row.id]})"
        elif row.subscriber_id not in members:
            skips[row.id] = "skipped: unsubscribed from the list after the campaign started"
        else:
            names[row.id] = subscriber.name
    return names, skips, {row_id: key for key, row_id in hashes.items()}


def claim_batch(engine: Engine, campaign_id: int, list_ids: Sequence[int], lease: Lease,
                limit: int, extra: Sequence[sa.ColumnElement[bool]] = ()) -> tuple[list[Claim], int]:
    """Claim up to ``limit`` due rows; rows that must no longer be sent are marked skipped.

    ``extra`` conditions go into the claim's WHERE (a worker's: the campaign is still being
    sent and nobody holds it alone). Returns the claims and how many rows were skipped (0
    claims and 0 skipped: nothing is due, or the lease is no longer ours).
    """
    now = utcnow()
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            # Take the write lock first (BEGIN IMMEDIATE): worker processes queue on busy_timeout
            # for it instead of failing to upgrade a read transaction.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        rows = _claim_rows(connection, campaign_id, lease, limit, now, extra)
        if not rows:
            return [], 0
        names, skips, hashes = _skip_reasons(connection, rows, list_ids)
        if skips:
            connection.execute(
                sa.update(DELIVERY).where(DELIVERY.c.id == sa.bindparam("b_id"))
                .values(state=DeliveryState.SKIPPED, last_reply=sa.bindparam("b_reply"), worker=None,
                        attempts=DELIVERY.c.attempts - 1, updated_at=now),
                [{"b_id": delivery_id, "b_reply": reason} for delivery_id, reason in skips.items()],
            )
    _claim_statistics.claimed(engine, len(rows))  # once the claim is committed
    claims = [Claim(row.id, row.subscriber_id, row.list_id, row.email, names[row.id], row.attempts,
                    row.first_attempt_at, hashes[row.id])
              for row in rows if row.id in names]
    return claims, len(skips)


# --- the check at hand-over ---------------------------------------------------------------

class HandOverCheck:
    """Is a claimed delivery still wanted? Asked by a sender thread right before each message.

    Claims run ahead of sending, so a person who unsubscribes (or is suppressed or erased)
    after the claim would still be mailed: this one indexed query, on a connection of the
    sender's own through the driver (~8 µs on SQLite), closes that gap to the messages
    already in an SMTP transaction.
    """

    def __init__(self, engine: Engine, list_ids: Sequence[int]):
        lists = ", ".join(str(int(list_id)) for list_id in list_ids) or "NULL"
        self._connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        dbapi = self._connection.connection.dbapi_connection
        assert dbapi is not None
        self._cursor = dbapi.cursor()
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._sql = (
            f"SELECT (SELECT status FROM subscriber WHERE id = {mark}),"
            f" (SELECT count(*) FROM membership WHERE subscriber_id = {mark} AND list_id IN ({lists})"
            f"  AND status = '{MembershipStatus.ACTIVE}'),"
            f" (SELECT reason FROM suppression WHERE email_hash = {mark})"
        )

    def skip_reason(self, claim: Claim) -> str | None:
        """Why the message must not go out any more, or None to send it."""
        self._cursor.execute(self._sql, (claim.subscriber_id, claim.subscriber_id, claim.email_hash))
        status, memberships, suppressed = self._cursor.fetchone() or (None, 0, None)
        if status is None:
            return "skipped: the subscriber was erased during the send"
        if status != SubscriberStatus.ACTIVE:
            return f"skipped: the subscriber became {status} during the send"
        if suppressed is not None:
            return f"skipped: the address was suppressed during the send ({suppressed})"
        if not memberships:
            return "skipped: unsubscribed from the list during the send"
        return None

    def close(self) -> None:
        self._cursor.close()
        self._connection.close()


# --- recording results --------------------------------------------------------------------

# Timestamps come from the database clock (CURRENT_TIMESTAMP, UTC on SQLite and PostgreSQL):
# binding two datetimes per row cost more than the rest of a flush.
_NOW = sa.func.current_timestamp()
_RECORD = (
    sa.update(DELIVERY)
    .where(DELIVERY.c.id == sa.bindparam("b_id"), DELIVERY.c.state == DeliveryState.SENDING,
           DELIVERY.c.worker == sa.bindparam("b_worker"))
    .values(state=sa.bindparam("b_state"), last_reply=sa.bindparam("b_reply"),
            message_id=sa.func.coalesce(sa.bindparam("b_message_id", type_=sa.String), DELIVERY.c.message_id),
            relay=sa.func.coalesce(sa.bindparam("b_relay", type_=sa.String), DELIVERY.c.relay),
            sent_at=sa.case((sa.bindparam("b_state") == DeliveryState.SENT, _NOW), else_=DELIVERY.c.sent_at),
            next_attempt_at=sa.bindparam("b_next", type_=DELIVERY.c.next_attempt_at.type),
            attempts=DELIVERY.c.attempts - sa.bindparam("b_uncount", type_=sa.Integer),
            updated_at=_NOW, worker=None)
)


def _status_code(reply: str) -> str:
    """The enhanced status code (RFC 3463) of an SMTP reply, or ""."""
    words = reply.split()
    return words[1] if len(words) > 1 and words[1][:1] in "245" and words[1].count(".") == 2 else ""


def record_results(engine: Engine, results: Sequence[Result]) -> None:
    """Write a batch of outcomes in one transaction (executemany); suppress hard bounces.

    A result whose row is no longer ``sending`` for the result's worker token (taken over by
    another runner) changes nothing.
    """
    if not results:
        return
    params = [{
        "b_id": r.delivery_id, "b_worker": r.worker, "b_state": r.state, "b_reply": r.reply[:1000],
        "b_message_id": r.message_id, "b_next": r.next_attempt_at, "b_relay": r.relay,
        "b_uncount": 1 if r.state in (DeliveryState.QUEUED, DeliveryState.SKIPPED) else 0,
    } for r in results]
    with Session(engine) as session, session.begin():
        session.connection().execute(_RECORD, params)
        for result in results:
            if result.hard_bounce:  # the same effect as a hard bounce read back later (feedback)
                record_hard_bounce(session, result.email, delivery_id=result.delivery_id,
                                   diagnostic=result.reply, status=_status_code(result.reply), source="smtp")


# --- settling rows after a crash ----------------------------------------------------------

@dataclass(frozen=True)
class Recovery:
    sent: int = 0
    requeued: int = 0
    in_doubt: int = 0


IN_DOUBT_REPLY = ("in doubt: the send stopped after handing this message to the server and before "
                  "its reply was recorded; not resent (resume with --resend-in-doubt to resend)")
NO_JOURNAL_REPLY = ("in doubt: the send stopped with this message claimed and its journal {} is "
                    "missing; not resent (resume with --resend-in-doubt to resend)")


def live_tokens(connection: sa.Connection, tokens: Iterable[str]) -> set[str]:
    """The tokens among ``tokens`` that hold a live lease (unexpired, and not a dead process of
    this host): a single sender's campaign lease, or a worker's own."""
    wanted = [token for token in tokens if token]
    if not wanted:
        return set()
    now = utcnow()
    return {row.token for row in connection.execute(
        sa.select(LEASE.c.token, LEASE.c.expires_at).where(LEASE.c.token.in_(wanted)))
        if row.expires_at > now and not holder_is_dead(row.token)}


def claimants(connection: sa.Connection, campaign_id: int) -> tuple[set[str], set[str]]:
    """The tokens holding ``sending`` rows of the campaign: (alive, gone)."""
    tokens = set(connection.execute(
        sa.select(DELIVERY.c.worker).distinct()
        .where(DELIVERY.c.campaign_id == campaign_id, DELIVERY.c.state == DeliveryState.SENDING)
    ).scalars())
    alive = live_tokens(connection, (token for token in tokens if token))
    return alive, tokens - alive


def _retire(connection: sa.Connection, tokens: Iterable[str]) -> set[str]:
    """Delete the stale leases of gone runners (so a frozen worker that wakes cannot renew its
    lease and carry on); returns the tokens now safely gone (a lease renewed meanwhile is not)."""
    gone: set[str] = set()
    now = utcnow()
    for token in tokens:
        if token is None:
            continue
        if holder_is_dead(token):
            connection.execute(sa.delete(LEASE).where(LEASE.c.token == token))
            gone.add(token)
            continue
        connection.execute(sa.delete(LEASE).where(LEASE.c.token == token, LEASE.c.expires_at <= now))
        still = connection.execute(sa.select(LEASE.c.token).where(LEASE.c.token == token)).first()
        if still is None:
            gone.add(token)
    return gone


def recover_orphans(engine: Engine, campaign_id: int, journal_dir: Path) -> Recovery:
    """Settle the ``sending`` rows of runners that are gone, using their journals.

    A runner is gone when no live lease holds its token: a single sender's campaign lease was
    taken over, or a worker's own lease expired (another host) or its process died (this host).
    Rows of live workers are left to them. Call it holding the campaign lease (so two settlers
    never race); the journals of the gone runners are read here, on this host: from another
    host every row of a gone runner is in doubt.
    """
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(DELIVERY.c.id, DELIVERY.c.worker)
            .where(DELIVERY.c.campaign_id == campaign_id, DELIVERY.c.state == DeliveryState.SENDING)
        ).all()
    by_worker: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_worker[row.worker].append(row.id)
    if by_worker:
        with engine.begin() as connection:
            gone = _retire(connection, by_worker)
        by_worker = defaultdict(list, {token: ids for token, ids in by_worker.items()
                                       if token is None or token in gone})
    updates: list[dict[str, object]] = []
    counts = {"sent": 0, "unsent": 0, "in_doubt": 0}
    for worker, ids in by_worker.items():
        path = journal_path(journal_dir, campaign_id, worker or "")
        record = read_journal(path)
        for delivery_id in ids:
            verdict = record.verdict(delivery_id) if record is not None else "in_doubt"
            counts[verdict] += 1
            if verdict == "sent":
                state, reply, uncount = DeliveryState.SENT, "2xx (recovered from the send journal)", 0
            elif verdict == "unsent":
                state, reply, uncount = DeliveryState.QUEUED, "", 1
            else:
                state, uncount = DeliveryState.IN_DOUBT, 0
                reply = IN_DOUBT_REPLY if record is not None else NO_JOURNAL_REPLY.format(path)
            updates.append({"b_id": delivery_id, "b_worker": worker, "b_state": state, "b_reply": reply,
                            "b_message_id": None, "b_next": None, "b_relay": None, "b_uncount": uncount})
    if updates:
        with engine.begin() as connection:
            connection.execute(_RECORD, updates)
    with engine.connect() as connection:  # the journals of live runners stay; the rest are settled
        keep = {journal_path(journal_dir, campaign_id, token)
                for token in live_tokens(connection, connection.execute(sa.select(LEASE.c.token)).scalars())}
    for path in journal_dir.glob(f"campaign-{campaign_id}-*.journal"):
        if path not in keep:
            path.unlink(missing_ok=True)  # settled: the rows no longer need them
    return Recovery(sent=counts["sent"], requeued=counts["unsent"], in_doubt=counts["in_doubt"])


def requeue_in_doubt(engine: Engine, campaign_id: int) -> int:
    """The ``--resend-in-doubt`` policy: put in-doubt rows back in the queue."""
    with engine.begin() as connection:
        result = connection.execute(
            sa.update(DELIVERY)
            .where(DELIVERY.c.campaign_id == campaign_id, DELIVERY.c.state == DeliveryState.IN_DOUBT)
            .values(state=DeliveryState.QUEUED, next_attempt_at=None, updated_at=utcnow())
        )
        return result.rowcount


# --- reading the ledger -------------------------------------------------------------------

def state_counts(connection: sa.Connection | Session, campaign_id: int) -> dict[str, int]:
    counts = {state.value: 0 for state in DeliveryState}
    for state, number in connection.execute(
        sa.select(DELIVERY.c.state, sa.func.count()).where(DELIVERY.c.campaign_id == campaign_id)
        .group_by(DELIVERY.c.state)
    ):
        counts[state] = number
    return counts


def next_retry_at(engine: Engine, campaign_id: int) -> datetime | None:
    with engine.connect() as connection:
        value = connection.execute(
            sa.select(sa.func.min(DELIVERY.c.next_attempt_at))
            .where(DELIVERY.c.campaign_id == campaign_id, DELIVERY.c.state == DeliveryState.DEFERRED)
        ).scalar()
    return value


def stop_request(engine: Engine, campaign_id: int) -> str | None:
    """``pause`` or ``cancel`` when `campaigns pause|cancel` asked the sender to stop."""
    with engine.connect() as connection:
        return connection.execute(
            sa.select(CAMPAIGN.c.stop_request).where(CAMPAIGN.c.id == campaign_id)).scalar()
