"""Settings: read once from the environment and `.env`, validated, passed down.

This is the only module that looks at ``os.environ``. Every key is documented in
``.env.example`` (a copy of the packaged ``env.template``).
"""

from __future__ import annotations

import difflib
import io
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from email.utils import formataddr, parseaddr
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv.parser import parse_stream
from email_validator import EmailNotValidError, validate_email

from wip_mailer.errors import SettingsError
from wip_mailer.fields import control_character

PREFIX = "WIP_MAILER_"
ENV_TEMPLATE = Path(__file__).with_name("env.template")

SmtpSecurity = Literal["none", "starttls", "tls"]
T = TypeVar("T")
_SECRETS = {"smtp_password", "secret_key", "imap_password"}


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///wip-mailer.db"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_security: SmtpSecurity = "none"
    smtp_timeout: float = 30.0
    smtp_connections: int = 4
    smtp_messages_per_connection: int = 1000
    smtp_relays: str = ""  # several relays with failover (dispatch.relays): a list or a .toml file
    relay_backoff_seconds: float = 300.0
    worker_claim_batch: int = 100
    smtp_helo_name: str = ""
    rate_per_second: float = 0.0
    rate_per_hour: int = 0
    retry_base_seconds: float = 60.0
    retry_deadline_seconds: float = 14400.0
    journal_dir: str = "wip-mailer-journal"
    lease_seconds: float = 60.0
    sender: str = "Work in Progress <newsletter@example.org>"
    reply_to: str = ""
    bounce_address: str = ""
    base_url: str = "http://127.0.0.1:8000"
    archive_url: str = "http://127.0.0.1:8000/archive"
    secret_key: str = ""
    confirm_days: int = 7
    consent_version: str = "1"
    privacy_url: str = ""
    subscribe_per_ip_per_hour: int = 20
    subscribe_per_address_per_hour: int = 5
    timezone: str = "Europe/Rome"
    dkim_key_file: str = ""
    dkim_selector: str = ""
    dkim_domain: str = ""
    templates_dir: str = ""
    email_index_min_items: int = 9
    scheduler_grace_seconds: int = 3600
    scheduler_poll_seconds: float = 5.0
    import_max_field_chars: int = 4096
    demo: bool = False
    bounce_soft_limit: int = 3
    bounce_soft_window_days: int = 30
    bounce_spool_dir: str = "wip-mailer-bounces"
    imap_password: str = ""
    imap_processed_folder: str = ""

    def __repr__(self) -> str:  # never show secrets in logs or tracebacks
        shown = {
            f.name: ("***" if f.name in _SECRETS and getattr(self, f.name)
                     else getattr(self, f.name))
            for f in fields(self)
        }
        return f"Settings({shown})"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def sender_address(self) -> str:
        """The bare address of ``WIP_MAILER_FROM``."""
        return parseaddr(self.sender)[1]

    @property
    def sender_domain(self) -> str:
        return self.sender_address.rpartition("@")[2]

    def require_secret_key(self) -> str:
        if not self.secret_key:
            raise SettingsError(
                "WIP_MAILER_SECRET_KEY is not set: run `wip-mailer init` or set it to a random "
                "string of at least 32 characters."
            )
        return self.secret_key

    @property
    def helo_name(self) -> str:
        """What EHLO says: WIP_MAILER_SMTP_HELO_NAME, else the sender's domain (IDNA)."""
        name = self.smtp_helo_name or self.sender_domain or "localhost"
        try:
            return name.encode("idna").decode("ascii")
        except UnicodeError:
            return name

    @property
    def dkim_enabled(self) -> bool:
        return bool(self.dkim_key_file)


# --- parsing of single values; each raises SettingsError naming the key -------------------

def _fail(key: str, expected: str, raw: str) -> SettingsError:
    return SettingsError(f"{PREFIX}{key} must be {expected}, got {raw!r}.")


def _int(key: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise _fail(key, f"a whole number from {low} to {high}", raw) from None
    if not low <= value <= high:
        raise _fail(key, f"a whole number from {low} to {high}", raw)
    return value


def _float(key: str, raw: str, low: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _fail(key, f"a number of at least {low:g}", raw) from None
    if value < low:
        raise _fail(key, f"a number of at least {low:g}", raw)
    return value


def _security(key: str, raw: str) -> str:
    value = raw.lower()
    if value not in ("none", "starttls", "tls"):
        raise _fail(key, "one of none, starttls, tls", raw)
    return value


def _mailbox(key: str, raw: str, *, allow_empty: bool) -> str:
    if not raw and allow_empty:
        return ""
    if "\r" in raw or "\n" in raw:
        raise _fail(key, "a single-line address", raw)
    name, address = parseaddr(raw)
    try:
        normalised = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        raise _fail(key, "an email address, optionally with a display name "
                         "(Work in Progress <news@example.org>)", raw) from None
    return formataddr((name, normalised)) if name else normalised


def _url(key: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _fail(key, "an http:// or https:// URL", raw)
    return raw.rstrip("/")


def _optional_url(key: str, raw: str) -> str:
    return _url(key, raw) if raw else ""


_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def _host_name(key: str, raw: str) -> str:
    if raw and not _HOST_NAME.fullmatch(raw):
        raise _fail(key, "a host name such as mail.example.org", raw)
    return raw


def _timezone(key: str, raw: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(key, "an IANA timezone name such as Europe/Rome", raw) from None
    return raw


def _secret(key: str, raw: str) -> str:
    if raw and len(raw) < 16:
        raise _fail(key, "a random string of at least 16 characters", "***")
    return raw


def _label(key: str, raw: str) -> str:
    if len(raw) > 64 or not raw.isprintable():
        raise _fail(key, "a short label of at most 64 printable characters", raw)
    return raw


def _bool(key: str, raw: str) -> bool:
    value = raw.lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise _fail(key, "true or false", raw)
    return value in ("true", "1", "yes")


def _database_url(key: str, raw: str) -> str:
    if not raw.startswith(("sqlite:", "postgresql")):
        raise _fail(key, "a sqlite:/// or postgresql+psycopg:// URL", raw)
    return raw


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "DATABASE_URL": _database_url,
    "SMTP_PORT": lambda k, v: _int(k, v, 1, 65535),
    "SMTP_SECURITY": _security,
    "SMTP_TIMEOUT": lambda k, v: _float(k, v, 0.1),
    "SMTP_CONNECTIONS": lambda k, v: _int(k, v, 1, 64),
    "SMTP_HELO_NAME": _host_name,
    "PRIVACY_URL": _optional_url,
    "SUBSCRIBE_PER_IP_PER_HOUR": lambda k, v: _int(k, v, 1, 10_000),
    "SUBSCRIBE_PER_ADDRESS_PER_HOUR": lambda k, v: _int(k, v, 1, 10_000),
    "EMAIL_INDEX_MIN_ITEMS": lambda k, v: _int(k, v, 0, 10_000),
    "SMTP_MESSAGES_PER_CONNECTION": lambda k, v: _int(k, v, 1, 1_000_000),
    "RELAY_BACKOFF_SECONDS": lambda k, v: _float(k, v, 1),
    "WORKER_CLAIM_BATCH": lambda k, v: _int(k, v, 1, 5000),
    "RATE_PER_SECOND": lambda k, v: _float(k, v, 0),
    "RATE_PER_HOUR": lambda k, v: _int(k, v, 0, 100_000_000),
    "RETRY_BASE_SECONDS": lambda k, v: _float(k, v, 0.01),
    "RETRY_DEADLINE_SECONDS": lambda k, v: _float(k, v, 0),
    "LEASE_SECONDS": lambda k, v: _float(k, v, 1),
    "FROM": lambda k, v: _mailbox(k, v, allow_empty=False),
    "REPLY_TO": lambda k, v: _mailbox(k, v, allow_empty=True),
    "BOUNCE_ADDRESS": lambda k, v: _mailbox(k, v, allow_empty=True),
    "BASE_URL": _url,
    "ARCHIVE_URL": _url,
    "SECRET_KEY": _secret,
    "CONFIRM_DAYS": lambda k, v: _int(k, v, 1, 3650),
    "CONSENT_VERSION": _label,
    "TIMEZONE": _timezone,
    "SCHEDULER_GRACE_SECONDS": lambda k, v: _int(k, v, 1, 30 * 86400),
    "SCHEDULER_POLL_SECONDS": lambda k, v: _float(k, v, 0.1),
    # csv's own limit is 131,072 characters a field: stay below it.
    "IMPORT_MAX_FIELD_CHARS": lambda k, v: _int(k, v, 64, 100_000),
    "DEMO": _bool,
    "BOUNCE_SOFT_LIMIT": lambda k, v: _int(k, v, 1, 100),
    "BOUNCE_SOFT_WINDOW_DAYS": lambda k, v: _int(k, v, 1, 3650),
}

# Environment key (without prefix) -> Settings field, where the names differ.
_FIELD_FOR_KEY = {"FROM": "sender"}


def read_env_file(path: Path) -> dict[str, str]:
    """Read a `.env` file strictly: a line that is not KEY=VALUE is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"The settings file {path} is not UTF-8 text.") from None
    except OSError as exc:
        raise SettingsError(f"The settings file {path} cannot be read: {exc.strerror}.") from None
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            line = binding.original.line
            raise SettingsError(
                f"The settings file {path} has a malformed line {line}: expected KEY=VALUE."
            )
        if binding.key is not None:
            values[binding.key] = binding.value or ""
    return values


def known_keys() -> list[str]:
    """Every setting's environment key, e.g. ``WIP_MAILER_FROM``."""
    key_for_field = {name: key for key, name in _FIELD_FOR_KEY.items()}
    return [PREFIX + key_for_field.get(f.name, f.name.upper()) for f in fields(Settings)]


def unknown_key_warning(full_key: str, where: str) -> str:
    """One sentence for a ``WIP_MAILER_*`` key no setting has, naming the closest known key."""
    # Compared without the prefix every key shares, which would make any two keys look alike.
    suffixes = [key.removeprefix(PREFIX) for key in known_keys()]
    close = difflib.get_close_matches(full_key.removeprefix(PREFIX), suffixes, n=1, cutoff=0.6)
    hint = f"did you mean {PREFIX}{close[0]}?" if close else "see .env.example for the settings."
    return f"{full_key} ({where}) is not a wip-mailer setting and is ignored; {hint}"


def _warn_in_log(message: str) -> None:
    logging.getLogger(__name__).warning(message)


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = None,
    warn: Callable[[str], None] = _warn_in_log,
) -> Settings:
    """Build the settings from ``.env`` (if present) overlaid by the real environment.

    A ``WIP_MAILER_*`` key that no setting has (a typo) is passed to ``warn`` as one
    sentence naming the closest known key; it does not stop the command.
    """
    environ = os.environ if environ is None else environ
    env_file = Path(".env") if env_file is None else env_file
    raw: dict[str, str] = {}
    where: dict[str, str] = {}
    if env_file.exists():
        raw.update(read_env_file(env_file))
        where.update(dict.fromkeys(raw, f"in {env_file}"))
    from_environment = {k: v for k, v in environ.items() if k.startswith(PREFIX)}
    raw.update(from_environment)
    where.update(dict.fromkeys(from_environment, "in the environment"))

    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    for full_key, text in raw.items():
        if not full_key.startswith(PREFIX):
            continue
        key = full_key[len(PREFIX):]
        name = _FIELD_FOR_KEY.get(key, key.lower())
        if name not in known:
            warn(unknown_key_warning(full_key, where[full_key]))
            continue
        text = text.strip()
        if text == "" and key not in ("SMTP_USER", "SMTP_PASSWORD", "IMAP_PASSWORD"):
            continue  # empty means "use the default"
        kind = control_character(text)
        if kind is not None:  # FROM, REPLY_TO, BOUNCE_ADDRESS, DKIM_* go into headers: never a line break
            raise SettingsError(f"{full_key} contains {kind}; a setting must be one line of printable text.")
        parser = _PARSERS.get(key)
        values[name] = parser(key, text) if parser else text
    return Settings(**values)


def template_value(key: str) -> str:
    """The value the packaged template gives ``key`` (a placeholder, for the pre-flight check)."""
    return read_env_file(ENV_TEMPLATE).get(key, "")


def new_secret_key() -> str:
    return secrets.token_urlsafe(48)


DEMO_LINE = f"{PREFIX}DEMO=true\n"


def write_env_file(path: Path, *, demo: bool = False) -> bool:
    """Write a `.env` from the packaged template with a fresh secret key; never overwrite.

    ``demo`` marks the installation as a demo (``WIP_MAILER_DEMO=true``).
    """
    if path.exists():
        return False
    text = ENV_TEMPLATE.read_text(encoding="utf-8").replace(
        "WIP_MAILER_SECRET_KEY=\n", f"WIP_MAILER_SECRET_KEY={new_secret_key()}\n"
    )
    if demo:
        text = text.replace(f"{PREFIX}DEMO=false\n", DEMO_LINE)
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
        path.chmod(0o600)  # it holds the signing secret
    except FileExistsError:
        return False
    except OSError as exc:
        raise SettingsError(f"Cannot write {path}: {exc.strerror}.") from None
    return True


def mark_env_file_demo(path: Path) -> bool:
    """Make an existing `.env` say ``WIP_MAILER_DEMO=true``; False if it said so already.

    The key's line is rewritten (or added at the end); nothing else in the file changes.
    """
    if read_env_file(path).get(f"{PREFIX}DEMO", "").strip().lower() in ("true", "1", "yes"):
        return False
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(f"{PREFIX}DEMO=")]
    if len(kept) < len(lines):
        at = next(n for n, line in enumerate(lines) if line.startswith(f"{PREFIX}DEMO="))
        kept.insert(at, DEMO_LINE)
    else:
        if kept and not kept[-1].endswith("\n"):
            kept[-1] += "\n"
        kept.append(DEMO_LINE)
    try:
        path.write_text("".join(kept), encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"Cannot write {path}: {exc.strerror}.") from None
    return True
