from pathlib import Path

import pytest

from wip_mailer.errors import SettingsError
from wip_mailer.settings import ENV_TEMPLATE, known_keys, load_settings, read_env_file, write_env_file

REPO = Path(__file__).resolve().parents[1]


def test_defaults_without_any_setting(tmp_path: Path) -> None:
    settings = load_settings({}, tmp_path / "absent.env")
    assert settings.database_url == "sqlite:///wip-mailer.db"
    assert settings.smtp_security == "none"
    assert settings.timezone == "Europe/Rome"
    assert settings.secret_key == ""


def test_environment_overrides_env_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("WIP_MAILER_SMTP_PORT=2525\nWIP_MAILER_SMTP_HOST=mail.example.org\n")
    settings = load_settings({"WIP_MAILER_SMTP_PORT": "587"}, env)
    assert settings.smtp_port == 587
    assert settings.smtp_host == "mail.example.org"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("WIP_MAILER_SMTP_PORT", "abc",
         "WIP_MAILER_SMTP_PORT must be a whole number from 1 to 65535, got 'abc'."),
        ("WIP_MAILER_SMTP_PORT", "70000",
         "WIP_MAILER_SMTP_PORT must be a whole number from 1 to 65535, got '70000'."),
        ("WIP_MAILER_SMTP_SECURITY", "ssl",
         "WIP_MAILER_SMTP_SECURITY must be one of none, starttls, tls, got 'ssl'."),
        ("WIP_MAILER_BASE_URL", "example.org/news",
         "WIP_MAILER_BASE_URL must be an http:// or https:// URL, got 'example.org/news'."),
        ("WIP_MAILER_TIMEZONE", "Mars/Olympus",
         "WIP_MAILER_TIMEZONE must be an IANA timezone name such as Europe/Rome, "
         "got 'Mars/Olympus'."),
        ("WIP_MAILER_FROM", "not an address",
         "WIP_MAILER_FROM must be an email address, optionally with a display name "
         "(Work in Progress <news@example.org>), got 'not an address'."),
        ("WIP_MAILER_DATABASE_URL", "mysql://x",
         "WIP_MAILER_DATABASE_URL must be a sqlite:/// or postgresql+psycopg:// URL, "
         "got 'mysql://x'."),
    ],
)
def test_malformed_setting_names_key_and_expectation(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({key: value}, tmp_path / "absent.env")
    assert str(caught.value) == message


def test_short_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"WIP_MAILER_SECRET_KEY": "hunter2"}, tmp_path / "absent.env")
    assert "hunter2" not in str(caught.value)
    assert "WIP_MAILER_SECRET_KEY" in str(caught.value)


def test_missing_secret_explains_how_to_get_one(tmp_path: Path) -> None:
    settings = load_settings({}, tmp_path / "absent.env")
    with pytest.raises(SettingsError, match="run `wip-mailer init`"):
        settings.require_secret_key()


def test_malformed_env_file_names_the_line(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("WIP_MAILER_SMTP_HOST=localhost\nthis is not a setting\n")
    with pytest.raises(SettingsError) as caught:
        read_env_file(env)
    assert str(caught.value) == f"The settings file {env} has a malformed line 2: expected KEY=VALUE."


def test_secrets_are_not_in_repr() -> None:
    settings = load_settings({"WIP_MAILER_SECRET_KEY": "s" * 40, "WIP_MAILER_SMTP_PASSWORD": "pw123"},
                             Path("/nonexistent/.env"))
    assert "s" * 40 not in repr(settings)
    assert "pw123" not in repr(settings)


def test_env_example_is_the_packaged_template() -> None:
    assert (REPO / ".env.example").read_text() == ENV_TEMPLATE.read_text()


def test_every_documented_key_is_a_setting_and_back(tmp_path: Path) -> None:
    documented = read_env_file(ENV_TEMPLATE)
    from dataclasses import fields

    from wip_mailer.settings import _FIELD_FOR_KEY, Settings

    names = {_FIELD_FOR_KEY.get(k[len("WIP_MAILER_"):], k[len("WIP_MAILER_"):].lower())
             for k in documented}
    assert names == {f.name for f in fields(Settings)}
    # and the template's values parse
    load_settings(documented, tmp_path / "absent.env")


def test_written_env_file_has_a_fresh_secret_and_is_private(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    assert write_env_file(env) is True
    first = read_env_file(env)["WIP_MAILER_SECRET_KEY"]
    assert len(first) >= 32
    assert env.stat().st_mode & 0o077 == 0
    assert write_env_file(env) is False  # never overwritten
    assert read_env_file(env)["WIP_MAILER_SECRET_KEY"] == first


def test_an_unknown_key_is_a_warning_naming_the_closest_known_key(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("WIP_MAILER_SMTP_PASWORD=secret\nWIP_MAILER_SECRET_KEY=" + "k" * 40 + "\n")
    said: list[str] = []
    settings = load_settings({"WIP_MAILER_TIMEZOME": "Europe/Paris", "WIP_MAILER_ZZZ": "1",
                              "OTHER_SMTP_PASWORD": "x"}, env_file, warn=said.append)
    assert said == [
        f"WIP_MAILER_SMTP_PASWORD (in {env_file}) is not a wip-mailer setting and is ignored; "
        "did you mean WIP_MAILER_SMTP_PASSWORD?",
        "WIP_MAILER_TIMEZOME (in the environment) is not a wip-mailer setting and is ignored; "
        "did you mean WIP_MAILER_TIMEZONE?",
        "WIP_MAILER_ZZZ (in the environment) is not a wip-mailer setting and is ignored; "
        "see .env.example for the settings.",
    ]
    assert settings.smtp_password == "" and settings.timezone == "Europe/Rome"  # nothing guessed


def test_every_known_key_is_in_the_template() -> None:
    template = read_env_file(ENV_TEMPLATE)
    assert sorted(known_keys()) == sorted(template)


def test_the_command_line_shows_an_unknown_key_as_one_warning_line(cli, engine, monkeypatch) -> None:
    monkeypatch.setenv("WIP_MAILER_SMTP_PASWORD", "secret")
    result = cli("lists", "list")
    assert result.exit_code == 0
    assert result.stderr == ("Warning: WIP_MAILER_SMTP_PASWORD (in the environment) is not a wip-mailer "
                             "setting and is ignored; did you mean WIP_MAILER_SMTP_PASSWORD?\n")
