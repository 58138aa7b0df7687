"""Substack: ``email,active_subscription,expiry,email_disabled,prefer_digests,created_at``;
``email_disabled=true`` means the person stopped the emails (kept as unsubscribed)."""

from __future__ import annotations

from typing import ClassVar

from wip_mailer.audience.formats.base import Cell, Standing, TableFormat, event_at, is_true, time_of


class Substack(TableFormat):
    name = "substack"
    label = "Substack"
    signature = frozenset({"email", "activesubscription", "emaildisabled"})
    roles: ClassVar[dict[str, str]] = {
        "email": "email", "name": "name", "emaildisabled": "email_disabled",
        "createdat": "created_at",
    }

    def standing(self, cell: Cell) -> Standing:
        joined = event_at("subscribe", time_of(cell, "created_at", "created_at"))
        events = (joined,) if joined else ()
        return Standing("unsubscribed" if is_true(cell("email_disabled")) else "active", events)
