"""`wip-mailer worker` processes on the embedded SQLite database (WAL, BEGIN IMMEDIATE claims)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import TEST_SECRET
from tests.dispatch_helpers import deliveries, make_audience, make_edition, start_campaign
from tests.worker_helpers import (
    campaign_and_edition,
    finish,
    kill_one_worker_mid_run,
    run_workers_once_each,
    start_worker,
)
from wip_mailer.dispatch import campaign_status, pause_campaign


def test_two_workers_on_sqlite_send_each_recipient_once(engine, smtp_server, workdir) -> None:
    run_workers_once_each(engine, smtp_server, workdir, workers=2, recipients=5000)


def test_a_worker_killed_on_sqlite_leaves_the_campaign_to_the_other(engine, smtp_server, workdir) -> None:
    kill_one_worker_mid_run(engine, smtp_server, workdir, workers=2, recipients=5000)


def test_sigterm_hands_the_unsent_claims_back_at_once(engine, smtp_server, workdir) -> None:
    make_edition(engine)
    emails = make_audience(engine, 600)
    campaign_id = start_campaign(engine)
    smtp_server.faults.data_delay_seconds = 0.01
    process = start_worker(workdir, engine, smtp_server, campaign_id)
    while len(smtp_server.messages) < 50:
        assert process.poll() is None, process.communicate()
    process.terminate()
    report, _ = finish(process, timeout=60)
    states = {row.state for row in deliveries(engine).values()}
    assert states == {"sent", "queued"}  # nothing left claimed: the rest went back at once
    assert report["sent"] == len(smtp_server.messages) < len(emails)
    assert campaign_and_edition(engine, campaign_id)[0] == "sending"  # others may carry on
    second = start_worker(workdir, engine, smtp_server, campaign_id)
    finish(second)
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)


def test_pause_stops_the_workers_and_status_names_them(engine, smtp_server, workdir, settings) -> None:
    make_edition(engine)
    make_audience(engine, 800)
    campaign_id = start_campaign(engine)
    smtp_server.faults.data_delay_seconds = 0.01
    processes = [start_worker(workdir, engine, smtp_server, campaign_id) for _ in range(2)]
    while len(smtp_server.messages) < 60:
        assert all(p.poll() is None for p in processes)
    row = campaign_status(engine, campaign_id)
    assert row["workers"] and all(":" in token for token in row["workers"])
    paused = pause_campaign(engine, settings, campaign_id)
    assert paused["status"] == "paused" and paused["counts"]["sending"] == 0
    for process in processes:
        finish(process, timeout=60)  # --once: nothing left being sent, they stop by themselves
    sent = paused["counts"]["sent"]
    assert sent == len(smtp_server.messages) < 800
    assert paused["relays"] == {f"127.0.0.1:{smtp_server.port}": sent}


def test_send_with_workers_draws_one_bar_and_finishes(workdir, engine, smtp_server, cli, seed_path) -> None:
    """`send --workers 2` through the real CLI process, on the sample edition."""
    env = {**os.environ, "WIP_MAILER_SECRET_KEY": TEST_SECRET,
           "WIP_MAILER_DATABASE_URL": f"sqlite:///{workdir / 'wip.db'}", "WIP_MAILER_DEMO": "true",
           "WIP_MAILER_SMTP_PORT": str(smtp_server.port), "WIP_MAILER_JOURNAL_DIR": str(workdir / "j")}
    wip = [sys.executable, "-m", "wip_mailer"]
    for args in (["editions", "create", "2024-01", "--title", "Gennaio-Febbraio 2024", "--start",
                  "2024-01-01", "--end", "2024-02-29"],
                 ["import", str(seed_path), "--edition", "2024-01"],
                 ["items", "approve", "--all", "--edition", "2024-01", "--by", "test"]):
        done = subprocess.run(wip + args, env=env, cwd=workdir, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    emails = make_audience(engine, 400)
    done = subprocess.run([*wip, "send", "2024-01", "--list", "main", "--workers", "2", "--yes", "--json"],
                          env=env, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "finished" and summary["sent"] == 400
    assert "2 worker processes" in " ".join(summary["notes"])
    assert smtp_server.received_by_address() == dict.fromkeys(emails, 1)
    status = subprocess.run([*wip, "campaigns", "status", str(summary["campaign_id"])], env=env, cwd=workdir,
                            capture_output=True, text=True)
    assert f"relays: 127.0.0.1:{smtp_server.port} 400 sent" in status.stdout


def test_workers_option_refuses_resume(cli, workdir) -> None:
    result = cli("send", "2024-01", "--resume", "--workers", "2")
    assert result.exit_code != 0 and "--workers starts a new campaign" in result.output


def test_the_systemd_unit_runs_an_existing_command(cli) -> None:
    from pathlib import Path

    unit = Path(__file__).resolve().parents[1] / "scripts" / "systemd" / "wip-mailer-worker@.service"
    exec_start = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    args = exec_start.split()[1:]
    assert args == ["worker"]
    assert cli(*args, "--help").exit_code == 0
