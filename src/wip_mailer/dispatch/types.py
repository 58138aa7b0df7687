"""The values the sending entry points take and return."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class SendRequest:
    slug: str
    lists: tuple[str, ...]
    segment: str | None = None
    dry_run: bool = False
    test_to: tuple[str, ...] = ()
    connections: int | None = None  # None: settings.smtp_connections
    rate_per_second: float | None = None  # None: settings.rate_per_second
    resume: bool = False
    resend_in_doubt: bool = False  # on resume: resend the messages left in doubt by a crash


class SummaryStatus(StrEnum):
    """How a call of `send_edition`/`resume_campaign` ended (a campaign's status, or no campaign)."""

    FINISHED = "finished"
    PAUSED = "paused"
    SENDING = "sending"  # this process lost its lease: another one carries the campaign on
    DRY_RUN = "dry-run"
    TEST = "test"
    NOT_CONFIRMED = "not-confirmed"


@dataclass
class CampaignSummary:
    campaign_id: int | None
    recipients: int
    sent: int
    deferred: int
    failed: int
    skipped: int
    in_doubt: int
    status: SummaryStatus
    queued: int = 0
    bytes_built: int = 0  # dry run: total size of the messages built
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
