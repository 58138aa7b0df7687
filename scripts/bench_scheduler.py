"""How late do scheduled jobs fire? A real `wip-mailer scheduler run` process, real SMTP.

Each job is a reminder mailed to a loopback capture server; lateness is the time from the
job's due time to the message's arrival (so it includes building and sending the email).

Two cases, in the same run:
- ahead: the job is written to the store more than one poll interval before it is due
  (the usual case: an edition scheduled for tomorrow morning);
- short notice: the job is written while the scheduler sleeps and is due one second later,
  before the scheduler's next poll; it waits for that poll (at most POLL seconds).

Usage: .venv/bin/python scripts/bench_scheduler.py [--jobs 5] [--poll 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from wip_mailer import db
from wip_mailer import schedule as core
from wip_mailer.db import session_scope, utcnow
from wip_mailer.devsmtp import CaptureServer, Received
from wip_mailer.models import Edition
from wip_mailer.settings import load_settings


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--poll", type=float, default=5.0)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-scheduler-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIP_MAILER_")}
    env.update({
        "WIP_MAILER_DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
        "WIP_MAILER_SECRET_KEY": "bench-secret-key-0123456789abcdefghij",
        "WIP_MAILER_SMTP_PORT": str(port),
        "WIP_MAILER_SCHEDULER_POLL_SECONDS": str(args.poll),
    })
    settings = load_settings(env, folder / "absent.env")
    engine = db.create_database(settings.database_url)
    with session_scope(engine) as session:
        session.add(Edition(slug="bench", title="Benchmark"))

    arrivals: dict[str, float] = {}
    arrived = threading.Condition()

    def record(message: Received) -> None:
        with arrived:
            arrivals[message.rcpt_tos[0]] = time.time()
            arrived.notify_all()

    server = CaptureServer("127.0.0.1", port, folder / "maildir", on_message=record)
    server.start()
    log = (folder / "scheduler.log").open("wb")
    scheduler = subprocess.Popen([sys.executable, "-m", "wip_mailer", "scheduler", "run"],
                                 cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while core.lease_holder(engine) is None:
            time.sleep(0.05)
        time.sleep(0.5)

        def add(address: str, seconds: float) -> float:
            due = utcnow() + timedelta(seconds=seconds)
            core.add_schedule(engine, settings, core.ScheduleRequest(
                "bench", kind="reminder", at=due.isoformat(), notify=(address,)))
            return due.timestamp()

        def wait_for(addresses: list[str]) -> None:
            with arrived:
                arrived.wait_for(lambda: all(a in arrivals for a in addresses), timeout=120)

        lead = args.poll + 2
        ahead = {f"ahead{i}@example.org": add(f"ahead{i}@example.org", lead + 0.7 * i)
                 for i in range(args.jobs)}
        wait_for(list(ahead))
        short: dict[str, float] = {}
        for i in range(args.jobs):
            address = f"short{i}@example.org"
            time.sleep(0.37 * i % args.poll)  # land at different points of the poll cycle
            short[address] = add(address, 1.0)
            wait_for([address])
    finally:
        scheduler.send_signal(signal.SIGTERM)
        code = scheduler.wait(30)
        server.stop()
        log.close()

    def lateness(jobs: dict[str, float]) -> list[float]:
        return [arrivals[address] - due for address, due in jobs.items()]

    print(f"scheduler poll interval {args.poll:g} s, {args.jobs} jobs per case, exit code {code}")
    for name, jobs in (("ahead (written > 1 poll before due)", ahead),
                       ("short notice (due 1 s after writing)", short)):
        values = lateness(jobs)
        print(f"  {name:<40} median {statistics.median(values) * 1000:7.0f} ms late, "
              f"max {max(values) * 1000:7.0f} ms")


if __name__ == "__main__":
    main()
