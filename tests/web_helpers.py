"""What the web endpoint's tests share: a membership's state, a link's path."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import select

from wip_mailer import db
from wip_mailer.models import Membership


def membership_status(engine: Engine, subscriber_id: int, list_id: int) -> str | None:
    with db.session_scope(engine) as session:
        return session.exec(select(Membership.status).where(
            Membership.subscriber_id == subscriber_id, Membership.list_id == list_id)).first()


def path_of(url: str, base: str) -> str:
    """The path of one of our links (``url`` under ``base``, the settings' base URL)."""
    assert url.startswith(base)
    return url[len(base):]
