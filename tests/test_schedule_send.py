"""End to end: a scheduled edition leaves through `wip-mailer send`'s code path.

Real scheduler processes, a real SMTP server on loopback, a real SQLite file. The check runs
again at fire time, so an edition edited after it was scheduled goes out as edited, and one
that fails its check is not sent.
"""

from __future__ import annotations

import pytest

pytest.importorskip("wip_mailer.dispatch", reason="awaits the dispatch merge into main")
pytest.importorskip("wip_mailer.preflight", reason="awaits the render merge into main")

from sqlmodel import select

from tests.schedule_helpers import (
    SchedulerProcess,
    approve_an_item,
    edition_status,
    in_seconds,
    make_edition,
    make_list,
    process_env,
    row,
    wait_until,
)
from wip_mailer import schedule as core
from wip_mailer.db import session_scope
from wip_mailer.models import MailingList, Membership, Subscriber

SUBSCRIBERS = [f"reader{n}@example.org" for n in range(5)]


def add_subscribers(engine, addresses=SUBSCRIBERS, list_name="newsletter") -> None:
    with session_scope(engine) as session:
        mailing_list = session.exec(select(MailingList).where(MailingList.name == list_name)).one()
        for address in addresses:
            subscriber = Subscriber(email=address, name=address.split("@")[0])
            session.add(subscriber)
            session.flush()
            session.add(Membership(subscriber_id=subscriber.id, list_id=mailing_list.id))


@pytest.fixture
def edition(engine):
    make_edition(engine, status="ready")
    make_list(engine)
    add_subscribers(engine)


def schedule_send(engine, settings, seconds: float) -> int:
    return core.add_schedule(engine, settings, core.ScheduleRequest(
        "2024-03", at=in_seconds(seconds), lists=("newsletter",))).id


def test_a_scheduled_edition_edited_after_scheduling_arrives_once_per_subscriber(
    workdir, engine, settings, smtp_server, edition
) -> None:
    job = schedule_send(engine, settings, 3)
    approve_an_item(engine)  # editing after scheduling is allowed until it starts sending
    scheduler = SchedulerProcess(workdir, process_env(settings, smtp_server.port), "send")
    assert wait_until(lambda: row(engine, job).status == "done", timeout=15), scheduler.log
    assert scheduler.stop() == 0
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == sorted(SUBSCRIBERS)
    assert all("Delegazione da Lione" in m.data.decode("utf-8", "replace") or
               "Delegazione da Lione" in str(m.message.get_body(("plain",)).get_content())
               for m in smtp_server.messages)
    assert row(engine, job).message.startswith("done: campaign ")
    assert edition_status(engine) == "sent"


def test_a_scheduled_edition_failing_its_check_is_not_sent(
    workdir, engine, settings, smtp_server, edition
) -> None:
    job = schedule_send(engine, settings, 1.5)  # no approved item: the check blocks
    scheduler = SchedulerProcess(workdir, process_env(settings, smtp_server.port), "blocked")
    assert wait_until(lambda: row(engine, job).status == "failed", timeout=10), scheduler.log
    assert scheduler.stop() == 0
    assert smtp_server.messages == []
    assert f"ERROR Schedule #{job} (send 2024-03) not sent: " in scheduler.log
    assert "no approved items" in row(engine, job).message
    assert edition_status(engine) == "ready"  # to be fixed and scheduled again


def test_two_scheduler_processes_do_not_send_the_edition_twice(
    workdir, engine, settings, smtp_server, edition
) -> None:
    approve_an_item(engine)
    env = process_env(settings, smtp_server.port)
    first = SchedulerProcess(workdir, env, "first")
    assert first.wait_for("Scheduler started"), first.log
    second = SchedulerProcess(workdir, env, "second")
    standby = SchedulerProcess(workdir, env, "standby", "--wait")
    assert second.process.wait(10) == 1  # refuses
    job = schedule_send(engine, settings, 1.5)
    assert wait_until(lambda: row(engine, job).status == "done", timeout=15), first.log
    assert first.stop() == 0
    assert standby.wait_for("Scheduler started"), standby.log
    # Even fired again by hand (a timer that survived a crash), the claim refuses.
    core.SchedulerService(engine, settings).run_job(job)
    assert standby.stop() == 0
    assert len(smtp_server.messages) == len(SUBSCRIBERS)
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == sorted(SUBSCRIBERS)
