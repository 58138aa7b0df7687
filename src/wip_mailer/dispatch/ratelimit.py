"""Rate limits shared by all sending threads: messages per second and per hour.

Each limit is a GCRA pacer (the "virtual scheduling" form of a token bucket): a
caller reserves the next free slot under a lock and sleeps outside it, so threads
queue fairly and the limit holds over any window. The per-second limit allows a
burst of one second's worth; the per-hour limit spaces messages evenly, so no
sliding hour ever holds more than the limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class _Gcra:
    def __init__(self, interval: float, burst: int):
        self.interval = interval
        self.tolerance = interval * max(burst - 1, 0)
        self.tat = 0.0  # theoretical arrival time of the next message

    def reserve(self, now: float) -> float:
        """Take the next slot; returns how long to wait for it."""
        tat = max(self.tat, now)
        self.tat = tat + self.interval
        return max(0.0, tat - self.tolerance - now)


class Pacer:
    """Blocks each message until every configured limit allows it (0 = no limit)."""

    def __init__(self, per_second: float = 0.0, per_hour: int = 0, *,
                 clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._limits: list[_Gcra] = []
        if per_second > 0:
            self._limits.append(_Gcra(1.0 / per_second, burst=max(1, int(per_second))))
        if per_hour > 0:
            self._limits.append(_Gcra(3600.0 / per_hour, burst=1))

    @property
    def limited(self) -> bool:
        return bool(self._limits)

    def delay(self) -> float:
        """Reserve a slot for one message and return the seconds to wait before sending it."""
        if not self._limits:
            return 0.0
        with self._lock:
            now = self._clock()
            return max(limit.reserve(now) for limit in self._limits)

    def wait(self, stop: threading.Event | None = None) -> None:
        seconds = self.delay()
        if seconds > 0:
            if stop is not None:
                stop.wait(seconds)
            else:
                time.sleep(seconds)


def parse_rate(text: str) -> float:
    """``"50/s"``, ``"50"`` or ``"3000/min"`` → messages per second."""
    value, _, unit = text.strip().lower().partition("/")
    per = {"": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
           "h": 3600.0, "hour": 3600.0}.get(unit.strip())
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if per is None or number <= 0:
        raise ValueError(f"{text!r} is not a rate such as 50/s, 3000/min or 20000/h")
    return number / per
