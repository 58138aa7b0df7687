"""Benchmark: `campaigns report` of a 100,000-recipient campaign (target < 2 s).

A fresh SQLite file gets a finished campaign written straight into the tables
(tests/report_helpers.synthetic_campaign: 20 domains, 8% deferred then sent, ~1% failed,
bounces, complaints, one-click unsubscribes naming the campaign, a pause halfway). Each run
times, on the same database and in the same process:

  baseline   the ledger's state counts (`SELECT state, count(*) ... GROUP BY state`), the
             query `campaigns status` runs: one indexed pass, no per-row expression
  report     campaign_report(): every figure of `campaigns report ID --json`
  page       campaign_page() on that report: the HTML with its three pygal charts
  command    `wip-mailer campaigns report ID --json --html FILE` as a process (start-up included)

Usage: .venv/bin/python scripts/bench_reports.py [--recipients 100000] [--runs 7] [--database URL]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.report_helpers

from sqlalchemy import text  # noqa: E402

from wip_mailer import db  # noqa: E402
from wip_mailer.reports import campaign_page, campaign_report  # noqa: E402
from wip_mailer.settings import Settings  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef0123"


def timed(function: object, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = function()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--database", help="a database URL to fill (default: a fresh SQLite file)")
    args = parser.parse_args()

    from tests.report_helpers import synthetic_campaign

    with tempfile.TemporaryDirectory(prefix="wip-bench-reports-") as folder:
        url = args.database or f"sqlite:///{folder}/bench.db"
        engine = db.create_database(url)
        started = time.perf_counter()
        campaign_id = synthetic_campaign(engine, args.recipients)
        print(f"wrote a campaign of {args.recipients:,} deliveries in {time.perf_counter() - started:.1f} s")
        settings = Settings(database_url=url, secret_key=SECRET)

        def baseline() -> object:
            with engine.connect() as connection:
                return connection.execute(text("SELECT state, count(*) FROM delivery WHERE campaign_id = :c "
                                               "GROUP BY state"), {"c": campaign_id}).all()

        base, _ = timed(baseline, args.runs)
        report_time, report = timed(lambda: campaign_report(engine, settings, campaign_id), args.runs)
        page_time, html = timed(lambda: campaign_page(report, settings), args.runs)  # type: ignore[arg-type]
        env = {**os.environ, "WIP_MAILER_DATABASE_URL": url, "WIP_MAILER_SECRET_KEY": SECRET}
        page_file = Path(folder) / "report.html"
        command = [sys.executable, "-m", "wip_mailer", "campaigns", "report", str(campaign_id), "--json",
                   "--html", str(page_file)]
        command_time, _ = timed(lambda: subprocess.run(command, env=env, cwd=folder, check=True,
                                                       stdout=subprocess.DEVNULL), max(3, args.runs // 2))
        engine.dispose()
    groups = len(report["domains"])  # type: ignore[index]
    print(f"median of {args.runs} runs, {args.recipients:,} recipients, {groups} domains, "
          f"{len(html) / 1024:.0f} KiB page:")  # type: ignore[arg-type]
    print(f"  baseline (state counts)  {base * 1000:8.1f} ms")
    print(f"  report (all figures)     {report_time * 1000:8.1f} ms  = {report_time / base:.0f}x the baseline"
          f"  (target < 2 s: {'met' if report_time < 2 else 'NOT met'})")
    print(f"  page (HTML + 3 charts)   {page_time * 1000:8.1f} ms")
    print(f"  command (process, --json --html)  {command_time:.2f} s")


if __name__ == "__main__":
    main()
