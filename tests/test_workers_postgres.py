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
