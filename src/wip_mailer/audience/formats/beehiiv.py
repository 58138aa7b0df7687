"""beehiiv: ``email,First Name,Last Name,status,tier,created_at,...,unsubscribed_at``.

Statuses: ``active``; ``inactive`` (or an ``unsubscribed_at``) is unsubscribed;
``pending`` and ``validating`` await confirmation; ``invalid`` is bounced (suppressed).
"""

from __future__ import annotations

from typing import ClassVar

from wip_mailer.audience.formats.base import Cell, Standing, TableFormat, event_at, time_of


class Beehiiv(TableFormat):
    name = "beehiiv"
    label = "beehiiv"
    signature = frozenset({"email", "status", "tier"})
    roles: ClassVar[dict[str, str]] = {
        "email": "email", "firstname": "first_name", "lastname": "last_name", "status": "status",
        "createdat": "created_at", "unsubscribedat": "unsubscribed_at",
    }

    def standing(self, cell: Cell) -> Standing:
        joined = event_at("subscribe", time_of(cell, "created_at", "created_at"))
        events = (joined,) if joined else ()
        status = cell("status").lower()
        left = time_of(cell, "unsubscribed_at", "unsubscribed_at")
        if status == "inactive" or left:
            gone = event_at("unsubscribe", left)
            return Standing("unsubscribed", events + ((gone,) if gone else ()))
        if status in ("", "active"):
            return Standing("active", events)
        if status in ("pending", "validating"):
            return Standing("pending", events)
        if status == "invalid":
            return Standing("bounced", events, suppress="bounced")
        raise ValueError(f"the status is {cell('status')!r}; beehiiv's are active, inactive, pending, "
                         "validating, invalid")
