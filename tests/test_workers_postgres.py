"""`wip-mailer worker` processes sharing one campaign on the real PostgreSQL server
(FOR UPDATE SKIP LOCKED claims, leases per worker)."""

from __future__ import annotations

import pytest

from tests.worker_helpers import kill_one_worker_mid_run, run_workers_once_each

pytestmark = pytest.mark.postgres


def test_three_workers_on_postgresql_send_each_recipient_once(pg_engine, smtp_server, workdir) -> None:
    run_workers_once_each(pg_engine, smtp_server, workdir, workers=3, recipients=5000)


def test_a_worker_killed_on_postgresql_leaves_the_campaign_to_the_others(pg_engine, smtp_server,
                                                                         workdir) -> None:
    kill_one_worker_mid_run(pg_engine, smtp_server, workdir, workers=3, recipients=5000)


def test_a_frozen_worker_is_taken_over_and_sends_nothing_when_it_wakes(pg_engine, smtp_server,
                                                                       workdir) -> None:
    """SIGSTOP past its lease: the others settle its rows after the lease expires (as for a
    worker of another host) and finish; on SIGCONT it finds its lease gone and stops."""
    import signal
    import time

    from tests.dispatch_helpers import deliveries
    from tests.worker_helpers import (
        CONNECTIONS,
        campaign_and_edition,
        finish,
        prepare,
        start_worker,
        wait_for,
    )

    emails, campaign_id = prepare(pg_engine, 1500)
    smtp_server.faults.data_delay_seconds = 0.003
    env = {"WIP_MAILER_LEASE_SECONDS": "3"}
    processes = [start_worker(workdir, pg_engine, smtp_server, campaign_id, env=env) for _ in range(2)]
    wait_for(smtp_server, 300, processes)
    frozen = processes[0]
    frozen.send_signal(signal.SIGSTOP)
    try:
        finish(processes[1])  # the survivor waits for the lease to expire, settles, finishes
        assert campaign_and_edition(pg_engine, campaign_id) == ("finished", "sent")
        received_before = len(smtp_server.messages)
    finally:
        frozen.send_signal(signal.SIGCONT)
    _, stderr = frozen.communicate(timeout=60)
    assert frozen.returncode == 1 and "lost its lease" in stderr
    time.sleep(0.2)
    assert len(smtp_server.messages) == received_before  # nothing more after waking
    ledger = deliveries(pg_engine)
    in_doubt = {email for email, row in ledger.items() if row.state == "in_doubt"}
    received = smtp_server.received_by_address()
    assert len(in_doubt) <= CONNECTIONS  # its journal is on this host
    assert all(received.get(email) == 1 for email in emails if email not in in_doubt)
    assert all(received.get(email, 0) <= 1 for email in in_doubt)
