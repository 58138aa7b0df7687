"""The sample edition through Debian's SpamAssassin, offline (`spamassassin -L -t`): no rule
that scores positive."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.sample_edition import import_sample
from wip_mailer.personalise import Addressee, MessageTemplate
from wip_mailer.render import render_edition
from wip_mailer.settings import Settings

pytestmark = pytest.mark.skipif(
    shutil.which("spamassassin") is None,
    reason="SpamAssassin is not installed (Debian package `spamassassin`, installed by .ci/run)")

_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s", re.M)


def test_sample_edition_scores_no_positive_rule(engine: Engine, seed_path: Path, settings: Settings) -> None:
    context = import_sample(engine, seed_path)
    rendered = render_edition(context, settings)
    message = MessageTemplate(settings, rendered, campaign_id=1).build(
        Addressee("lettore@example.net", "Lettore Esempio", 1, 1, 1)).message_bytes
    done = subprocess.run(["spamassassin", "-L", "-t"], input=message, capture_output=True, timeout=300,
                          check=False)
    report = done.stdout.decode("utf-8", "replace")
    table = report.split("Content analysis details:", 1)
    assert len(table) == 2, report[-2000:]
    rules = [(float(points), name) for points, name in _RULE.findall(table[1])]
    assert rules, table[1]  # the table was read (informational rules always appear)
    assert [r for r in rules if r[0] > 0] == [], table[1]
