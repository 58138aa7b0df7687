"""Two runners on one campaign in PostgreSQL (FOR UPDATE SKIP LOCKED claims): each recipient once."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.dispatch_helpers import make_audience, make_edition, rendered_edition
from tests.smtp_server import SmtpTestServer
from wip_mailer import db
from wip_mailer.dispatch import ledger
from wip_mailer.dispatch.journal import Journal
from wip_mailer.dispatch.ratelimit import Pacer
from wip_mailer.dispatch.runner import Runner
from wip_mailer.lease import Lease
from wip_mailer.personalise import MessageTemplate
from wip_mailer.settings import Settings

pytestmark = pytest.mark.postgres


def test_two_runners_share_one_campaign_and_send_each_recipient_once(
        pg_engine: Engine, settings: Settings, smtp_server: SmtpTestServer, workdir: Path) -> None:
    from tests.dispatch_helpers import start_campaign

    settings = dataclasses.replace(settings, smtp_port=smtp_server.port, journal_dir=str(workdir / "j"))
    make_edition(pg_engine)
    emails = make_audience(pg_engine, 1200)
    campaign_id = start_campaign(pg_engine)
    smtp_server.faults.data_delay_seconds = 0.002
    runners = []
    for n in range(2):
        engine = db.make_engine(pg_engine.url.render_as_string(hide_password=False))  # its own pool
        lease = Lease(engine, f"campaign:{campaign_id}:worker-{n}", 60)  # each worker's claims
        assert lease.acquire() is None
        runners.append(Runner(
            engine, settings, campaign_id=campaign_id, list_ids=[1],
            template=MessageTemplate(settings, rendered_edition(), campaign_id=campaign_id),
            lease=lease, journal=Journal(Path(settings.journal_dir), campaign_id, lease.token),
            connections=2, pacer=Pacer(),
        ))
    threads = [threading.Thread(target=runner.run) for runner in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)
    shares = [runner.outcome.counts.sent for runner in runners]
    assert sum(shares) == 1200 and min(shares) > 0  # both did real work
    with pg_engine.connect() as connection:
        assert ledger.state_counts(connection, campaign_id)["sent"] == 1200
        claimed = connection.exec_driver_sql(
            "SELECT count(*) FROM delivery WHERE worker IS NOT NULL").scalar()
    assert claimed == 0  # every row settled: no claim left behind


def test_a_long_send_analyzes_the_ledger_again_as_it_claims(
        pg_engine: Engine, settings: Settings, smtp_server: SmtpTestServer, workdir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Statistics from the freeze say every row is queued; a send that claims more than
    ANALYZE_AFTER rows runs ANALYZE again, so claims keep using the claim index."""
    from tests.dispatch_helpers import start_campaign

    monkeypatch.setattr(ledger, "ANALYZE_AFTER", 100)
    settings = dataclasses.replace(settings, smtp_port=smtp_server.port, journal_dir=str(workdir / "j"))
    make_edition(pg_engine)
    emails = make_audience(pg_engine, 450)
    campaign_id = start_campaign(pg_engine)

    def analyses() -> int:
        with pg_engine.connect() as connection:
            return int(connection.exec_driver_sql(
                "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'delivery'").scalar() or 0)

    before = analyses()
    lease = Lease(pg_engine, f"campaign:{campaign_id}", 60)
    assert lease.acquire() is None
    Runner(pg_engine, settings, campaign_id=campaign_id, list_ids=[1],
           template=MessageTemplate(settings, rendered_edition(), campaign_id=campaign_id),
           lease=lease, journal=Journal(Path(settings.journal_dir), campaign_id, lease.token),
           connections=2, pacer=Pacer(), batch=50).run()
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)
    assert analyses() - before >= 4  # 450 rows claimed 50 at a time, ANALYZE after each 100
