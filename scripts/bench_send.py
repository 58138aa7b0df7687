#!/usr/bin/env python3
"""Send benchmark: wip-mailer's dispatch against Postfix's smtp-sink, with a naive baseline.

For each run: start `smtp-sink` on a free loopback port, create a fresh SQLite database
with N subscribers, and send a ~60 KB edition to all of them with `send_edition` (the
code path of `wip-mailer send`: ledger claims, batched result writes, journal, 4
connections). The rate is measured over the sending phase, first to last message
(from the progress bar's start to its stop: ledger writes included, the one-off
recipient freeze excluded and reported apart). In the same run a naive loop —
`EmailMessage` built per recipient + `smtplib.send_message`, same number of
connections — is timed as the baseline. Medians of the runs are printed.

Scale-out, in the same run: `send --workers 2` on SQLite, and one and two `wip-mailer worker`
processes on PostgreSQL (a fresh database on `--postgres` per run), each freezing the same
campaign and sending it to the same sink. Every configuration is timed the same way: from
the first flush of results to the last (worker processes start in ~1 s, which is not
sending); for workers it is read from the ledger's `sent_at` afterwards, not polled while
they run, so the database does only the workers' work. Ceilings: the raw pre-built Python
client, and Postfix's C client `smtp-source -d -s <connections> -l <message size>`.

Peak memory is measured in a child process sending to `--memory-recipients`
subscribers (VmHWM of the child process), and for each of 2 workers on PostgreSQL at the
same count (VmHWM of the worker processes, read while they run).

Usage:  .venv/bin/python scripts/bench_send.py [--recipients 20000] [--runs 3]
        [--connections 4] [--naive-recipients 4000] [--memory-recipients 100000]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432] [--no-workers]
        [--seed FILE]   (the edition to send, imported, approved and rendered through the
                         editorial and render stages; default: the sample edition in
                         ../shared/seed/, or a generated ~60 KB edition when it is absent)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from wip_mailer import db  # noqa: E402
from wip_mailer.dispatch import SendRequest, send_edition  # noqa: E402
from wip_mailer.models import Edition, MailingList, Membership, Subscriber  # noqa: E402
from wip_mailer.personalise import Addressee, MessageTemplate  # noqa: E402
from wip_mailer.render import (  # noqa: E402
    PREFERENCES_URL_PLACEHOLDER,
    UNSUBSCRIBE_URL_PLACEHOLDER,
    RenderedEdition,
)
from wip_mailer.settings import load_settings  # noqa: E402

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SECRET = "benchmark-secret-key-0123456789abcdef"
SAMPLE = ROOT.parent / "shared" / "seed" / "work-in-progress-2024-01-gennaio-febbraio.md"


def sample_edition(seed: Path) -> RenderedEdition:
    """The real edition: import → approve all → pre-flight (assemble, MJML, premailer)."""
    from wip_mailer import editorial, intake
    from wip_mailer.preflight import run_preflight

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/render.db"
        engine = db.create_database(url)
        settings = load_settings({"WIP_MAILER_DATABASE_URL": url,
                                  "WIP_MAILER_SECRET_KEY": "benchmark-secret-key-0123456789abcdef"},
                                 Path(folder) / "absent.env")
        with db.session_scope(engine) as session:
            editorial.create_edition(session, "sample", "Gennaio-Febbraio 2024")
            intake.import_document(session, seed, "sample")
            editorial.approve_all(session, "sample", by="benchmark")
        with db.session_scope(engine) as session:
            report = run_preflight(session, settings, "sample")
        engine.dispose()
    if report.blocking or report.rendered is None:
        raise SystemExit(f"the sample edition does not pass the pre-flight check: {report.blocking}")
    return report.rendered


def edition_to_send(seed: Path | None) -> tuple[RenderedEdition, str]:
    seed = seed or (SAMPLE if SAMPLE.exists() else None)
    if seed is not None:
        return sample_edition(seed), f"rendered from {seed.name}"
    return generated_edition(None), "generated (the sample edition is absent)"


def generated_edition(html_file: Path | None) -> RenderedEdition:
    """A ~60 KB edition shaped like the real one (one long HTML line, Italian text)."""
    if html_file is not None:
        html = html_file.read_text(encoding="utf-8")
    else:
        item = ('<tr><td style="padding:8px 24px;font-family:Arial,Helvetica,sans-serif;font-size:15px;'
                'line-height:22px;color:#1a1a1a"><h3 style="margin:0 0 4px;font-size:18px;color:#004a99">'
                'Missione a Praia: cooperazione tra città {n}</h3><p style="margin:0 0 4px;color:#666">'
                '7-14 gennaio</p><p style="margin:0">Nel quadro dell\'accordo di cooperazione proseguono '
                'le attività del progetto, finalizzato a creare un ambiente urbano sostenibile e inclusivo '
                'per la popolazione, soprattutto giovanile, del quartiere. Alla missione partecipano '
                'rappresentanti tecnici della Città e delle associazioni del territorio, che incontrano '
                'il sindaco per pianificare le ultime attività di riqualificazione ambientale. '
                '<a href="https://example.org/progetti/{n}" style="color:#004a99">Leggi di più</a></p>'
                '</td></tr>')
        body = "".join(item.format(n=n) for n in range(75))
        html = ('<!doctype html><html lang="it"><head><meta charset="utf-8"><title>Work in Progress</title>'
                '</head><body style="margin:0;background:#f2f2f2"><table role="presentation" width="100%">'
                f'{body}<tr><td><a href="{UNSUBSCRIBE_URL_PLACEHOLDER}">Annulla l\'iscrizione</a> · '
                f'<a href="{PREFERENCES_URL_PLACEHOLDER}">Preferenze</a></td></tr></table></body></html>')
    if UNSUBSCRIBE_URL_PLACEHOLDER not in html:
        html = html.replace("</body>", f'<a href="{UNSUBSCRIBE_URL_PLACEHOLDER}">unsubscribe</a></body>')
    text = ("Work in Progress – Gennaio-Febbraio 2024\n\n"
            + "Notizia di esempio per il testo semplice.\n" * 150
            + f"\nAnnulla l'iscrizione: {UNSUBSCRIBE_URL_PLACEHOLDER}\n"
            + f"Preferenze: {PREFERENCES_URL_PLACEHOLDER}\n")
    return RenderedEdition("Work in Progress – Gennaio-Febbraio 2024", html, text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        args = [SMTP_SINK, f"127.0.0.1:{self.port}", "1024"]
        if os.geteuid() == 0:
            args[1:1] = ["-u", "nobody"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("smtp-sink did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def populate(url: str, count: int) -> None:
    engine = db.create_database(url)
    now = db.utcnow()
    with db.session_scope(engine) as session:
        session.add(Edition(slug="bench", title="Benchmark", status="ready"))
        session.add(MailingList(name="bench"))
        session.flush()
        for start in range(0, count, 5000):
            session.execute(insert(Subscriber), [
                {"id": n + 1, "email": f"reader{n:07d}@example.net", "name": f"Lettore {n}", "tags": [],
                 "attributes": {}, "created_at": now, "updated_at": now}
                for n in range(start, min(count, start + 5000))])
            session.execute(insert(Membership), [
                {"subscriber_id": n + 1, "list_id": 1, "status": "active", "subscribed_at": now}
                for n in range(start, min(count, start + 5000))])
    engine.dispose()


class Timing:
    """The dispatch Progress protocol, used to time the sending phase."""

    def __init__(self) -> None:
        self.started = self.stopped = 0.0
        self.first_at = self.last_at = 0.0
        self.first_done = self.last_done = 0

    def start(self, total: int, done: int) -> None:
        self.started = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if not self.first_at and done:
            self.first_at, self.first_done = now, done
        self.last_at, self.last_done = now, done

    def window_rate(self) -> float:
        """Deliveries recorded a second, from the first recorded to the last (the same clock
        for one process and for workers)."""
        return (self.last_done - self.first_done) / max(self.last_at - self.first_at, 1e-9)

    def note(self, text: str) -> None:
        pass

    def stop(self) -> None:
        self.stopped = time.perf_counter()


def run_wip_mailer(port: int, recipients: int, connections: int, rendered: RenderedEdition,
                   workdir: Path) -> dict[str, float]:
    url = f"sqlite:///{workdir / 'bench.db'}"
    populate(url, recipients)
    settings = load_settings({
        "WIP_MAILER_DATABASE_URL": url, "WIP_MAILER_SMTP_PORT": str(port),
        "WIP_MAILER_SECRET_KEY": "benchmark-secret-key-0123456789abcdef",
        "WIP_MAILER_SMTP_CONNECTIONS": str(connections), "WIP_MAILER_JOURNAL_DIR": str(workdir / "journal"),
        "WIP_MAILER_BOUNCE_ADDRESS": "bounces@example.org",
    }, workdir / "absent.env")
    engine = db.open_database(url)
    timing = Timing()

    def preflight(session: object, settings: object, slug: str) -> object:
        class Report:
            blocking: tuple[str, ...] = ()
            warnings: tuple[str, ...] = ()
        report = Report()
        report.rendered = rendered  # type: ignore[attr-defined]
        return report

    began = time.perf_counter()
    summary = send_edition(engine, settings, SendRequest("bench", ("bench",)), progress=timing,
                           preflight=preflight)  # type: ignore[arg-type]
    ended = time.perf_counter()
    engine.dispose()
    assert summary.sent == recipients, summary
    return {"rate": recipients / (timing.stopped - timing.started), "total_seconds": ended - began,
            "freeze_seconds": timing.started - began, "window_rate": timing.window_rate()}


def _peak_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def run_workers(port: int, recipients: int, connections: int, rendered: RenderedEdition, workdir: Path,
                url: str, workers: int) -> dict[str, float]:
    """Freeze the campaign as `send` does, then N `wip-mailer worker --once` processes send it."""
    from wip_mailer.dispatch import CampaignSummary, SummaryStatus, ledger
    from wip_mailer.dispatch.workers import worker_command

    populate(url, recipients)
    env = {"WIP_MAILER_DATABASE_URL": url, "WIP_MAILER_SMTP_PORT": str(port),
           "WIP_MAILER_SECRET_KEY": SECRET, "WIP_MAILER_SMTP_CONNECTIONS": str(connections),
           "WIP_MAILER_JOURNAL_DIR": str(workdir / "journal"),
           "WIP_MAILER_BOUNCE_ADDRESS": "bounces@example.org"}
    settings = load_settings(env, workdir / "absent.env")
    engine = db.open_database(url)
    frozen: list[int] = []

    def preflight(session: object, settings: object, slug: str) -> object:
        class Report:
            blocking: tuple[str, ...] = ()
            warnings: tuple[str, ...] = ()
        report = Report()
        report.rendered = rendered  # type: ignore[attr-defined]
        return report

    def capture(campaign_id: int) -> CampaignSummary:
        frozen.append(campaign_id)
        return CampaignSummary(campaign_id, recipients, 0, 0, 0, 0, 0, SummaryStatus.SENDING)

    began = time.perf_counter()
    send_edition(engine, settings, SendRequest("bench", ("bench",)), preflight=preflight,  # type: ignore[arg-type]
                 run=capture)
    freeze = time.perf_counter() - began
    command = worker_command(frozen[0], connections, None)
    child_env = {**os.environ, **env}
    processes = [subprocess.Popen(command, env=child_env, cwd=workdir, stdout=subprocess.DEVNULL)
                 for _ in range(workers)]
    peaks = [0] * workers
    # No ledger queries while they run (a count every 50 ms cost the database a third of what
    # the workers' own claims and records did): only their memory is read, from /proc.
    while any(process.poll() is None for process in processes):
        peaks = [max(peak, _peak_kib(process.pid)) for peak, process in zip(peaks, processes, strict=True)]
        time.sleep(0.05)
    with engine.connect() as connection:
        counts = ledger.state_counts(connection, frozen[0])
        window_rate = _recorded_rate(connection, frozen[0])
    engine.dispose()
    assert counts["sent"] == recipients and all(p.returncode == 0 for p in processes), counts
    return {"window_rate": window_rate, "freeze_seconds": freeze,
            "peak_rss_mb": max(peaks) / 1024, "total_seconds": time.perf_counter() - began}


def _recorded_rate(connection: Any, campaign_id: int) -> float:
    """Deliveries recorded a second from the first flush of results to the last, read from the
    ledger afterwards (``sent_at`` is the flush's time): the window Timing gives one process."""
    from wip_mailer.dispatch import ledger

    sent, of_campaign = ledger.DELIVERY.c.sent_at, ledger.DELIVERY.c.campaign_id == campaign_id
    first, last, total = connection.execute(
        sa.select(sa.func.min(sent), sa.func.max(sent), sa.func.count()).where(of_campaign, sent.is_not(None))
    ).one()
    in_first_flush = connection.execute(
        sa.select(sa.func.count()).where(of_campaign, sent == first)).scalar_one()
    return (total - in_first_flush) / max((last - first).total_seconds(), 1e-9)


class PostgresDatabase:
    """A fresh database on the server for one configuration, dropped afterwards."""

    def __init__(self, server: str) -> None:
        import secrets

        import sqlalchemy as sa

        self.server = server.rstrip("/")
        # WIP_BENCH_DB_PREFIX: sessions sharing one server tell their databases apart
        self.name = f"{os.environ.get('WIP_BENCH_DB_PREFIX', 'wip_bench')}_{secrets.token_hex(4)}"
        self.admin = sa.create_engine(f"{self.server}/postgres", isolation_level="AUTOCOMMIT")
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        self.url = f"{self.server}/{self.name}"

    def drop(self) -> None:
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{self.name}" WITH (FORCE)')
        self.admin.dispose()


def run_smtp_source(port: int, recipients: int, connections: int, size: int) -> float:
    """Postfix's C client: `smtp-source -d -s N -l SIZE -m COUNT` (one connection kept per session)."""
    began = time.perf_counter()
    subprocess.run([SMTP_SOURCE, "-d", "-s", str(connections), "-l", str(size), "-m", str(recipients),
                    "-f", "newsletter@example.org", "-t", "reader@example.net", f"127.0.0.1:{port}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return recipients / (time.perf_counter() - began)


def rate_of_threads(worker: Callable[[range], None], recipients: int, connections: int) -> float:
    """Messages a second of ``connections`` threads, each sending its share of the recipients."""
    share = recipients // connections
    threads = [threading.Thread(target=worker, args=(range(i * share, (i + 1) * share),))
               for i in range(connections)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return share * connections / (time.perf_counter() - began)


def run_naive(port: int, recipients: int, connections: int, rendered: RenderedEdition) -> float:
    """The baseline: a fresh EmailMessage per recipient, smtplib.send_message, N connections."""
    def worker(indexes: range) -> None:
        client = smtplib.SMTP("127.0.0.1", port)
        for n in indexes:
            url = f"https://news.example.org/u/token-{n}"
            message = EmailMessage(policy=SMTP_POLICY)
            message["From"] = "Work in Progress <newsletter@example.org>"
            message["To"] = f"Lettore {n} <reader{n:07d}@example.net>"
            message["Subject"] = rendered.subject
            message["List-Unsubscribe"] = f"<{url}>"
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            message.set_content(rendered.text.replace(UNSUBSCRIBE_URL_PLACEHOLDER, url))
            message.add_alternative(rendered.html.replace(UNSUBSCRIBE_URL_PLACEHOLDER, url), subtype="html")
            client.send_message(message)
        client.quit()

    return rate_of_threads(worker, recipients, connections)


def run_ceiling(port: int, recipients: int, connections: int, rendered: RenderedEdition) -> float:
    """The machine's ceiling: the same messages built beforehand, written on raw sockets.

    No ledger, no journal, no personalisation at send time: how fast this machine and the sink
    move these bytes, so the wip-mailer figure can be read against it on a busy or quiet host.
    """
    settings = load_settings({"WIP_MAILER_SECRET_KEY": "benchmark-secret-key-0123456789abcdef"},
                             Path("/nonexistent/.env"))
    template = MessageTemplate(settings, rendered, campaign_id=1, list_names={1: "bench"})
    messages = [template.build(Addressee(f"reader{n:07d}@example.net", f"Lettore {n}", n + 1, 1, n + 1))
                for n in range(min(recipients, 200))]  # 18 MB: enough to vary the bytes

    def worker(indexes: range) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock, sock.makefile("rb") as replies:
            def read_reply() -> None:
                while replies.readline()[3:4] == b"-":
                    pass
            read_reply()
            sock.sendall(b"EHLO bench.example\r\n")
            read_reply()
            for n in indexes:
                message = messages[n % len(messages)]
                sock.sendall(f"MAIL FROM:<{message.envelope_from}>\r\nRCPT TO:<{message.recipient}>"
                             "\r\nDATA\r\n".encode())
                for _ in range(3):
                    read_reply()
                sock.sendall(message.smtp_data)
                read_reply()
            sock.sendall(b"QUIT\r\n")

    return rate_of_threads(worker, recipients, connections)


def child_memory(recipients: int, connections: int, seed: Path | None) -> None:
    """Run in a child process: one full send, then print the peak RSS."""
    sink = Sink()
    try:
        with tempfile.TemporaryDirectory() as folder:
            result = run_wip_mailer(sink.port, recipients, connections, edition_to_send(seed)[0],
                                    Path(folder))
    finally:
        sink.stop()
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec.
    status = Path("/proc/self/status").read_text()
    peak_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_mb": peak_kib / 1024, **result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--naive-recipients", type=int, default=4_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-recipients", type=int, default=100_000, help="0 skips the memory run")
    parser.add_argument("--seed", type=Path, help="newsletter document to import, render and send")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                        help="PostgreSQL server for the worker configurations")
    parser.add_argument("--no-workers", action="store_true", help="only the one-process send and baselines")
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(args.child_memory, args.connections, args.seed)
        return
    if not Path(SMTP_SINK).exists():
        sys.exit("smtp-sink is not installed (Debian package postfix): apt-get install postfix")
    rendered, origin = edition_to_send(args.seed)
    html_kib, text_kib = len(rendered.html.encode()) / 1024, len(rendered.text.encode()) / 1024
    print(f"edition {origin}: {html_kib:.0f} KiB HTML + {text_kib:.0f} KiB text; "
          f"{args.recipients} recipients, "
          f"{args.connections} connections, {args.runs} runs; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    size = len(MessageTemplate(load_settings({"WIP_MAILER_SECRET_KEY": SECRET}, Path("/nonexistent/.env")),
                               rendered, campaign_id=1, list_names={1: "bench"})
               .build(Addressee("reader0000001@example.net", "Lettore 1", 1, 1, 1)).smtp_data)
    configs = ["one process (SQLite)"]
    if not args.no_workers:
        configs += ["--workers 2 (SQLite)", "1 worker (PostgreSQL)", "2 workers (PostgreSQL)"]
    rates: dict[str, list[float]] = {name: [] for name in configs}
    wip_rates, naive_rates, ceiling_rates, source_rates, freezes = [], [], [], [], []
    for run in range(1, args.runs + 1):
        sink = Sink()
        try:
            with tempfile.TemporaryDirectory() as folder:
                result = run_wip_mailer(sink.port, args.recipients, args.connections, rendered, Path(folder))
            rates["one process (SQLite)"].append(result["window_rate"])
            line = []
            for name, workers in (("--workers 2 (SQLite)", 2), ("1 worker (PostgreSQL)", 1),
                                  ("2 workers (PostgreSQL)", 2)):
                if name not in rates:
                    continue
                with tempfile.TemporaryDirectory() as folder:
                    database = PostgresDatabase(args.postgres) if "PostgreSQL" in name else None
                    try:
                        url = database.url if database else f"sqlite:///{Path(folder) / 'bench.db'}"
                        scaled = run_workers(sink.port, args.recipients, args.connections, rendered,
                                             Path(folder), url, workers)
                    finally:
                        if database:
                            database.drop()
                rates[name].append(scaled["window_rate"])
                line.append(f"{name} {scaled['window_rate']:,.0f}")
            naive = run_naive(sink.port, args.naive_recipients, args.connections, rendered)
            ceiling = run_ceiling(sink.port, args.naive_recipients * 2, args.connections, rendered)
            source = run_smtp_source(sink.port, args.naive_recipients * 2, args.connections, size)
        finally:
            sink.stop()
        wip_rates.append(result["rate"])
        naive_rates.append(naive)
        ceiling_rates.append(ceiling)
        source_rates.append(source)
        freezes.append(result["freeze_seconds"])
        print(f"run {run}: wip-mailer {result['rate']:,.0f} msg/s (sending phase; recipient freeze "
              f"{result['freeze_seconds']:.1f} s, whole send {result['total_seconds']:.1f} s; first to last "
              f"record {result['window_rate']:,.0f}); {'; '.join(line) + '; ' if line else ''}"
              f"naive loop {naive:,.0f} msg/s; raw pre-built client (ceiling) {ceiling:,.0f} msg/s; "
              f"smtp-source {source:,.0f} msg/s")
    wip, naive = statistics.median(wip_rates), statistics.median(naive_rates)
    ceiling, source = statistics.median(ceiling_rates), statistics.median(source_rates)
    print(f"median: wip-mailer {wip:,.0f} msg/s, naive {naive:,.0f} msg/s, "
          f"{wip / naive:.1f}x the naive loop; "
          f"{wip / ceiling:.0%} of the raw pre-built client ({ceiling:,.0f} msg/s)")
    one = statistics.median(rates["one process (SQLite)"])
    print(f"first-to-last-record rates (message {size / 1000:.0f} KB; smtp-source -d -s {args.connections} "
          f"-l {size}: {source:,.0f} msg/s):")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"  {name:<24} {rate:>7,.0f} msg/s  {rate / one:.2f}x one process  "
              f"{rate / source:.0%} of smtp-source  {rate / ceiling:.0%} of the raw client")
    if args.memory_recipients:
        child = subprocess.run([sys.executable, __file__, "--child-memory", str(args.memory_recipients),
                                "--connections", str(args.connections)]
                               + (["--seed", str(args.seed)] if args.seed else []),
                               capture_output=True, text=True, check=True)
        memory = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"memory: {args.memory_recipients} recipients, peak RSS {memory['peak_rss_mb']:.0f} MB "
              f"({memory['rate']:,.0f} msg/s, whole send {memory['total_seconds']:.0f} s)")
        if not args.no_workers:
            sink = Sink()
            database = PostgresDatabase(args.postgres)
            try:
                with tempfile.TemporaryDirectory() as folder:
                    scaled = run_workers(sink.port, args.memory_recipients, args.connections, rendered,
                                         Path(folder), database.url, 2)
            finally:
                database.drop()
                sink.stop()
            print(f"memory: 2 workers on PostgreSQL, {args.memory_recipients} recipients, peak RSS per "
                  f"worker {scaled['peak_rss_mb']:.0f} MB ({scaled['window_rate']:,.0f} msg/s)")


if __name__ == "__main__":
    main()
