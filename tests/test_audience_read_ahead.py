"""A large import file is read by a forked child while the parent writes: same result, same errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from wip_mailer import db
from wip_mailer.audience import csv_import, lists, read_ahead
from wip_mailer.errors import InvalidInputError
from wip_mailer.models import ConsentEvent, Membership, Subscriber

ROWS = 6000


def _big_messy_file(path: Path) -> Path:
    """ROWS rows in blocks of ten: good ones, a malformed address, a duplicate, a bad
    language, a corrected address (trailing dot), a quoted two-line name."""
    lines = ["email;name;language;country\n"]
    for block in range(ROWS // 10):
        n = block * 10
        lines += [f"persona{n + i}@esempio{block % 7}.example.org;Persona {n + i};it;IT\n" for i in range(5)]
        lines.append(f"rotto{n}-at-esempio.org;Rotto;it;IT\n")  # malformed
        lines.append(f"persona{n}@esempio{block % 7}.example.org;Again;it;IT\n")  # duplicate of 5 back
        lines.append(f"lingua{n}@esempio.example.org;X;xx;IT\n")  # unknown language
        lines.append(f"punto{n}@esempio.example.org.;Dot;en;GB\n")  # corrected: trailing dot
        lines.append(f'"multi{n}@esempio.example.org";"Riga uno\nriga due";fr;FR\n')  # two lines
    path.write_text("".join(lines), encoding="utf-8", newline="")
    return path


def _import(url: str, path: Path, settings) -> tuple[csv_import.ImportReport, list[tuple], tuple[int, ...]]:
    engine = db.create_database(url)
    with db.session_scope(engine) as session:
        lists.create_list(session, "notizie", double_opt_in=False)
    report = csv_import.import_csv(engine, settings, path, "notizie")
    with engine.connect() as connection:
        people = connection.execute(sa.select(Subscriber.__table__.c.email, Subscriber.__table__.c.name,  # type: ignore[attr-defined]
                                              Subscriber.__table__.c.language)  # type: ignore[attr-defined]
                                    .order_by(Subscriber.__table__.c.email)).all()  # type: ignore[attr-defined]
        counts = tuple(connection.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()
                       for model in (Subscriber, Membership, ConsentEvent))
    engine.dispose()
    return report, [tuple(p) for p in people], counts


def test_a_file_read_in_a_child_gives_exactly_the_in_process_result(settings, tmp_path, monkeypatch) -> None:
    source = _big_messy_file(tmp_path / "grande.csv")
    pid_file = tmp_path / "reader.pid"
    produce = read_ahead._produce

    def produce_and_say_who(rows, sender) -> None:
        pid_file.write_text(str(os.getpid()))
        produce(rows, sender)

    monkeypatch.setattr(read_ahead, "_produce", produce_and_say_who)
    monkeypatch.setattr(read_ahead, "MIN_LINES", 10**9)
    alone, alone_people, alone_counts = _import(f"sqlite:///{tmp_path / 'alone.db'}", source, settings)
    assert not pid_file.exists()  # in-process: no child was made
    monkeypatch.setattr(read_ahead, "MIN_LINES", 1000)
    forked, forked_people, forked_counts = _import(f"sqlite:///{tmp_path / 'forked.db'}", source, settings)
    assert int(pid_file.read_text()) != os.getpid()  # the rows came from another process

    assert forked.rows == alone.rows == ROWS
    assert (forked.added, forked.updated, forked.unchanged) == (alone.added, alone.updated, alone.unchanged)
    assert forked.added == ROWS // 10 * 7  # 5 good, the corrected one, the two-line one per block
    assert [(r.line, r.reason, r.values) for r in forked.rejected] == [
        (r.line, r.reason, r.values) for r in alone.rejected]
    assert len(forked.rejected) == ROWS // 10 * 3
    assert [(c.line, c.before, c.after) for c in forked.corrections] == [
        (c.line, c.before, c.after) for c in alone.corrections]
    assert len(forked.corrections) == ROWS // 10
    assert forked_people == alone_people and forked_counts == alone_counts
    assert ("multi0@esempio.example.org", "Riga uno riga due", "fr") in forked_people
    # physical line numbers survive the trip: a block is 11 lines (one row spans two), so
    # block 1 starts on line 13 and its duplicate, on line 19, repeats line 13
    assert any(r.line == 19 and "duplicate of line 13" in r.reason for r in forked.rejected)


def _rows_then(error: BaseException, count: int) -> Iterator[int]:
    yield from range(count)
    raise error


class _Unpicklable(Exception):
    def __init__(self, text: str, extra: object) -> None:
        super().__init__(text)
        self.extra = extra

    def __reduce__(self):
        raise TypeError("cannot pickle")


def test_an_error_while_reading_is_raised_in_the_parent_after_the_rows_before_it(monkeypatch) -> None:
    monkeypatch.setattr(read_ahead, "MIN_LINES", 1)
    received: list[int] = []
    failing = _rows_then(InvalidInputError("line 2501 cannot be read"), 2500)
    with pytest.raises(InvalidInputError, match="line 2501 cannot be read"):
        for row in read_ahead.read_ahead(failing, 2600):
            received.append(row)
    assert received == list(range(2500))
    with pytest.raises(InvalidInputError, match="odd failure"):
        list(read_ahead.read_ahead(_rows_then(_Unpicklable("odd failure", lambda: 0), 10), 20))


def test_a_parent_that_stops_early_leaves_no_child_behind(monkeypatch) -> None:
    import multiprocessing

    monkeypatch.setattr(read_ahead, "MIN_LINES", 1)
    rows = read_ahead.read_ahead(iter(range(10**6)), 10**6)
    assert next(rows) == 0
    assert multiprocessing.active_children()  # the reader runs
    rows.close()  # e.g. the import failed on a database error
    assert multiprocessing.active_children() == []


def test_a_reader_killed_midway_is_one_sentence_not_a_hang(monkeypatch) -> None:
    import multiprocessing
    import signal

    monkeypatch.setattr(read_ahead, "MIN_LINES", 1)
    rows = read_ahead.read_ahead(iter(range(10**7)), 10**7)
    assert next(rows) == 0
    (child,) = multiprocessing.active_children()
    os.kill(child.pid, signal.SIGKILL)  # e.g. the kernel's out-of-memory killer
    with pytest.raises(InvalidInputError, match="its reader process ended"):
        for _ in rows:
            pass
