"""Benchmark: importing a 100,000-row CSV into a fresh SQLite database, as wip-mailer's own
format and as a Mailchimp audience export (its 24 columns: merge fields and Mailchimp's
own kept as attributes, opt-in and confirmation times and IPs as consent events).

Baseline, measured in the same run: reading the same file with the csv module and
validating each address with email-validator, without the database. The import is
measured end to end (file reading, validation, suppression check, bulk inserts,
consent events, commit). Each figure is the median of several runs.

    .venv/bin/python scripts/bench_subscribers_import.py [--rows 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from email_validator import validate_email

from wip_mailer import db
from wip_mailer.audience import csv_import, lists
from wip_mailer.settings import Settings


def make_file(path: Path, rows: int) -> None:
    rng = random.Random(42)
    languages = ["it", "it", "it", "en", "fr", "de", "es"]
    countries = ["IT", "IT", "FR", "DE", "ES", "GB", "US"]
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["email", "name", "language", "organisation", "country", "tags"])
        for i in range(rows):
            writer.writerow([
                f"Persona.{i}@Esempio{i % 997}.example.org", f"Persona {i}", rng.choice(languages),
                f"Organizzazione {i % 5000}", rng.choice(countries), rng.choice(["", "press", "partner,eu"]),
            ])


MAILCHIMP_HEADER = [
    "Email Address", "First Name", "Last Name", "Address", "Phone Number", "Birthday", "Company",
    "MEMBER_RATING", "OPTIN_TIME", "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LATITUDE", "LONGITUDE",
    "GMTOFF", "DSTOFF", "TIMEZONE", "CC", "REGION", "LAST_CHANGED", "LEID", "EUID", "NOTES", "TAGS",
]


def make_mailchimp_file(path: Path, rows: int) -> None:
    """A subscribed_*.csv as Mailchimp writes it (comma-separated, TAGS quoted as ""\"Tag\""")."""
    rng = random.Random(7)
    countries = ["IT", "IT", "FR", "DE", "ES", "GB", "US", ""]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MAILCHIMP_HEADER)
        for i in range(rows):
            optin = f"2021-{1 + i % 12:02d}-{1 + i % 28:02d} 09:{i % 60:02d}:{(i * 7) % 60:02d}"
            confirm = f"2021-{1 + i % 12:02d}-{1 + i % 28:02d} 10:{i % 60:02d}:{(i * 3) % 60:02d}"
            writer.writerow([
                f"persona.{i}@esempio{i % 997}.example.org", "Persona ", f"Numero {i} ",
                f"Via Roma {i % 300}, Torino", f"+39 011 {i:07d}", f"{1 + i % 12:02d}/{1 + i % 28:02d}",
                f"Organizzazione {i % 5000}", str(1 + i % 5), optin if i % 3 else "",
                f"203.0.113.{i % 250}" if i % 3 else "", confirm, f"198.51.100.{i % 250}",
                f"45.{i % 100:02d}", f"7.{i % 100:02d}", "1", "2", "Europe/Rome", rng.choice(countries),
                "TO", "2023-05-02 10:00:00", str(100000 + i), f"e{i:09x}", "",
                rng.choice(["", '"Press"', '"Press","Board Member"']),
            ])


def baseline(path: Path, delimiter: str = ";") -> tuple[float, float]:
    """csv parsing + email validation only: the floor a naive importer pays. (wall, cpu)"""
    start, cpu = time.perf_counter(), time.process_time()
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader)
        for row in reader:
            validate_email(row[0], check_deliverability=False)
    return time.perf_counter() - start, time.process_time() - cpu


def full_import(path: Path, folder: Path, run: int) -> tuple[float, float]:
    url = f"sqlite:///{folder / f'bench-{run}.db'}"
    engine = db.create_database(url)
    with db.session_scope(engine) as session:
        lists.create_list(session, "bench", double_opt_in=False)
    settings = Settings(database_url=url, secret_key="benchmark-secret-key-0123456789")
    start, cpu = time.perf_counter(), time.process_time()
    report = csv_import.import_csv(engine, settings, path, "bench")
    elapsed = time.perf_counter() - start, time.process_time() - cpu
    assert report.added == report.rows and not report.rejected, report.rejected[:3]
    engine.dispose()
    return elapsed


def _line(label: str, times: list[tuple[float, float]], rows: int) -> None:
    wall = statistics.median(t[0] for t in times)
    cpu = statistics.median(t[1] for t in times)
    print(f"  {label:62} {wall:6.2f} s {rows / wall:9,.0f} rows/s   "
          f"(CPU {cpu:5.2f} s {rows / cpu:9,.0f} rows/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "subscribers.csv"
        make_file(source, args.rows)
        chimp = folder / "subscribed_members_export_bench.csv"
        make_mailchimp_file(chimp, args.rows)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in ("base", "own", "chimp-base", "chimp")}
        for run in range(args.runs):
            times["base"].append(baseline(source))
            times["own"].append(full_import(source, folder, run))
            times["chimp-base"].append(baseline(chimp, ","))
            times["chimp"].append(full_import(chimp, folder, args.runs + run))
    print(f"{args.rows} rows, median of {args.runs} runs (wall clock; CPU time of this process)")
    _line("baseline (csv + email-validator per row, no database)", times["base"], args.rows)
    _line("full import into SQLite (one transaction)", times["own"], args.rows)
    _line("Mailchimp baseline (24 columns: csv + email-validator)", times["chimp-base"], args.rows)
    _line("Mailchimp export, full import (attributes, consent events)", times["chimp"], args.rows)
    for label, full, base in (("import", "own", "base"), ("Mailchimp import", "chimp", "chimp-base")):
        ratio = statistics.median(t[0] for t in times[full]) / statistics.median(t[0] for t in times[base])
        print(f"  {label} / baseline: {ratio:.2f}x")
    print(f"  load average during the run: {os.getloadavg()[0]:.2f} (the machine has {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
