"""normalise_email agrees with a plain email-validator call on every input."""

from __future__ import annotations

import random

import pytest
from email_validator import EmailNotValidError, validate_email

from wip_mailer.audience.addresses import InvalidAddressError, normalise_email


def _reference(text: str) -> str | None:
    try:
        return validate_email(text.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def _ours(text: str) -> str | None:
    try:
        return normalise_email(text)
    except InvalidAddressError:
        return None


HANDWRITTEN = [
    "A.B@Example.ORG", "x@localhost", "x@test.test", "a..b@example.org", ".a@example.org", "a.@example.org",
    "a@b@example.org", "ok+tag@sub.example.co.uk", "x@-bad.com", "x@example", "é@example.org",
    "x@exämple.org", "a@[127.0.0.1]", "a@xn--exmple-cua.org", " spaced@example.org ", "a b@example.org",
    '"quoted"@example.org', "o'brien@example.ie", "under_score@example.org", "-dash@example.org",
    "x" * 64 + "@example.org", "x" * 65 + "@example.org", "a@" + "b" * 63 + ".org", "a@" + "b" * 64 + ".org",
    "a@example.invalid", "a@example..org", "a@.example.org", "user%host@example.org", "@example.org",
    "nobody@", "", "a@example.org.", "tab\t@example.org", "a@EXAMPLE.org", "a@ex_ample.org",
]


@pytest.mark.parametrize("text", HANDWRITTEN)
def test_handwritten_cases_agree(text: str) -> None:
    assert _ours(text) == _reference(text)


def test_random_addresses_agree() -> None:
    rng = random.Random(7)
    local_chars = "abcdefXYZ0123456789" * 4 + "._+-" * 3 + "!#$%&'*/=?^`{|}~ \"@()[]\\,;:<>é"
    domain_chars = "abcdefXYZ0123456789" * 3 + ".-" * 2 + "_ä"
    valid = 0
    for _ in range(5000):
        local = "".join(rng.choice(local_chars) for _ in range(rng.randint(0, 12)))
        domain = "".join(rng.choice(domain_chars) for _ in range(rng.randint(0, 12)))
        tld = rng.choice(["org", "it", "x", "test", "com", ""])
        text = f"{local}@{domain}.{tld}" if tld else f"{local}@{domain}"
        expected = _reference(text)
        assert _ours(text) == expected, text
        valid += expected is not None
    assert valid > 1000  # both outcomes are well represented
