"""All configuration, read once from the environment (or a `.env` file).

Secrets are held as `SecretStr` so that a settings object printed, logged or put
into an exception never shows them; validation errors never echo the input.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic_settings
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from invoiceflow import cron
from invoiceflow.paths import default_database_path, default_database_url

# Key prefixes Stripe issues. Anything else is a typo or a publishable key (pk_…),
# which cannot create invoices.
_TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")
_LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")

_SUPPORTED_DB_BACKENDS = ("sqlite", "postgresql")
# Stripe's documented global rate limits, calls a second.
_STRIPE_RATE_PRESETS = {"test": 25.0, "live": 100.0}

MIN_TRIGGER_TOKEN_LENGTH = 16
# Stripe's endpoint signing secrets are whsec_ and 32 letters or digits (the
# Stripe CLI's: 64 hex digits). Anything much shorter can be guessed, and the
# bare prefix is public: whoever knows it could sign "paid" for any invoice.
MIN_WEBHOOK_SECRET_CHARS = 24
_WEBHOOK_SECRET = re.compile(rf"whsec_[A-Za-z0-9]{{{MIN_WEBHOOK_SECRET_CHARS},}}")


class SettingsError(ValueError):
    """A setting is missing or malformed. The message names the variable and the fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,  # never echo a key back in an error
        allow_inf_nan=False,  # an infinite lease or timeout is a typo, not a wish
    )

    stripe_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_API_KEY")
    )
    stripe_api_base: str | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_API_BASE")
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET")
    )
    # Bearer token of `invoiceflow serve`'s POST /invoices; the trigger refuses
    # every request while it is unset.
    trigger_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("INVOICEFLOW_TRIGGER_TOKEN")
    )
    database_url: str = Field(
        default_factory=default_database_url,
        validation_alias=AliasChoices("INVOICEFLOW_DATABASE_URL"),
    )
    allow_live: bool = Field(default=False, validation_alias=AliasChoices("INVOICEFLOW_ALLOW_LIVE"))
    # How long a run holds a request before another run may take it over. Long
    # enough for the slowest step plus retries; a crashed run blocks its request
    # for at most this long.
    lease_seconds: float = Field(
        default=300.0, gt=0, validation_alias=AliasChoices("INVOICEFLOW_LEASE_SECONDS")
    )
    # Per-request HTTP timeout towards Stripe. Stripe's SDK default is 80 s; a
    # write that times out is retried under the same idempotency key, so a shorter
    # timeout costs nothing in correctness and frees the worker sooner.
    stripe_timeout_seconds: float = Field(
        default=30.0, gt=0, validation_alias=AliasChoices("INVOICEFLOW_STRIPE_TIMEOUT_SECONDS")
    )
    # In-task retries of one Stripe call (exponential backoff with jitter).
    retry_attempts: int = Field(
        default=6, ge=1, le=20, validation_alias=AliasChoices("INVOICEFLOW_RETRY_ATTEMPTS")
    )
    retry_base_delay_seconds: float = Field(
        default=0.25, gt=0, validation_alias=AliasChoices("INVOICEFLOW_RETRY_BASE_DELAY_SECONDS")
    )
    retry_max_delay_seconds: float = Field(
        default=8.0, gt=0, validation_alias=AliasChoices("INVOICEFLOW_RETRY_MAX_DELAY_SECONDS")
    )
    # Prefect task retries, after the in-task ones gave up: spread out to ride
    # over a Stripe incident of a minute or two. Read as `5,30,90` or JSON
    # `[5, 30, 90]` by `_delays` (NoDecode: not JSON-only, as lists would be).
    task_retry_delays_seconds: Annotated[list[float], NoDecode] = Field(
        default=[5.0, 30.0, 90.0],
        validation_alias=AliasChoices("INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS"),
    )
    # How long `invoiceflow invoice` watches our database for the payment (which
    # the webhook receiver records) before reporting the request still `sent`.
    await_paid_seconds: float = Field(
        default=60.0, ge=0, validation_alias=AliasChoices("INVOICEFLOW_AWAIT_PAID_SECONDS")
    )

    # --- billing cycles (see docs/billing-cycles.md) -------------------------
    # Cron expressions (5 fields, or @daily…) as Prefect parses them (`invoiceflow.cron`)
    # in INVOICEFLOW_SCHEDULE_TIMEZONE; "off" serves the deployment without a schedule
    # (runs only when triggered).
    billing_cron: str = Field(
        default="0 6 1 * *", validation_alias=AliasChoices("INVOICEFLOW_BILLING_CRON")
    )
    dunning_cron: str = Field(
        default="0 7 * * *", validation_alias=AliasChoices("INVOICEFLOW_DUNNING_CRON")
    )
    reconcile_cron: str = Field(
        default="30 * * * *", validation_alias=AliasChoices("INVOICEFLOW_RECONCILE_CRON")
    )
    schedule_timezone: str = Field(
        default="UTC", validation_alias=AliasChoices("INVOICEFLOW_SCHEDULE_TIMEZONE")
    )
    # What a scheduled billing run bills: "pending" (requests recorded in our
    # database that are not sent yet), or a JSONL/CSV file or a directory of
    # request files.
    billing_source: str = Field(
        default="pending", min_length=1, validation_alias=AliasChoices("INVOICEFLOW_BILLING_SOURCE")
    )
    # Requests of one billing run in flight at once (threads of its flow run).
    batch_workers: int = Field(
        default=8, ge=1, le=64, validation_alias=AliasChoices("INVOICEFLOW_BATCH_WORKERS")
    )
    # Requests per Prefect task of a billing run: a chunk bills its requests as
    # plain calls, so Prefect's cost (a task run, its records, an artifact) is
    # paid once per chunk. 1 keeps a task per request.
    batch_chunk: int = Field(
        default=10, ge=1, le=250, validation_alias=AliasChoices("INVOICEFLOW_BATCH_CHUNK")
    )
    # Shards a billing run is spread over: 1 bills in the run's own process; N
    # starts N runs of the `billing-shard` deployment on the work pool's workers.
    batch_shards: int = Field(
        default=1, ge=1, le=64, validation_alias=AliasChoices("INVOICEFLOW_BATCH_SHARDS")
    )
    # A flow run still Pending this long (claimed, its process never came up) or
    # Scheduled this long past its time with no worker polling is dead: a billing
    # run takes its shard back, a repeated POST /invoices starts the request again.
    stale_run_seconds: float = Field(
        default=180.0, gt=0, validation_alias=AliasChoices("INVOICEFLOW_STALE_RUN_SECONDS")
    )
    # Days after the due date on which an open invoice is emailed again.
    dunning_reminder_days: Annotated[list[int], NoDecode] = Field(
        default=[1, 7, 14], validation_alias=AliasChoices("INVOICEFLOW_DUNNING_REMINDER_DAYS")
    )
    # Days after the due date on which a still-open invoice is written off, and how.
    dunning_final_days: int = Field(
        default=30, ge=1, le=365, validation_alias=AliasChoices("INVOICEFLOW_DUNNING_FINAL_DAYS")
    )
    dunning_final_action: Literal["uncollectible", "void"] = Field(
        default="uncollectible", validation_alias=AliasChoices("INVOICEFLOW_DUNNING_FINAL_ACTION")
    )
    # Test mode only: new Stripe customers are attached to this test clock
    # (clock_…), so advancing the clock moves their invoices through time.
    stripe_test_clock: str | None = Field(
        default=None, validation_alias=AliasChoices("INVOICEFLOW_STRIPE_TEST_CLOCK")
    )

    # --- the shared Stripe rate limit (see docs/design.md, "Rate limit") --------------
    # test (25/s) | live (100/s) | a number of calls a second | off; unset:
    # by the key's mode. Read through `stripe_rate_per_second()`.
    stripe_rate: str | None = Field(
        default=None, validation_alias=AliasChoices("INVOICEFLOW_STRIPE_RATE")
    )
    # memory | postgres | redis://host:port/db; unset: postgres when the
    # database is PostgreSQL, else memory. Read through `rate_limit_store()`.
    rate_limit_backend: str | None = Field(
        default=None, validation_alias=AliasChoices("INVOICEFLOW_RATE_LIMIT_BACKEND")
    )

    @field_validator("stripe_api_key")
    @classmethod
    def _known_key_prefix(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        key = value.get_secret_value()
        if not key.startswith(_TEST_KEY_PREFIXES + _LIVE_KEY_PREFIXES):
            raise ValueError(
                "STRIPE_API_KEY must be a secret or restricted key (sk_test_…, rk_test_…, "
                "sk_live_…, rk_live_…); publishable keys (pk_…) cannot create invoices"
            )
        return value

    @field_validator("stripe_api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("http://", "https://")) or value[-3:] == "://":
            raise ValueError(
                "STRIPE_API_BASE must be an http(s) URL such as http://127.0.0.1:12111 "
                "(leave it unset to talk to Stripe itself)"
            )
        return value.rstrip("/")

    @field_validator("task_retry_delays_seconds", mode="before")
    @classmethod
    def _delays(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return _parse_delays(value)

    @field_validator("stripe_webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # During a rotation Stripe signs with both the old and the new secret.
        # Every part is checked: one weak part lets anyone sign (the message
        # says which part and why, never what it holds).
        parts = value.get_secret_value().split(",")
        for number, part in enumerate(parts, start=1):
            secret = part.strip()
            if _WEBHOOK_SECRET.fullmatch(secret):
                continue
            if not secret:
                why = "is empty"
            elif not secret.startswith("whsec_"):
                why = "does not start with whsec_"
            elif not secret.removeprefix("whsec_"):
                why = "is only the public prefix whsec_"
            elif len(secret) < len("whsec_") + MIN_WEBHOOK_SECRET_CHARS:
                why = "is too short"
            else:
                why = "has characters other than letters and digits"
            which = f"part {number} of {len(parts)}" if len(parts) > 1 else "the secret"
            raise ValueError(
                f"STRIPE_WEBHOOK_SECRET: {which} {why}; each must be an endpoint's signing "
                f"secret (whsec_ and at least {MIN_WEBHOOK_SECRET_CHARS} letters or digits, "
                "as Stripe shows it), separated by commas while rotating"
            )
        return value

    @field_validator("trigger_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Short tokens can be guessed over HTTP; say how to make a good one.
        if value is not None and len(value.get_secret_value()) < MIN_TRIGGER_TOKEN_LENGTH:
            raise ValueError(
                f"INVOICEFLOW_TRIGGER_TOKEN must be at least {MIN_TRIGGER_TOKEN_LENGTH} "
                "characters; generate one with `python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(
                "INVOICEFLOW_DATABASE_URL is not a database URL; use e.g. "
                "sqlite:///./invoiceflow.db or postgresql+psycopg://user@host/db"
            ) from None
        if url.get_backend_name() not in _SUPPORTED_DB_BACKENDS:
            raise ValueError(
                f"INVOICEFLOW_DATABASE_URL backend {url.get_backend_name()!r} is not supported; "
                "use sqlite:///… or postgresql+psycopg://…"
            )
        _require_sqlite_directory(url.get_backend_name(), url.database)
        return value

    @field_validator("billing_cron", "dunning_cron", "reconcile_cron")
    @classmethod
    def _cron(cls, value: str, info: ValidationInfo) -> str:
        value = " ".join(value.split())
        if value == "off":
            return value
        variable = f"INVOICEFLOW_{(info.field_name or '').upper()}"
        # Checked by the parser that runs the schedule (Prefect's), not another one.
        why = cron.problem(value)
        if why is not None:
            raise ValueError(
                f"{variable} {value!r} {why}; use e.g. '0 6 1 * *' (06:00 on the 1st), "
                "'@monthly', or 'off' for no schedule"
            )
        return value

    @field_validator("schedule_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"INVOICEFLOW_SCHEDULE_TIMEZONE {value!r} is not an IANA time zone; "
                "use e.g. Europe/Berlin or UTC"
            ) from None
        return value

    @field_validator("dunning_reminder_days", mode="before")
    @classmethod
    def _reminder_days(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        hint = "use days after the due date separated by commas, e.g. 1,7,14 (or '' for none)"
        days = []
        for entry in (part.strip() for part in value.split(",") if value.strip()):
            if not entry.isdigit():
                raise ValueError(f"INVOICEFLOW_DUNNING_REMINDER_DAYS: {entry!r}: {hint}")
            days.append(int(entry))
        return days

    @field_validator("dunning_reminder_days")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(day < 0 for day in value) or value != sorted(set(value)):
            raise ValueError(
                "INVOICEFLOW_DUNNING_REMINDER_DAYS must be distinct days >= 0 in increasing "
                "order, e.g. 1,7,14"
            )
        return value

    @field_validator("stripe_test_clock")
    @classmethod
    def _clock_id(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith("clock_"):
            raise ValueError(
                "INVOICEFLOW_STRIPE_TEST_CLOCK must be a test clock id (clock_…), or unset"
            )
        return value

    @field_validator("stripe_rate")
    @classmethod
    def _stripe_rate(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip().lower()
        if value in _STRIPE_RATE_PRESETS or value == "off":
            return value
        try:
            rate = float(value)
        except ValueError:
            rate = float("nan")
        if not 0 < rate < float("inf"):
            raise ValueError(
                "INVOICEFLOW_STRIPE_RATE must be test (25/s), live (100/s), a positive "
                "number of calls a second, or off"
            )
        return value

    @field_validator("rate_limit_backend")
    @classmethod
    def _rate_limit_backend(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        if value in ("memory", "postgres") or value.startswith(("redis://", "rediss://")):
            return value
        raise ValueError(
            "INVOICEFLOW_RATE_LIMIT_BACKEND must be memory, postgres or a redis://host:port/db URL"
        )

    @model_validator(mode="after")
    def _postgres_limit_needs_postgres(self) -> Settings:
        if self.rate_limit_backend == "postgres" and not self._database_is_postgres():
            raise ValueError(
                "INVOICEFLOW_RATE_LIMIT_BACKEND=postgres needs INVOICEFLOW_DATABASE_URL to be "
                "PostgreSQL; use memory (one process) or redis://host:port/db"
            )
        return self

    @model_validator(mode="after")
    def _refuse_live_key_by_default(self) -> Settings:
        if (
            self.stripe_api_key is not None
            and self.stripe_api_key.get_secret_value().startswith(_LIVE_KEY_PREFIXES)
            and not self.allow_live
        ):
            raise ValueError(
                "STRIPE_API_KEY is a live key; set INVOICEFLOW_ALLOW_LIVE=1 to bill real customers"
            )
        return self

    @model_validator(mode="after")
    def _dunning_ends_after_reminders(self) -> Settings:
        if self.dunning_reminder_days and self.dunning_reminder_days[-1] >= self.dunning_final_days:
            raise ValueError(
                "INVOICEFLOW_DUNNING_FINAL_DAYS must be later than the last of "
                "INVOICEFLOW_DUNNING_REMINDER_DAYS"
            )
        return self

    @model_validator(mode="after")
    def _test_clock_only_in_test_mode(self) -> Settings:
        key = self.stripe_api_key.get_secret_value() if self.stripe_api_key else ""
        if self.stripe_test_clock and key.startswith(_LIVE_KEY_PREFIXES):
            raise ValueError(
                "INVOICEFLOW_STRIPE_TEST_CLOCK works only with a test key; unset it for live mode"
            )
        return self

    def _database_is_postgres(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "postgresql"

    def stripe_mode(self) -> Literal["test", "live"]:
        key = self.stripe_api_key.get_secret_value() if self.stripe_api_key else ""
        return "live" if key.startswith(_LIVE_KEY_PREFIXES) else "test"

    def stripe_rate_per_second(self) -> float | None:
        """Stripe calls a second for the shared limiter; None when it is off."""
        if self.stripe_rate == "off":
            return None
        if self.stripe_rate is None:
            return _STRIPE_RATE_PRESETS[self.stripe_mode()]
        return _STRIPE_RATE_PRESETS.get(self.stripe_rate) or float(self.stripe_rate)

    def rate_limit_store(self) -> str:
        """memory, postgres, or the Redis URL where the shared limit lives."""
        if self.rate_limit_backend is not None:
            return self.rate_limit_backend
        return "postgres" if self._database_is_postgres() else "memory"

    def require_stripe_key(self) -> str:
        if self.stripe_api_key is None:
            raise SettingsError(
                "STRIPE_API_KEY is not set; export a test key (sk_test_…), or run "
                "`invoiceflow demo` which needs no configuration"
            )
        return self.stripe_api_key.get_secret_value()

    def require_trigger_token(self) -> str:
        if self.trigger_token is None:
            raise SettingsError(
                "INVOICEFLOW_TRIGGER_TOKEN is not set; it guards POST /invoices (generate "
                "one with `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return self.trigger_token.get_secret_value()

    def require_webhook_secret(self) -> str:
        if self.stripe_webhook_secret is None:
            raise SettingsError(
                "STRIPE_WEBHOOK_SECRET is not set; use the endpoint's whsec_… secret"
            )
        return self.stripe_webhook_secret.get_secret_value()

    def require_webhook_secrets(self) -> list[str]:
        """Every signing secret accepted now (one, or the old and new ones while rotating)."""
        return [secret.strip() for secret in self.require_webhook_secret().split(",")]


_DELAYS_HINT = "use seconds separated by commas, e.g. 5,30,90 (or JSON: [5, 30, 90]; [] for none)"


def _parse_delays(text: str) -> list[float]:
    """INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS as `5,30,90` or `[5, 30, 90]`."""
    name = "INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS"
    text = text.strip()
    if text.startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(f"{name} is not a valid JSON list; {_DELAYS_HINT}") from None
        if not isinstance(entries, list):
            raise ValueError(f"{name}: {_DELAYS_HINT}")
    else:
        entries = [entry.strip() for entry in text.split(",")]
    delays = []
    for position, entry in enumerate(entries, start=1):
        if entry == "" or entry is None or isinstance(entry, bool):
            raise ValueError(f"{name}: entry {position} is empty; {_DELAYS_HINT}")
        try:
            delay = float(entry)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: entry {position} is not a number; {_DELAYS_HINT}") from None
        if not 0 <= delay < float("inf"):
            raise ValueError(f"{name}: entry {position} must be 0 or more seconds; {_DELAYS_HINT}")
        delays.append(delay)
    return delays


def _require_sqlite_directory(backend: str, database: str | None) -> None:
    """SQLite creates the file but not its directory: name a missing one now rather
    than fail later with 'unable to open database file'."""
    if backend != "sqlite" or not database or database == ":memory:":
        return
    if database.startswith("file:"):  # a URI filename: SQLite's to interpret
        return
    if Path(database) == default_database_path():  # ours: made on first use
        return
    directory = Path(database).expanduser().parent
    if not directory.is_dir():
        raise ValueError(
            f"INVOICEFLOW_DATABASE_URL: directory {str(directory)!r} does not exist; "
            "create it or point the URL at an existing one"
        )


def _field_error(exc: pydantic_settings.SettingsError) -> str:
    """pydantic-settings' own parse errors name the field; we name the variable."""
    match = re.search(r'field "(\w+)"', str(exc))
    field = Settings.model_fields.get(match.group(1)) if match else None
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, AliasChoices):
        return f"{alias.choices[0]} cannot be parsed; check its format"
    return "a setting cannot be parsed; check the INVOICEFLOW_* and STRIPE_* variables"


def load_settings() -> Settings:
    """Read settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings()
    except pydantic_settings.SettingsError as exc:
        raise SettingsError(_field_error(exc)) from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            variable = ".".join(str(part) for part in err.get("loc", ())).upper()
            if variable and variable not in message:
                message = f"{variable}: {message}"
            problems.append(message)
        raise SettingsError("; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; after changing the environment, `get_settings.cache_clear()`."""
    return load_settings()
