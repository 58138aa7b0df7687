"""Several SMTP relays with failover: ``WIP_MAILER_SMTP_RELAYS``.

The setting names the relays, with optional weight, connections and rate each::

    WIP_MAILER_SMTP_RELAYS=mx1.example.org:587 weight=2 connections=8 rate=100/s, mx2.example.org:587

or the path of a TOML file (``relays.toml``) with one ``[[relay]]`` table per relay
(``host``, ``port``, ``weight``, ``connections``, ``rate``). Every relay uses the
security, login and timeout of the ``WIP_MAILER_SMTP_*`` settings.

Each sending thread is given a relay (by weight, at most ``connections`` threads per
relay). A relay that refuses connections, or answers 421 ``TAKE_OUT_AFTER_421`` times in
a row, is taken out for ``WIP_MAILER_RELAY_BACKOFF_SECONDS`` and its threads move to the
others; the message that met the refusal had not reached its final dot, so it is sent
again there (never twice). When no relay is left, ``send`` raises ``DeliveryError`` and
the runner pauses the campaign, as with one relay.

Without the setting, the runner uses ``connection.Connection`` to ``WIP_MAILER_SMTP_HOST``
exactly as before.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wip_mailer.dispatch.connection import Connection, Outcome, SenderRefusedError, SendResult, SmtpSender
from wip_mailer.dispatch.ratelimit import Pacer, parse_rate
from wip_mailer.errors import DeliveryError, SettingsError
from wip_mailer.personalise import Outgoing
from wip_mailer.settings import Settings

TAKE_OUT_AFTER_421 = 3
_KEYS = ("weight", "connections", "rate")


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    weight: int = 1
    connections: int | None = None  # None: a share of WIP_MAILER_SMTP_CONNECTIONS by weight
    rate_per_second: float = 0.0  # 0: no limit of its own

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


def _bad(text: str, why: str) -> SettingsError:
    return SettingsError(f"WIP_MAILER_SMTP_RELAYS has a bad relay {text[:80]!r}: {why}.")


def _relay(entry: dict[str, Any], text: str, default_port: int) -> Relay:
    host = str(entry.get("host", "")).strip()
    if not host or any(c.isspace() or c in "<>,;" for c in host):
        raise _bad(text, "expected host[:port]")
    try:
        port = int(entry.get("port", default_port))
        weight = int(entry.get("weight", 1))
        connections = int(entry["connections"]) if entry.get("connections") is not None else None
        rate = entry.get("rate", 0)
        rate_per_second = parse_rate(str(rate)) if rate not in (0, "0", "", None) else 0.0
    except (TypeError, ValueError) as exc:
        raise _bad(text, str(exc) or "a number was expected") from None
    if not 1 <= port <= 65535 or not 1 <= weight <= 1000 or not 1 <= (connections or 1) <= 64:
        raise _bad(text, "port 1-65535, weight 1-1000, connections 1-64")
    return Relay(host, port, weight, connections, rate_per_second)


def parse_relays(text: str, default_port: int = 25) -> list[Relay]:
    """The relays a setting names (a list, or a ``.toml`` file); [] for an empty setting."""
    text = text.strip()
    if not text:
        return []
    if text.endswith(".toml"):
        try:
            data = tomllib.loads(Path(text).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"The relays file {text} cannot be read: {exc.strerror}.") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"The relays file {text} is not valid TOML: {exc}.") from None
        tables = data.get("relay", [])
        if not isinstance(tables, list) or not tables:
            raise SettingsError(f"The relays file {text} has no [[relay]] table.")
        relays = [_relay(dict(table), f"{text} [[relay]] {n + 1}", default_port)
                  for n, table in enumerate(tables)]
    else:
        relays = []
        for part in text.split(","):
            words = part.split()
            if not words:
                raise _bad(part, "an empty entry")
            host, _, port = words[0].rpartition(":") if ":" in words[0] else (words[0], "", "")
            entry: dict[str, Any] = {"host": host, "port": port or default_port}
            for word in words[1:]:
                key, equals, value = word.partition("=")
                if not equals or key not in _KEYS:
                    raise _bad(part, f"{word!r} is not one of weight=, connections=, rate=")
                entry[key] = value
            relays.append(_relay(entry, part.strip(), default_port))
    names = [relay.name for relay in relays]
    if len(set(names)) != len(names):
        raise SettingsError("WIP_MAILER_SMTP_RELAYS names a relay twice.")
    return relays


def relays_of(settings: Settings) -> list[Relay]:
    return parse_relays(settings.smtp_relays, settings.smtp_port)


class RelayPool:
    """The relays' health, shared by the threads of one runner."""

    def __init__(self, settings: Settings, relays: list[Relay], stop: threading.Event | None = None,
                 *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.relays = relays
        self.stop = stop
        self._clock = clock
        self._lock = threading.Lock()
        self._down_until = dict.fromkeys((r.name for r in relays), 0.0)
        self._refusals = dict.fromkeys((r.name for r in relays), 0)
        self._active = dict.fromkeys((r.name for r in relays), 0)
        self._pacers = {r.name: Pacer(r.rate_per_second) for r in relays}
        self._settings = {r.name: dataclasses.replace(settings, smtp_host=r.host, smtp_port=r.port)
                          for r in relays}
        self._slots = self._assign(settings.smtp_connections)
        self._next_slot = itertools.count()
        self.on_note: Callable[[str], None] | None = None

    @property
    def connections(self) -> int:
        """How many sending threads the relays want (their ``connections`` summed, when all set)."""
        if all(r.connections for r in self.relays):
            return sum(r.connections or 0 for r in self.relays)
        return self.settings.smtp_connections

    def _assign(self, total: int) -> list[Relay]:
        """Thread slots by weight, interleaved, at most ``connections`` per relay."""
        if all(r.connections for r in self.relays):
            counts = {r.name: r.connections or 0 for r in self.relays}
        else:
            weights = sum(r.weight for r in self.relays)
            counts = {r.name: min(r.connections or total, max(1, round(total * r.weight / weights)))
                      for r in self.relays}
        slots: list[Relay] = []
        for turn in range(max(counts.values())):
            slots.extend(r for r in self.relays if counts[r.name] > turn)
        return slots

    def runner_options(self, stop: threading.Event, on_note: Callable[[str], None] | None) -> None:
        self.stop, self.on_note = stop, on_note

    def first(self) -> Relay:
        return self._slots[next(self._next_slot) % len(self._slots)]

    def settings_for(self, relay: Relay) -> Settings:
        return self._settings[relay.name]

    def is_up(self, relay: Relay) -> bool:
        return self._clock() >= self._down_until[relay.name]

    def pick(self, current: Relay | None) -> Relay | None:
        """The relay a thread should use now: its own while it is up, else the least loaded one up."""
        with self._lock:
            if current is not None and self.is_up(current):
                return current
            up = [r for r in self.relays if self.is_up(r)]
            if not up:
                return None
            return min(up, key=lambda r: (self._active[r.name] / (r.connections or r.weight), -r.weight))

    def attach(self, relay: Relay, delta: int) -> None:
        with self._lock:
            self._active[relay.name] += delta

    def take_out(self, relay: Relay, reason: str) -> None:
        with self._lock:
            if not self.is_up(relay):
                return
            self._down_until[relay.name] = self._clock() + self.settings.relay_backoff_seconds
            self._refusals[relay.name] = 0
            note = (f"Relay {relay.name} taken out for {self.settings.relay_backoff_seconds:.0f} s "
                    f"({reason}); its messages go to the other relays.")
        if self.on_note is not None:
            self.on_note(note)

    def refused(self, relay: Relay, reply: str) -> None:
        """A 421: the relay is taken out after a few in a row."""
        with self._lock:
            self._refusals[relay.name] += 1
            many = self._refusals[relay.name] >= TAKE_OUT_AFTER_421
        if many:
            self.take_out(relay, f"{TAKE_OUT_AFTER_421} replies 421 in a row, last: {reply}")

    def accepted(self, relay: Relay) -> None:
        self._refusals[relay.name] = 0  # a lost reset under a race only delays a take-out

    def pace(self, relay: Relay) -> None:
        self._pacers[relay.name].wait(self.stop)

    def factory(self) -> Callable[[Settings], SmtpSender]:
        """What the runner calls once per sending thread for its connection."""
        return lambda settings: RelayConnection(self)


class RelayConnection:
    """A sending thread's SMTP session on its relay, moving to another when its relay is taken out
    (the same ``send``/``close`` as ``Connection``; ``relay`` names the relay of the last send)."""

    def __init__(self, pool: RelayPool):
        self.pool = pool
        self._relay: Relay = pool.first()
        self._connection = Connection(pool.settings_for(self._relay))
        pool.attach(self._relay, 1)

    @property
    def relay(self) -> str:
        return self._relay.name

    def _move(self, relay: Relay) -> None:
        self._connection.close()
        self.pool.attach(self._relay, -1)
        self._relay = relay
        self.pool.attach(relay, 1)
        self._connection = Connection(self.pool.settings_for(relay))

    def send(self, message: Outgoing, before_dot: Callable[[], bool] | None = None) -> SendResult:
        for _ in range(len(self.pool.relays) + 1):
            relay = self.pool.pick(self._relay)
            if relay is None:
                break
            if relay is not self._relay:
                self._move(relay)
            self.pool.pace(relay)
            try:
                result = self._connection.send(message, before_dot)
            except SenderRefusedError:
                raise
            except DeliveryError as exc:  # no session could be opened: nothing was sent there
                self.pool.take_out(relay, str(exc).rstrip("."))
                continue
            if result.outcome is Outcome.RETRY and result.reply.startswith("421"):
                self.pool.refused(relay, result.reply)
            elif result.outcome is Outcome.ACCEPTED:
                self.pool.accepted(relay)
            return result
        names = ", ".join(r.name for r in self.pool.relays)
        raise DeliveryError(f"No SMTP relay is left ({names} are all taken out after refusing "
                            "connections or answering 421).")

    def close(self) -> None:
        self._connection.close()
        self.pool.attach(self._relay, -1)


def relay_pool(settings: Settings) -> RelayPool | None:
    """The pool for ``WIP_MAILER_SMTP_RELAYS``, or None (one relay: today's ``Connection``)."""
    relays = relays_of(settings)
    return RelayPool(settings, relays) if relays else None


def sender_factory(pool: RelayPool | None) -> Callable[[Settings], SmtpSender]:
    return pool.factory() if pool is not None else Connection
