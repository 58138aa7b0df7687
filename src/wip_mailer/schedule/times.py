"""Reading and showing the times editors give: one-off instants, cron expressions, DST."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from wip_mailer.db import utcnow
from wip_mailer.errors import InvalidInputError
from wip_mailer.localtime import format_local
from wip_mailer.models import (
    ScheduledJob,
)

_AT_PATTERN = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?"
)



# --- reading and showing times ---------------------------------------------------------

def parse_at(text: str, tz: ZoneInfo, now: datetime | None = None) -> datetime:
    """``YYYY-MM-DD HH:MM[:SS]`` in ``tz``, or ISO 8601 with an offset, as aware UTC.

    A wall-clock time that does not exist (the spring-forward gap) or exists twice (the
    autumn fold) in ``tz`` is refused rather than guessed; a time in the past is refused.
    """
    raw = text.strip()
    if not _AT_PATTERN.fullmatch(raw):
        raise InvalidInputError(
            f"The time {text!r} is not in the form YYYY-MM-DD HH:MM[:SS] ({tz.key} time) "
            "or ISO 8601 with an offset such as 2024-03-01T09:00+01:00."
        )
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInputError(f"The time {text!r} is not a valid date and time.") from None
    if value.tzinfo is None:
        value = _localise(value, tz)
    value = value.astimezone(UTC)
    now = now or utcnow()
    if value <= now:
        raise InvalidInputError(
            f"The time {text!r} ({format_local(value, tz)}) is in the past: give a future time."
        )
    return value


def _localise(naive: datetime, tz: ZoneInfo) -> datetime:
    earlier, later = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    if earlier.utcoffset() == later.utcoffset():
        return earlier
    shown = naive.strftime("%Y-%m-%d %H:%M")
    if earlier.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
        raise InvalidInputError(
            f"{shown} does not exist in {tz.key} (the clocks go forward that night): "
            "choose another time."
        )
    iso = naive.strftime("%Y-%m-%dT%H:%M")
    raise InvalidInputError(
        f"{shown} happens twice in {tz.key} (the clocks go back that night): give the offset, "
        f"{iso}{_offset(earlier)} or {iso}{_offset(later)}."
    )


def _offset(value: datetime) -> str:
    text = value.strftime("%z")
    return f"{text[:3]}:{text[3:]}"


def parse_cron(expression: str, tz: ZoneInfo) -> CronTrigger:
    """A crontab line (minute hour day month weekday) read in ``tz``."""
    try:
        trigger = CronTrigger.from_crontab(expression.strip(), timezone=tz)
    except ValueError as exc:
        raise InvalidInputError(
            f"The cron rule {expression!r} is not valid ({exc}); write five fields, "
            "minute hour day month weekday, e.g. '0 9 * * mon'."
        ) from None
    if trigger.get_next_fire_time(None, datetime.now(tz)) is None:
        raise InvalidInputError(f"The cron rule {expression!r} never fires again.")
    return trigger


def make_trigger(job: ScheduledJob) -> BaseTrigger:
    tz = ZoneInfo(job.timezone)
    if job.cron:
        return parse_cron(job.cron, tz)
    assert job.run_at is not None
    return DateTrigger(run_date=job.run_at, timezone=tz)



def _duration(value: timedelta) -> str:
    seconds = max(0, int(value.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"
