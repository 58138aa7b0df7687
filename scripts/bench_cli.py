"""Benchmark: how long a `wip-mailer` command takes to start, end to end, in a fresh process.

A small SQLite database (one edition of 20 items, two lists) is made in a temp dir. Each
run starts, in turn, a fresh interpreter for:

  python -c pass                 the floor: an interpreter that does nothing
  python -c "import sqlalchemy"  the baseline: what any command touching the database pays
  python -c "import wip_mailer.models"  the database layer (SQLAlchemy, SQLModel, the tables)
  wip-mailer --version, --help, lists list, items list --edition X, editions show X

and the median wall time of the runs is printed (the commands run as `python -m wip_mailer`
with the project's interpreter, as the installed `wip-mailer` script does).

Usage: .venv/bin/python scripts/bench_cli.py [--runs 9]
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

SLUG = "2024-01"


def _environment(folder: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WIP_MAILER_")}
    environment["WIP_MAILER_DATABASE_URL"] = f"sqlite:///{folder / 'bench.db'}"
    environment["WIP_MAILER_SECRET_KEY"] = "bench-secret-key-0123456789abcdefghij"
    return environment


def make_database(folder: Path) -> None:
    from datetime import date

    from wip_mailer import db, editorial
    from wip_mailer.audience import lists

    engine = db.create_database(_environment(folder)["WIP_MAILER_DATABASE_URL"])
    with db.session_scope(engine) as session:
        editorial.create_edition(session, SLUG, "Gennaio-Febbraio 2024", date(2024, 1, 1), date(2024, 2, 29))
        for n in range(20):
            editorial.add_item(session, SLUG, title=f"Item {n}", date_label=f"{n % 27 + 1} gennaio",
                               body_md=f"Text of item {n}, with [a link](https://example.org/{n}).")
        lists.create_list(session, "newsletter", language="it")
        lists.create_list(session, "press", language="en")
    engine.dispose()


def time_once(argv: list[str], folder: Path, environment: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=folder, env=environment, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    python = sys.executable
    wip = [python, "-m", "wip_mailer"]
    cases = {
        "python -c pass": [python, "-c", "pass"],
        'python -c "import sqlalchemy"': [python, "-c", "import sqlalchemy"],
        'python -c "import wip_mailer.models"': [python, "-c", "import wip_mailer.models"],
        "wip-mailer --version": [*wip, "--version"],
        "wip-mailer --help": [*wip, "--help"],
        "wip-mailer lists list": [*wip, "lists", "list"],
        f"wip-mailer items list --edition {SLUG}": [*wip, "items", "list", "--edition", SLUG],
        f"wip-mailer editions show {SLUG}": [*wip, "editions", "show", SLUG],
    }
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        make_database(folder)
        environment = _environment(folder)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):  # interleaved, so a busy moment weighs on every case alike
            for name, argv in cases.items():
                times[name].append(time_once(argv, folder, environment))
    width = max(len(name) for name in cases)
    print(f"median wall time of {args.runs} runs, each a fresh process")
    for name, values in times.items():
        print(f"  {name:<{width}}  {statistics.median(values):6.3f} s  "
              f"(min {min(values):.3f}, max {max(values):.3f})")


if __name__ == "__main__":
    main()
