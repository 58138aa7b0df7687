"""Classifying a message that came back: what kind it is, about whom, about which delivery.

Changes nothing and needs no database: ``classify(raw, settings)`` reads the bytes only.

    ARF report (RFC 5965) ─> complaint
    multipart/report delivery-status (RFC 3464) ─> per recipient: hard | soft | delay
    "unsubscribe <token>" in the subject ─> unsubscribe
    looks like a bounce (mailer-daemon, bounce subject) ─> flufl.bounce finds the addresses
    Auto-Submitted, X-Autoreply, vacation subjects, challenge-response ─> auto-reply
    anything else ─> not-a-bounce

Hard or soft is decided by the RFC 3463 status code and the reply text (``severity``),
never by ``Action: failed`` alone: a full mailbox or a policy block fails today and may
not tomorrow.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any

from wip_mailer.models import InboundKind
from wip_mailer.personalise import DeliveryRef, is_verp_shaped, read_message_id, read_verp
from wip_mailer.settings import Settings

# Where the address a message was delivered to is written (the VERP address lives there).
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY_CODE = re.compile(r"(?<!\d)([245])\d\d(?=[ -])")
_HARD_TEXT = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient|address)|does not exist|doesn't exist"
    r"|not exist|recipient not found|recipientnotfound|address rejected|invalid (recipient|mailbox|address)"
    r"|mailbox unavailable|mailbox not found|unrouteable|unroutable|host not found|domain not found"
    r"|no mailbox here|account (has been )?disabled|not our customer|bad destination mailbox",
    re.IGNORECASE)
_SOFT_TEXT = re.compile(
    r"mailbox (is )?full|over ?quota|quota exceeded|insufficient (system )?storage|storage|too large"
    r"|size limit|message size|greylist|graylist|try again later|temporar|rate limit|too many"
    r"|polic|block|spam|blacklist|blocklist|reputation|listed|dmarc|spf|content|virus",
    re.IGNORECASE)
_BOUNCE_FROM = re.compile(r"mailer-daemon|postmaster|mail delivery|mail administrator|mdaemon",
                          re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status notification|failure|has failed)|failure notice|returned mail"
    r"|mail delivery failed|delivery failed|could not be delivered|not delivered|delivery problem"
    r"|nondeliverable|bounce|warning: message|delayed mail",
    re.IGNORECASE)
_AUTO_SUBJECT = re.compile(
    r"out of (the )?office|auto(matic)?[ -]?(reply|response)|autoreply|vacation|away from|abwesen"
    r"|fuori sede|assente|absence|r[ée]ponse automatique|risposta automatica"
    r"|please confirm|verify (that )?you|confirm your (email|message)|challenge",
    re.IGNORECASE)
_UNSUBSCRIBE_SUBJECT = re.compile(r"\s*unsubscribe\b\s*(\S*)", re.IGNORECASE)
_QUOTED_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<?(wip\.[^>\s]+)>?", re.IGNORECASE | re.MULTILINE)
_QUOTED_RETURN_PATH = re.compile(rb"^Return-Path:[ \t]*<([^>\s]+)>", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class RecipientReport:
    address: str
    status: str = ""  # RFC 3463, e.g. 5.1.1
    action: str = ""  # failed | delayed | delivered | relayed | expanded (RFC 3464), or ""
    diagnostic: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"address": self.address, "status": self.status, "action": self.action,
                "diagnostic": self.diagnostic}


@dataclass
class Classified:
    """What a message is; matching it to a subscriber is ``feedback.effects``' work."""

    kind: InboundKind
    message_key: str
    subject: str = ""
    recipients: list[RecipientReport] = field(default_factory=list)
    verp: DeliveryRef | None = None  # a verified VERP address it was delivered to
    original: DeliveryRef | None = None  # the verified Message-ID (or Return-Path) of our quoted message
    unsubscribe_token: str | None = None
    forged: bool = False  # delivered to a VERP address whose HMAC does not verify: match nothing

    @property
    def delivery(self) -> DeliveryRef | None:
        return self.verp or self.original

    def as_json(self, file: str) -> dict[str, Any]:
        delivery = self.delivery
        return {"file": file, "kind": self.kind.value, "recipients": [r.as_dict() for r in self.recipients],
                "delivery_id": delivery.delivery_id if delivery else None,
                "campaign_id": self.original.campaign_id if self.original else None}


def message_key(message: Message, raw: bytes) -> str:
    """Its Message-ID, or (none, or unusably long) a hash of its bytes: processing twice is a no-op."""
    message_id = str(message.get("Message-ID", "")).strip()
    if message_id and len(message_id) <= 190 and message_id.isprintable():
        return f"mid:{message_id}"
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def severity(status: str, diagnostic: str) -> InboundKind:
    """Hard (the address is bad: suppress now) or soft (count it), by RFC 3463 code and reply text."""
    klass, subject, detail = [*status.split("."), "", "", ""][:3]
    if klass == "4":
        return InboundKind.SOFT
    if klass == "5":
        hard_code = ((subject == "1" and detail not in ("7", "8"))  # the address (1.7/1.8: the sender's)
                     or (subject, detail) in (("2", "1"), ("4", "4")))  # mailbox disabled, unroutable
        if hard_code and not _SOFT_TEXT.search(diagnostic):
            return InboundKind.HARD
        if (subject, detail) in (("2", "2"), ("2", "3"), ("3", "4")) or subject == "7":
            return InboundKind.SOFT
    if _HARD_TEXT.search(diagnostic) and not _SOFT_TEXT.search(diagnostic):
        return InboundKind.HARD
    return InboundKind.SOFT  # unknown: soft, which suppresses too after a few


def _text(value: Any) -> str:
    return " ".join(str(value or "").split())


def _status_in(*texts: str) -> str:
    """The most precise enhanced status code in the texts (x.0.0 says least)."""
    found = [m.group(0) for text in texts for m in _STATUS.finditer(text)]
    precise = [code for code in found if not code.endswith(".0.0")]
    return (precise or found or [""])[0]


def _address(field_value: str) -> str:
    # "rfc822; anna@example.org" (RFC 3464 §2.3.2): the address after the type.
    value = field_value.split(";", 1)[-1]
    return parseaddr(value.strip())[1].strip().strip("<>").lower() or value.strip().lower()


def _walk(message: Message) -> list[Message]:
    return [part for part in message.walk() if isinstance(part, Message)]


def _delivery_status(message: Message) -> list[RecipientReport]:
    reports = []
    for part in _walk(message):
        if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        for block in blocks[1:]:  # the first block is about the message, the rest per recipient
            if not isinstance(block, Message):
                continue
            final = _text(block.get("Final-Recipient") or block.get("Original-Recipient"))
            if not final:
                continue
            diagnostic = _text(block.get("Diagnostic-Code")).split(";", 1)[-1].strip()
            status = _text(block.get("Status"))
            reports.append(RecipientReport(_address(final), _status_in(status, diagnostic) or status,
                                           _text(block.get("Action")).lower(), diagnostic[:500]))
    return reports


def _original_headers(message: Message) -> list[Message]:
    """The quoted original (``text/rfc822-headers`` or ``message/rfc822``), as messages."""
    found: list[Message] = []
    for part in _walk(message):
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                found.append(payload[0])
        elif content_type == "text/rfc822-headers":
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                found.append(message_from_bytes(data))
    return found


def _quoted_delivery(settings: Settings, message: Message, raw: bytes) -> DeliveryRef | None:
    """Our original message's delivery, from its quoted Message-ID or Return-Path (verified)."""
    candidates: list[tuple[str, str]] = []
    for quoted in _original_headers(message):
        candidates.append(("mid", str(quoted.get("Message-ID", ""))))
        candidates.append(("verp", str(quoted.get("Return-Path", ""))))
    # Bounces that quote the original as plain text (qmail, old Exchange): look in the bytes.
    candidates += [("mid", m.decode("ascii", "replace")) for m in _QUOTED_MESSAGE_ID.findall(raw)]
    candidates += [("verp", m.decode("ascii", "replace")) for m in _QUOTED_RETURN_PATH.findall(raw[200:])]
    for kind, value in candidates:
        if not value:
            continue
        ref = read_message_id(settings, value) if kind == "mid" else read_verp(settings, value)
        if ref is not None:
            return ref
    return None


def _envelope_verp(settings: Settings, message: Message) -> tuple[DeliveryRef | None, bool]:
    """The verified VERP address the message was delivered to, and whether it was sent to a
    VERP-shaped address that does not verify (forged)."""
    forged = False
    for header in ENVELOPE_HEADERS:
        for _name, address in getaddresses([str(v) for v in message.get_all(header) or []]):
            ref = read_verp(settings, address)
            if ref is not None:
                return ref, False
            forged = forged or is_verp_shaped(settings, address)
    return None, forged


def _body_text(message: Message, limit: int = 20000) -> str:
    """The human-readable text of a bounce (its first text parts), for codes and reply text."""
    texts: list[str] = []
    for part in _walk(message):
        if part.get_content_maintype() == "text" and part.get_content_type() != "text/rfc822-headers":
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                texts.append(data[:limit].decode(part.get_content_charset() or "utf-8", "replace"))
        if sum(map(len, texts)) >= limit:
            break
    return "\n".join(texts)[:limit]


def _is_arf(message: Message) -> bool:
    return (message.get_content_type() == "multipart/report"
            and str(message.get_param("report-type", "")).lower() == "feedback-report")


def _arf_recipients(message: Message) -> list[RecipientReport]:
    addresses: list[str] = []
    for part in _walk(message):
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            data = part.get_payload(decode=True)
            blocks = payload if isinstance(payload, list) else [
                message_from_bytes(data if isinstance(data, bytes) else b"")]
            for block in blocks:
                if isinstance(block, Message):
                    addresses += [_address(str(v)) for v in block.get_all("Original-Rcpt-To") or []]
    if not addresses:
        for quoted in _original_headers(message):
            addresses += [a.lower() for _n, a in getaddresses([str(quoted.get("To", ""))]) if a]
    return [RecipientReport(a, action="complaint", diagnostic="abuse report (ARF)")
            for a in dict.fromkeys(addresses)]


def _is_auto_reply(message: Message, subject: str) -> bool:
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto and auto != "no":
        return True
    if any(message.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress-Reply",
                                    "X-Vacation", "X-Challenge", "X-Bounce-Challenge")):
        return True
    if str(message.get("Precedence", "")).strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(subject))


def _looks_like_bounce(message: Message, subject: str) -> bool:
    sender = str(message.get("From", ""))
    return (str(message.get("Return-Path", "")).strip() == "<>" or bool(_BOUNCE_FROM.search(sender))
            or bool(_BOUNCE_SUBJECT.search(subject)))


def _flufl(message: Message, text: str) -> list[RecipientReport] | None:
    """Addresses found by Mailman's detectors in a non-standard bounce, with their severity."""
    from flufl.bounce import all_failures  # heavy: only when a bounce is not a standard DSN

    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector choking on a malformed message: no addresses from it
        return None
    if not temporary and not permanent:
        return None
    reports: list[RecipientReport] = []
    for addresses, action in ((permanent, "failed"), (temporary - permanent, "delayed")):
        for raw_address in sorted(addresses):
            address = raw_address.decode("utf-8", "replace").strip().strip("<>").lower()
            reports.append(RecipientReport(address, _status_in(_near(text, address)) or _status_in(text),
                                           action, _near(text, address)[:500]))
    return reports


def _near(text: str, address: str, radius: int = 400) -> str:
    """The reply text around an address in a bounce's body (where the server's words are)."""
    at = text.lower().find(address)
    if at < 0:
        return _text(text[:radius * 2])
    return _text(text[at:at + radius])


def classify(raw: bytes, settings: Settings) -> Classified:
    """What ``raw`` (one RFC 5322 message) is; reads nothing else, changes nothing."""
    message = message_from_bytes(raw)
    subject = _text(message.get("Subject", ""))[:300]
    verp, forged = _envelope_verp(settings, message)
    result = Classified(InboundKind.NOT_A_BOUNCE, message_key(message, raw), subject, verp=verp,
                        forged=forged)
    if _is_arf(message):
        result.kind = InboundKind.COMPLAINT
        result.recipients = _arf_recipients(message)
        result.original = _quoted_delivery(settings, message, raw)
        return result
    reports = _delivery_status(message) if message.get_content_type() == "multipart/report" else []
    if not reports:
        match = _UNSUBSCRIBE_SUBJECT.match(subject)
        if match and not _looks_like_bounce(message, subject):
            result.kind = InboundKind.UNSUBSCRIBE
            result.unsubscribe_token = match[1] or None
            return result
    if not reports and _looks_like_bounce(message, subject):
        reports = _flufl(message, _body_text(message)) or []
    if not reports:
        if _is_auto_reply(message, subject):
            result.kind = InboundKind.AUTO_REPLY
        return result
    result.original = _quoted_delivery(settings, message, raw)
    failed = [r for r in reports if r.action.startswith("fail")]
    if failed:
        kinds = [severity(r.status, r.diagnostic) for r in failed]
        result.kind = InboundKind.HARD if InboundKind.HARD in kinds else InboundKind.SOFT
        result.recipients = failed
    elif any(r.action.startswith("delay") for r in reports):
        result.kind = InboundKind.DELAY
        result.recipients = reports
    else:  # delivered / relayed / expanded: a success notice
        result.recipients = reports
    return result
