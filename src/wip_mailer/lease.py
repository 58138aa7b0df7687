"""One lease primitive for everything one process at a time may hold.

A lease is a row of the ``lease`` table: a name (``scheduler``, ``campaign:12``), the
holder's token and an expiry. The token is new for every acquisition
(``host:pid:random``) and is the *fencing token*: every write the holder makes on
behalf of the lease carries it (``UPDATE ... WHERE worker = :token`` or
``AND EXISTS(lease row with :token)``, see ``fence``), so a holder that stalled past its
expiry (SIGSTOP, a suspended laptop, a paused VM) and then wakes changes nothing that
its successor owns.

- ``acquire`` is one conditional UPDATE (or an INSERT when there is no row): of two
  processes racing, exactly one wins, on SQLite and PostgreSQL alike. A lease whose
  holder is a dead process on this host is taken over at once (``kill -9`` leaves one
  behind); another host's lease can only expire.
- ``still_valid`` answers without the database, from a clock that keeps counting while
  the process is stopped or the machine sleeps (CLOCK_BOOTTIME): a holder that woke
  after its lease could have been taken knows it before it acts, and renews or stops.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from wip_mailer.db import utcnow

LEASE = SQLModel.metadata.tables["lease"]
# Counted locally from the start of the last successful renewal: a margin for clocks of
# other hosts (whose takeover reads their own wall clock) and for the renewal's own time.
LOCAL_SHARE = 2 / 3


def _boottime() -> float:
    """Seconds on a clock that also runs while the process is stopped or the machine sleeps."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def new_token() -> str:
    """``host:pid:random``: unique per acquisition, and tells whether its process is alive."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def holder_is_dead(token: str) -> bool:
    """True only for a token of a process of this host that no longer exists."""
    host, _, rest = token.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine: only the expiry time can tell
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Holder:
    token: str
    expires_at: datetime

    def __str__(self) -> str:
        return self.token


def holder(engine: Engine | sa.Connection, name: str) -> Holder | None:
    """Who holds ``name`` now (None when it is free or expired)."""
    query = sa.select(LEASE.c.token, LEASE.c.expires_at).where(LEASE.c.name == name)
    if isinstance(engine, sa.Connection):
        row = engine.execute(query).first()
    else:
        with engine.connect() as connection:
            row = connection.execute(query).first()
    if row is None or row.expires_at <= utcnow():
        return None
    return Holder(row.token, row.expires_at)


def live_holder(engine: Engine | sa.Connection, name: str) -> Holder | None:
    """Who holds ``name`` and is alive as far as can be told (a dead process of this host is not)."""
    current = holder(engine, name)
    return None if current is None or holder_is_dead(current.token) else current


class Lease:
    def __init__(self, engine: Engine, name: str, seconds: float, token: str | None = None):
        self.engine = engine
        self.name = name
        self.seconds = float(seconds)
        self.token = token or new_token()
        self._valid_until = 0.0

    @property
    def renew_every(self) -> float:
        """How often a holder should renew: well inside the locally counted validity."""
        return self.seconds * LOCAL_SHARE / 4

    def acquire(self) -> Holder | None:
        """Take the lease; None when taken, else the live holder that has it."""
        started = _boottime()
        now = utcnow()
        values = {"token": self.token, "acquired_at": now,
                  "expires_at": now + timedelta(seconds=self.seconds)}
        with self.engine.begin() as connection:
            taken = connection.execute(
                sa.update(LEASE).where(LEASE.c.name == self.name)
                .where(sa.or_(LEASE.c.token == self.token, LEASE.c.expires_at < now)).values(**values)
            ).rowcount
            current = None if taken else connection.execute(
                sa.select(LEASE.c.token, LEASE.c.expires_at).where(LEASE.c.name == self.name)).first()
            if current is not None and holder_is_dead(current.token):
                taken = connection.execute(
                    sa.update(LEASE).where(LEASE.c.name == self.name, LEASE.c.token == current.token)
                    .values(**values)
                ).rowcount
        if not taken and current is None:
            try:
                with self.engine.begin() as connection:
                    connection.execute(sa.insert(LEASE).values(name=self.name, **values))
                taken = 1
            except IntegrityError:  # another process inserted it first
                return holder(self.engine, self.name) or Holder("another process", now)
        if not taken:
            assert current is not None
            return Holder(current.token, current.expires_at)
        self._valid_until = started + self.seconds * LOCAL_SHARE
        return None

    def renew(self) -> bool:
        """Extend the lease; False when it is no longer ours (we stalled and another took it)."""
        started = _boottime()
        with self.engine.begin() as connection:
            renewed = connection.execute(
                sa.update(LEASE).where(LEASE.c.name == self.name, LEASE.c.token == self.token)
                .values(expires_at=utcnow() + timedelta(seconds=self.seconds))
            ).rowcount
        if renewed != 1:
            self._valid_until = 0.0
            return False
        self._valid_until = started + self.seconds * LOCAL_SHARE
        return True

    def still_valid(self) -> bool:
        """Whether no other process can have taken the lease yet (no database access)."""
        return _boottime() < self._valid_until

    def fence(self) -> sa.ColumnElement[bool]:
        """A WHERE condition true only while this token holds the lease."""
        return sa.exists().where(LEASE.c.name == self.name, LEASE.c.token == self.token)

    def release(self, then: Callable[[sa.Connection], None] | None = None) -> bool:
        """Give the lease back; ``then`` runs in the same transaction, only if it was still ours."""
        self._valid_until = 0.0
        with self.engine.begin() as connection:
            released = connection.execute(
                sa.delete(LEASE).where(LEASE.c.name == self.name, LEASE.c.token == self.token)
            ).rowcount
            if released == 1 and then is not None:
                then(connection)
        return released == 1
