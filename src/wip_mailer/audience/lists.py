"""Mailing lists: created from the CLI or declared in ``subscribers/lists.toml``.

``lists.toml`` has one table per list::

    [lists.stampa]
    description = "Giornalisti e uffici stampa"
    language = "it"          # two-letter code; default "it"
    double_opt_in = true     # new members confirm by email; default true
    public = false           # offered on the subscribe form; default false
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, select

from wip_mailer.audience.addresses import normalise_language
from wip_mailer.errors import InvalidInputError, NotFoundError, StateError
from wip_mailer.fields import check_single_line
from wip_mailer.models import MailingList, Membership

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_KEYS = {"description": str, "language": str, "double_opt_in": bool, "public": bool}


def check_list_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"{name!r} is not a valid list name: use lower-case letters, digits, - and _ "
            "(at most 64 characters), e.g. partner-internazionali."
        )
    return name


def get_list(session: Session, name: str) -> MailingList:
    found = session.exec(select(MailingList).where(MailingList.name == name)).first()
    if found is None:
        raise NotFoundError(f"There is no list named {name!r}.")
    return found


def create_list(session: Session, name: str, *, description: str = "", language: str = "it",
                double_opt_in: bool = True, public: bool = False) -> MailingList:
    check_list_name(name)
    check_single_line(f"description of the list {name}", description, show=True)
    if session.exec(select(MailingList.id).where(MailingList.name == name)).first() is not None:
        raise StateError(f"A list named {name!r} already exists.")
    mailing_list = MailingList(name=name, description=description, language=normalise_language(language),
                               double_opt_in=double_opt_in, public=public)
    session.add(mailing_list)
    session.flush()
    return mailing_list










def rename_list(session: Session, old: str, new: str) -> None:
    mailing_list = get_list(session, old)
    check_list_name(new)
    if session.exec(select(MailingList.id).where(MailingList.name == new)).first() is not None:
        raise StateError(f"A list named {new!r} already exists.")
    mailing_list.name = new
    session.add(mailing_list)


def delete_list(session: Session, name: str) -> int:
    """Delete a list and its memberships (consent events stay); returns the members removed."""
    mailing_list = get_list(session, name)
    removed = session.execute(
        sa.select(sa.func.count()).select_from(Membership).where(col(Membership.list_id) == mailing_list.id)
    ).scalar_one()
    session.execute(sa.delete(Membership).where(col(Membership.list_id) == mailing_list.id))
    session.delete(mailing_list)
    return int(removed)


@dataclass(frozen=True)
class ListDefinition:
    name: str
    description: str = ""
    language: str = "it"
    double_opt_in: bool = True
    public: bool = False


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_in_file: list[str] = field(default_factory=list)  # kept: sync never deletes a list


def read_list_definitions(path: Path) -> list[ListDefinition]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"The list definitions file {path} does not exist.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"The list definitions file {path} is not valid TOML: {exc}.") from None
    lists = data.get("lists")
    unknown_top = sorted(set(data) - {"lists"})
    if unknown_top or not isinstance(lists, dict):
        raise InvalidInputError(
            f"The list definitions file {path} must contain [lists.NAME] tables"
            + (f", not {', '.join(unknown_top)}." if unknown_top else ".")
        )
    definitions = []
    for name, table in lists.items():
        check_list_name(name)
        if not isinstance(table, dict):
            raise InvalidInputError(f"In {path}, lists.{name} must be a table.")
        for key, value in table.items():
            expected = _KEYS.get(key)
            if expected is None:
                raise InvalidInputError(
                    f"In {path}, lists.{name} has the unknown key {key!r}; known keys are "
                    f"{', '.join(_KEYS)}."
                )
            if not isinstance(value, expected):
                raise InvalidInputError(f"In {path}, lists.{name}.{key} must be a {expected.__name__}.")
        check_single_line(f"description of lists.{name} in {path}", table.get("description", ""), show=True)
        language = normalise_language(table.get("language", "it"))
        definitions.append(ListDefinition(name=name, **{**table, "language": language}))
    return definitions


def sync_lists(session: Session, path: Path) -> SyncReport:
    """Create and update lists as ``path`` declares them; lists not in the file are kept."""
    definitions = read_list_definitions(path)
    existing = {lst.name: lst for lst in session.exec(select(MailingList)).all()}
    report = SyncReport()
    for definition in definitions:
        current = existing.pop(definition.name, None)
        if current is None:
            create_list(session, definition.name, description=definition.description,
                        language=definition.language, double_opt_in=definition.double_opt_in,
                        public=definition.public)
            report.created.append(definition.name)
            continue
        changed = False
        for key in ("description", "language", "double_opt_in", "public"):
            if getattr(current, key) != getattr(definition, key):
                setattr(current, key, getattr(definition, key))
                changed = True
        if changed:
            session.add(current)
            report.updated.append(definition.name)
        else:
            report.unchanged.append(definition.name)
    report.not_in_file = sorted(existing)
    return report
