"""listmonk: its import format ``email,name,attributes`` (attributes a JSON object) and its
export ``uuid,email,name,attributes,status,created_at,updated_at``.

Statuses: ``enabled`` is active; ``disabled`` is kept as unsubscribed (listmonk sends it
nothing); ``blocklisted`` is unsubscribed and suppressed, so no list here mails them.
"""

from __future__ import annotations

from typing import ClassVar

from wip_mailer.audience.formats.base import Cell, Standing, TableFormat, event_at, time_of


class Listmonk(TableFormat):
    name = "listmonk"
    label = "listmonk"
    signature = frozenset({"email", "name", "attributes"})
    roles: ClassVar[dict[str, str]] = {
        "email": "email", "name": "name", "attributes": "attributes", "status": "status",
        "createdat": "created_at",
    }
    json_roles = frozenset({"attributes"})

    def standing(self, cell: Cell) -> Standing:
        joined = event_at("subscribe", time_of(cell, "created_at", "created_at"))
        events = (joined,) if joined else ()
        status = cell("status").lower()
        if status in ("", "enabled"):
            return Standing("active", events)
        if status == "disabled":
            return Standing("unsubscribed", events)
        if status == "blocklisted":
            return Standing("unsubscribed", events, suppress="blocklisted")
        raise ValueError(f"the status is {cell('status')!r}; listmonk's are enabled, disabled, blocklisted")
