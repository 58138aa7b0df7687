"""Real `wip-mailer worker` processes sharing one campaign, counted at a real SMTP server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import Engine

from tests.conftest import TEST_SECRET
from tests.dispatch_helpers import deliveries, make_audience, make_edition, start_campaign
from tests.smtp_server import SmtpTestServer
from wip_mailer.db import session_scope
from wip_mailer.models import Campaign, Edition

CONNECTIONS = 3


def database_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def start_worker(workdir: Path, engine: Engine, server: SmtpTestServer, campaign_id: int,
                 *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = {**os.environ, "WIP_MAILER_SECRET_KEY": TEST_SECRET,
                   "WIP_MAILER_DATABASE_URL": database_url(engine),
                   "WIP_MAILER_SMTP_PORT": str(server.port), "WIP_MAILER_SMTP_TIMEOUT": "10",
                   "WIP_MAILER_JOURNAL_DIR": str(workdir / "journal"), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "wip_mailer", "worker", "--campaign", str(campaign_id), "--once", "--json",
         "--connections", str(CONNECTIONS), *extra],
        cwd=workdir, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[str], timeout: float = 180) -> tuple[dict, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return json.loads(stdout), stderr


def wait_for(server: SmtpTestServer, count: int, processes: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 120
    while len(server.messages) < count:
        for process in processes:
            assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the workers made no progress"
        time.sleep(0.01)


def prepare(engine: Engine, recipients: int) -> tuple[list[str], int]:
    make_edition(engine)
    emails = make_audience(engine, recipients)
    return emails, start_campaign(engine)


def campaign_and_edition(engine: Engine, campaign_id: int) -> tuple[str, str]:
    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        edition = session.get(Edition, campaign.edition_id)
        assert edition is not None
        return campaign.status, edition.status


def run_workers_once_each(engine: Engine, server: SmtpTestServer, workdir: Path, workers: int,
                          recipients: int) -> None:
    """N workers send one campaign: each recipient exactly once, every worker did a share."""
    emails, campaign_id = prepare(engine, recipients)
    server.faults.data_delay_seconds = 0.001
    processes = [start_worker(workdir, engine, server, campaign_id) for _ in range(workers)]
    reports = [finish(process)[0] for process in processes]
    assert server.received_by_address() == dict.fromkeys(emails, 1)
    shares = [report["sent"] for report in reports]
    assert sum(shares) == recipients and min(shares) > 0, shares
    assert sum(campaign_id in report["finished"] for report in reports) == 1  # finished once, by one
    assert campaign_and_edition(engine, campaign_id) == ("finished", "sent")
    ledger = deliveries(engine)
    assert {row.state for row in ledger.values()} == {"sent"}
    assert all(row.worker is None for row in ledger.values())  # no claim left behind
    with engine.connect() as connection:
        leases = connection.execute(sa.text("SELECT count(*) FROM lease")).scalar()
    assert leases == 0  # every worker gave its lease back
    assert not list((workdir / "journal").glob("*.journal"))


def kill_one_worker_mid_run(engine: Engine, server: SmtpTestServer, workdir: Path, workers: int,
                            recipients: int) -> None:
    """SIGKILL one of N workers mid-run: the survivors settle its rows and finish the campaign;
    everyone gets the edition once but the reported in-doubt ones (at most one per connection
    of the killed worker: its journal is on this host), who get it at most once."""
    emails, campaign_id = prepare(engine, recipients)
    server.faults.data_delay_seconds = 0.003  # slow enough that the kill lands mid-campaign
    processes = [start_worker(workdir, engine, server, campaign_id) for _ in range(workers)]
    wait_for(server, recipients // 4, processes)
    victim = processes[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    with engine.connect() as connection:
        orphaned = connection.execute(sa.text(
            "SELECT count(*) FROM delivery WHERE state = 'sending' AND worker LIKE :pid"),
            {"pid": f"%:{victim.pid}:%"}).scalar()
    assert orphaned > 0  # it died holding claimed rows: the hard case
    outputs = [finish(process) for process in processes[1:]]
    received = server.received_by_address()
    ledger = deliveries(engine)
    in_doubt = {email for email, row in ledger.items() if row.state == "in_doubt"}
    assert len(in_doubt) <= CONNECTIONS  # the journal told the others what was in flight
    assert all(received.get(email) == 1 for email in emails if email not in in_doubt)  # none lost, none twice
    assert all(received.get(email, 0) <= 1 for email in in_doubt)  # in doubt: never resent
    assert {row.state for email, row in ledger.items() if email not in in_doubt} == {"sent"}
    assert any("settled the rows of a stopped worker" in stderr for _, stderr in outputs)
    assert campaign_and_edition(engine, campaign_id) == ("finished", "sent")
    survivors = sum(report["sent"] for report, _ in outputs)
    assert survivors > 0 and survivors < recipients
