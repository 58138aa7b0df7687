"""Curated's subscriber export: ``Email Address,Subscribed at,UTM Source,UTM Medium,UTM
Term,UTM Content,UTM Campaign,UTM Last Path,UTM Referrer`` (times like
``2021-02-04 07:55:20 +0000``); the UTM columns are kept as attributes."""

from __future__ import annotations

from typing import ClassVar

from wip_mailer.audience.formats.base import Cell, Standing, TableFormat, event_at, time_of


class Curated(TableFormat):
    name = "curated"
    label = "Curated"
    signature = frozenset({"emailaddress", "subscribedat"})
    roles: ClassVar[dict[str, str]] = {
        "emailaddress": "email", "subscribedat": "subscribed_at",
    }

    def standing(self, cell: Cell) -> Standing:
        joined = event_at("subscribe", time_of(cell, "subscribed_at", "Subscribed at"))
        return Standing("active", (joined,) if joined else ())
