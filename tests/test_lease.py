"""The one lease primitive (wip_mailer.lease): one holder at a time, expiry, dead holders, fencing."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from wip_mailer.lease import LEASE, Lease, holder


@pytest.fixture(params=["engine", "pg_engine"], ids=["sqlite", "postgres"])
def any_engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue(request.param)


def test_one_holder_at_a_time_and_expiry_frees_it(any_engine: Engine) -> None:
    a = Lease(any_engine, "thing", 30, token="host-a:1:aa")
    b = Lease(any_engine, "thing", 30, token="host-b:2:bb")
    assert a.acquire() is None
    refused = b.acquire()
    assert refused is not None and refused.token == a.token  # acquire says who holds it
    assert a.acquire() is None  # re-taking one's own lease is fine
    assert str(holder(any_engine, "thing")) == a.token
    a.seconds = 0.2
    assert a.renew()
    time.sleep(0.3)
    assert holder(any_engine, "thing") is None  # a holder on another host blocks nobody for long
    assert b.acquire() is None
    assert not a.renew() and not a.still_valid()  # "a" stalled and lost it
    assert not a.release()  # releasing someone else's lease does nothing
    assert str(holder(any_engine, "thing")) == b.token
    assert b.release()
    assert holder(any_engine, "thing") is None
    assert Lease(any_engine, "other", 30).acquire() is None  # names are independent


def test_a_dead_holder_on_this_host_is_taken_over_at_once(engine: Engine) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that existed and is gone, as after kill -9
    dead = Lease(engine, "thing", 3600, token=f"{socket.gethostname()}:{child.pid}:dead")
    assert dead.acquire() is None
    alive = Lease(engine, "thing", 3600)
    assert alive.acquire() is None
    assert str(holder(engine, "thing")) == alive.token
    assert Lease(engine, "thing", 3600).acquire() is not None  # but a live holder is not


def test_fence_and_release_then_write_only_for_the_current_holder(engine: Engine) -> None:
    old = Lease(engine, "fenced", 0.1)
    assert old.acquire() is None
    time.sleep(0.2)
    new = Lease(engine, "fenced", 30)
    assert new.acquire() is None
    marks = sa.Table("marks", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("by", sa.String))
    marks.create(engine)
    with engine.begin() as connection:
        connection.execute(sa.insert(marks).values(id=1, by="nobody"))
        stale = connection.execute(sa.update(marks).where(old.fence()).values(by=old.token)).rowcount
        fresh = connection.execute(sa.update(marks).where(new.fence()).values(by=new.token)).rowcount
    assert (stale, fresh) == (0, 1)
    written: list[str] = []
    assert not old.release(then=lambda connection: written.append("old"))
    assert new.release(then=lambda connection: written.append("new"))
    assert written == ["new"]
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(LEASE)).scalar() == 0


def test_still_valid_counts_locally_from_the_last_renewal(engine: Engine) -> None:
    lease = Lease(engine, "local", 0.3)
    assert not lease.still_valid()  # never acquired
    assert lease.acquire() is None and lease.still_valid()
    time.sleep(0.25)  # past two thirds of the lease: another host's clock may already see it expired
    assert not lease.still_valid()
    assert lease.renew() and lease.still_valid()
