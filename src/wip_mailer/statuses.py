"""The states the tables store, as short strings (portable between SQLite and PostgreSQL, no
database enum types to migrate); each StrEnum names the allowed values of one column.

Kept apart from models.py so that code which only reads or shows a state (the list and
show commands) does not load SQLAlchemy's ORM and SQLModel with the tables.
"""

from __future__ import annotations

from enum import StrEnum


class EditionStatus(StrEnum):
    DRAFT = "draft"
    READY = "ready"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"


class ItemStatus(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    REJECTED = "rejected"


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class MembershipStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"


class CampaignStatus(StrEnum):
    SENDING = "sending"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class DeliveryState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # claimed by a running sender; recovered by the next resume after a crash
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"  # unsubscribed or suppressed after the campaign froze its recipients
    IN_DOUBT = "in_doubt"  # handed to the server, no reply seen (crash or timeout): not resent by default


class InboundKind(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    DELAY = "delay"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    AUTO_REPLY = "auto-reply"
    NOT_A_BOUNCE = "not-a-bounce"


class ScheduleKind(StrEnum):
    SEND = "send"  # send the edition (the same path as `wip-mailer send`)
    CHECK = "check"  # run the pre-flight check and record its verdict
    REMINDER = "reminder"  # email the editors a reminder about the edition


class ScheduleStatus(StrEnum):
    SCHEDULED = "scheduled"  # waiting for its time (a recurring job returns here after each run)
    RUNNING = "running"  # claimed by a scheduler; never claimed twice
    DONE = "done"
    FAILED = "failed"
    MISSED = "missed"  # its time passed beyond the grace window while no scheduler ran
    CANCELLED = "cancelled"
