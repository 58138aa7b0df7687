"""An edition left `sending` by a send that failed before anything went out can go back to draft."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlmodel import select

from tests.dispatch_helpers import make_audience
from tests.smtp_server import SmtpTestServer, free_port
from wip_mailer import db
from wip_mailer.models import Campaign, Delivery, Edition

SLUG = "2026-12"


@pytest.fixture
def stuck(cli, engine, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A send that failed because the mail server could not be reached: nothing was sent."""
    monkeypatch.setenv("WIP_MAILER_BASE_URL", "https://news.example.org")
    monkeypatch.setenv("WIP_MAILER_DEMO", "true")  # example.org addresses: a demo, or the send is refused
    for args in (("editions", "create", SLUG, "--title", "Dicembre 2026"),
                 ("items", "add", "--edition", SLUG, "--title", "Mostra", "--body", "Una mostra."),
                 ("items", "approve", "--edition", SLUG, "--all")):
        assert cli(*args).exit_code == 0
    emails = make_audience(engine, 3)
    monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(free_port()))  # nobody listens there
    failed = cli("send", SLUG, "--list", "main", "--yes")
    assert failed.exit_code != 0 and "Campaign 1 is paused" in failed.stderr
    assert _edition_status(engine) == "sending"
    monkeypatch.setenv("WIP_MAILER_SMTP_PORT", str(smtp_server.port))
    return emails


def _edition_status(engine) -> str:
    with db.session_scope(engine) as session:
        return session.exec(select(Edition.status)).one()


def test_a_stuck_edition_goes_back_to_draft_and_can_be_sent_again(cli, engine, stuck, smtp_server) -> None:
    again = cli("send", SLUG, "--list", "main", "--yes")  # still refused: the campaign is unfinished
    assert again.exit_code == 1 and "has an unfinished campaign 1" in again.stderr

    reset = cli("editions", "set-status", SLUG, "draft")
    assert (reset.exit_code, reset.stdout) == (0, f"Edition {SLUG} is draft.\n"), reset.stderr
    campaigns = json.loads(cli("campaigns", "list", "--json").stdout)
    assert [(c["id"], c["status"], c["counts"]["sent"]) for c in campaigns] == [(1, "cancelled", 0)]
    resumed = cli("campaigns", "resume", "1")
    assert resumed.exit_code == 1 and "Campaign 1 is cancelled" in resumed.stderr

    sent = cli("send", SLUG, "--list", "main", "--yes")
    assert sent.exit_code == 0, sent.stderr
    assert "Campaign 2 finished: 3 sent" in sent.stdout
    assert smtp_server.received_by_address() == dict.fromkeys(stuck, 1)
    assert _edition_status(engine) == "sent"


def test_an_edition_whose_campaign_sent_something_cannot_go_back(cli, engine, stuck, smtp_server) -> None:
    with db.session_scope(engine) as session:  # as if one message had gone out before the failure
        first = session.exec(select(Delivery).order_by(Delivery.id)).first()
        assert first is not None
        session.execute(sa.update(Delivery).where(Delivery.id == first.id).values(state="sent"))
    reset = cli("editions", "set-status", SLUG, "ready")
    assert reset.exit_code == 1
    assert reset.stderr == (
        f"Error: Edition '{SLUG}' cannot become ready: campaign 1 has already handed 1 message(s) to the "
        "mail server; finish it with `wip-mailer campaigns resume 1`.\n")
    assert _edition_status(engine) == "sending"
    with db.session_scope(engine) as session:
        assert session.exec(select(Campaign.status)).one() == "paused"
    resumed = cli("campaigns", "resume", "1")
    assert resumed.exit_code == 0, resumed.stderr
    assert len(smtp_server.messages) == 2  # the one already sent is not sent again
