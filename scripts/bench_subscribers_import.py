"""Benchmark: importing a 100,000-row CSV into a fresh SQLite database.

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


def baseline(path: Path) -> tuple[float, float]:
    """csv parsing + email validation only: the floor a naive importer pays. (wall, cpu)"""
    start, cpu = time.perf_counter(), time.process_time()
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=";")
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
    assert report.added == report.rows and not report.rejected, report
    engine.dispose()
    return elapsed


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
        base_times, import_times = [], []
        for run in range(args.runs):
            base_times.append(baseline(source))
            import_times.append(full_import(source, folder, run))
    print(f"{args.rows} rows, median of {args.runs} runs (wall clock; CPU time of this process)")
    for label, times in (("baseline (csv + email-validator per row, no database)", base_times),
                         ("full import into SQLite (one transaction)", import_times)):
        wall = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        print(f"  {label:55} {wall:6.2f} s {args.rows / wall:9,.0f} rows/s   "
              f"(CPU {cpu:5.2f} s {args.rows / cpu:9,.0f} rows/s)")
    base = statistics.median(t[0] for t in base_times)
    full = statistics.median(t[0] for t in import_times)
    print(f"  import / baseline: {full / base:.2f}x")
    print(f"  load average during the run: {os.getloadavg()[0]:.2f} (the machine has {os.cpu_count()} cores)")

if __name__ == "__main__":
    main()
