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

With ``--writer`` a second process writes to the server's database all along (to both
servers'), as a running send does: a batch of 100 ledger-like rows committed every 10 ms.

With ``--rate R``, each server then gets a steady load on fresh tokens: the same
connections, each pausing at random between requests so that R POST/s are offered in all
(wrk's ``delay()``). The burst measures the most the server takes; the steady load, the
latency a mailbox provider's POSTs meet at that rate.

Usage:  .venv/bin/python scripts/bench_unsubscribe.py [--tokens 40000] [--runs 5]
        [--connections 64] [--duration 5] [--threads 1] [--writer] [--rate 600]
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
WARM_UP = 2000  # tokens for the 1 s warm-up before each measured run
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


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU time so far of a process, and of its children (Linux): the web
    process, and its unsubscribe writer."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:  # it has exited
        return 0.0, 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own, sum(sum(cpu_seconds(int(child))) for child in children)


def run_wrk(port: int, paths_file: Path, answer_pattern: str, args: argparse.Namespace,
            duration: int, rate: float = 0) -> dict[str, Any]:
    """wrk's figures for one load: as fast as the server answers, or offered at ``rate`` POST/s."""
    answered_file = paths_file.with_name(f"answered-{paths_file.stem}-{port}-{rate:g}.txt")
    pause_ms = args.connections * 1000 / rate if rate else 0
    result = subprocess.run(
        [WRK, "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration}s",
         "--timeout", "10s", "-s", str(LUA), f"http://127.0.0.1:{port}", "--", str(paths_file),
         str(args.threads), str(answered_file), answer_pattern, f"{pause_ms:.3f}"],
        capture_output=True, text=True, check=True)
    line = [text for text in result.stdout.splitlines() if text.startswith("{")][-1]
    figures = dict(json.loads(line))
    figures["answered"] = answered_file.read_text(encoding="ascii").split()
    return figures


def posted(paths: list[str], issued: list[int]) -> set[int]:
    """Indexes of the tokens wrk POSTed: thread t took every T-th path, in order."""
    threads = len(issued)
    shares = [list(range(t, len(paths), threads)) for t in range(threads)]
    return {index for share, count in zip(shares, issued, strict=True) for index in share[:count]}


def check(figures: dict[str, Any], answered_200: int, answered: set[Any], posted_set: set[Any],
          recorded: set[Any], wrongly: set[Any] | None = None) -> None:
    """Every 200 recorded, nothing recorded that was not POSTed; the POSTs wrk cut off
    unanswered when its time was up are counted apart (the server may never have read them)."""
    problems = []
    if len(answered) != answered_200 or "?" in answered:
        problems.append("some 200 answers did not name their unsubscribe")
    if answered - recorded:
        problems.append(f"{len(answered - recorded)} unsubscribe(s) answered 200 but not recorded")
    if wrongly:
        problems.append(f"{len(wrongly)} recorded without exactly one consent event")
    if recorded - posted_set:
        problems.append(f"{len(recorded - posted_set)} recorded that were never POSTed")
    figures["problems"] = problems
    figures["cut_off"] = len(posted_set - answered)


def _phases(figures: dict[str, Any], paths: list[str], tokens: int) -> tuple[list[str], set[int]]:
    """What wrk answered, and the indexes (into ``paths``) of what it POSTed, over both loads:
    the tokens first, then the warm-up's, then the steady load's (``--rate``)."""
    answered = list(figures["answered"])
    indexes = posted(paths[:tokens], figures["issued"])
    if "steady" in figures:
        start = tokens + WARM_UP
        answered += figures["steady"]["answered"]
        indexes |= {start + i for i in posted(paths[start:], figures["steady"]["issued"])}
    return answered, indexes


def _answered_200(figures: dict[str, Any]) -> int:
    return int(figures["answered_200"] + figures.get("steady", {}).get("answered_200", 0))


def check_wip_mailer(url: str, pairs: list[tuple[int, int]], figures: dict[str, Any],
                     paths: list[str], tokens: int) -> None:
    connection = sqlite3.connect(db.sqlite_path(url))  # type: ignore[arg-type]
    left = {row[0] for row in connection.execute(
        "SELECT subscriber_id FROM membership WHERE status = 'unsubscribed'")}
    events: dict[int, int] = dict(connection.execute(
        "SELECT subscriber_id, count(*) FROM consent_event WHERE kind = 'unsubscribe' "
        "AND source = 'one-click (RFC 8058)' AND ip = '127.0.0.1' AND user_agent = 'bench-mail-provider/1.0' "
        "GROUP BY subscriber_id"))
    left_by_subscriber = {row[0] for row in connection.execute(
        "SELECT id FROM subscriber WHERE status = 'unsubscribed'")}
    connection.close()
    texts, indexes = _phases(figures, paths, tokens)
    answered = {int(text) for text in texts if text.isdigit()} | (
        {"?"} if any(not text.isdigit() for text in texts) else set())
    posted_set = {pairs[i][0] for i in indexes}
    warmed = {subscriber_id for subscriber_id, _ in pairs[tokens:tokens + WARM_UP]}
    left -= warmed
    wrongly = {s for s in left if events.get(s) != 1 or s not in left_by_subscriber}
    check(figures, _answered_200(figures), answered, posted_set, left, wrongly)


def check_baseline(path: Path, paths: list[str], figures: dict[str, Any], tokens: int) -> None:
    connection = sqlite3.connect(path)
    recorded = {row[0] for row in connection.execute("SELECT token FROM unsubscribe")}
    connection.close()
    texts, indexes = _phases(figures, paths, tokens)
    posted_set = {paths[i].rsplit("/", 1)[1] for i in indexes}
    recorded -= {path.rsplit("/", 1)[1] for path in paths[tokens:tokens + WARM_UP]}
    check(figures, _answered_200(figures), set(texts), posted_set, recorded)


def serve_and_load(command: list[str], env: dict[str, str], port: int, paths_file: Path,
                   answer_pattern: str, args: argparse.Namespace) -> dict[str, Any]:
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_up(port, server)
        # Warm up (first-use compiling of templates and SQL) on tokens of their own, as a
        # server that has been up for a while would be; then measure.
        run_wrk(port, paths_file.with_name("warm-up.txt"), answer_pattern, args, 1)
        cpu_before = cpu_seconds(server.pid)
        figures = run_wrk(port, paths_file, answer_pattern, args, args.duration)
        # CPU per request does not depend on what else the host runs: a steadier figure than POST/s
        cpu_after, requests = cpu_seconds(server.pid), max(figures["requests"], 1)
        figures["cpu_us"] = (sum(cpu_after) - sum(cpu_before)) / requests * 1e6
        figures["writer_cpu_us"] = (cpu_after[1] - cpu_before[1]) / requests * 1e6
        if args.rate:
            # Then a steady offered load on fresh tokens: the latency people see at that rate.
            steady = run_wrk(port, paths_file.with_name(f"steady-{paths_file.name}"), answer_pattern,
                             args, args.duration, args.rate)
            figures["steady"] = steady
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
        pairs = populate(url, args.tokens + WARM_UP + (args.tokens if args.rate else 0))
        settings = load_settings(environment(url, port), work / "absent.env")
        make = token_maker(SECRET, Purpose.UNSUBSCRIBE)  # what personalise puts in every email
        paths = [f"/u/{make(subscriber_id, list_id)}" for subscriber_id, list_id in pairs]
        assert settings.base_url + paths[0] == unsubscribe_url(settings, *pairs[0])
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths[:args.tokens]) + "\n", encoding="ascii")
        (work / "warm-up.txt").write_text(
            "\n".join(paths[args.tokens:args.tokens + WARM_UP]) + "\n", encoding="ascii")
        steady = args.tokens + WARM_UP  # the steady load's own tokens (see --rate)
        (work / "steady-paths.txt").write_text("\n".join(paths[steady:]) + "\n", encoding="ascii")

        writer = start_writer(url, args) if args.writer else None
        try:
            # the page names the address: lettoreNNNNNNN@example.net is subscriber NNNNNNN
            wip = serve_and_load([sys.executable, "-m", "wip_mailer", "serve", "--port", str(port)],
                                 environment(url, port), port, paths_file, "lettore(%d+)@example", args)
        finally:
            if writer is not None:
                writer.terminate()
                writer.wait()
        check_wip_mailer(url, pairs, wip, paths, args.tokens)

        base_port, base_db = free_port(), work / "baseline.db"
        writer = start_writer(f"sqlite:///{base_db}", args) if args.writer else None
        try:
            base = serve_and_load([sys.executable, __file__, "--serve-baseline", str(base_db),
                                   "--port", str(base_port)], dict(os.environ), base_port, paths_file,
                                  "Unsubscribed: ([%w_%-%.]+)", args)
        finally:
            if writer is not None:
                writer.terminate()
                writer.wait()
        check_baseline(base_db, paths, base, args.tokens)
    for name, figures in (("wip-mailer", wip), ("baseline", base)):
        print(f"  run {run}: {name:10} {describe(figures)}", flush=True)
    return {"wip-mailer": wip, "baseline": base}


def describe(figures: dict[str, Any]) -> str:
    rate = figures["requests"] / (figures["duration_us"] / 1e6)
    errors = figures["socket_errors"] + figures["timeouts"] + figures["answered_other"]
    text = (f"{rate:7.0f} POST/s  p50 {figures['p50_us'] / 1000:6.1f} ms"
            f"  p99 {figures['p99_us'] / 1000:6.1f} ms"
            f"  server CPU {figures['cpu_us']:4.0f} µs/POST (writer {figures['writer_cpu_us']:3.0f})"
            f"  errors {errors}"
            f"  redirects {figures['redirects']}"
            f"  posted {sum(figures['issued'])}")
    text += f"  answered 200 {figures['answered_200']}, cut off unanswered {figures['cut_off']}"
    text += "  every 200 recorded: " + ("yes" if not figures["problems"] else "; ".join(figures["problems"]))
    if "steady" in figures:
        steady = figures["steady"]
        steady_rate = steady["requests"] / (steady["duration_us"] / 1e6)
        text += (f"\n      steady load: {steady_rate:5.0f} POST/s  p50 {steady['p50_us'] / 1000:6.1f} ms"
                 f"  p99 {steady['p99_us'] / 1000:6.1f} ms  max {steady['max_us'] / 1000:6.1f} ms"
                 f"  errors {steady['socket_errors'] + steady['timeouts'] + steady['answered_other']}")
    if "server_stderr" in figures:
        text += f"\n      server said: {figures['server_stderr']}"
    return text


def start_writer(url: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    path = db.sqlite_path(url)
    return subprocess.Popen([sys.executable, __file__, "--write-like-a-sender", str(path)])


def write_like_a_sender(path: Path) -> None:
    """A send's ledger writes, roughly: 100 rows committed every 10 ms, on the same file."""
    connection = sqlite3.connect(path, timeout=10)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000"):
        connection.execute(f"PRAGMA {pragma}")
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
        return HTMLResponse("<!doctype html><title>Unsubscribed</title>"
                            f"<p>Unsubscribed: {request.path_params['token']}</p>")

    async def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/u/{token}", unsubscribe, methods=["POST"]),
                            Route("/healthz", health)])
    uvicorn.run(app, host="127.0.0.1", port=port, **UVICORN_OPTIONS)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=40000, help="subscribers (tokens) per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per server and run")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rate", type=float, default=0, metavar="POST_PER_S",
                        help="after the burst, a steady load offered at this rate (0: none)")
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
              f"every 200 recorded: {'yes' if not unrecorded else 'NO'}"
              + (f"  ({wraps} run(s) ran out of tokens: raise --tokens)" if wraps else ""))
        if args.rate:
            steady = [r["steady"] for r in runs]
            steady_rate = statistics.median(r["requests"] / (r["duration_us"] / 1e6) for r in steady)
            steady_p50 = statistics.median(r["p50_us"] for r in steady) / 1000
            steady_p99 = statistics.median(r["p99_us"] for r in steady) / 1000
            worst = max(r["p99_us"] for r in steady) / 1000
            steady_errors = sum(r["socket_errors"] + r["timeouts"] + r["answered_other"] for r in steady)
            print(f"  {'':10} steady load offered at {args.rate:g} POST/s: {steady_rate:5.0f} POST/s  "
                  f"p50 {steady_p50:6.1f} ms  p99 {steady_p99:6.1f} ms (worst run {worst:.1f} ms)  "
                  f"errors {steady_errors}")
            errors += steady_errors
        failed = failed or bool(unrecorded) or errors > 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
