"""Keila: ``Email,First name,Last name,Data,External ID[,Status]``; ``Data`` is a JSON
object (kept as attributes); statuses ``active``, ``unsubscribed``, ``unreachable``
(bounced: suppressed)."""

from __future__ import annotations

from typing import ClassVar

from wip_mailer.audience.formats.base import Cell, Standing, TableFormat


class Keila(TableFormat):
    name = "keila"
    label = "Keila"
    signature = frozenset({"email", "firstname", "lastname", "data", "externalid"})
    roles: ClassVar[dict[str, str]] = {
        "email": "email", "firstname": "first_name", "lastname": "last_name", "data": "data",
        "status": "status",
    }
    json_roles = frozenset({"data"})

    def standing(self, cell: Cell) -> Standing:
        status = cell("status").lower()
        if status in ("", "active"):
            return Standing("active")
        if status == "unsubscribed":
            return Standing("unsubscribed")
        if status == "unreachable":
            return Standing("bounced", suppress="bounced")
        raise ValueError(f"the status is {cell('status')!r}; Keila's are active, unsubscribed, unreachable")
