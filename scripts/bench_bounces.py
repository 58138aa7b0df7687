"""Benchmark: `wip-mailer bounces parse` on 10,000 bounce messages made from the fixtures.

The fixtures in tests/data/bounces/ (Postfix, Exim, Sendmail, qmail, Office 365, Gmail,
Amazon SES, RFC 3464, mailbox full, delay, out-of-office, ARF, mailto unsubscribe) are
copied round-robin into a temp folder, each copy with its own Message-ID and recipient.
Each run times, on the same files:

  baseline   read each file and email.message_from_bytes() it (the standard parser alone)
  classify   read each file and classify() it, JSON line included (what `bounces parse` does)
  command    `wip-mailer bounces parse DIR --json > /dev/null` as a process (start-up included)

Times are CPU seconds (user + system; of the child process for the command), so that the
figures hold on a shared machine whose other work only stretches the wall clock.

Usage: .venv/bin/python scripts/bench_bounces.py [--messages 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from email import message_from_bytes
from pathlib import Path

from wip_mailer.feedback.classify import classify
from wip_mailer.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "bounces"
SECRET = "fixture-secret-key-0123456789abcdef"
SETTINGS = Settings(secret_key=SECRET, bounce_address="bounces@example.org",
                    sender="Work in Progress <newsletter@example.org>")


def make_messages(folder: Path, count: int) -> list[Path]:
    fixtures = [p.read_bytes() for p in sorted(FIXTURES.glob("*.eml"))]
    paths = []
    for n in range(count):
        raw = fixtures[n % len(fixtures)]
        raw = raw.replace(b"Message-I", f"X-Bench: {n}\nMessage-I".encode(), 1)
        raw = raw.replace(b"@example.net", f".{n}@example.net".encode())
        path = folder / f"{n:06d}.eml"
        path.write_bytes(raw)
        paths.append(path)
    return paths


def baseline(paths: list[Path]) -> float:
    start = time.process_time()
    for path in paths:
        message_from_bytes(path.read_bytes())
    return time.process_time() - start


def classify_all(paths: list[Path]) -> float:
    start = time.process_time()
    with open(os.devnull, "w") as out:
        for path in paths:
            out.write(json.dumps(classify(path.read_bytes(), SETTINGS).as_json(str(path))) + "\n")
    return time.process_time() - start


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def command(folder: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIP_MAILER_")}
    env.update({"WIP_MAILER_SECRET_KEY": SECRET, "WIP_MAILER_BOUNCE_ADDRESS": "bounces@example.org",
                "WIP_MAILER_FROM": "Work in Progress <newsletter@example.org>"})
    start = _children_cpu()
    subprocess.run([sys.executable, "-m", "wip_mailer", "bounces", "parse", str(folder), "--json"],
                   env=env, cwd=folder.parent, stdout=subprocess.DEVNULL, check=True, timeout=600)
    return _children_cpu() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "bounces"
        folder.mkdir()
        paths = make_messages(folder, args.messages)
        kinds: dict[str, int] = {}
        for path in paths:
            kind = classify(path.read_bytes(), SETTINGS).kind.value
            kinds[kind] = kinds.get(kind, 0) + 1
        print(f"{args.messages} messages: {kinds}")
        results: dict[str, list[float]] = {"baseline": [], "classify": [], "command": []}
        for _ in range(args.runs):
            results["baseline"].append(baseline(paths))
            results["classify"].append(classify_all(paths))
            results["command"].append(command(folder))
    rates = {name: args.messages / statistics.median(times) for name, times in results.items()}
    print(f"email.message_from_bytes alone:       {rates['baseline']:>8,.0f} msg/s "
          f"(CPU time, median of {args.runs})")
    print(f"classify() + JSON, in-process:        {rates['classify']:>8,.0f} msg/s "
          f"({rates['classify'] / rates['baseline']:.0%} of the baseline)")
    print(f"`wip-mailer bounces parse DIR --json`: {rates['command']:>8,.0f} msg/s "
          f"({rates['command'] / rates['baseline']:.0%} of the baseline; start-up included)")


if __name__ == "__main__":
    main()
