"""One-click unsubscribes in bursts, over real HTTP: group-committed, each answered only
once committed, never a redirect. A real uvicorn server on loopback with its lifespan,
so the writer process starts and stops as under `wip-mailer serve`."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine
from starlette.applications import Starlette

from tests.smtp_server import free_port
from wip_mailer import db
from wip_mailer.audience import preferences_url, selfservice, unsubscribe_url
from wip_mailer.audience.consent import Actor, join_list
from wip_mailer.audience.lists import create_list
from wip_mailer.audience.unsubscribe_batch import (
    UnsubscribeNotRecordedError,
    UnsubscribeRequest,
    UnsubscribeWriter,
    apply_unsubscribes,
)
from wip_mailer.errors import NotFoundError
from wip_mailer.models import Subscriber
from wip_mailer.settings import Settings, load_settings
from wip_mailer.web import ONE_CLICK_SOURCE, create_app

UA = "burst-mail-provider/2.0"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def settings(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("WIP_MAILER_BASE_URL", f"http://127.0.0.1:{free_port()}")
    return load_settings()


@dataclass
class Server:
    base: str
    app: Starlette
    uvicorn: uvicorn.Server
    thread: threading.Thread

    @property
    def writer(self) -> UnsubscribeWriter:
        return self.app.state.unsubscribe_writer  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()


def _serve(settings: Settings, engine: Engine, archive: Path | None = None) -> Server:
    port = int(settings.base_url.rsplit(":", 1)[1])
    app = create_app(settings, engine, archive_dir=archive)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:  # started: after the lifespan started the writer process
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped while starting"
        time.sleep(0.02)
    return Server(settings.base_url, app, server, thread)


@pytest.fixture
def server(settings: Settings, engine: Engine) -> Iterator[Server]:
    running = _serve(settings, engine)
    yield running
    if running.thread.is_alive():
        running.stop()


def _readers(engine: Engine, count: int) -> tuple[list[int], int, int]:
    """``count`` active members of "notizie" (also on "eventi"): (ids, notizie id, eventi id)."""
    with db.session_scope(engine) as session:
        news = create_list(session, "notizie", double_opt_in=False)
        events = create_list(session, "eventi", double_opt_in=False, public=True)
        ids = []
        for n in range(count):
            subscriber = Subscriber(email=f"lettore{n:04d}@example.org")
            session.add(subscriber)
            session.flush()
            join_list(session, subscriber, news, confirmed=True, actor=Actor("test"))
            if n % 2:
                join_list(session, subscriber, events, confirmed=True, actor=Actor("test"))
            ids.append(subscriber.id)
        assert news.id and events.id
        return ids, news.id, events.id  # type: ignore[return-value]


def _database(settings: Settings) -> sqlite3.Connection:
    """A connection of its own, as another process (the sender) would have."""
    path = db.sqlite_path(settings.database_url)
    assert path is not None
    return sqlite3.connect(path)


def _path(url: str, settings: Settings) -> str:
    assert url.startswith(settings.base_url)
    return url[len(settings.base_url):]


async def _post_all(base: str, paths: list[str], *, multipart_every: int = 2,
                    on_answer: object = None) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(paths), max_keepalive_connections=len(paths))
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60, follow_redirects=False,
                                 headers={"User-Agent": UA}) as client:
        async def post(index: int, path: str) -> httpx.Response:
            if index % multipart_every:
                response = await client.post(path, data=ONE_CLICK)  # urlencoded
            else:
                response = await client.post(path, files={"List-Unsubscribe": (None, "One-Click")})
            if callable(on_answer):
                on_answer(path, response)
            return response
        return list(await asyncio.gather(*(post(i, path) for i, path in enumerate(paths))))


def test_200_concurrent_one_click_posts_are_each_committed_before_their_200(server, settings, engine):
    ids, news_id, _ = _readers(engine, 200)
    paths = {_path(unsubscribe_url(settings, sid, news_id), settings): sid for sid in ids}
    other = _database(settings)
    seen_before_answer: list[str | None] = []

    def check_committed(path: str, response: httpx.Response) -> None:
        # The 200 is here: another connection must already see the unsubscribe.
        row = other.execute("SELECT status FROM membership WHERE subscriber_id = ? AND list_id = ?",
                            (paths[path], news_id)).fetchone()
        seen_before_answer.append(row[0] if response.status_code == 200 else "not a 200")

    responses = asyncio.run(_post_all(server.base, list(paths), on_answer=check_committed))
    assert [r.status_code for r in responses] == [200] * 200
    assert all("location" not in r.headers and "set-cookie" not in r.headers for r in responses)
    assert all("Cancellazione avvenuta" in r.text for r in responses)
    assert seen_before_answer == ["unsubscribed"] * 200

    memberships = dict(other.execute("SELECT subscriber_id, status FROM membership WHERE list_id = ?",
                                     (news_id,)))
    assert memberships == {sid: "unsubscribed" for sid in ids}
    events = other.execute("SELECT subscriber_id, list_id, source, ip, user_agent FROM consent_event "
                           "WHERE kind = 'unsubscribe' ORDER BY subscriber_id").fetchall()
    assert events == [(sid, news_id, ONE_CLICK_SOURCE, "127.0.0.1", UA) for sid in ids]
    statuses = dict(other.execute("SELECT id, status FROM subscriber"))
    # Readers still on "eventi" stay active; the others have left every list.
    assert statuses == {sid: "active" if n % 2 else "unsubscribed" for n, sid in enumerate(ids)}
    assert server.writer.committed == 200

    again = asyncio.run(_post_all(server.base, list(paths)[:20]))  # repeats change nothing
    assert [r.status_code for r in again] == [200] * 20
    count = other.execute("SELECT count(*) FROM consent_event WHERE kind = 'unsubscribe'").fetchone()
    assert count == (200,)
    other.close()


def test_no_route_answers_a_redirect(settings, engine, workdir):
    ids, news_id, _ = _readers(engine, 2)
    archive = workdir / "archive"
    (archive / "2024-01").mkdir(parents=True)
    (archive / "index.html").write_text('<a href="2024-01/">Gennaio</a>', encoding="utf-8")
    (archive / "2024-01" / "index.html").write_text("<h1>Gennaio-Febbraio</h1>", encoding="utf-8")
    running = _serve(settings, engine, archive)
    try:
        token_path = _path(unsubscribe_url(settings, ids[0], news_id), settings)
        with httpx.Client(base_url=running.base, follow_redirects=False, timeout=30) as client:
            slashed = client.post(token_path + "/", data=ONE_CLICK)
            assert (slashed.status_code, slashed.headers.get("location")) == (200, None)
            assert "Cancellazione avvenuta" in slashed.text
            other = _database(settings)
            assert other.execute("SELECT status FROM membership WHERE subscriber_id = ? AND list_id = ?",
                                 (ids[0], news_id)).fetchone() == ("unsubscribed",)
            other.close()
            prefs = _path(preferences_url(settings, ids[1], news_id), settings)
            answers = {path: client.get(path) for path in [
                token_path + "/", prefs + "/", "/confirm/not-a-token/", "/subscribe/eventi/",
                "/subscribe/notizie/", "/healthz/", "/archive", "/archive/2024-01", "/archive/2024-01/",
                "/archive/", "/nowhere/"]}
        statuses = {path: response.status_code for path, response in answers.items()}
        assert all("location" not in r.headers and not 300 <= r.status_code < 400 for r in answers.values())
        assert statuses == {
            token_path + "/": 200, prefs + "/": 200, "/confirm/not-a-token/": 400, "/subscribe/eventi/": 200,
            "/subscribe/notizie/": 404, "/healthz/": 200, "/archive": 404, "/archive/2024-01": 404,
            "/archive/2024-01/": 200, "/archive/": 200, "/nowhere/": 404}
        assert "/archive/2024-01/" in answers["/archive/2024-01"].text  # where the page is
    finally:
        running.stop()


def _tampered(path: str) -> str:
    swap = {"A": "B", "B": "A"}
    index = len("/u/") + 2
    return path[:index] + swap.get(path[index], "A") + path[index + 1:]


def test_a_bad_token_among_good_ones_gets_its_error_alone(server, settings, engine):
    ids, news_id, events_id = _readers(engine, 30)
    good = [_path(unsubscribe_url(settings, sid, news_id), settings) for sid in ids[:24]]
    tampered = _tampered(_path(unsubscribe_url(settings, ids[24], news_id), settings))
    wrong_purpose = "/u/" + preferences_url(settings, ids[25], news_id).rsplit("/", 1)[1]
    unknown = _path(unsubscribe_url(settings, 999_999, news_id), settings)  # signed, but nobody
    every_list = _path(unsubscribe_url(settings, ids[27], None), settings)
    paths = [*good[:12], tampered, wrong_purpose, unknown, every_list, *good[12:]]
    responses = dict(zip(paths, asyncio.run(_post_all(server.base, paths)), strict=True))
    assert {p: r.status_code for p, r in responses.items()} == {
        **{p: 200 for p in good}, tampered: 400, wrong_purpose: 400, unknown: 404, every_list: 200}
    assert "no longer in our lists" in responses[unknown].text
    other = _database(settings)
    left = {row[0]: row[1] for row in other.execute(
        "SELECT subscriber_id, count(*) FROM membership WHERE status = 'unsubscribed' "
        "GROUP BY subscriber_id")}
    # ids[27] left both lists with its every-list token (it is odd: also on "eventi")
    assert left == {**{sid: 1 for sid in ids[:24]}, ids[27]: 2}
    assert other.execute("SELECT count(*) FROM consent_event WHERE kind = 'unsubscribe'").fetchone() == (26,)
    assert events_id
    other.close()


def test_a_failed_batch_commit_answers_500_to_every_request_in_it_and_changes_nothing(
        server, settings, engine):
    ids, news_id, _ = _readers(engine, 12)
    paths = [_path(unsubscribe_url(settings, sid, news_id), settings) for sid in ids]
    other = _database(settings)
    # Inserting the consent events fails after the memberships were updated: the whole
    # batch must be rolled back and nobody told "done".
    other.execute("ALTER TABLE consent_event RENAME TO consent_event_away")
    other.commit()
    failed = asyncio.run(_post_all(server.base, paths))
    assert [r.status_code for r in failed] == [500] * 12
    assert all("could not be recorded" in r.text and "location" not in r.headers for r in failed)
    assert all("INSERT" not in r.text and "lettore" not in r.text for r in failed)  # no SQL, no address
    assert other.execute("SELECT DISTINCT status FROM membership WHERE list_id = ?",
                         (news_id,)).fetchall() == [("active",)]

    other.execute("ALTER TABLE consent_event_away RENAME TO consent_event")
    other.commit()
    retried = asyncio.run(_post_all(server.base, paths))  # the provider tries again: now it works
    assert [r.status_code for r in retried] == [200] * 12
    assert other.execute("SELECT count(*) FROM consent_event WHERE kind = 'unsubscribe'").fetchone() == (12,)
    other.close()


def test_a_writer_that_dies_is_replaced(server, settings, engine):
    ids, news_id, _ = _readers(engine, 3)
    paths = [_path(unsubscribe_url(settings, sid, news_id), settings) for sid in ids]
    assert [r.status_code for r in asyncio.run(_post_all(server.base, paths[:1]))] == [200]
    first = server.writer.writer_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    answers = [asyncio.run(_post_all(server.base, [path]))[0].status_code for path in paths[1:]]
    assert answers[-1] == 200 and set(answers) <= {200, 500}  # at worst the batch it died with
    assert server.writer.writer_pid not in (None, first)
    other = _database(settings)
    statuses = [row[0] for row in other.execute(
        "SELECT status FROM membership WHERE list_id = ? ORDER BY subscriber_id", (news_id,))]
    assert statuses[0] == "unsubscribed" and statuses[2] == "unsubscribed"
    other.close()


def test_shutdown_commits_what_is_queued_and_stops_the_writer(server, settings, engine):
    ids, news_id, _ = _readers(engine, 5)
    paths = [_path(unsubscribe_url(settings, sid, news_id), settings) for sid in ids]
    assert [r.status_code for r in asyncio.run(_post_all(server.base, paths))] == [200] * 5
    pid = server.writer.writer_pid
    assert pid is not None and Path(f"/proc/{pid}").exists()
    server.stop()
    assert server.writer.writer_pid is None
    assert not Path(f"/proc/{pid}").exists()  # exited and reaped
    with pytest.raises(UnsubscribeNotRecordedError):
        asyncio.run(server.writer.unsubscribe(paths[0].rsplit("/", 1)[1], source="test",
                                              visitor=selfservice.Visitor()))


def test_what_is_queued_within_the_window_is_one_transaction(settings, engine):
    ids, news_id, _ = _readers(engine, 30)
    tokens = [unsubscribe_url(settings, sid, news_id).rsplit("/", 1)[1] for sid in ids]
    writer = UnsubscribeWriter(engine, settings, window_seconds=1.0)

    async def burst() -> list[selfservice.UnsubscribeView]:
        try:
            return list(await asyncio.gather(*(writer.unsubscribe(
                token, source="test", visitor=selfservice.Visitor("192.0.2.1", UA)) for token in tokens)))
        finally:
            await writer.aclose()

    views = asyncio.run(burst())
    assert (writer.batches, writer.committed) == (1, 30)
    assert [v.email for v in views] == [f"lettore{n:04d}@example.org" for n in range(30)]
    assert all(v.changed and v.list_name == "notizie" and not v.subscribed for v in views)
    assert views[0].preferences_url == preferences_url(settings, ids[0], news_id)


def _scenario(engine: Engine) -> dict[str, int]:
    """Subscribers in every state an unsubscribe may meet."""
    with db.session_scope(engine) as session:
        news = create_list(session, "notizie", double_opt_in=False)
        events = create_list(session, "eventi", double_opt_in=True)
        people = {}
        for name in ("both", "every", "bounced", "pending", "left", "gone"):
            subscriber = Subscriber(email=f"{name}@example.org")
            session.add(subscriber)
            session.flush()
            people[name] = subscriber.id
        for name in ("both", "every", "bounced", "left", "gone"):
            subscriber = session.get(Subscriber, people[name])
            join_list(session, subscriber, news, confirmed=True, actor=Actor("test"))
        for name, mailing_list, confirmed in (("both", events, True), ("every", events, True),
                                              ("pending", news, True), ("pending", events, False)):
            join_list(session, session.get(Subscriber, people[name]), mailing_list,  # type: ignore[arg-type]
                      confirmed=confirmed, actor=Actor("test"))
        session.get(Subscriber, people["bounced"]).status = "bounced"  # type: ignore[union-attr]
        people["news"], people["events"] = news.id, events.id  # type: ignore[assignment]
    with db.session_scope(engine) as session:
        selfservice_unsubscribe(session, people["left"], people["news"])
        session.delete(session.get(Subscriber, people["gone"]))
    return people


def selfservice_unsubscribe(session, subscriber_id: int, list_id: int | None) -> None:
    from wip_mailer.audience.consent import unsubscribe

    unsubscribe(session, subscriber_id, list_id, source="earlier")


def _state(engine: Engine) -> tuple[list[tuple], list[tuple], list[tuple]]:
    with engine.connect() as connection:
        memberships = connection.exec_driver_sql(
            "SELECT subscriber_id, list_id, status, unsubscribed_at IS NOT NULL FROM membership "
            "ORDER BY subscriber_id, list_id").all()
        events = connection.exec_driver_sql(
            "SELECT subscriber_id, list_id, kind, source, ip, user_agent, text_version FROM consent_event "
            "ORDER BY subscriber_id, list_id, id").all()
        subscribers = connection.exec_driver_sql("SELECT id, email, status FROM subscriber ORDER BY id").all()
    return [tuple(r) for r in memberships], [tuple(r) for r in events], [tuple(r) for r in subscribers]


def test_a_batch_has_exactly_the_effect_of_unsubscribe_by_token(tmp_path, settings):
    """The same requests, one by one through ``unsubscribe_by_token`` (one ORM session each)
    and as one batch, leave the two databases identical."""
    engines = [db.create_database(f"sqlite:///{tmp_path / name}.db") for name in ("one", "batch")]
    people, _ = (_scenario(e) for e in engines)
    wanted = [("both", "news"), ("every", None), ("bounced", "news"), ("pending", "news"), ("left", "news"),
              ("both", "news"), ("both", "events"), ("gone", "news"), ("every", "news")]
    requests = [UnsubscribeRequest(people[who], None if lst is None else people[lst], ONE_CLICK_SOURCE,
                                   "198.51.100.7", "x" * 500) for who, lst in wanted]
    one_by_one = []
    for request in requests:
        token = unsubscribe_url(settings, request.subscriber_id, request.list_id).rsplit("/", 1)[1]
        try:
            with db.session_scope(engines[0]) as session:
                visitor = selfservice.Visitor(request.ip, request.user_agent)
                view = selfservice.unsubscribe_by_token(session, settings, token, source=request.source,
                                                        visitor=visitor)
            one_by_one.append((view.email, view.list_name, view.changed))
        except NotFoundError:
            one_by_one.append(None)
    with engines[1].begin() as connection:
        batched = apply_unsubscribes(connection, requests)
    assert [None if a is None else (a.email, a.list_name, a.changed) for a in batched] == one_by_one
    assert one_by_one[5] == ("both@example.org", "notizie", False)  # the repeat changed nothing
    assert _state(engines[1]) == _state(engines[0])
    for engine in engines:
        engine.dispose()


@pytest.mark.postgres
def test_the_writer_on_postgresql(pg_engine, settings):
    ids, news_id, _ = _readers(pg_engine, 40)
    tokens = [unsubscribe_url(settings, sid, news_id).rsplit("/", 1)[1] for sid in ids]
    tokens.append(unsubscribe_url(settings, ids[1], None).rsplit("/", 1)[1])  # odd: on both lists
    writer = UnsubscribeWriter(pg_engine, settings)

    async def burst() -> list[selfservice.UnsubscribeView]:
        try:
            return list(await asyncio.gather(*(writer.unsubscribe(
                token, source=ONE_CLICK_SOURCE, visitor=selfservice.Visitor("127.0.0.1", UA))
                for token in tokens)))
        finally:
            await writer.aclose()

    views = asyncio.run(burst())
    assert all(v.email.startswith("lettore") for v in views) and views[-1].changed
    with pg_engine.connect() as connection:
        left = connection.exec_driver_sql(
            "SELECT count(*) FROM membership WHERE status = 'unsubscribed'").scalar_one()
        events = connection.exec_driver_sql(
            "SELECT count(*) FROM consent_event WHERE kind = 'unsubscribe'").scalar_one()
        statuses = dict(connection.exec_driver_sql("SELECT id, status FROM subscriber").all())
    assert (left, events) == (41, 41)
    # even: only on "notizie"; odd: still on "eventi", but for ids[1], who left every list
    assert statuses == {sid: "unsubscribed" if n % 2 == 0 or n == 1 else "active"
                        for n, sid in enumerate(ids)}


def test_a_stop_signal_to_the_whole_process_group_loses_nothing(settings, engine):
    """systemd (and Ctrl-C) signal the web process and its writer together: the writer must
    not die first, or the batch it holds would be answered 500 while the server drains."""
    import subprocess
    import sys

    ids, news_id, _ = _readers(engine, 300)
    paths = [_path(unsubscribe_url(settings, sid, news_id), settings) for sid in ids]
    port = int(settings.base_url.rsplit(":", 1)[1])
    process = subprocess.Popen([sys.executable, "-m", "wip_mailer", "serve", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{settings.base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.1)
        answers: list[tuple[str, int]] = []

        async def burst() -> None:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=settings.base_url, limits=limits, timeout=30) as client:
                async def post(path: str) -> None:
                    try:
                        response = await client.post(path, data=ONE_CLICK)
                    except httpx.TransportError:
                        return  # not taken any more: the server is stopping
                    answers.append((path, response.status_code))
                    if len(answers) == 20:
                        os.killpg(process.pid, signal.SIGTERM)  # as systemd stops the service
                await asyncio.gather(*(post(path) for path in paths))

        asyncio.run(burst())
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert len(answers) >= 20 and {status for _, status in answers} == {200}
    assert "writer" not in stderr and "Traceback" not in stderr
    other = _database(settings)
    left = {row[0] for row in other.execute(
        "SELECT subscriber_id FROM membership WHERE status = 'unsubscribed'")}
    other.close()
    assert {ids[paths.index(path)] for path, _ in answers} <= left
