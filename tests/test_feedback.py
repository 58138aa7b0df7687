"""The feedback stage on fixture bounces in the formats real servers send (tests/data/bounces/)."""

from __future__ import annotations

import dataclasses
import json
import mailbox
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from tests.feedback_helpers import BOUNCES, EXPECTED, fixture_settings, fixture_world
from wip_mailer.audience import email_hash, is_suppressed
from wip_mailer.audience.subscribers import export_personal_data, show_subscriber
from wip_mailer.db import session_scope, utcnow
from wip_mailer.feedback.classify import classify, severity
from wip_mailer.feedback.effects import process_all, process_message
from wip_mailer.models import BounceEvent, Campaign, Delivery, InboundMessage, Membership, Subscriber
from wip_mailer.personalise import delivery_message_id, read_message_id, read_verp, verp_address
from wip_mailer.settings import Settings


@pytest.fixture
def fx_settings(settings: Settings) -> Settings:
    return fixture_settings(settings)


@pytest.fixture
def world(engine: Engine) -> Engine:
    fixture_world(engine)
    return engine


def _status(engine: Engine, email: str) -> str:
    with session_scope(engine) as session:
        subscriber = session.exec(select(Subscriber).where(Subscriber.email == email)).scalar_one()
        return subscriber.status


def _mbox(path: Path, names: list[str]) -> Path:
    box = mailbox.mbox(str(path))
    for name in names:
        box.add((BOUNCES / name).read_bytes())
    box.close()
    return path


# --- classifying ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_lands_in_its_kind_with_its_address(name: str, fx_settings: Settings) -> None:
    kind, address, delivery_id = EXPECTED[name]
    result = classify((BOUNCES / name).read_bytes(), fx_settings).as_json(name)
    assert result["kind"] == kind
    if address is not None:
        assert [r["address"] for r in result["recipients"]] == [address]
    assert result["delivery_id"] == delivery_id
    if delivery_id is not None and kind != "auto-reply":
        assert result["campaign_id"] == 7  # from the quoted Message-ID


def test_flufl_finds_the_addresses_of_non_standard_bounces(fx_settings: Settings) -> None:
    # Exim and qmail send plain text, not RFC 3464: the address comes from flufl.bounce's detectors.
    for name in ("exim.eml", "qmail.eml"):
        raw = (BOUNCES / name).read_bytes()
        assert b"message/delivery-status" not in raw
        assert classify(raw, fx_settings).recipients[0].status == "5.1.1"


@pytest.mark.parametrize(("status", "text", "kind"), [
    ("5.1.1", "550 5.1.1 User unknown", "hard"),
    ("5.4.4", "550 Host not found", "hard"),
    ("5.0.0", "550 No such user here", "hard"),
    ("5.2.2", "552 5.2.2 Mailbox full", "soft"),
    ("5.7.1", "550 5.7.1 Message blocked by policy", "soft"),
    ("5.3.4", "552 5.3.4 Message too large", "soft"),
    ("4.7.1", "450 4.7.1 Greylisted, try again later", "soft"),
    ("5.0.0", "554 message too large", "soft"),
    ("5.1.1", "550 5.1.1 over quota", "soft"),  # the text says the mailbox exists
    ("", "something went wrong", "soft"),
])
def test_hard_or_soft_by_status_and_text_not_by_failed(status: str, text: str, kind: str) -> None:
    assert severity(status, text).value == kind


def test_the_verifiers_read_what_the_makers_make(fx_settings: Settings) -> None:
    verp = verp_address(fx_settings, 4242)
    assert read_verp(fx_settings, verp).delivery_id == 4242  # type: ignore[union-attr]
    assert read_verp(fx_settings, verp.replace("+4242-", "+4243-")) is None
    message_id = delivery_message_id(fx_settings, 9, 4242)
    ref = read_message_id(fx_settings, f"<{message_id}>")
    assert ref is not None and (ref.campaign_id, ref.delivery_id) == (9, 4242)
    other = dataclasses.replace(fx_settings, secret_key="another-secret-key-0123456789")
    assert read_verp(other, verp) is None and read_message_id(other, message_id) is None


# --- effects -------------------------------------------------------------------------------

def test_processing_the_fixtures_applies_each_effect(world: Engine, fx_settings: Settings,
                                                     tmp_path: Path) -> None:
    counts = process_all(world, fx_settings, [(BOUNCES / n).read_bytes() for n in sorted(EXPECTED)],
                         "maildir")
    assert counts.kinds["hard"] == 8 and counts.kinds["soft"] == 1 and counts.kinds["complaint"] == 1
    assert counts.kinds["delay"] == 1 and counts.kinds["auto-reply"] == 1
    assert counts.kinds["unsubscribe"] == 1 and counts.unmatched == 0
    for name, (kind, address, _delivery) in EXPECTED.items():
        if kind == "hard":
            assert _status(world, address) == "bounced", name
    assert _status(world, "laura.conti@example.net") == "active"  # one soft bounce of three
    assert _status(world, "marco.fontana@example.net") == "active"  # a delay is no bounce
    assert _status(world, "nadia.ricci@example.com") == "active"  # nor an out-of-office reply
    assert _status(world, "olga.marino@yahoo.example") == "complained"
    assert _status(world, "paolo.sala@example.net") == "unsubscribed"
    with session_scope(world) as session:
        assert is_suppressed(session, "olga.marino@yahoo.example")
        assert not is_suppressed(session, "paolo.sala@example.net")  # left the list, not suppressed
        assert "bounced after delivery (hard, 5.1.1)" in session.get(Delivery, 101).last_reply
        olga = show_subscriber(session, "olga.marino@yahoo.example")
        assert [e["kind"] for e in olga["history"]] == ["unsubscribe", "complaint"]
        assert olga["bounces"][0]["kind"] == "complaint"
        anna = export_personal_data(session, "anna.rossi@example.net")
        assert [e["kind"] for e in anna["consent_events"]] == ["bounce"]
        assert anna["bounces"][0]["status"] == "5.1.1"
        paolo = show_subscriber(session, "paolo.sala@example.net")
        assert paolo["history"][-1]["source"].startswith("mailto unsubscribe")


def test_the_same_mbox_twice_gives_the_same_counts(world: Engine, fx_settings: Settings, tmp_path: Path,
                                                   cli: object) -> None:
    box = _mbox(tmp_path / "bounces.mbox", sorted(EXPECTED))
    first = process_all(world, fx_settings, _messages(box), "mbox")
    with session_scope(world) as session:
        events = session.execute(select(func.count()).select_from(BounceEvent)).scalar_one()
    second = process_all(world, fx_settings, _messages(box), "mbox")
    assert second.duplicates == second.total == first.total == len(EXPECTED)
    with session_scope(world) as session:
        assert session.execute(select(func.count()).select_from(BounceEvent)).scalar_one() == events
        assert session.execute(select(func.count()).select_from(InboundMessage)).scalar_one() == len(EXPECTED)


def _messages(box: Path) -> list[bytes]:
    from wip_mailer.feedback.sources import mbox_messages

    return list(mbox_messages(box))


def test_a_forged_verp_address_matches_nothing(world: Engine, fx_settings: Settings) -> None:
    raw = (BOUNCES / "forged-verp.eml").read_bytes()
    classified = classify(raw, fx_settings)
    assert classified.forged and classified.delivery is None
    outcome = process_message(world, fx_settings, raw, "mbox")
    assert outcome.kind.value == "hard" and not outcome.matched
    # Anna is a subscriber and the DSN names her, yet nothing happens to her.
    assert _status(world, "anna.rossi@example.net") == "active"
    with session_scope(world) as session:
        kept = session.exec(select(InboundMessage)).scalar_one()
        assert kept.raw == raw and not kept.matched and "forged" in kept.effect


def test_an_unmatched_bounce_is_counted_and_kept(world: Engine, fx_settings: Settings) -> None:
    raw = (BOUNCES / "postfix.eml").read_bytes()
    for old, new in ((b"bounces+101-d8a0de32@", b"bounces@"), (b"wip.7.101.", b"other.7.101."),
                     (b"anna.rossi@example.net", b"stranger@example.net")):
        raw = raw.replace(old, new)
    counts = process_all(world, fx_settings, [raw], "mbox")
    assert counts.unmatched == 1 and counts.kinds["hard"] == 1
    with session_scope(world) as session:
        assert session.exec(select(InboundMessage)).scalar_one().raw == raw


def test_a_bounce_quoting_only_the_recipient_matches_the_subscriber_table(world: Engine,
                                                                          fx_settings: Settings) -> None:
    raw = (BOUNCES / "sendmail.eml").read_bytes()
    raw = raw.replace(b"bounces+103-50a1b9de@", b"bounces@").replace(b"wip.7.103.", b"x.7.103.")
    assert classify(raw, fx_settings).delivery is None
    assert process_message(world, fx_settings, raw, "mbox").matched
    assert _status(world, "carla.verdi@example.com") == "bounced"


def _soft(n: int) -> bytes:
    raw = (BOUNCES / "mailbox-full.eml").read_bytes()
    return raw.replace(b"<20261203101500.7Hq9z11xYp3aB@mail.example.org>", f"<soft{n}@x>".encode())


def test_soft_bounces_suppress_at_the_limit_and_a_good_delivery_resets_the_count(
        world: Engine, fx_settings: Settings) -> None:
    laura = "laura.conti@example.net"
    process_message(world, fx_settings, _soft(1), "mbox")
    process_message(world, fx_settings, _soft(2), "mbox")
    assert _status(world, laura) == "active"
    # A later delivery that did not bounce: the count starts again after it.
    _backdate(world, seconds=5)
    with session_scope(world) as session:
        session.add(Campaign(id=8, edition_id=1, status="finished"))
        session.flush()
        session.add(Delivery(id=500, campaign_id=8, subscriber_id=9, list_id=1, email=laura, state="sent",
                             sent_at=utcnow() - timedelta(seconds=2)))
    process_message(world, fx_settings, _soft(3), "mbox")
    process_message(world, fx_settings, _soft(4), "mbox")
    assert _status(world, laura) == "active"
    process_message(world, fx_settings, _soft(5), "mbox")
    assert _status(world, laura) == "bounced"


def _backdate(engine: Engine, seconds: int) -> None:
    with Session(engine) as session, session.begin():
        for event in session.exec(select(BounceEvent)).scalars():  # type: ignore[call-overload]
            event.received_at = event.received_at - timedelta(seconds=seconds)


def test_soft_bounces_outside_the_window_do_not_count(world: Engine, fx_settings: Settings) -> None:
    settings = dataclasses.replace(fx_settings, bounce_soft_limit=2, bounce_soft_window_days=30)
    process_message(world, settings, _soft(1), "mbox")
    _backdate(world, seconds=31 * 86400)
    process_message(world, settings, _soft(2), "mbox")
    assert _status(world, "laura.conti@example.net") == "active"
    process_message(world, settings, _soft(3), "mbox")
    assert _status(world, "laura.conti@example.net") == "bounced"
    with session_scope(world) as session:
        assert session.execute(select(func.count()).select_from(BounceEvent).where(
            BounceEvent.email_hash == email_hash("laura.conti@example.net"))).scalar_one() == 3


def test_a_mailto_unsubscribe_with_a_bad_token_changes_nothing(world: Engine, fx_settings: Settings) -> None:
    raw = (BOUNCES / "mailto-unsubscribe.eml").read_bytes().replace(b"WzEzLDFd.iaz", b"WzEzLDFd.xaz")
    outcome = process_message(world, fx_settings, raw, "imap")
    assert outcome.kind.value == "unsubscribe" and not outcome.matched
    with session_scope(world) as session:
        assert session.execute(select(Membership.status).where(Membership.subscriber_id == 13)
                               ).scalar_one() == "active"


# --- the commands --------------------------------------------------------------------------

def test_bounces_parse_prints_one_json_object_per_message(
        world: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch, cli, tmp_path: Path) -> None:
    monkeypatch.setenv("WIP_MAILER_SECRET_KEY", fixture_settings(settings).secret_key)
    monkeypatch.setenv("WIP_MAILER_BOUNCE_ADDRESS", "bounces@example.org")
    monkeypatch.setenv("WIP_MAILER_FROM", "Work in Progress <newsletter@example.org>")
    folder = tmp_path / "some"
    folder.mkdir()
    for name in ("gmail.eml", "delay.eml"):
        shutil.copy(BOUNCES / name, folder / name)
    box = _mbox(tmp_path / "x.mbox", ["qmail.eml", "arf-yahoo.eml"])
    result = cli("bounces", "parse", str(folder), str(box), "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(Path(x["file"]).name, x["kind"]) for x in lines] == [
        ("delay.eml", "delay"), ("gmail.eml", "hard"), ("x.mbox#1", "hard"), ("x.mbox#2", "complaint")]
    assert set(lines[1]) == {"file", "kind", "recipients", "delivery_id", "campaign_id"}
    assert set(lines[1]["recipients"][0]) == {"address", "status", "action", "diagnostic"}
    with session_scope(world) as session:  # parse changes nothing
        assert session.execute(select(func.count()).select_from(InboundMessage)).scalar_one() == 0


def test_bounces_process_and_list(world: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                  cli, tmp_path: Path) -> None:
    monkeypatch.setenv("WIP_MAILER_SECRET_KEY", fixture_settings(settings).secret_key)
    monkeypatch.setenv("WIP_MAILER_BOUNCE_ADDRESS", "bounces@example.org")
    monkeypatch.setenv("WIP_MAILER_FROM", "Work in Progress <newsletter@example.org>")
    maildir = mailbox.Maildir(str(tmp_path / "md"), create=True)
    for name in ("postfix.eml", "forged-verp.eml", "delay.eml"):
        maildir.add((BOUNCES / name).read_bytes())
    result = cli("bounces", "process", "--maildir", str(tmp_path / "md"), "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["kinds"]["hard"] == 2 and counts["unmatched"] == 1 and counts["duplicates"] == 0
    again = json.loads(cli("bounces", "process", "--maildir", str(tmp_path / "md"), "--json").stdout)
    assert again["duplicates"] == 3
    rows = json.loads(cli("bounces", "list", "--kind", "hard", "--json").stdout)
    assert len(rows) == 2 and {r["matched"] for r in rows} == {True, False}
    unmatched = json.loads(cli("bounces", "list", "--kind", "unmatched", "--json").stdout)
    assert len(unmatched) == 1 and unmatched[0]["kept"]
    raw = cli("bounces", "show", str(unmatched[0]["id"]), "--raw")
    assert raw.stdout_bytes == (BOUNCES / "forged-verp.eml").read_bytes()
    assert json.loads(cli("bounces", "list", "--since", "2999-01-01", "--json").stdout) == []
    assert len(json.loads(cli("bounces", "list", "--since", "2000-01-01", "--json").stdout)) == 3
    bad = cli("bounces", "list", "--kind", "bogus")
    assert bad.exit_code != 0 and "Unknown kind" in bad.stderr
    neither = cli("bounces", "process")
    assert neither.exit_code != 0
    missing = cli("bounces", "process", "--mbox", str(tmp_path / "none.mbox"))
    assert missing.exit_code != 0 and "does not exist" in missing.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_bounces_process_imap_flags_or_moves_what_it_processed(world: Engine, settings: Settings,
                                                               monkeypatch: pytest.MonkeyPatch, cli,
                                                               tmp_path: Path) -> None:
    from tests.imap_server import ImapTestServer, Mailbox, make_certificate

    cert, key = make_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test server's certificate
    monkeypatch.setenv("WIP_MAILER_SECRET_KEY", fixture_settings(settings).secret_key)
    monkeypatch.setenv("WIP_MAILER_BOUNCE_ADDRESS", "bounces@example.org")
    monkeypatch.setenv("WIP_MAILER_FROM", "Work in Progress <newsletter@example.org>")
    monkeypatch.setenv("WIP_MAILER_IMAP_PASSWORD", "s3cret pass")
    box = Mailbox("bounces@example.org", "s3cret pass")
    for name in ("postfix.eml", "delay.eml", "mailto-unsubscribe.eml"):
        box.add((BOUNCES / name).read_bytes().replace(b"\n", b"\r\n"))
    with ImapTestServer(box, cert, key) as server:
        url = f"imaps://bounces%40example.org@127.0.0.1:{server.port}/INBOX"
        result = cli("bounces", "process", "--imap", url, "--json")
        assert result.exit_code == 0, result.stderr
        counts = json.loads(result.stdout)
        kinds = counts["kinds"]
        assert (kinds["hard"], kinds["delay"], kinds["unsubscribe"]) == (1, 1, 1)
        assert all({"\\Seen", "$WipProcessed"} <= m.flags for m in box.messages)
        assert _status(world, "anna.rossi@example.net") == "bounced"
        again = json.loads(cli("bounces", "process", "--imap", url, "--json").stdout)
        assert again["total"] == 0  # nothing left that is not flagged processed

        box.add((BOUNCES / "sendmail.eml").read_bytes().replace(b"\n", b"\r\n"))
        monkeypatch.setenv("WIP_MAILER_IMAP_PROCESSED_FOLDER", "Processed")
        moved = json.loads(cli("bounces", "process", "--imap", url, "--json").stdout)
        assert moved["kinds"]["hard"] == 1
        assert len(box.in_folder("INBOX")) == 3 and len(box.in_folder("Processed")) == 1

        monkeypatch.setenv("WIP_MAILER_IMAP_PASSWORD", "wrong")
        refused = cli("bounces", "process", "--imap", url)
        assert refused.exit_code != 0 and "refused the login" in refused.stderr
    plain = cli("bounces", "process", "--imap", "imap://bounces@127.0.0.1/INBOX")
    assert plain.exit_code != 0 and "IMAP-over-TLS" in plain.stderr


def test_campaigns_show_bounce_and_complaint_rates(world: Engine, fx_settings: Settings, cli) -> None:
    process_all(world, fx_settings, [(BOUNCES / n).read_bytes() for n in sorted(EXPECTED)], "maildir")
    status = json.loads(cli("campaigns", "status", "7", "--json").stdout)["bounces"]
    assert (status["hard"], status["soft"], status["complaints"]) == (8, 1, 1)
    assert status["complaint_rate"] == pytest.approx(1 / 12) and status["hard_rate"] == pytest.approx(8 / 12)
    listed = cli("campaigns", "list").stdout
    assert "complaints 8.33% (Gmail's line 0.3%: OVER)" in listed
    text = cli("campaigns", "status", "7").stdout
    assert "bounces: 8 hard (66.67%), 1 soft (8.33%)" in text


def test_erasure_forgets_the_address_in_received_bounces(world: Engine, fx_settings: Settings) -> None:
    from wip_mailer.audience.subscribers import erase_subscriber

    process_message(world, fx_settings, (BOUNCES / "postfix.eml").read_bytes(), "mbox")
    with session_scope(world) as session:
        erase_subscriber(session, "anna.rossi@example.net")
    with session_scope(world) as session:
        kept = session.exec(select(InboundMessage)).scalar_one()
        assert kept.kind == "hard" and kept.recipients == [] and kept.raw is None
        assert is_suppressed(session, "anna.rossi@example.net")


@pytest.mark.parametrize("headers", [
    "Subject: Please confirm your message\nX-Challenge: yes\n",  # challenge-response
    "Subject: Automatic reply: Work in Progress\nX-Auto-Response-Suppress-Reply: All\n",
    "Subject: Away from my desk\n",
])
def test_auto_replies_are_never_bounces(headers: str, fx_settings: Settings) -> None:
    raw = (f"From: someone@example.com\nTo: bounces+111-15afd952@example.org\n{headers}"
           "Message-ID: <x@example.com>\n\nI will answer later.\n").encode()
    assert classify(raw, fx_settings).kind.value == "auto-reply"


@pytest.mark.postgres
def test_processing_on_postgresql_applies_each_effect_once(pg_engine: Engine, fx_settings: Settings) -> None:
    fixture_world(pg_engine)
    messages = [(BOUNCES / n).read_bytes() for n in sorted(EXPECTED)] + [_soft(1), _soft(2)]
    first = process_all(pg_engine, fx_settings, messages, "mbox")
    again = process_all(pg_engine, fx_settings, messages, "mbox")
    assert first.kinds["hard"] == 8 and first.kinds["soft"] == 3 and first.unmatched == 0
    assert again.duplicates == len(messages)
    assert _status(pg_engine, "laura.conti@example.net") == "bounced"  # the third soft bounce
    assert _status(pg_engine, "olga.marino@yahoo.example") == "complained"
    with session_scope(pg_engine) as session:
        assert session.execute(select(func.count()).select_from(BounceEvent)).scalar_one() == 12
