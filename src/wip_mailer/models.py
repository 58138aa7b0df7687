"""The domain tables (SQLModel). Behaviour lives in the pipeline modules.

States are stored as short strings (portable between SQLite and PostgreSQL, no
database enum types to migrate); the StrEnums below name the allowed values.
Timestamps are timezone-aware UTC in Python (see ``db.UTCDateTime``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import ConfigDict
from sqlalchemy import JSON, Column, Float, Index, LargeBinary, Table, Unicode, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from wip_mailer.db import UTCDateTime, utcnow
from wip_mailer.statuses import (
    CampaignStatus,
    DeliveryState,
    EditionStatus,
    InboundKind,
    ItemStatus,
    MembershipStatus,
    ScheduleKind,
    ScheduleStatus,
    SubscriberStatus,
)

__all__ = [  # the states live in statuses.py (no SQLAlchemy); named here too, as before
    "CampaignStatus", "DeliveryState", "EditionStatus", "InboundKind", "ItemStatus", "MembershipStatus",
    "ScheduleKind", "ScheduleStatus", "SubscriberStatus",
]


def _utc(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _created() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


def _json(default_factory: Any) -> Any:
    return Field(default_factory=default_factory, sa_column=Column(JSON, nullable=False))


class _Table(SQLModel):
    """The base of every table class: the tables are never validated as pydantic models, so
    pydantic builds their validators only if one is ever asked for (start-up time)."""

    model_config = ConfigDict(defer_build=True)  # type: ignore[assignment]


# --- editorial ---------------------------------------------------------------------------

class Edition(_Table, table=True):
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, index=True, max_length=64)
    title: str = Field(max_length=200)  # the period label, e.g. "Gennaio-Febbraio 2024"
    period_start: date | None = None
    period_end: date | None = None
    language: str = Field(default="it", max_length=8)
    status: str = Field(default=EditionStatus.DRAFT, max_length=16)
    subject: str | None = Field(default=None, max_length=300)  # None: derived from the title
    # Edition metadata that is not an item: the masthead credit line, the contact footer.
    meta: dict[str, Any] = _json(dict)
    created_at: datetime = _created()
    updated_at: datetime = _created()
    sent_at: datetime | None = _utc()


class Section(_Table, table=True):
    __table_args__ = (UniqueConstraint("edition_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    edition_id: int = Field(foreign_key="edition.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=120)
    position: int = 0
    intro_md: str = ""  # free text shown under the section heading


class Item(_Table, table=True):
    id: int | None = Field(default=None, primary_key=True)
    edition_id: int = Field(foreign_key="edition.id", index=True, ondelete="CASCADE")
    section_id: int = Field(foreign_key="section.id", index=True, ondelete="CASCADE")
    title: str = Field(max_length=500)
    date_label: str | None = Field(default=None, max_length=120)  # exactly as the editor wrote it
    start_date: date | None = None
    end_date: date | None = None
    body_md: str = ""
    links: list[dict[str, Any]] = _json(list)  # [{"text", "url", "placeholder"}]
    image_url: str | None = None
    image_alt: str | None = None
    position: int | None = None
    status: str = Field(default=ItemStatus.DRAFT, max_length=16)
    status_by: str | None = Field(default=None, max_length=120)
    status_at: datetime | None = _utc()
    source_key: str | None = Field(default=None, max_length=64, index=True)  # import identity
    created_at: datetime = _created()
    updated_at: datetime = _created()


# --- audience ----------------------------------------------------------------------------

class Subscriber(_Table, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True, max_length=320)  # normalised, lower-case
    name: str = Field(default="", max_length=200)
    language: str = Field(default="it", max_length=8)
    organisation: str = Field(default="", max_length=200)
    country: str = Field(default="", max_length=2)
    tags: list[str] = _json(list)
    attributes: dict[str, Any] = _json(dict)
    status: str = Field(default=SubscriberStatus.ACTIVE, max_length=16, index=True)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class MailingList(_Table, table=True):
    __tablename__ = "mailing_list"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=64)
    description: str = ""
    language: str = Field(default="it", max_length=8)
    double_opt_in: bool = True
    # Offered on the public subscribe form and on every subscriber's preferences page.
    public: bool = False
    created_at: datetime = _created()


class Membership(_Table, table=True):
    __table_args__ = (UniqueConstraint("subscriber_id", "list_id"),)
    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True, ondelete="CASCADE")
    list_id: int = Field(foreign_key="mailing_list.id", index=True, ondelete="CASCADE")
    status: str = Field(default=MembershipStatus.ACTIVE, max_length=16)
    subscribed_at: datetime = _created()
    confirmed_at: datetime | None = _utc()
    unsubscribed_at: datetime | None = _utc()


class ConsentEvent(_Table, table=True):
    """Proof of consent (GDPR art. 7): who agreed or withdrew, when, how."""

    __tablename__ = "consent_event"
    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int | None = Field(
        default=None, foreign_key="subscriber.id", index=True, ondelete="CASCADE"
    )
    list_id: int | None = Field(default=None, foreign_key="mailing_list.id", ondelete="SET NULL")
    kind: str = Field(max_length=32)  # subscribe | confirm | unsubscribe | erase | ...
    at: datetime = _created()
    source: str = Field(default="", max_length=200)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=400)
    text_version: str | None = Field(default=None, max_length=64)
    # Why, when the source said so (e.g. the unsubscribe reason an imported export gives).
    detail: str | None = Field(default=None, max_length=500)
    # The campaign whose unsubscribe link (or mailto) was used: reports attribute leaves to sends.
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", index=True,
                                    ondelete="SET NULL")


class Suppression(_Table, table=True):
    """Addresses that must never be mailed again, kept only as a hash."""

    id: int | None = Field(default=None, primary_key=True)
    email_hash: str = Field(unique=True, index=True, max_length=64)  # sha256 of normalised email
    reason: str = Field(max_length=32)  # unsubscribed | bounced | complained | erased | manual
    detail: str = ""
    created_at: datetime = _created()


# --- dispatch ----------------------------------------------------------------------------

# At most one unfinished campaign per edition: a second `send` cannot start beside one.
_ACTIVE_CAMPAIGN = "status IN ('sending', 'paused')"


# Only SQLite's predicate is given here: naming a second dialect's option makes SQLAlchemy
# import that dialect, which every command would pay for at start-up. PostgreSQL's is added
# by ``add_postgresql_options`` when a PostgreSQL engine is made (migration 0301 has both).
_ACTIVE_CAMPAIGN_INDEX = Index("uq_campaign_active_edition", "edition_id", unique=True,
                               sqlite_where=text(_ACTIVE_CAMPAIGN))


def add_postgresql_options() -> None:
    """The PostgreSQL options of the tables (see ``_ACTIVE_CAMPAIGN_INDEX``); safe to repeat."""
    _ACTIVE_CAMPAIGN_INDEX.dialect_options["postgresql"]["where"] = text(_ACTIVE_CAMPAIGN)


class Campaign(_Table, table=True):
    __table_args__ = (_ACTIVE_CAMPAIGN_INDEX,)
    id: int | None = Field(default=None, primary_key=True)
    edition_id: int = Field(foreign_key="edition.id", index=True)
    audience: dict[str, Any] = _json(dict)  # {"lists": [...], "segment": "..."}
    status: str = Field(default=CampaignStatus.SENDING, max_length=16)
    recipient_count: int = 0
    summary: dict[str, Any] = _json(dict)
    # The message as frozen when the campaign started: a resume sends exactly the same email.
    subject: str = ""
    body_html: str = ""
    body_text: str = ""
    # Set by `campaigns pause|cancel` from any process; the sender polls it and stops.
    stop_request: str | None = Field(default=None, max_length=16)
    created_at: datetime = _created()
    started_at: datetime | None = _utc()
    finished_at: datetime | None = _utc()


class Delivery(_Table, table=True):
    """The ledger: one row per (campaign, subscriber); never two messages for one row."""

    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id"),
        Index("ix_delivery_queue", "campaign_id", "state", "next_attempt_at"),
        # A claim takes the lowest ids in a state: read in order from here, not sorted per claim.
        Index("ix_delivery_claim", "campaign_id", "state", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", ondelete="CASCADE")
    subscriber_id: int | None = Field(
        default=None, foreign_key="subscriber.id", index=True, ondelete="SET NULL"
    )
    list_id: int | None = Field(default=None, foreign_key="mailing_list.id", ondelete="SET NULL")
    email: str = Field(max_length=320)  # frozen at campaign start; blanked on erasure
    state: str = Field(default=DeliveryState.QUEUED, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = _utc()
    first_attempt_at: datetime | None = _utc()  # retries of 4xx replies stop a deadline after it
    last_reply: str = ""
    message_id: str | None = Field(default=None, max_length=200, index=True)
    worker: str | None = Field(default=None, max_length=120)
    relay: str | None = Field(default=None, max_length=120)  # the SMTP relay that accepted it
    updated_at: datetime = _created()
    sent_at: datetime | None = _utc()


class BounceEvent(_Table, table=True):
    """One bounce or complaint about an address: at send time (SMTP 5xx) or read back later."""

    __tablename__ = "bounce_event"
    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int | None = Field(
        default=None, foreign_key="delivery.id", index=True, ondelete="SET NULL"
    )
    email_hash: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=16)  # hard | soft | complaint
    diagnostic: str = ""
    status: str = Field(default="", max_length=16)  # RFC 3463 code, e.g. 5.1.1
    source: str = Field(default="", max_length=32)  # smtp (at send time) | dsn | arf | ...
    received_at: datetime = _created()


class InboundMessage(_Table, table=True):
    """A message that came back to the bounce address, processed once (feedback stage).

    ``message_key`` (its Message-ID, or a hash of its bytes) makes processing it again a
    no-op. A message that matched no delivery or subscriber keeps its bytes for inspection.
    """

    __tablename__ = "inbound_message"
    id: int | None = Field(default=None, primary_key=True)
    message_key: str = Field(unique=True, max_length=200)
    source: str = Field(default="", max_length=16)  # mbox | maildir | imap | smtp
    kind: str = Field(max_length=16, index=True)  # an InboundKind
    matched: bool = False
    delivery_id: int | None = Field(default=None, foreign_key="delivery.id", ondelete="SET NULL")
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", ondelete="SET NULL")
    subscriber_id: int | None = Field(
        default=None, foreign_key="subscriber.id", index=True, ondelete="SET NULL"
    )
    recipients: list[dict[str, Any]] = _json(list)  # [{"address", "status", "action", "diagnostic"}]
    subject: str = Field(default="", max_length=300)
    effect: str = Field(default="", max_length=300)  # what processing did, in words
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    received_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False,
                                                                           index=True))


# --- schedule ----------------------------------------------------------------------------

class ScheduledJob(_Table, table=True):
    """What editors scheduled, and what became of it: the record `schedule list` shows.

    The timing itself lives in APScheduler's job store (``apscheduler_jobs``, job id
    ``schedule-<id>``); this row decides whether a firing may run (status scheduled → running
    is one conditional UPDATE) and keeps the outcome.
    """

    __tablename__ = "scheduled_job"
    id: int | None = Field(default=None, primary_key=True)
    edition_id: int = Field(foreign_key="edition.id", index=True, ondelete="CASCADE")
    kind: str = Field(default=ScheduleKind.SEND, max_length=16)
    run_at: datetime | None = _utc()  # a one-off job
    cron: str | None = Field(default=None, max_length=120)  # a recurring job (crontab fields)
    timezone: str = Field(default="Europe/Rome", max_length=64)  # how the editor's time was read
    lists: list[str] = _json(list)
    segment: str | None = None
    notify: list[str] = _json(list)  # reminder recipients
    status: str = Field(default=ScheduleStatus.SCHEDULED, max_length=16, index=True)
    edition_status_before: str | None = Field(default=None, max_length=16)  # restored on cancel
    message: str = ""  # the outcome of the last run, or why it did not run
    run_count: int = 0
    last_run_at: datetime | None = _utc()
    claimed_by: str | None = Field(default=None, max_length=120)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class LeaseRecord(_Table, table=True):
    """A lease (see ``wip_mailer.lease``): ``scheduler``, ``campaign:ID``; its token fences writes."""

    __tablename__ = "lease"
    name: str = Field(primary_key=True, max_length=64)
    token: str = Field(max_length=120)  # host:pid:random, new for every acquisition
    acquired_at: datetime = _created()
    expires_at: datetime = _created()


# APScheduler's SQLAlchemyJobStore table, declared here (same columns as the job store's own
# definition) so that Alembic creates it and sees it as part of the schema.
apscheduler_jobs = Table(
    "apscheduler_jobs",
    SQLModel.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
