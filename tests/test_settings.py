"""Settings: one place, clear errors naming the variable, live keys refused by default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from invoiceflow.settings import SettingsError, load_settings

LIVE_KEY = "sk_live_51abcdefSECRETSECRET"


pytestmark = pytest.mark.usefixtures("clean_env")


def test_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    settings = load_settings()
    # One stable per-user ledger, never the working directory.
    expected = Path.home() / ".local" / "share" / "invoiceflow" / "invoiceflow.db"
    assert settings.database_url == f"sqlite:///{expected}"
    assert settings.stripe_api_base is None
    with pytest.raises(SettingsError, match="STRIPE_API_KEY is not set"):
        settings.require_stripe_key()


def test_live_key_is_refused_without_the_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", LIVE_KEY)
    with pytest.raises(SettingsError, match="INVOICEFLOW_ALLOW_LIVE=1") as refused:
        load_settings()
    assert LIVE_KEY not in str(refused.value)


@pytest.mark.parametrize("key", [LIVE_KEY, "rk_live_51restricted"])
def test_live_key_is_accepted_with_the_opt_in(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", key)
    monkeypatch.setenv("INVOICEFLOW_ALLOW_LIVE", "1")
    settings = load_settings()
    assert settings.require_stripe_key() == key
    assert key not in repr(settings) and key not in str(settings)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("STRIPE_API_KEY", "pk_test_123", "publishable keys"),
        ("STRIPE_API_KEY", "hunter2", "STRIPE_API_KEY must be a secret or restricted key"),
        ("STRIPE_API_BASE", "localhost:12111", "STRIPE_API_BASE must be an http(s) URL"),
        ("STRIPE_WEBHOOK_SECRET", "sk_test_oops", "signing secret (whsec_"),
        ("INVOICEFLOW_DATABASE_URL", "not a url", "INVOICEFLOW_DATABASE_URL is not a database URL"),
        ("INVOICEFLOW_DATABASE_URL", "mysql://u@h/db", "backend 'mysql' is not supported"),
        ("INVOICEFLOW_ALLOW_LIVE", "maybe", "INVOICEFLOW_ALLOW_LIVE"),
        ("INVOICEFLOW_LEASE_SECONDS", "-1", "INVOICEFLOW_LEASE_SECONDS"),
    ],
)
def test_malformed_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=re.escape(message)) as failed:
        load_settings()
    if variable != "INVOICEFLOW_ALLOW_LIVE":
        assert value not in str(failed.value) or variable == "INVOICEFLOW_DATABASE_URL"


def test_sandbox_url_and_test_key_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_abc")
    monkeypatch.setenv("STRIPE_API_BASE", "http://127.0.0.1:12111/")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_" + "a1B2" * 8)
    settings = load_settings()
    assert settings.stripe_api_base == "http://127.0.0.1:12111"
    assert settings.require_webhook_secret() == "whsec_" + "a1B2" * 8


# --- INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS: the comma form people type, or JSON ---------

DELAYS = "INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS"


@pytest.mark.parametrize(
    ("value", "delays"),
    [
        ("5,30", [5.0, 30.0]),
        (" 5, 30 ,90 ", [5.0, 30.0, 90.0]),
        ("0.5", [0.5]),
        ("[5, 30]", [5.0, 30.0]),
        ("[]", []),
        ("0", [0.0]),
    ],
)
def test_task_retry_delays_accept_commas_and_json(
    monkeypatch: pytest.MonkeyPatch, value: str, delays: list[float]
) -> None:
    monkeypatch.setenv(DELAYS, value)
    assert load_settings().task_retry_delays_seconds == delays


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("5,-1", "entry 2 must be 0 or more seconds"),
        ("[5, -1]", "entry 2 must be 0 or more seconds"),
        ("5,,30", "entry 2 is empty"),
        ("5,30,", "entry 3 is empty"),
        ("", "entry 1 is empty"),
        ("5,soon", "entry 2 is not a number"),
        ("5,inf", "entry 2 must be 0 or more seconds"),
        ("[5, null]", "entry 2 is empty"),
        ("[5, 30", "is not a valid JSON list"),
        ('{"a": 1}', "entry 1 is not a number"),
    ],
)
def test_task_retry_delays_refused_in_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv(DELAYS, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith(DELAYS), message
    assert problem in message
    assert "e.g. 5,30,90" in message
    assert "\n" not in message


# --- other settings: a bad value is one line naming the variable -----------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("INVOICEFLOW_LEASE_SECONDS", "abc", "INVOICEFLOW_LEASE_SECONDS: Input should be a valid"),
        ("INVOICEFLOW_LEASE_SECONDS", "inf", "INVOICEFLOW_LEASE_SECONDS: Input should be a finite"),
        ("INVOICEFLOW_STRIPE_TIMEOUT_SECONDS", "nan", "INVOICEFLOW_STRIPE_TIMEOUT_SECONDS"),
        ("INVOICEFLOW_AWAIT_PAID_SECONDS", "-5", "INVOICEFLOW_AWAIT_PAID_SECONDS"),
        ("INVOICEFLOW_RETRY_ATTEMPTS", "2.5", "INVOICEFLOW_RETRY_ATTEMPTS"),
        ("INVOICEFLOW_RETRY_BASE_DELAY_SECONDS", "0", "INVOICEFLOW_RETRY_BASE_DELAY_SECONDS"),
    ],
)
def test_bad_numbers_are_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=re.escape(message)) as refused:
        load_settings()
    assert "\n" not in str(refused.value)


def test_sqlite_file_in_a_missing_directory_is_named_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir"
    monkeypatch.setenv("INVOICEFLOW_DATABASE_URL", f"sqlite:///{missing}/invoiceflow.db")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value) == (
        f"INVOICEFLOW_DATABASE_URL: directory '{missing}' does not exist; "
        "create it or point the URL at an existing one"
    )
    assert not missing.exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///invoiceflow.db"])
def test_sqlite_urls_without_a_missing_directory_are_fine(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("INVOICEFLOW_DATABASE_URL", url)
    assert load_settings().database_url == url


def test_webhook_secrets_rotate_as_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    # Real secrets are whsec_ and 32 letters or digits (tests/test_webhook_trust.py: weak ones).
    old, new = "whsec_" + "old0" * 8, "whsec_" + "new1" * 8
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"{old}, {new}")
    settings = load_settings()
    assert settings.require_webhook_secrets() == [old, new]
    assert old not in repr(settings)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"{old},oops_secret")
    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET") as failed:
        load_settings()
    assert "oops_secret" not in str(failed.value) and old not in str(failed.value)


def test_trigger_token_is_secret_and_long_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="INVOICEFLOW_TRIGGER_TOKEN is not set"):
        load_settings().require_trigger_token()

    monkeypatch.setenv("INVOICEFLOW_TRIGGER_TOKEN", "short-Secret")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "INVOICEFLOW_TRIGGER_TOKEN must be at least 16 characters" in message
    assert "short-Secret" not in message and "\n" not in message

    token = "a-long-enough-Secret-token"
    monkeypatch.setenv("INVOICEFLOW_TRIGGER_TOKEN", token)
    settings = load_settings()
    assert settings.require_trigger_token() == token
    assert token not in repr(settings) and token not in str(settings)


def test_a_dotenv_file_is_read_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    # clean_env runs each test in its own empty directory: this .env is the only one.
    Path(".env").write_text(
        "STRIPE_API_KEY=sk_test_fromdotenv\nINVOICEFLOW_LEASE_SECONDS=45\n"
        "INVOICEFLOW_BATCH_WORKERS=3\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("INVOICEFLOW_BATCH_WORKERS", "5")
    settings = load_settings()
    assert settings.require_stripe_key() == "sk_test_fromdotenv"
    assert (settings.lease_seconds, settings.batch_workers) == (45.0, 5)


@pytest.mark.parametrize(
    "variable", ["STRIPE_API_BASE", "INVOICEFLOW_STRIPE_RATE", "INVOICEFLOW_STRIPE_TEST_CLOCK"]
)
def test_an_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, " ")
    settings = load_settings()
    assert (settings.stripe_api_base, settings.stripe_rate, settings.stripe_test_clock) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        ("1, 7 ,14", [1, 7, 14]),
        ("[2, 9]", [2, 9]),
        ("", []),
        ("1,,7", "INVOICEFLOW_DUNNING_REMINDER_DAYS: entry 2 is empty; use days"),
        ("1,-7", "INVOICEFLOW_DUNNING_REMINDER_DAYS: entry 2 must be 0 or more days; use days"),
        ("1.5", "INVOICEFLOW_DUNNING_REMINDER_DAYS: entry 1 is not a whole number; use days"),
        ("7,1", "INVOICEFLOW_DUNNING_REMINDER_DAYS must be distinct days >= 0 in increasing"),
    ],
)
def test_reminder_days_read_like_the_retry_delays(
    monkeypatch: pytest.MonkeyPatch, value: str, outcome: list[int] | str
) -> None:
    monkeypatch.setenv("INVOICEFLOW_DUNNING_REMINDER_DAYS", value)
    if isinstance(outcome, list):
        assert load_settings().dunning_reminder_days == outcome
        return
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value).startswith(outcome), str(refused.value)


def test_a_time_zone_is_checked_and_kept_as_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOICEFLOW_SCHEDULE_TIMEZONE", "Europe/Berlin")
    assert load_settings().schedule_timezone == "Europe/Berlin"
    monkeypatch.setenv("INVOICEFLOW_SCHEDULE_TIMEZONE", "Mars/Olympus")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value) == (
        "INVOICEFLOW_SCHEDULE_TIMEZONE is not an IANA time zone; use e.g. Europe/Berlin or UTC"
    )
