"""Times as a person reads them: in WIP_MAILER_TIMEZONE, always with the zone's name.

Times are stored and compared in UTC; only what is shown (command output, the scheduler's
log lines) is converted here.
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo


def format_local(value: datetime, tz: ZoneInfo) -> str:
    """``2024-03-01 09:00 CET``: how an editor reads a stored UTC time."""
    local = value.astimezone(tz)
    seconds = ":%S" if local.second else ""
    return local.strftime(f"%Y-%m-%d %H:%M{seconds} %Z")


class LocalTimeFormatter(logging.Formatter):
    """Log lines stamped in ``tz`` with the zone (``2024-03-01 09:00:00 CET``), not the host's."""

    def __init__(self, fmt: str, tz: ZoneInfo) -> None:
        super().__init__(fmt)
        self.tz = tz

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, self.tz).strftime(datefmt or "%Y-%m-%d %H:%M:%S %Z")
