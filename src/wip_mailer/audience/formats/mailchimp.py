"""Mailchimp's audience export: a ZIP of ``subscribed_*.csv``, ``unsubscribed_*.csv`` and
``cleaned_*.csv``, each with the header ``Email Address,First Name,Last Name,<merge
fields>,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,...,LEID,EUID,NOTES,TAGS``.

Which of the three a file is shows in its header: ``UNSUB_TIME`` (unsubscribed: a member
who left, with the time and reason) or ``CLEAN_TIME`` (cleaned: bounced, suppressed).
``OPTIN_*`` and ``CONFIRM_*`` become the consent events, at their own time and IP; merge
fields and Mailchimp's own columns are kept as attributes.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import ClassVar

from wip_mailer.audience.csv_rows import ImportedEvent
from wip_mailer.audience.formats.base import Cell, Standing, TableFormat, quoted_tags, time_of
from wip_mailer.errors import InvalidInputError


class Mailchimp(TableFormat):
    name = "mailchimp"
    label = "Mailchimp"
    signature = frozenset({"emailaddress", "optintime", "confirmtime"})
    roles: ClassVar[dict[str, str]] = {
        "emailaddress": "email", "firstname": "first_name", "lastname": "last_name", "tags": "tags",
        "cc": "country", "optintime": "optin_time", "optinip": "optin_ip", "confirmtime": "confirm_time",
        "confirmip": "confirm_ip", "unsubtime": "unsub_time", "unsubreason": "unsub_reason",
        "unsubreasonother": "unsub_reason_other",
    }

    def tags(self, text: str) -> list[str]:
        return quoted_tags(text)

    def standing(self, cell: Cell) -> Standing:
        optin = time_of(cell, "optin_time", "OPTIN_TIME")
        confirm = time_of(cell, "confirm_time", "CONFIRM_TIME")
        events: tuple[ImportedEvent, ...] = ()
        if optin and confirm:  # double opt-in: asked, then confirmed
            events = (ImportedEvent("request", optin, cell("optin_ip") or None),
                      ImportedEvent("confirm", confirm, cell("confirm_ip") or None))
        elif optin or confirm:
            events = (ImportedEvent("subscribe", optin or confirm,
                                    cell("optin_ip" if optin else "confirm_ip") or None),)
        if "unsubtime" in self.keys:
            left = time_of(cell, "unsub_time", "UNSUB_TIME")
            reason = " — ".join(r for r in (cell("unsub_reason"), cell("unsub_reason_other")) if r)
            return Standing("unsubscribed", (*events, ImportedEvent("unsubscribe", left,
                                                                     detail=reason[:500] or None)))
        if "cleantime" in self.keys:
            return Standing("bounced", events, suppress="bounced")
        return Standing("active", events)


# --- the audience export ZIP ----------------------------------------------------------------

_KINDS = ("subscribed", "unsubscribed", "cleaned")  # in this order: who stays, who left, who bounced
_MAX_UNPACKED = 4 << 30  # bytes; a real audience export is far smaller, a ZIP bomb is not


def unpack_export(path: Path, folder: Path) -> list[tuple[str, Path]]:
    """The CSV files of a Mailchimp audience export ZIP, unpacked into ``folder``:
    (name inside the ZIP, unpacked file), subscribed first, then unsubscribed, then cleaned."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise InvalidInputError(f"The file {path} is not a readable ZIP file.") from None
    with archive:
        members = []
        for info in archive.infolist():
            base = PurePosixPath(info.filename).name.lower()
            kind = next((k for k in _KINDS if base.startswith(f"{k}_") and base.endswith(".csv")), None)
            if kind is not None and not info.is_dir():
                members.append((_KINDS.index(kind), info))
        if not members:
            raise InvalidInputError(f"The ZIP file {path} holds no Mailchimp audience export "
                                    "(subscribed_*.csv, unsubscribed_*.csv, cleaned_*.csv).")
        if sum(info.file_size for _, info in members) > _MAX_UNPACKED:
            raise InvalidInputError(f"The ZIP file {path} unpacks to more than 4 GiB; unpack it and import "
                                    "its CSV files one by one.")
        unpacked = []
        for position, (_, info) in enumerate(sorted(members, key=lambda m: (m[0], m[1].filename))):
            target = folder / f"{position}-{PurePosixPath(info.filename).name}"
            with archive.open(info) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
            unpacked.append((PurePosixPath(info.filename).name, target))
        return unpacked
