"""Several SMTP relays with failover (WIP_MAILER_SMTP_RELAYS), with two real SMTP servers."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dispatch_helpers import deliveries, make_audience, make_edition, send, start_campaign
from tests.smtp_server import SmtpTestServer
from wip_mailer.dispatch import campaign_status
from wip_mailer.dispatch.campaign import CampaignStopped
from wip_mailer.dispatch.relays import Relay, parse_relays
from wip_mailer.errors import SettingsError
from wip_mailer.settings import load_settings


@pytest.fixture
def second_server() -> Iterator[SmtpTestServer]:
    server = SmtpTestServer()
    server.start()
    yield server
    server.stop()


def relay_settings(send_settings, first: SmtpTestServer, second: SmtpTestServer, **changes):
    return dataclasses.replace(
        send_settings, smtp_relays=f"127.0.0.1:{first.port}, 127.0.0.1:{second.port}",
        smtp_connections=4, smtp_messages_per_connection=20, relay_backoff_seconds=600, **changes)


def when(predicate, action) -> threading.Thread:
    """Run ``action`` once ``predicate`` holds (watching from a thread while the send runs)."""
    def watch() -> None:
        deadline = time.monotonic() + 60
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.002)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def assert_once_each(emails, *servers: SmtpTestServer) -> None:
    total: dict[str, int] = {}
    for server in servers:
        for address, number in server.received_by_address().items():
            total[address] = total.get(address, 0) + number
    assert total == dict.fromkeys(emails, 1)


def test_a_relay_that_stops_accepting_connections_leaves_its_work_to_the_other(
        engine, send_settings, smtp_server, second_server) -> None:
    settings = relay_settings(send_settings, smtp_server, second_server)
    make_edition(engine)
    emails = make_audience(engine, 1000)
    smtp_server.faults.data_delay_seconds = second_server.faults.data_delay_seconds = 0.002
    watcher = when(lambda: len(second_server.messages) >= 100, second_server.stop_listening)
    summary = send(engine, settings)
    watcher.join()
    assert summary.status == "finished" and summary.sent == 1000 and summary.in_doubt == 0
    assert_once_each(emails, smtp_server, second_server)
    assert 100 <= len(second_server.messages) < 500  # it had its share until it stopped accepting
    relay_a, relay_b = f"127.0.0.1:{smtp_server.port}", f"127.0.0.1:{second_server.port}"
    ledger = deliveries(engine)
    got_b = {address for address in second_server.received_by_address()}
    assert {email for email, row in ledger.items() if row.relay == relay_b} == got_b  # recorded where it went
    assert campaign_status(engine, summary.campaign_id)["relays"] == {
        relay_a: 1000 - len(got_b), relay_b: len(got_b)}


def test_a_relay_answering_421_again_and_again_is_taken_out(engine, send_settings, smtp_server,
                                                           second_server) -> None:
    settings = relay_settings(send_settings, smtp_server, second_server)
    make_edition(engine)
    emails = make_audience(engine, 600)
    smtp_server.faults.data_delay_seconds = second_server.faults.data_delay_seconds = 0.002
    when(lambda: len(second_server.messages) >= 50, lambda: setattr(second_server.faults, "always_421", True))
    summary = send(engine, settings)
    assert summary.status == "finished" and summary.sent == 600 and summary.in_doubt == 0
    assert_once_each(emails, smtp_server, second_server)
    assert len(second_server.messages) < 300


def test_the_campaign_pauses_only_when_no_relay_is_left(engine, send_settings, smtp_server,
                                                        second_server) -> None:
    settings = relay_settings(send_settings, smtp_server, second_server)
    make_edition(engine)
    emails = make_audience(engine, 800)
    smtp_server.faults.data_delay_seconds = second_server.faults.data_delay_seconds = 0.003
    when(lambda: len(second_server.messages) >= 50, second_server.stop_listening)
    when(lambda: len(smtp_server.messages) >= 250, smtp_server.stop_listening)
    with pytest.raises(CampaignStopped, match="No SMTP relay is left") as stopped:
        send(engine, settings)
    row = campaign_status(engine, stopped.value.campaign_id)
    assert row["status"] == "paused" and row["counts"]["sending"] == 0
    sent = row["counts"]["sent"]
    assert sent == len(smtp_server.messages) + len(second_server.messages) < 800  # nobody twice, none lost
    assert row["counts"]["queued"] == 800 - sent
    ledger = deliveries(engine)
    assert_once_each([e for e in emails if ledger[e].state == "sent"], smtp_server, second_server)


def test_weights_and_connections_share_the_threads(send_settings) -> None:
    from wip_mailer.dispatch.relays import RelayPool

    relays = parse_relays("a.example:25 weight=3, b.example:2525")
    pool = RelayPool(dataclasses.replace(send_settings, smtp_connections=8), relays)
    firsts = [pool.first().name for _ in range(8)]
    assert firsts.count("a.example:25") == 6 and firsts.count("b.example:2525") == 2
    fixed = RelayPool(send_settings,
                      parse_relays("a.example connections=2 rate=10/s, b.example connections=5"))
    assert fixed.connections == 7


def test_relays_setting_forms(workdir: Path) -> None:
    assert parse_relays("mx1.example.org:587 weight=2 connections=8 rate=100/s, mx2.example.org", 25) == [
        Relay("mx1.example.org", 587, 2, 8, 100.0), Relay("mx2.example.org", 25)]
    (workdir / "relays.toml").write_text(
        '[[relay]]\nhost = "mx1.example.org"\nport = 587\nweight = 2\n\n'
        '[[relay]]\nhost = "mx2.example.org"\nrate = "3000/min"\n', encoding="utf-8")
    assert parse_relays(str(workdir / "relays.toml"), 25) == [
        Relay("mx1.example.org", 587, 2), Relay("mx2.example.org", 25, 1, None, 50.0)]
    settings = load_settings({"WIP_MAILER_SMTP_RELAYS": "relays.toml",
                              "WIP_MAILER_RELAY_BACKOFF_SECONDS": "30"})
    assert settings.smtp_relays == "relays.toml" and settings.relay_backoff_seconds == 30


@pytest.mark.parametrize("text", ["mx1:587 weight=two", "mx1 color=red", "mx1:99999", "mx1, ,mx2",
                                  "mx1, mx1", "missing.toml"])
def test_a_bad_relays_setting_is_one_sentence(text: str, workdir: Path) -> None:
    with pytest.raises(SettingsError) as error:
        parse_relays(text, 25)
    assert str(error.value).count(".") >= 1 and "\n" not in str(error.value)


def test_a_bad_relays_setting_stops_send_before_any_campaign(engine, send_settings) -> None:
    make_edition(engine)
    make_audience(engine, 3)
    with pytest.raises(SettingsError, match="WIP_MAILER_SMTP_RELAYS"):
        send(engine, dataclasses.replace(send_settings, smtp_relays="mx1 colour=red"))
    assert deliveries(engine) == {}


def test_a_worker_fails_over_too(engine, send_settings, smtp_server, second_server, workdir) -> None:
    """The worker processes use the relays the same way (the setting from the environment)."""
    from tests.worker_helpers import finish, start_worker

    make_edition(engine)
    emails = make_audience(engine, 600)
    campaign_id = start_campaign(engine)
    smtp_server.faults.data_delay_seconds = second_server.faults.data_delay_seconds = 0.003
    watcher = when(lambda: len(second_server.messages) >= 60, second_server.stop_listening)
    env = {"WIP_MAILER_SMTP_RELAYS": f"127.0.0.1:{smtp_server.port}, 127.0.0.1:{second_server.port}",
           "WIP_MAILER_SMTP_MESSAGES_PER_CONNECTION": "20"}
    report, stderr = finish(start_worker(workdir, engine, smtp_server, campaign_id, env=env))
    watcher.join()
    assert report["sent"] == 600 and campaign_id in report["finished"]
    assert f"Relay 127.0.0.1:{second_server.port} taken out" in stderr
    assert_once_each(emails, smtp_server, second_server)
