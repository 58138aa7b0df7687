"""Signed tokens for the links in emails (itsdangerous, one salt per purpose).

A token names a subscriber and a list; an unsubscribe token in a campaign's message also
names the campaign, so an unsubscribe is attributed to the send it came from (reports)
without tracking anything else. Tokens without it (older emails, the preview) stay
valid. Unsubscribe and preference tokens never
expire (an old email must still let its reader leave); confirmation tokens do.
Signatures are compared in constant time by itsdangerous.
"""

from __future__ import annotations

import hashlib
import hmac
from base64 import urlsafe_b64encode
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from itsdangerous import BadData, BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from wip_mailer.errors import InvalidInputError


class Purpose(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    CONFIRM = "confirm"


class InvalidTokenError(InvalidInputError):
    """The token is tampered, unknown, of another purpose, or expired."""


@dataclass(frozen=True)
class TokenClaims:
    subscriber_id: int
    list_id: int | None
    campaign_id: int | None = None  # the campaign whose message carried the link, when it says


def _salt(purpose: Purpose) -> str:
    return f"wip-mailer.{purpose.value}.v1"


def make_token(secret: str, purpose: Purpose, subscriber_id: int, list_id: int | None,
               campaign_id: int | None = None) -> str:
    payload: list[int | None] = [subscriber_id, list_id]
    if campaign_id is not None:
        payload.append(campaign_id)
    if purpose is Purpose.CONFIRM:
        return URLSafeTimedSerializer(secret, salt=_salt(purpose)).dumps(payload)
    return URLSafeSerializer(secret, salt=_salt(purpose)).dumps(payload)


def read_token(secret: str, purpose: Purpose, token: str, max_age_seconds: int | None = None) -> TokenClaims:
    """Verify ``token`` for ``purpose``; raises InvalidTokenError on any problem."""
    if not _canonical(token):
        raise InvalidTokenError("This link is not valid.")
    try:
        if purpose is Purpose.CONFIRM:
            payload = URLSafeTimedSerializer(secret, salt=_salt(purpose)).loads(
                token, max_age=max_age_seconds
            )
        else:
            payload = URLSafeSerializer(secret, salt=_salt(purpose)).loads(token)
    except SignatureExpired:
        raise InvalidTokenError("This link has expired; please subscribe again.") from None
    except BadSignature:
        raise InvalidTokenError("This link is not valid.") from None
    if (
        not isinstance(payload, list)
        or len(payload) not in (2, 3)
        or not _is_int(payload[0])
        or not (payload[1] is None or _is_int(payload[1]))
        or (len(payload) == 3 and not _is_int(payload[2]))
    ):
        raise InvalidTokenError("This link is not valid.")
    return TokenClaims(subscriber_id=payload[0], list_id=payload[1],
                       campaign_id=payload[2] if len(payload) == 3 else None)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _canonical(token: str) -> bool:
    """base64 ignores the unused low bits of a segment's last character, so a token with
    that character changed would still verify: accept only the spelling we issue."""
    try:
        return all(base64_encode(base64_decode(part)).decode("ascii") == part for part in token.split("."))
    except BadData:  # undecodable base64
        return False


def token_maker(secret: str, purpose: Purpose) -> Callable[..., str]:
    """``make_token`` for many subscribers at once (bulk sending).

    For the never-expiring purposes this spells out what itsdangerous's URLSafeSerializer
    does (compact JSON, base64url, HMAC-SHA1 with the django-concat derived key) with the
    key derived once and the HMAC state reused: ~5 µs a token instead of ~35 µs, which is
    a third of the per-message cost at thousands of messages a second. The output is the
    very same token (tested against ``make_token``); ``read_token`` stays itsdangerous's.
    """
    if purpose is Purpose.CONFIRM:
        timed = URLSafeTimedSerializer(secret, salt=_salt(purpose))
        return lambda subscriber_id, list_id, campaign_id=None: str(timed.dumps(
            [subscriber_id, list_id] + ([] if campaign_id is None else [campaign_id])))
    derived = hashlib.sha1(_salt(purpose).encode() + b"signer" + secret.encode()).digest()
    keyed = hmac.new(derived, digestmod=hashlib.sha1)

    def make(subscriber_id: int, list_id: int | None, campaign_id: int | None = None) -> str:
        # json.dumps([id, id_or_None(, id)], separators=(",", ":")), spelled out for integers
        tail = "" if campaign_id is None else f",{int(campaign_id)}"
        as_json = f"[{int(subscriber_id)},{'null' if list_id is None else int(list_id)}{tail}]"
        payload = urlsafe_b64encode(as_json.encode("ascii")).rstrip(b"=")
        mac = keyed.copy()
        mac.update(payload)
        return (payload + b"." + urlsafe_b64encode(mac.digest()).rstrip(b"=")).decode("ascii")

    return make
