"""The report queries on PostgreSQL give what they give on SQLite, on the same ledger (the few
expressions the two spell differently: a domain, seconds between timestamps, a whole second),
and both match the ledger recomputed row by row."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest
from sqlalchemy import Engine, select

from tests.report_helpers import synthetic_campaign
from wip_mailer.db import session_scope
from wip_mailer.models import Delivery
from wip_mailer.reports import campaign_report, lists_report
from wip_mailer.settings import Settings

RECIPIENTS = 3000


def _report(engine: Engine, settings: Settings) -> dict:
    campaign_id = synthetic_campaign(engine, RECIPIENTS)
    report = campaign_report(engine, settings, campaign_id)
    with session_scope(engine) as session:
        rows = session.exec(select(Delivery)).scalars().all()
    states = Counter(d.state for d in rows)
    assert report["summary"]["sent"] == states["sent"] and report["summary"]["failed"] == states["failed"]
    for domain in report["domains"]:
        waits = [(d.sent_at - d.first_attempt_at).total_seconds() for d in rows
                 if d.state == "sent" and d.email.endswith("@" + domain["domain"])]
        # bins of 1 ms under 10 s, 0.1 s under 10 minutes: the retried messages wait ~60-95 s
        assert domain["median_seconds_to_accept"] == pytest.approx(statistics.median(waits), abs=0.1)
    assert sum(p["sent"] + p["sent_after_retry"] for p in report["timeline"]["points"]) == states["sent"]
    assert report["timeline"]["pauses"], "the synthetic send pauses for 60 s halfway"
    return report


@pytest.mark.postgres
def test_postgres_and_sqlite_agree(engine: Engine, pg_engine: Engine, settings: Settings) -> None:
    on_sqlite, on_postgres = _report(engine, settings), _report(pg_engine, settings)
    for report in (on_sqlite, on_postgres):
        report["campaign"].pop("started_at"), report["campaign"].pop("finished_at")
        report["timeline"].pop("start")
    # SQLite's julianday carries ~10 µs of float error: a millisecond bin may differ by one
    for pg, lite in zip(on_postgres["domains"], on_sqlite["domains"], strict=True):
        assert pg.pop("median_seconds_to_accept") == pytest.approx(lite.pop("median_seconds_to_accept"),
                                                                   abs=1.5e-3)
    assert on_postgres == on_sqlite
    lists = [lists_report(pg_engine), lists_report(engine)]
    for report in lists:  # the two ledgers were written a moment apart
        for entry in report["lists"]:
            for edition in entry["editions"]:
                edition.pop("sent_at")
    assert lists[0] == lists[1]
    assert lists[0]["lists"][0]["editions"][1]["subscribers_at_send"] == 0  # no memberships in it
