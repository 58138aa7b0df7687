"""Reading an import file in a second process while this one writes: both cores at work.

Reading and checking a row (CSV, address, values, times) costs about as much as writing
it, and Python runs one of them at a time in a process. For a large file the rows are
therefore parsed by a forked child, which sends them in batches through a pipe while the
parent applies the batches before it to the database; the parent receives exactly the
objects, in exactly the order, that iterating in-process would give, and an exception
raised while reading is raised again in the parent at the same place.

The child only reads the file: it never touches the database or the parent's sessions,
and it leaves as multiprocessing's fork start does, without the parent's exit handlers.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import TypeVar

from wip_mailer.errors import InvalidInputError

T = TypeVar("T")

BATCH = 1000  # rows per message: large enough to amortise pickling, small enough to overlap
MIN_LINES = 20_000  # below this a file is read in-process (a fork costs more than it saves)


def read_ahead(rows: Iterator[T], lines: int) -> Iterator[T]:
    """``rows``, produced by a forked child when the file has ``lines`` >= ``MIN_LINES``."""
    if lines < MIN_LINES or not _can_fork():
        yield from rows
        return
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_produce, args=(rows, sender), name="import-reader", daemon=True)
    child.start()
    sender.close()
    try:
        while True:
            try:
                kind, payload = receiver.recv()
            except EOFError:
                raise InvalidInputError("Reading the file stopped: its reader process ended.") from None
            if kind == "rows":
                yield from payload
            elif kind == "error":
                raise payload
            else:
                return
    finally:
        receiver.close()
        if child.is_alive():
            child.terminate()
        child.join()


def _can_fork() -> bool:
    return hasattr(os, "fork") and sys.platform != "darwin"  # macOS: fork with threads is unsafe


def _produce(rows: Iterator[object], sender: Connection) -> None:
    batch: list[object] = []
    try:
        for row in rows:
            batch.append(row)
            if len(batch) >= BATCH:
                sender.send(("rows", batch))
                batch = []
        sender.send(("rows", batch))
        batch = []
        sender.send(("done", None))
    except BaseException as exc:  # raised again in the parent, where the import is
        try:
            pickle.dumps(exc)
        except Exception:
            exc = InvalidInputError(str(exc))
        try:
            sender.send(("rows", batch))  # the rows read before the error come first
            sender.send(("error", exc))
        except (BrokenPipeError, OSError):
            pass  # the parent has stopped reading: it is leaving already
    finally:
        sender.close()
