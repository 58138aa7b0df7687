"""The personal links in emails and pages. Pure functions of the settings: no database."""

from __future__ import annotations

from collections.abc import Callable

from wip_mailer.settings import Settings
from wip_mailer.tokens import Purpose, make_token, token_maker


def unsubscribe_url(settings: Settings, subscriber_id: int, list_id: int | None,
                    campaign_id: int | None = None) -> str:
    """The one-click unsubscribe link (RFC 8058 target and visible footer link); never expires.
    ``campaign_id`` names the campaign whose message carries it (attribution in reports)."""
    token = make_token(settings.require_secret_key(), Purpose.UNSUBSCRIBE, subscriber_id, list_id,
                       campaign_id)
    return f"{settings.base_url}/u/{token}"


def preferences_url(settings: Settings, subscriber_id: int, list_id: int | None = None) -> str:
    token = make_token(settings.require_secret_key(), Purpose.PREFERENCES, subscriber_id, list_id)
    return f"{settings.base_url}/preferences/{token}"


def preferences_url_maker(settings: Settings) -> Callable[[int, int | None], str]:
    """``preferences_url`` for many subscribers at once: the same links, ~5 µs each."""
    make, base = token_maker(settings.require_secret_key(), Purpose.PREFERENCES), settings.base_url
    return lambda subscriber_id, list_id: f"{base}/preferences/{make(subscriber_id, list_id)}"


def confirm_url(settings: Settings, subscriber_id: int, list_id: int) -> str:
    """The double opt-in link; expires after WIP_MAILER_CONFIRM_DAYS."""
    token = make_token(settings.require_secret_key(), Purpose.CONFIRM, subscriber_id, list_id)
    return f"{settings.base_url}/confirm/{token}"
