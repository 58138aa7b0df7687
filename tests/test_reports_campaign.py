"""`campaigns report`: a real send to 2,000 subscribers at 6 domains through the fault-injecting
SMTP server (per-domain 451s and 550s), one-click unsubscribes POSTed over real HTTP to
`wip-mailer serve`, DSNs and an ARF report through the feedback stage; the report's JSON
must match the ledger and the event tables, recomputed here row by row."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from tests.conftest import TEST_SECRET
from tests.dispatch_helpers import make_edition, send
from tests.report_helpers import arf, dsn, make_domains_audience, one_click_url
from tests.smtp_server import SmtpTestServer, free_port
from wip_mailer import browser
from wip_mailer.audience import unsubscribe_url
from wip_mailer.db import session_scope
from wip_mailer.feedback.effects import process_message
from wip_mailer.models import BounceEvent, ConsentEvent, Delivery
from wip_mailer.reports import campaign_page, campaign_report
from wip_mailer.settings import Settings
from wip_mailer.tokens import Purpose, read_token

DOMAINS = {"gmail.com": 700, "outlook.com": 450, "comune.torino.it": 350, "lyon.fr": 250,
           "bordeaux.fr": 150, "example.net": 100}  # 2,000 in all
HARD_AT_SEND = [f"reader{n:05d}@comune.torino.it" for n in range(0, 60, 5)]  # 12 × 550 5.1.1
LEAVERS = 24


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One campaign, sent and fed back once for every test of this module."""
    from wip_mailer import db
    from wip_mailer.settings import load_settings

    workdir = tmp_path_factory.mktemp("report")
    port = free_port()
    env = {"WIP_MAILER_SECRET_KEY": TEST_SECRET, "WIP_MAILER_DATABASE_URL": f"sqlite:///{workdir / 'wip.db'}",
           "WIP_MAILER_BASE_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = load_settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    engine = db.create_database(settings.database_url)
    server = SmtpTestServer()
    server.start()
    try:
        settings = dataclasses.replace(
            settings, smtp_port=server.port, smtp_timeout=5.0, retry_base_seconds=0.05,
            retry_deadline_seconds=20.0, journal_dir=str(workdir / "journal"),
            bounce_address="bounces@example.org")
        make_edition(engine)
        ids = make_domains_audience(engine, DOMAINS)
        faults = server.faults
        faults.domain_rcpt_replies["outlook.com"] = ["451 4.7.1 Try again later", "250"]
        faults.domain_rcpt_replies["lyon.fr"] = ["451 4.2.0 Greylisted", "451 4.2.0 Greylisted", "250"]
        faults.domain_rcpt_replies["bordeaux.fr"] = ["250"]
        for n in range(0, 150, 10):  # 15 refused by policy: failed, not suppressed
            faults.rcpt_replies[f"reader{n:05d}@bordeaux.fr"] = ["550 5.7.1 Message refused by policy"]
        for address in HARD_AT_SEND:
            faults.rcpt_replies[address] = ["550 5.1.1 User unknown"]
        summary = send(engine, settings)
        campaign_id = summary.campaign_id
        received = {m.rcpt_tos[0]: m for m in server.messages}
        _feedback(engine, settings, received)
        unsubscribed = _one_click(engine, settings, workdir, port, received, ids)
        yield {"engine": engine, "settings": settings, "campaign_id": campaign_id, "received": received,
               "unsubscribed": unsubscribed, "workdir": workdir, "ids": ids}
    finally:
        server.stop()
        engine.dispose()


def _feedback(engine: Engine, settings: Settings, received: dict[str, Any]) -> None:
    """Two hard DSNs, one soft (mailbox full), one ARF complaint, through the feedback stage."""
    for address, status, text in (("reader00001@example.net", "5.1.1", "550 5.1.1 No such user"),
                                  ("reader00002@example.net", "5.1.1", "550 5.1.1 No such user"),
                                  ("reader00003@lyon.fr", "5.2.2", "552 5.2.2 Mailbox full")):
        done = process_message(engine, settings, dsn(received[address], status, text), "maildir")
        assert done.matched, done
    done = process_message(engine, settings, arf(received["reader00007@gmail.com"]), "maildir")
    assert done.matched and done.kind == "complaint", done


def _one_click(engine: Engine, settings: Settings, workdir: Path, port: int, received: dict[str, Any],
               ids: dict[str, int]) -> list[str]:
    """LEAVERS one-click POSTs with the links the messages carry; one GET (changes nothing);
    one POST of an old-style link without the campaign (valid, but not attributed)."""
    env = {**os.environ, "WIP_MAILER_SECRET_KEY": TEST_SECRET,
           "WIP_MAILER_DATABASE_URL": settings.database_url, "WIP_MAILER_BASE_URL": settings.base_url}
    leaving = [a for a in received if a.endswith(("@gmail.com", "@outlook.com"))][100:100 + LEAVERS]
    web = subprocess.Popen([sys.executable, "-m", "wip_mailer", "serve", "--port", str(port)], cwd=workdir,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get(f"{settings.base_url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and web.poll() is None, "serve did not start"
                time.sleep(0.05)
            assert client.get(one_click_url(received["reader00009@gmail.com"])).status_code == 200
            for address in leaving:
                response = client.post(one_click_url(received[address]),  # multipart, as RFC 8058 says
                                       files={"List-Unsubscribe": (None, "One-Click")})
                assert response.status_code == 200, response.text
            old = unsubscribe_url(settings, ids["reader00011@gmail.com"], 1)  # no campaign in it
            assert client.post(old, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    finally:
        web.terminate()
        web.wait(10)
    return leaving


def test_the_one_click_link_names_the_campaign(sent: dict[str, Any]) -> None:
    url = one_click_url(sent["received"]["reader00020@gmail.com"])
    claims = read_token(sent["settings"].require_secret_key(), Purpose.UNSUBSCRIBE, url.rsplit("/", 1)[1])
    assert claims.campaign_id == sent["campaign_id"]
    assert claims.subscriber_id == sent["ids"]["reader00020@gmail.com"]


def test_the_report_matches_the_ledger_and_the_events(sent: dict[str, Any]) -> None:
    engine, campaign_id = sent["engine"], sent["campaign_id"]
    report = campaign_report(engine, sent["settings"], campaign_id)
    with session_scope(engine) as session:
        rows = session.exec(select(Delivery).where(Delivery.campaign_id == campaign_id)).scalars().all()
        bounces = session.exec(select(BounceEvent)).scalars().all()
        events = session.exec(select(ConsentEvent).where(ConsentEvent.kind == "unsubscribe")).scalars().all()
    states = Counter(d.state for d in rows)
    assert len(rows) == 2000
    summary = report["summary"]
    assert summary == {
        "recipients": 2000, "sent": states["sent"], "in_doubt": states["in_doubt"],
        "failed": states["failed"],
        "deferred_then_sent": sum(1 for d in rows if d.state == "sent" and d.attempts > 1),
        "deferred": states["deferred"], "skipped": states["skipped"],
        "queued": states["queued"] + states["sending"], "attempts": sum(d.attempts for d in rows)}
    # what the faults did: 12 + 15 refused; outlook (450) and lyon (250) deferred first
    assert summary["failed"] == len(HARD_AT_SEND) + 15
    assert summary["deferred_then_sent"] == 450 + 250
    assert summary["sent"] == 2000 - 27

    by_delivery: dict[int, set[str]] = {}
    sources: Counter[tuple[str, str]] = Counter()
    ours = {d.id for d in rows}
    for event in bounces:
        if event.delivery_id in ours and event.kind not in by_delivery.setdefault(event.delivery_id, set()):
            by_delivery[event.delivery_id].add(event.kind)
    for event in {(e.delivery_id, e.kind, e.source) for e in bounces if e.delivery_id in ours}:
        sources[(event[1], event[2])] += 1
    kinds = Counter(kind for found in by_delivery.values() for kind in found)
    assert report["bounces"]["hard"] == kinds["hard"] == len(HARD_AT_SEND) + 2  # at send + 2 DSNs
    assert report["bounces"]["soft"] == kinds["soft"]
    assert report["bounces"]["complaints"] == kinds["complaint"] == 1
    assert report["bounces"]["by_source"] == {
        kind: {source: n for (k, source), n in sources.items() if k == kind} for kind in kinds}
    handed = summary["sent"] + summary["failed"]
    assert report["rates"]["hard_bounce"] == kinds["hard"] / handed
    assert report["rates"]["complaint"] == 1 / summary["sent"]
    assert report["rates"]["complaint_over_limit"] is (1 / summary["sent"] >= 0.003)

    attributed = [e for e in events if e.campaign_id == campaign_id]
    assert len(attributed) == LEAVERS  # the old-style link's leave is not attributed
    complaint_leaves = [e for e in events if e.source.startswith("complaint")]
    assert len(complaint_leaves) == 1 and complaint_leaves[0].campaign_id is None  # counted as a complaint
    assert len(events) == LEAVERS + 1 + 1  # + the old-style link's
    assert report["unsubscribes"]["attributed"] == report["unsubscribes"]["within_7_days"] == LEAVERS
    assert report["unsubscribes"]["by_source"] == dict(Counter(e.source for e in attributed))
    assert report["rates"]["unsubscribe_7_days"] == LEAVERS / summary["sent"]

    bounced_ids = {i for i, found in by_delivery.items() if found & {"hard", "soft"}}
    expected_domains = []
    for name in DOMAINS:
        mine = [d for d in rows if d.email.endswith("@" + name)]
        waits = [(d.sent_at - d.first_attempt_at).total_seconds() for d in mine if d.state == "sent"]
        expected_domains.append({
            "domain": name, "recipients": len(mine), "accepted": sum(d.state == "sent" for d in mine),
            "deferred": sum(d.state == "deferred" or (d.attempts > 1 and d.state in ("sent", "failed"))
                            for d in mine),
            "deferred_then_accepted": sum(d.state == "sent" and d.attempts > 1 for d in mine),
            "failed": sum(d.state == "failed" for d in mine),
            "bounced": sum(d.id in bounced_ids for d in mine),
            "in_doubt": sum(d.state == "in_doubt" for d in mine), "median": statistics.median(waits)})
    got = {d["domain"]: d for d in report["domains"]}
    assert [d["domain"] for d in report["domains"]] == list(DOMAINS)  # by recipients, most first
    for expected in expected_domains:
        median = expected.pop("median")
        row = dict(got[expected["domain"]])
        assert row.pop("median_seconds_to_accept") == pytest.approx(median, abs=2e-3)
        assert row == expected
    assert got["outlook.com"]["deferred_then_accepted"] == 450

    points = report["timeline"]["points"]
    assert sum(p["sent"] + p["sent_after_retry"] for p in points) == summary["sent"]
    assert sum(p["sent_after_retry"] for p in points) == summary["deferred_then_sent"]
    assert sum(p["failed"] for p in points) == summary["failed"]
    width = report["timeline"]["bucket_seconds"]
    assert report["timeline"]["peak_per_second"] == max(
        (p["sent"] + p["sent_after_retry"] + p["failed"]) / width for p in points)

    assert report["relays"] == [{
        "relay": f"127.0.0.1:{sent['settings'].smtp_port}", "handed_over": 2000, "sent": summary["sent"],
        "retried": sum(d.attempts > 1 for d in rows), "failed": summary["failed"], "in_doubt": 0}]


def test_the_cli_gives_the_same_json_and_writes_the_page(sent: dict[str, Any]) -> None:
    page = sent["workdir"] / "report.html"
    env = {**os.environ, "WIP_MAILER_SECRET_KEY": TEST_SECRET,
           "WIP_MAILER_DATABASE_URL": sent["settings"].database_url,
           "WIP_MAILER_SMTP_PORT": str(sent["settings"].smtp_port)}
    command = [sys.executable, "-m", "wip_mailer", "campaigns", "report", str(sent["campaign_id"])]
    done = subprocess.run([*command, "--json", "--html", str(page)], cwd=sent["workdir"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == campaign_report(sent["engine"], sent["settings"], sent["campaign_id"])
    html = page.read_text(encoding="utf-8")
    # self-contained: no script, nothing loaded from elsewhere (the SVG namespaces are names, not loads)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(""", html), "something loads from elsewhere"
    assert html.count("<svg") == 3 and html.count("<figcaption>") == 3
    missing = subprocess.run([*command[:-1], "999"], cwd=sent["workdir"], env=env, capture_output=True,
                             text=True, timeout=60, check=False)
    assert missing.returncode == 1 and missing.stderr.strip() == "Error: There is no campaign 999."


def test_numbers_are_in_the_editions_language(sent: dict[str, Any]) -> None:
    report = campaign_report(sent["engine"], sent["settings"], sent["campaign_id"])
    html = campaign_page(report, sent["settings"])
    assert 'lang="it"' in html
    assert f"<dd>{report['summary']['sent'] // 1000}.{report['summary']['sent'] % 1000:03d}</dd>" in html
    in_english = {**report, "campaign": {**report["campaign"], "language": "en"}}
    english = campaign_page(in_english, sent["settings"])
    assert f"<dd>{report['summary']['sent'] // 1000},{report['summary']['sent'] % 1000:03d}</dd>" in english


@pytest.mark.chromium
@pytest.mark.parametrize("width", [375, 1024])
def test_the_page_fits_a_phone_and_a_desktop(sent: dict[str, Any], width: int) -> None:
    if browser.find_chromium() is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    report = campaign_report(sent["engine"], sent["settings"], sent["campaign_id"])
    html = campaign_page(report, sent["settings"])
    layout = browser.measure_layout(html, width)
    assert not layout.scrolls_horizontally, (layout.scroll_width, layout.overflowing)
    assert layout.overflowing == ()
    # every chart is a labelled picture in a figure with a caption (its text alternative)
    figures = html.split("<figure>")[1:]
    assert len(figures) == 3
    for figure in figures:
        assert '<svg role="img" aria-label="' in figure and "<figcaption>" in figure
    if os.environ.get("REPORT_SCREENSHOT_DIR"):  # docs/report.png, made by hand
        browser.screenshot(html, Path(os.environ["REPORT_SCREENSHOT_DIR"]) / f"report-{width}.png", width)
