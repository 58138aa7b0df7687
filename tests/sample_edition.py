"""The real sample edition, imported through the editorial stage, for end-to-end render tests.

Expected strings are read from the seed file at test time (its text is not copied here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from wip_mailer import db, editorial, intake
from wip_mailer.assemble import EditionContext, assemble_edition

SLUG = "2024-01"


def import_sample(engine: Engine, seed: Path, slug: str = SLUG) -> EditionContext:
    """create → import → approve all → assemble, as an editor would."""
    with db.session_scope(engine) as session:
        editorial.create_edition(session, slug, period_label(seed))
        intake.import_document(session, seed, slug)
        editorial.approve_all(session, slug, by="render-tests")
    with db.session_scope(engine) as session:
        context: EditionContext = assemble_edition(session, slug)
    return context


def period_label(seed: Path) -> str:
    """The edition's period as the document states it (its first second-level heading)."""
    for line in seed.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            return line[3:].strip()
    raise AssertionError(f"{seed} has no period heading")


@dataclass(frozen=True)
class SeedFacts:
    """What the sample says, read from the seed file itself."""

    delegations: tuple[str, ...]
    coming_soon: tuple[str, ...]
    footer: tuple[str, ...]
    urls: tuple[str, ...]


_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]*)\)")


def _plain(line: str) -> str:
    return _LINK.sub(lambda m: m.group(1), line).replace("*", "").strip()


def seed_facts(seed: Path) -> SeedFacts:
    lines = seed.read_text(encoding="utf-8").splitlines()
    coming = next(i for i, line in enumerate(lines) if line.strip().lower() == "# coming soon")
    delegations_at = next(i for i, line in enumerate(lines) if "delegazioni ricevute" in line.lower())
    delegations = tuple(
        _plain(line[2:]) for line in lines[delegations_at:coming] if line.startswith("- ")
    )
    after = lines[coming + 1:]
    coming_soon = tuple(_plain(line[2:]).split("|")[0].strip() for line in after if line.startswith("- "))
    last_item = max(i for i, line in enumerate(after) if line.startswith("- "))
    footer = tuple(_plain(line) for line in after[last_item + 1:] if line.strip())
    text = seed.read_text(encoding="utf-8")
    linked = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"<(https?://[^>\s]+)>", text)
    urls = tuple(url for url in linked if url != "#")
    return SeedFacts(delegations, coming_soon, footer, urls)
