"""What came back: the processed messages, for `bounces list` and `bounces show`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import col, select

from wip_mailer.db import session_scope
from wip_mailer.errors import InvalidInputError, NotFoundError
from wip_mailer.models import InboundKind, InboundMessage

UNMATCHED = "unmatched"


def list_inbound(engine: Engine, *, since: datetime | None = None, kind: str | None = None,
                 limit: int = 1000) -> list[dict[str, Any]]:
    """The processed messages, newest first; ``kind`` may also be ``unmatched``."""
    known = [k.value for k in InboundKind]
    if kind is not None and kind not in (*known, UNMATCHED):
        raise InvalidInputError(f"Unknown kind {kind!r}: use one of {', '.join(known)} or {UNMATCHED}.")
    query = select(InboundMessage).order_by(col(InboundMessage.received_at).desc(),
                                            col(InboundMessage.id).desc()).limit(limit)
    if since is not None:
        query = query.where(col(InboundMessage.received_at) >= since)
    if kind == UNMATCHED:
        query = query.where(col(InboundMessage.matched).is_(False),
                            col(InboundMessage.kind).in_(["hard", "soft", "complaint", "unsubscribe"]))
    elif kind is not None:
        query = query.where(col(InboundMessage.kind) == kind)
    with session_scope(engine) as session:
        return [_row(message) for message in session.exec(query).all()]


def _row(message: InboundMessage) -> dict[str, Any]:
    return {"id": message.id, "received_at": message.received_at, "source": message.source,
            "kind": message.kind, "matched": message.matched, "campaign_id": message.campaign_id,
            "delivery_id": message.delivery_id, "recipients": message.recipients,
            "subject": message.subject, "effect": message.effect, "kept": message.raw is not None}


def inbound_message(engine: Engine, message_id: int) -> tuple[dict[str, Any], bytes | None]:
    with session_scope(engine) as session:
        message = session.get(InboundMessage, message_id)
        if message is None:
            raise NotFoundError(f"There is no received message {message_id}.")
        return _row(message), message.raw
