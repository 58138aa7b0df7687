#!/usr/bin/env python3
"""One-click unsubscribe benchmark: a burst of RFC 8058 POSTs against `wip-mailer serve`.

For each run: a fresh SQLite database with N real subscribers on a list, and the very
unsubscribe tokens their emails carry (``token_maker``, as ``personalise`` mints them; the
first is checked equal to ``audience.unsubscribe_url``). A real `wip-mailer serve`
process (uvicorn) is started on it and `wrk` POSTs the tokens, each once, as
multipart/form-data over C concurrent keep-alive connections for D seconds
(scripts/bench_unsubscribe.lua). In the same run the same load goes to a baseline: a
minimal Starlette app, served by uvicorn with the same options, that parses the form and
does one SQLite insert (and commit) per request.

After each run the server is stopped (SIGTERM: the app's lifespan commits what is
queued) and the database is checked: every POSTed token's membership is unsubscribed and
has exactly one one-click consent event. Medians over the runs are printed: POST/s, p50
and p99 latency (wrk's), errors (socket errors, timeouts, non-200 answers).

With ``--writer`` a second process writes to the same database all along, as a running
send does (a batch of 100 ledger-like rows committed every 10 ms).

Usage:  .venv/bin/python scripts/bench_unsubscribe.py [--tokens 20000] [--runs 5]
        [--connections 64] [--duration 5] [--threads 1] [--writer]
Needs `wrk` (Debian package `wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import insert  # noqa: E402

from wip_mailer import db  # noqa: E402
from wip_mailer.audience import unsubscribe_url  # noqa: E402
from wip_mailer.models import MailingList, Membership, Subscriber  # noqa: E402
from wip_mailer.settings import load_settings  # noqa: E402
from wip_mailer.tokens import Purpose, token_maker  # noqa: E402

SECRET = "benchmark-secret-key-0123456789abcdef"
LUA = Path(__file__).with_name("bench_unsubscribe.lua")
WRK = shutil.which("wrk") or "/usr/bin/wrk"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def populate(url: str, count: int) -> list[tuple[int, int]]:
    """N subscribers, each an active member of the list "notizie"; their (subscriber, list) ids."""
    engine = db.create_database(url)
    now = db.utcnow()
    with db.session_scope(engine) as session:
        news = MailingList(name="notizie", double_opt_in=False)
        session.add(news)
        session.flush()
        assert news.id is not None
        for start in range(0, count, 5000):
            ids = range(start + 1, min(count, start + 5000) + 1)
            session.execute(insert(Subscriber), [
                {"id": n, "email": f"lettore{n:07d}@example.net", "name": f"Lettore {n}", "tags": [],
                 "attributes": {}, "created_at": now, "updated_at": now} for n in ids])
            session.execute(insert(Membership), [
                {"subscriber_id": n, "list_id": news.id, "status": "active", "subscribed_at": now,
                 "confirmed_at": now} for n in ids])
        list_id = news.id
    engine.dispose()
    return [(n, list_id) for n in range(1, count + 1)]


def environment(url: str, port: int) -> dict[str, str]:
    return {**os.environ, "WIP_MAILER_DATABASE_URL": url, "WIP_MAILER_SECRET_KEY": SECRET,
            "WIP_MAILER_BASE_URL": f"http://127.0.0.1:{port}", "PYTHONUNBUFFERED": "1"}


def wait_until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode} before answering")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the server did not come up within 30 s")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(port: int, paths_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    result = subprocess.run(
        [WRK, "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
         "--timeout", "10s", "-s", str(LUA), f"http://127.0.0.1:{port}", "--", str(paths_file),
         str(args.threads)], capture_output=True, text=True, check=True)
    line = [text for text in result.stdout.splitlines() if text.startswith("{")][-1]
    return dict(json.loads(line))


def posted(paths: list[str], issued: list[int]) -> set[int]:
    """Indexes of the tokens wrk POSTed: thread t took every T-th path, in order."""
    threads = len(issued)
    shares = [list(range(t, len(paths), threads)) for t in range(threads)]
    return {index for share, count in zip(shares, issued, strict=True) for index in share[:count]}


def check_wip_mailer(url: str, pairs: list[tuple[int, int]], indexes: set[int]) -> list[str]:
    """What is wrong in the database after the run (empty: every POST is recorded)."""
    connection = sqlite3.connect(db.sqlite_path(url))  # type: ignore[arg-type]
    statuses = dict(connection.execute("SELECT subscriber_id, status FROM membership"))
    events: dict[int, int] = dict(connection.execute(
        "SELECT subscriber_id, count(*) FROM consent_event WHERE kind = 'unsubscribe' "
        "AND source = 'one-click (RFC 8058)' GROUP BY subscriber_id"))
    connection.close()
    problems = []
    wanted = {pairs[i][0] for i in indexes}
    not_left = sorted(s for s in wanted if statuses.get(s) != "unsubscribed")
    if not_left:
        problems.append(f"{len(not_left)} POSTed subscriber(s) still subscribed (e.g. id {not_left[0]})")
    wrong = sorted(s for s in wanted if events.get(s) != 1)
    if wrong:
        problems.append(f"{len(wrong)} POSTed subscriber(s) without exactly one consent event")
    extra = sorted(set(events) - wanted)
    if extra:
        problems.append(f"{len(extra)} subscriber(s) unsubscribed that were never POSTed")
    return problems


def check_baseline(path: Path, paths: list[str], indexes: set[int]) -> list[str]:
    connection = sqlite3.connect(path)
    tokens = {row[0] for row in connection.execute("SELECT token FROM unsubscribe")}
    connection.close()
    missing = sum(1 for i in indexes if paths[i].rsplit("/", 1)[1] not in tokens)
    return [f"{missing} POSTed token(s) not recorded"] if missing else []


def serve_and_load(command: list[str], env: dict[str, str], port: int, paths_file: Path,
                   args: argparse.Namespace) -> dict[str, Any]:
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_up(port, server)
        cpu_before = cpu_seconds(server.pid)
        figures = run_wrk(port, paths_file, args)
        # CPU per request does not depend on what else the host runs: a steadier figure than POST/s
        figures["cpu_us"] = (cpu_seconds(server.pid) - cpu_before) / max(figures["requests"], 1) * 1e6
    finally:
        server.terminate()  # SIGTERM: uvicorn finishes the requests in flight, then the lifespan
        _, stderr = server.communicate(timeout=60)
    if stderr.strip():
        figures["server_stderr"] = stderr.decode(errors="replace").strip()[-400:]
    return figures


def one_run(args: argparse.Namespace, run: int) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-unsub-") as folder:
        work = Path(folder)
        port = free_port()
        url = f"sqlite:///{work / 'wip.db'}"
        pairs = populate(url, args.tokens)
        settings = load_settings(environment(url, port), work / "absent.env")
        make = token_maker(SECRET, Purpose.UNSUBSCRIBE)  # what personalise puts in every email
        paths = [f"/u/{make(subscriber_id, list_id)}" for subscriber_id, list_id in pairs]
        assert settings.base_url + paths[0] == unsubscribe_url(settings, *pairs[0])
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n", encoding="ascii")

        writer = start_writer(url, args) if args.writer else None
        try:
            wip = serve_and_load([sys.executable, "-m", "wip_mailer", "serve", "--port", str(port)],
                                 environment(url, port), port, paths_file, args)
        finally:
            if writer is not None:
                writer.terminate()
                writer.wait()
        wip["problems"] = check_wip_mailer(url, pairs, posted(paths, wip["issued"]))

        base_port, base_db = free_port(), work / "baseline.db"
        base = serve_and_load([sys.executable, __file__, "--serve-baseline", str(base_db),
                               "--port", str(base_port)], dict(os.environ), base_port, paths_file, args)
        base["problems"] = check_baseline(base_db, paths, posted(paths, base["issued"]))
    for name, figures in (("wip-mailer", wip), ("baseline", base)):
        print(f"  run {run}: {name:10} {describe(figures)}", flush=True)
    return {"wip-mailer": wip, "baseline": base}


def describe(figures: dict[str, Any]) -> str:
    rate = figures["requests"] / (figures["duration_us"] / 1e6)
    errors = figures["socket_errors"] + figures["timeouts"] + figures["answered_other"]
    text = (f"{rate:7.0f} POST/s  p50 {figures['p50_us'] / 1000:6.1f} ms"
            f"  p99 {figures['p99_us'] / 1000:6.1f} ms"
            f"  server CPU {figures['cpu_us']:4.0f} µs/POST  errors {errors}"
            f"  redirects {figures['redirects']}"
            f"  posted {sum(figures['issued'])}")
    text += "  recorded: " + ("all" if not figures["problems"] else "; ".join(figures["problems"]))
    if "server_stderr" in figures:
        text += f"\n      server said: {figures['server_stderr']}"
    return text


def start_writer(url: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    path = db.sqlite_path(url)
    return subprocess.Popen([sys.executable, __file__, "--write-like-a-sender", str(path)])


def write_like_a_sender(path: Path) -> None:
    """A send's ledger writes, roughly: 100 rows committed every 10 ms, on the same file."""
    connection = sqlite3.connect(path, timeout=10)
    connection.execute("PRAGMA busy_timeout=10000")
    connection.execute("CREATE TABLE IF NOT EXISTS bench_ledger "
                       "(id INTEGER PRIMARY KEY, state TEXT, at REAL)")
    connection.commit()
    while True:
        with connection:
            connection.executemany("INSERT INTO bench_ledger (state, at) VALUES ('sent', ?)",
                                   [(time.time(),)] * 100)
        time.sleep(0.01)


def serve_baseline(path: Path, port: int) -> None:
    """The baseline: parse the one-click form, one SQLite insert and commit, a small page."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from wip_mailer.cli.web import UVICORN_OPTIONS

    connection = sqlite3.connect(path, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000"):
        connection.execute(f"PRAGMA {pragma}")
    connection.execute("CREATE TABLE unsubscribe (id INTEGER PRIMARY KEY, token TEXT, ip TEXT, "
                       "user_agent TEXT, at REAL)")
    connection.commit()

    async def unsubscribe(request: Request) -> Response:
        form = await request.form()
        if form.get("List-Unsubscribe") != "One-Click":
            return PlainTextResponse("bad request", status_code=400)
        with connection:
            connection.execute("INSERT INTO unsubscribe (token, ip, user_agent, at) VALUES (?, ?, ?, ?)",
                               (request.path_params["token"], request.client.host if request.client else None,
                                request.headers.get("user-agent"), time.time()))
        return HTMLResponse("<!doctype html><title>Unsubscribed</title><p>Unsubscribed.</p>")

    async def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/u/{token}", unsubscribe, methods=["POST"]),
                            Route("/healthz", health)])
    uvicorn.run(app, host="127.0.0.1", port=port, **UVICORN_OPTIONS)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=20000, help="subscribers (tokens) per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per server and run")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--writer", action="store_true", help="a sender-like writer on the same file")
    parser.add_argument("--serve-baseline", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--write-like-a-sender", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.port)
        return
    if args.write_like_a_sender:
        write_like_a_sender(args.write_like_a_sender)
        return
    if not Path(WRK).exists():
        raise SystemExit("bench_unsubscribe.py needs wrk: apt-get install wrk")

    writer = ", a sender-like writer on the same file" if args.writer else ""
    print(f"{args.tokens} tokens per run, {args.connections} connections, {args.duration} s per server, "
          f"wrk with {args.threads} thread(s){writer}")
    results = [one_run(args, run) for run in range(1, args.runs + 1)]
    print(f"median of {args.runs} runs:")
    failed = False
    for name in ("wip-mailer", "baseline"):
        runs = [result[name] for result in results]
        rate = statistics.median(r["requests"] / (r["duration_us"] / 1e6) for r in runs)
        p50 = statistics.median(r["p50_us"] for r in runs) / 1000
        p99 = statistics.median(r["p99_us"] for r in runs) / 1000
        cpu = statistics.median(r["cpu_us"] for r in runs)
        errors = sum(r["socket_errors"] + r["timeouts"] + r["answered_other"] for r in runs)
        wraps = sum(1 for r in runs if max(r["issued"]) * len(r["issued"]) > args.tokens)
        unrecorded = [p for r in runs for p in r["problems"]]
        print(f"  {name:10} {rate:7.0f} POST/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
              f"server CPU {cpu:4.0f} µs/POST  errors {errors} (all runs)  "
              f"every POST recorded: {'yes' if not unrecorded else 'NO'}"
              + (f"  ({wraps} run(s) ran out of tokens: raise --tokens)" if wraps else ""))
        failed = failed or bool(unrecorded) or errors > 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
