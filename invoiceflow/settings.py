"""All configuration, read once from the environment (or a `.env` file).

pydantic-settings reads it: `INVOICEFLOW_<FIELD>`, and Stripe's own names for Stripe's.
Types and `Field` constraints check the values; what no type says stays a validator
(webhook secrets while rotating, the database URL, cron as Prefect reads it, the checks
across fields). The string under each field is its description, the reference that
docs/configuration.md is generated from (`python -m invoiceflow.settings_doc`).
Secrets stay secret: a settings object printed, logged or put into an exception never
shows them, and validation errors never echo the input.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import pydantic_settings
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BeforeValidator,
    Field,
    Secret,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from invoiceflow import cron
from invoiceflow.paths import default_database_path, default_database_url

ENV_PREFIX = "INVOICEFLOW_"
# Key prefixes Stripe issues. Anything else is a typo or a publishable key (pk_…),
# which cannot create invoices.
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
_GENERATE = "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"

T = TypeVar("T")


def _entries(value: object) -> object:
    """A list as people type it, `5,30,90`, or as JSON, `[5, 30, 90]`; pydantic then
    checks each entry (and names it by its place in the error's `loc`)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text.startswith("["):
        return [entry.strip() for entry in text.split(",")]
    try:
        return json.loads(text)  # "[" then valid JSON: a list
    except json.JSONDecodeError:
        raise ValueError("is not a valid JSON list") from None


# `STRIPE_API_BASE=` (empty) means unset, as if the line were not there.
BlankIsUnset = BeforeValidator(
    lambda value: value.strip() or None if isinstance(value, str) else value
)
# NoDecode: pydantic-settings alone would read a list as JSON only.
CommaList = Annotated[list[T], NoDecode, BeforeValidator(_entries)]
StripeKey = Secret[Annotated[str, StringConstraints(pattern=r"^[sr]k_(test|live)_")]]
StripeRate = Literal["test", "live", "off"] | Annotated[float, Field(gt=0)]
if TYPE_CHECKING:  # callers get the plain strings they hand to the SDK and to Prefect
    HttpUrlText = str
    TimeZoneName = str
else:  # checked by pydantic's types; the URL without the "/" AnyHttpUrl appends
    HttpUrlText = Annotated[AnyHttpUrl, AfterValidator(lambda url: str(url).rstrip("/"))]
    TimeZoneName = Annotated[ZoneInfo, AfterValidator(lambda zone: zone.key)]


def _more(**extra: str) -> Any:
    """A field's notes: `fix`, the end of its one-line error in place of pydantic's
    message; `unit` of a list's entries; `shown_default`, the default the docs show."""
    return {"json_schema_extra": extra}


class SettingsError(ValueError):
    """A setting is missing or malformed. The message names the variable and the fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,  # fields with a validation_alias keep Stripe's names
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,  # never echo a key back in an error
        allow_inf_nan=False,  # an infinite lease or timeout is a typo, not a wish
        use_attribute_docstrings=True,  # the string under a field is its description
    )

    # --- Stripe -----------------------------------------------------------------
    stripe_api_key: StripeKey | None = Field(
        default=None,
        validation_alias="STRIPE_API_KEY",
        **_more(
            fix="must be a secret or restricted key (sk_test_…, rk_test_…, sk_live_…, "
            "rk_live_…); publishable keys (pk_…) cannot create invoices"
        ),
    )
    """Stripe secret or restricted key (`sk_test_…`, `rk_test_…`); live keys (`sk_live_…`,
    `rk_live_…`) need `INVOICEFLOW_ALLOW_LIVE=1`. `invoiceflow demo` needs none."""
    allow_live: bool = False
    """Allow a live key, that is, bill real customers. Off, so that a live key pasted by
    mistake is refused at start."""
    stripe_api_base: Annotated[HttpUrlText | None, BlankIsUnset] = Field(
        default=None,
        validation_alias="STRIPE_API_BASE",
        **_more(
            fix="must be an http(s) URL such as http://127.0.0.1:12111 (leave it unset to "
            "talk to Stripe itself)",
            shown_default="Stripe itself",
        ),
    )
    """Where Stripe's API is, e.g. `http://127.0.0.1:12111` for the sandbox; unset: Stripe
    itself."""
    stripe_webhook_secret: SecretStr | None = Field(None, validation_alias="STRIPE_WEBHOOK_SECRET")
    """The webhook endpoint's signing secret, `whsec_` and at least 24 letters or digits as
    Stripe shows it (anything shorter, empty or malformed is refused). While rotating: the
    old and the new one separated by a comma, both accepted, each must be real. The webhook
    receiver needs it."""
    stripe_timeout_seconds: float = Field(default=30.0, gt=0)
    """HTTP timeout of one Stripe call, in seconds. Shorter than the SDK's 80 s: a write that
    times out is retried under the same idempotency key, so a short timeout costs nothing in
    correctness and frees the worker sooner."""
    stripe_test_clock: Annotated[str | None, BlankIsUnset] = Field(
        default=None,
        pattern=r"^clock_\S+$",
        **_more(fix="must be a test clock id (clock_…), or unset"),
    )
    """Test mode only: new Stripe customers join this test clock (`clock_…`), so advancing
    the clock moves their invoices through time."""

    # --- the service and the ledger --------------------------------------------
    trigger_token: SecretStr | None = Field(
        default=None,
        min_length=MIN_TRIGGER_TOKEN_LENGTH,
        **_more(
            fix=f"must be at least {MIN_TRIGGER_TOKEN_LENGTH} characters; generate one "
            f"with {_GENERATE}"
        ),
    )
    """Bearer token of `POST /invoices`, at least 16 characters (shorter ones can be guessed
    over HTTP). `invoiceflow serve` needs it; the trigger refuses every request while it is
    unset. Generate one with `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`."""
    database_url: str = Field(
        default_factory=default_database_url,
        **_more(shown_default="`sqlite:///~/.local/share/invoiceflow/invoiceflow.db`"),
    )
    """The ledger: `sqlite:///path` or `postgresql+psycopg://user@host/db`. The default is one
    file per user (`$XDG_DATA_HOME/invoiceflow/…` when that is set), never the working
    directory; `invoiceflow status` names it. A SQLite file in a directory that does not
    exist is refused at start."""
    lease_seconds: float = Field(default=300.0, gt=0)
    """How long a run holds a request before another run may take it over, in seconds: long
    enough for the slowest step plus retries. A live run renews its lease every third of
    this; a crashed run blocks its request for at most this long."""
    await_paid_seconds: float = Field(default=60.0, ge=0)
    """How long `invoiceflow invoice` (without `--no-wait`) watches our database for the
    payment the webhook receiver records, in seconds; then it reports `sent`."""
    stale_run_seconds: float = Field(default=180.0, gt=0)
    """A flow run still `Pending` this long after it was claimed (its process never came
    up), or this long overdue in `Scheduled` with no worker (or `serve`) polling its
    deployment for 60 s, is dead, in seconds: a billing run takes such a shard back, a
    repeated `POST /invoices` starts the request again, and `serve` takes back such a run of
    its own deployments (see [Scale-out](service.md#scale-out-one-billing-run-over-several-workers),
    [Crashed runs](service.md#crashed-runs))."""

    # --- retries ----------------------------------------------------------------
    retry_attempts: int = Field(default=6, ge=1, le=20)
    """Attempts of one Stripe call within its task, the first included (exponential backoff
    with jitter between them)."""
    retry_base_delay_seconds: float = Field(default=0.25, gt=0)
    """First wait between those attempts, in seconds."""
    retry_max_delay_seconds: float = Field(default=8.0, gt=0)
    """Longest wait between those attempts, in seconds."""
    task_retry_delays_seconds: CommaList[Annotated[float, Field(ge=0)]] = Field(
        default=[5.0, 30.0, 90.0],
        **_more(
            fix="use seconds separated by commas, e.g. 5,30,90 (or JSON: [5, 30, 90]; [] for none)",
            unit="seconds",
        ),
    )
    """Prefect task retries once the in-task ones gave up, the seconds before each: spread out
    to ride over a Stripe incident of a minute or two. Also JSON `[5, 30, 90]`; `[]` for
    none. Not for a Stripe that refuses the connection or never answers it (a wrong
    `STRIPE_API_BASE`, no network): that is retried for at most 20 s plus one
    `INVOICEFLOW_STRIPE_TIMEOUT_SECONDS`, then the run ends with exit 5 and one line naming
    the address."""

    # --- billing cycles (see docs/billing-cycles.md) -----------------------------
    billing_cron: str = "0 6 1 * *"
    """When `invoiceflow serve` runs the billing run: a 5-field cron or an alias such as
    `@monthly`, checked by Prefect's own parser, in `INVOICEFLOW_SCHEDULE_TIMEZONE`. One that
    never fires, like `0 6 31 2 *`, is refused; `off` runs it only when triggered."""
    dunning_cron: str = "0 7 * * *"
    """When `invoiceflow serve` runs dunning; as above."""
    reconcile_cron: str = "30 * * * *"
    """When `invoiceflow serve` runs reconcile; as above."""
    schedule_timezone: TimeZoneName = Field(
        default="UTC", **_more(fix="is not an IANA time zone; use e.g. Europe/Berlin or UTC")
    )
    """The IANA time zone of those crons, e.g. `Europe/Berlin` (06:00 Berlin time, summer or
    winter)."""
    billing_source: str = Field(
        default="pending",
        min_length=1,
        **_more(fix="must be pending, a JSONL/CSV file or a directory of request files"),
    )
    """What a scheduled billing run bills: `pending` (requests recorded in our database and
    not sent yet), or a JSONL/CSV file or a directory of request files every worker can
    read."""
    batch_workers: int = Field(default=8, ge=1, le=64)
    """Requests of one billing run in flight at once (threads of its flow run)."""
    batch_chunk: int = Field(default=10, ge=1, le=250)
    """Requests per Prefect task of a billing run: a chunk bills its requests as plain calls,
    so Prefect's cost (a task run, its records, an artifact) is paid once per chunk; 1 keeps
    a task per request."""
    batch_shards: int = Field(default=1, ge=1, le=64)
    """Shards a billing run is spread over: 1 bills in the run's own process; N starts N runs
    of the `billing-shard` deployment on the work pool's workers (see
    [Scale-out](service.md#scale-out-one-billing-run-over-several-workers))."""
    dunning_reminder_days: CommaList[Annotated[int, Field(ge=0)]] = Field(
        default=[1, 7, 14],
        **_more(
            fix="use days after the due date separated by commas, e.g. 1,7,14 (or '' for none)",
            unit="days",
        ),
    )
    """Days after the due date on which an open invoice is emailed again, in increasing order;
    `''` for none."""
    dunning_final_days: int = Field(default=30, ge=1, le=365)
    """Days after the due date on which a still-open invoice is written off; later than the
    last reminder."""
    dunning_final_action: Literal["uncollectible", "void"] = "uncollectible"
    """How it is written off: `uncollectible` (it can still be paid) or `void`."""

    # --- the shared Stripe rate limit (see docs/design.md, "Rate limit") ---------
    stripe_rate: Annotated[StripeRate | None, BlankIsUnset] = Field(
        default=None,
        **_more(
            fix="must be test (25/s), live (100/s), a positive number of calls a second, or off",
            shown_default="by the key: `test` (25/s), `live` (100/s)",
        ),
    )
    """Stripe calls a second, shared by every process that calls Stripe with this key (see
    [Rate limit](design.md#rate-limit)): `test` (25/s), `live` (100/s), a positive number, or
    `off`; unset: by the key's mode."""
    rate_limit_backend: Annotated[str | None, BlankIsUnset] = Field(
        default=None,
        pattern=r"^(memory|postgres|rediss?://\S+)$",
        **_more(
            fix="must be memory, postgres or a redis://host:port/db URL",
            shown_default="`postgres` with a PostgreSQL database, else `memory`",
        ),
    )
    """Where the shared limit lives: `memory` (this process only), `postgres` (our database,
    which must then be PostgreSQL), or `redis://host:port/db`."""

    # --- hold for approval and notifications (see docs/billing-cycles.md) -------
    billing_hold: bool = Field(default=False, **_more(shown_default="`false`"))
    """Whether `invoiceflow serve`'s billing-run deployment holds its runs for approval by
    default (its `hold` parameter): every request a filled draft, the run suspended in the
    Prefect UI with an approve/reject form."""
    approval_timeout_days: float = Field(default=14.0, gt=0, le=365)
    """How long a held billing run waits in the Prefect UI for its form. Then Prefect ends
    the run Failed; its drafts stay held, and `invoiceflow approve RUN` or `reject RUN`
    still decides."""
    approval_remind_hours: float = Field(default=24.0, gt=0)
    """Hours a held billing run may wait for a decision before `INVOICEFLOW_NOTIFY_BLOCK`
    is told (once per wait)."""
    notify_block: Annotated[str | None, BlankIsUnset] = Field(
        default=None,
        pattern=r"^[a-z0-9-]+/[a-z0-9-]+$",
        **_more(fix="must be a Prefect block's type slug and name, e.g. webhook/ops-alerts"),
    )
    """The Prefect block `invoiceflow automations` notifies through: `<type>/<name>`, e.g.
    `webhook/ops-alerts` (a Webhook block, called with a JSON body) or a notification block
    such as `slack-webhook/ops` or `email/ops`; unset: no notifications."""

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
        # Checked by the parser that runs the schedule (Prefect's, imported only for
        # an expression that is not a default), not another one.
        why = None if value == "off" else cron.problem(value)
        if why is not None:
            raise ValueError(
                f"{variable(info.field_name or '')} {value!r} {why}; use e.g. '0 6 1 * *' "
                "(06:00 on the 1st), '@monthly', or 'off' for no schedule"
            )
        return value

    @field_validator("dunning_reminder_days", mode="before")
    @classmethod
    def _no_reminders(cls, value: object) -> object:
        return [] if isinstance(value, str) and not value.strip() else value

    @field_validator("dunning_reminder_days")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if value != sorted(set(value)):
            raise ValueError(
                "INVOICEFLOW_DUNNING_REMINDER_DAYS must be distinct days >= 0 in increasing "
                "order, e.g. 1,7,14"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """The checks across fields; each names the variables to change."""
        live = self.stripe_mode() == "live"
        if live and not self.allow_live:
            raise ValueError(
                "STRIPE_API_KEY is a live key; set INVOICEFLOW_ALLOW_LIVE=1 to bill real customers"
            )
        if live and self.stripe_test_clock:
            raise ValueError(
                "INVOICEFLOW_STRIPE_TEST_CLOCK works only with a test key; unset it for live mode"
            )
        if self.rate_limit_backend == "postgres" and not self._database_is_postgres():
            raise ValueError(
                "INVOICEFLOW_RATE_LIMIT_BACKEND=postgres needs INVOICEFLOW_DATABASE_URL to be "
                "PostgreSQL; use memory (one process) or redis://host:port/db"
            )
        if self.dunning_reminder_days and self.dunning_reminder_days[-1] >= self.dunning_final_days:
            raise ValueError(
                "INVOICEFLOW_DUNNING_FINAL_DAYS must be later than the last of "
                "INVOICEFLOW_DUNNING_REMINDER_DAYS"
            )
        return self

    def _database_is_postgres(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "postgresql"

    def stripe_mode(self) -> Literal["test", "live"]:
        key = self.stripe_api_key.get_secret_value() if self.stripe_api_key else ""
        return "live" if key.startswith(_LIVE_KEY_PREFIXES) else "test"

    def stripe_rate_per_second(self) -> float | None:
        """Stripe calls a second for the shared limiter; None when it is off."""
        rate = self.stripe_mode() if self.stripe_rate is None else self.stripe_rate
        if rate == "off":
            return None
        return _STRIPE_RATE_PRESETS[rate] if isinstance(rate, str) else rate

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
                f"one with {_GENERATE})"
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


def _require_sqlite_directory(backend: str, database: str | None) -> None:
    """SQLite creates the file but not its directory: name a missing one now rather
    than fail later with 'unable to open database file'."""
    # Not a file, a URI filename (SQLite's to interpret), or ours (made on first use).
    if backend != "sqlite" or database in (None, "", ":memory:") or database.startswith("file:"):
        return
    if Path(database) == default_database_path():
        return
    directory = Path(database).expanduser().parent
    if not directory.is_dir():
        raise ValueError(
            f"INVOICEFLOW_DATABASE_URL: directory {str(directory)!r} does not exist; "
            "create it or point the URL at an existing one"
        )


def variable(field_name: str) -> str:
    """The environment variable a field is read from."""
    alias = Settings.model_fields[field_name].validation_alias
    return alias if isinstance(alias, str) else ENV_PREFIX + field_name.upper()


def extra(field: FieldInfo, key: str) -> str | None:
    """One of the `_more` notes of a field."""
    notes = field.json_schema_extra
    value = notes.get(key) if isinstance(notes, dict) else None
    return value if isinstance(value, str) else None


# An error's `loc` starts with the field's alias when it has one, else its name.
_FIELDS_BY_LOC = {
    (field.validation_alias if isinstance(field.validation_alias, str) else name): name
    for name, field in Settings.model_fields.items()
}
# What is wrong with an entry of a list, by the first word of pydantic's error type;
# any other is its constraint (every list's entries are numbers >= 0).
_ENTRY_PROBLEMS = {"float": "is not a number", "int": "is not a whole number"}


def _one_line(error: ErrorDetails) -> str:
    """pydantic's error as one line naming the variable and the fix (never the input)."""
    message = error["msg"].removeprefix("Value error, ")
    name = _FIELDS_BY_LOC.get(str(error["loc"][0])) if error["loc"] else None
    if name is None:  # a check across fields names its variables
        return message
    field, where = Settings.model_fields[name], variable(name)
    fix = extra(field, "fix")
    if where in message:  # our validators name the variable and the fix
        return message
    if len(error["loc"]) > 1 and isinstance(error["loc"][1], int):  # an entry of a list
        empty = error.get("input") in ("", None)
        kind = error["type"].split("_")[0]
        problem = _ENTRY_PROBLEMS.get(kind, f"must be 0 or more {extra(field, 'unit')}")
        problem = "is empty" if empty else problem
        return f"{where}: entry {error['loc'][1] + 1} {problem}; {fix}"
    if error["type"] == "value_error":  # the list's own parse
        return f"{where} {message}; {fix}"
    return f"{where} {fix}" if fix else f"{where}: {message}"


def load_settings() -> Settings:
    """Read settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings()
    except pydantic_settings.SettingsError as exc:  # a source could not read a value
        raise SettingsError(f"{exc}; check the INVOICEFLOW_* and STRIPE_* variables") from None
    except ValidationError as exc:
        # A union (the Stripe rate) reports each of its members: one line is enough.
        problems = dict.fromkeys(_one_line(error) for error in exc.errors())
        raise SettingsError("; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; after changing the environment, `get_settings.cache_clear()`."""
    return load_settings()
