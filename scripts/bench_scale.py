#!/usr/bin/env python3
"""Scale benchmark: a 1,000,000-recipient campaign on PostgreSQL, frozen and sent by 2 workers.

On a fresh database of the `--postgres` server:

1. generate the subscribers and their memberships with COPY (not row by row);
2. freeze the campaign exactly as `wip-mailer send` does (`send_edition`: the audience count,
   one aggregate query, then one ``queued`` ledger row per recipient, written by one
   ``INSERT ... SELECT`` in the database) — the count and the freeze time;
3. the ledger alone: one process claims batches (``WIP_MAILER_WORKER_CLAIM_BATCH``) of the
   first `--ledger-sample` rows and records them sent, no SMTP — the claim + record cost per
   message, on the database the workers then use;
4. 2 `wip-mailer worker --once` processes send the rest to Postfix's `smtp-sink` on loopback —
   their rate (first to last recorded delivery), peak memory per worker (VmHWM), and the
   database size before and after (``pg_database_size``, ``pg_total_relation_size('delivery')``).

The message is a generated one of `--message-kb` (default 8 KB: this measures the ledger and
the workers, not the loopback's bandwidth; bench_send.py sends the real 89 KB edition).

Usage:  .venv/bin/python scripts/bench_scale.py [--recipients 1000000] [--workers 2]
        [--connections 4] [--ledger-sample 100000] [--message-kb 8] [--send-limit N]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432]
        (WIP_BENCH_DB_PREFIX: the benchmark database's name prefix, default wip_bench)
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_send import SECRET, PostgresDatabase, Sink, Timing, _peak_kib  # noqa: E402

from wip_mailer import db  # noqa: E402
from wip_mailer.dispatch import CampaignSummary, SendRequest, SummaryStatus, ledger, send_edition  # noqa: E402
from wip_mailer.dispatch.ledger import Result  # noqa: E402
from wip_mailer.dispatch.workers import worker_command  # noqa: E402
from wip_mailer.lease import Lease  # noqa: E402
from wip_mailer.models import DeliveryState, Edition, MailingList  # noqa: E402
from wip_mailer.render import UNSUBSCRIBE_URL_PLACEHOLDER, RenderedEdition  # noqa: E402
from wip_mailer.settings import load_settings  # noqa: E402


def small_edition(kib: int) -> RenderedEdition:
    paragraph = "<p>Notizia di esempio, con un link <a href=\"https://example.org/n\">qui</a>.</p>"
    html = ("<!doctype html><html><body>" + paragraph * max(1, kib * 1024 // 2 // len(paragraph))
            + f'<a href="{UNSUBSCRIBE_URL_PLACEHOLDER}">Annulla l\'iscrizione</a></body></html>')
    text = "Notizia di esempio.\n" * max(1, kib * 1024 // 2 // 20) + f"\n{UNSUBSCRIBE_URL_PLACEHOLDER}\n"
    return RenderedEdition("Work in Progress – scala", html, text)


def generate(url: str, count: int) -> float:
    """COPY ``count`` subscribers and their memberships of list 1 into a fresh database."""
    engine = db.create_database(url)
    with db.session_scope(engine) as session:
        session.add(Edition(slug="bench", title="Benchmark", status="ready"))
        session.add(MailingList(name="bench"))
    began = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        now = db.utcnow().isoformat()
        for table, columns, row in (
            ("subscriber", "id, email, name, language, organisation, country, tags, attributes, status, "
                           "created_at, updated_at",
             lambda n: (f"{n}\treader{n:08d}@example.net\tLettore {n}\tit\t\t\t[]\t{{}}\tactive"
                        f"\t{now}\t{now}\n")),
            ("membership", "id, subscriber_id, list_id, status, subscribed_at",
             lambda n: f"{n}\t{n}\t1\tactive\t{now}\n"),
        ):
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                buffer = io.StringIO()
                for n in range(1, count + 1):
                    buffer.write(row(n))
                    if n % 50_000 == 0:
                        copy.write(buffer.getvalue())
                        buffer = io.StringIO()
                copy.write(buffer.getvalue())
            cursor.execute(f"SELECT setval('{table}_id_seq', {count})")
        raw.commit()
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    engine.dispose()
    return time.perf_counter() - began


def sizes(engine: sa.Engine) -> tuple[float, float]:
    with engine.connect() as connection:
        database = connection.execute(sa.text("SELECT pg_database_size(current_database())")).scalar()
        delivery = connection.execute(sa.text("SELECT pg_total_relation_size('delivery')")).scalar()
    return database / 1e6, delivery / 1e6


def ledger_only(engine: sa.Engine, campaign_id: int, rows: int, batch: int, settings: object) -> float:
    """Claim and record ``rows`` deliveries as a worker does, without SMTP: seconds per message."""
    token = "bench:ledger-only"
    lease = Lease(engine, f"worker:{token}", 300, token=token)
    assert lease.acquire() is None
    done = 0
    began = time.perf_counter()
    while done < rows:
        claims, _ = ledger.claim_batch(engine, campaign_id, [1], lease, min(batch, rows - done))
        if not claims:
            break
        ledger.record_results(engine, [
            Result(c.delivery_id, c.email, token, DeliveryState.SENT, "250 2.0.0 Ok (ledger only)",
                   message_id=f"<{c.delivery_id}@bench>", relay="ledger-only") for c in claims])
        done += len(claims)
    elapsed = time.perf_counter() - began
    lease.release()
    return elapsed / max(done, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--ledger-sample", type=int, default=100_000)
    parser.add_argument("--message-kb", type=int, default=8)
    parser.add_argument("--send-limit", type=int, default=0,
                        help="send only this many after the ledger sample; the rest is marked skipped "
                             "(0: send every recipient)")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    print(f"{args.recipients:,} recipients, {args.workers} workers x {args.connections} connections, "
          f"{args.message_kb} KB message; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    database = PostgresDatabase(args.postgres)
    sink = Sink()
    try:
        with tempfile.TemporaryDirectory() as folder:
            workdir = Path(folder)
            generated = generate(database.url, args.recipients)
            engine = db.open_database(database.url)
            before_db, _ = sizes(engine)
            print(f"generate (COPY): {generated:.1f} s; database {before_db:,.0f} MB")
            env = {"WIP_MAILER_DATABASE_URL": database.url, "WIP_MAILER_SMTP_PORT": str(sink.port),
                   "WIP_MAILER_SECRET_KEY": SECRET, "WIP_MAILER_SMTP_CONNECTIONS": str(args.connections),
                   "WIP_MAILER_JOURNAL_DIR": str(workdir / "journal"),
                   "WIP_MAILER_BOUNCE_ADDRESS": "bounces@example.org"}
            settings = load_settings(env, workdir / "absent.env")
            rendered = small_edition(args.message_kb)
            moments: dict[str, float] = {}
            frozen: list[int] = []

            class Report:
                blocking: tuple[str, ...] = ()
                warnings: tuple[str, ...] = ()
                rendered = small_edition(args.message_kb)

            def confirm(count: int) -> bool:
                moments["counted"] = time.perf_counter()
                return True

            def run(campaign_id: int) -> CampaignSummary:
                moments["frozen"] = time.perf_counter()
                frozen.append(campaign_id)
                return CampaignSummary(campaign_id, args.recipients, 0, 0, 0, 0, 0, SummaryStatus.SENDING)

            Report.rendered = rendered
            began = time.perf_counter()
            send_edition(engine, settings, SendRequest("bench", ("bench",)), confirm=confirm,
                         preflight=lambda session, settings, slug: Report(),  # type: ignore[arg-type,return-value]
                         run=run)
            campaign_id = frozen[0]
            frozen_db, frozen_delivery = sizes(engine)
            freeze = moments["frozen"] - moments["counted"]
            print(f"freeze: {freeze:.1f} s for {args.recipients:,} ledger rows (target < 30 s), "
                  f"after the audience count {moments['counted'] - began:.1f} s; "
                  f"database {frozen_db:,.0f} MB, of which delivery {frozen_delivery:,.0f} MB")

            per_message = ledger_only(engine, campaign_id, args.ledger_sample, settings.worker_claim_batch,
                                      settings)
            print(f"ledger only (claim batches of {settings.worker_claim_batch} + record, one process, "
                  f"{args.ledger_sample:,} rows): {per_message * 1e6:.0f} µs per message "
                  f"({1 / per_message:,.0f} msg/s for the database alone)")

            if args.send_limit:
                with engine.begin() as connection:
                    connection.execute(sa.text(
                        "UPDATE delivery SET state = 'skipped', last_reply = 'not sent: --send-limit'"
                        " WHERE campaign_id = :c AND state = 'queued' AND id > (SELECT min(id) FROM delivery"
                        " WHERE campaign_id = :c AND state = 'queued') + :n"),
                        {"c": campaign_id, "n": args.send_limit - 1})
            command = worker_command(campaign_id, args.connections, None)
            processes = [subprocess.Popen(command, env={**os.environ, **env}, cwd=workdir,
                                          stdout=subprocess.DEVNULL) for _ in range(args.workers)]
            timing, peaks = Timing(), [0] * args.workers
            started = time.perf_counter()
            while any(process.poll() is None for process in processes):
                with engine.connect() as connection:
                    counts = ledger.state_counts(connection, campaign_id)
                timing.update(counts["sent"])
                peaks = [max(peak, _peak_kib(p.pid)) for peak, p in zip(peaks, processes, strict=True)]
                time.sleep(0.5)
            with engine.connect() as connection:
                counts = ledger.state_counts(connection, campaign_id)
            sent = counts["sent"] - min(args.ledger_sample, args.recipients)
            skipped = f"; {counts['skipped']:,} marked skipped by --send-limit" if args.send_limit else ""
            after_db, after_delivery = sizes(engine)
            elapsed = time.perf_counter() - started
            print(f"send: {args.workers} workers sent {sent:,} messages in {elapsed:.0f} s, "
                  f"{timing.window_rate():,.0f} msg/s first to last record; exit codes "
                  f"{[p.returncode for p in processes]}; peak RSS per worker "
                  f"{', '.join(f'{peak / 1024:.0f} MB' for peak in peaks)}{skipped}")
            print(f"database after the send: {after_db:,.0f} MB, of which delivery {after_delivery:,.0f} MB "
                  f"({after_delivery * 1e6 / args.recipients:,.0f} bytes per recipient)")
            engine.dispose()
    finally:
        sink.stop()
        database.drop()


if __name__ == "__main__":
    main()
