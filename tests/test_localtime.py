"""Times shown to a person are in WIP_MAILER_TIMEZONE with the zone's name."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from wip_mailer.localtime import LocalTimeFormatter, format_local

ROME = ZoneInfo("Europe/Rome")


def test_format_local_converts_and_names_the_zone() -> None:
    assert format_local(datetime(2024, 3, 1, 8, 0, tzinfo=UTC), ROME) == "2024-03-01 09:00 CET"
    assert format_local(datetime(2024, 7, 1, 7, 0, 30, tzinfo=UTC), ROME) == "2024-07-01 09:00:30 CEST"


def test_log_lines_are_stamped_in_the_zone() -> None:
    formatter = LocalTimeFormatter("%(asctime)s %(levelname)s %(message)s", ZoneInfo("America/New_York"))
    record = logging.makeLogRecord({"msg": "Scheduler started", "levelname": "INFO",
                                    "created": datetime(2024, 1, 15, 12, 0, tzinfo=UTC).timestamp()})
    assert formatter.format(record) == "2024-01-15 07:00:00 EST INFO Scheduler started"


def test_the_scheduler_log_uses_the_zone(tmp_path, engine, settings) -> None:
    from tests.schedule_helpers import SchedulerProcess, process_env

    scheduler = SchedulerProcess(tmp_path, process_env(settings, 2525, timezone="Asia/Tokyo"), "tz")
    assert scheduler.wait_for("Scheduler started"), scheduler.log
    assert scheduler.stop() == 0
    line = next(line for line in scheduler.log.splitlines() if "Scheduler started" in line)
    assert " JST INFO " in line
