"""The sandbox's knobs: latency, rate limit, random and scripted faults, webhook behaviour.

Set at start (`start_sandbox(**config)`, CLI flags) and changed at run time through
`POST /_sandbox/config` with a JSON object of the same names.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

# Stripe's documented default rate limits (requests per second) in test and live mode.
RATE_LIMIT_PRESETS = {"test": 25.0, "live": 100.0}
FAULT_KINDS = (
    "before_write",
    "after_write",
    "drop_after_write",
    "status_429",
    "status_409",
    "stall_before_write",
    "stall_after_write",
)
# Stalls hold a request open so a test can kill its client at a precise moment:
# `stall_before_write` before anything is written (then a retryable 500),
# `stall_after_write` after the write is applied (then the real response). The
# request appears in the request log as soon as the stall begins.
STALL_KINDS = ("stall_before_write", "stall_after_write")


_BOOLEAN_KNOBS = frozenset({"webhook_reorder", "record_responses", "allow_remote_webhooks"})


_INTEGER_KNOBS = frozenset(
    {"webhook_max_attempts", "invoice_will_be_due_days", "invoice_overdue_days", "bank_debit_days"}
)
# Knobs where null is a value of its own, not a number missing.
_NULLABLE_FLOAT_KNOBS = frozenset({"bank_debit_settle_ms"})


class ConfigError(ValueError):
    """A knob with an unknown name or an impossible value."""


@dataclass
class ScriptedFault:
    """One deterministic fault: the next `times` requests matching method and path get it."""

    when: str
    path: str = ".*"  # regex searched in the request path
    method: str | None = None  # None matches every method
    times: int = 1

    def __post_init__(self) -> None:
        if self.when not in FAULT_KINDS:
            raise ConfigError(f"fault `when` must be one of {', '.join(FAULT_KINDS)}")
        if self.times < 1:
            raise ConfigError("fault `times` must be at least 1")
        try:
            self.pattern = re.compile(self.path)
        except re.error as exc:
            raise ConfigError(f"fault path is not a regex: {exc}") from None
        if self.method is not None:
            self.method = self.method.upper()

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and bool(self.pattern.search(path))

    def as_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "when": self.when, "times": self.times}


@dataclass
class SandboxConfig:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_limit: float | None = None  # requests per second per API key; None = unlimited
    fail_before_write: float = 0.0
    fail_after_write: float = 0.0
    drop_after_write: float = 0.0
    webhook_duplicate: float = 0.0
    # How long a scripted stall holds its request before answering.
    stall_ms: float = 2_000.0
    webhook_reorder: bool = False
    # Reordering delays each delivery by a random amount up to this window.
    webhook_reorder_window_ms: float = 300.0
    webhook_delay_ms: float = 0.0
    # Stripe retries failed deliveries with exponential backoff for up to three days; the
    # sandbox keeps the shape but makes the clock configurable so tests take seconds.
    webhook_retry_base_ms: float = 1_000.0
    webhook_retry_max_ms: float = 60_000.0
    webhook_max_attempts: int = 8
    webhook_timeout_s: float = 10.0
    seed: int | None = None
    # Stripe's clock relative to this machine's, in seconds (negative: Stripe
    # is behind us). Every timestamp the sandbox stamps uses it, so tests can
    # run our side with a clock that is off from Stripe's.
    clock_offset_s: float = 0.0
    faults: list[ScriptedFault] = field(default_factory=list)
    # Keep every API response body for `GET /_sandbox/responses` (schema tests). Off by
    # default: a long-running sandbox would otherwise hold every body it ever served.
    record_responses: bool = False
    # Webhooks go to loopback addresses only (127.0.0.0/8, ::1, localhost) unless this is
    # on: a sandbox must not POST test events to arbitrary hosts on the internet.
    allow_remote_webhooks: bool = False
    # Stripe lets each account choose (Billing → Automations / customer emails) how many
    # days before its due date an invoice raises `invoice.will_be_due` and how many days
    # after it `invoice.overdue`; these are the sandbox account's choices. Only test clocks
    # move time far enough to reach them.
    invoice_will_be_due_days: int = 7
    invoice_overdue_days: int = 0
    # How long a test clock stays `advancing` before it is `ready` (real Stripe takes
    # seconds to minutes; clients poll either way).
    test_clock_advance_ms: float = 100.0
    # A bank debit (`pm_usBankAccount_*`) stays `processing` before its outcome, as ACH
    # does for up to four business days. Invoices on a test clock settle when the clock
    # passes `bank_debit_days` after the payment; others after `bank_debit_settle_ms` of
    # wall time, or, when that is null, only on `POST /_sandbox/bank_debits/settle`.
    bank_debit_days: int = 4
    bank_debit_settle_ms: float | None = 2_000.0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply `changes` atomically: validate everything first, then assign."""
        candidate = dataclasses.replace(self, faults=list(self.faults))
        names = {f.name for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in names:
                raise ConfigError(f"unknown sandbox setting: {name}")
            setattr(candidate, name, _coerce(name, value))
        candidate.validate()
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(candidate, f.name))

    def validate(self) -> None:
        for name in (
            "fail_before_write",
            "fail_after_write",
            "drop_after_write",
            "webhook_duplicate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} is a fraction between 0 and 1")
        if self.fail_before_write + self.fail_after_write + self.drop_after_write > 1.0:
            raise ConfigError("the fault fractions add up to more than 1")
        for name in (
            "latency_ms",
            "jitter_ms",
            "webhook_delay_ms",
            "webhook_retry_base_ms",
            "webhook_retry_max_ms",
            "webhook_reorder_window_ms",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} cannot be negative")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ConfigError("rate_limit must be positive")
        if self.webhook_max_attempts < 1:
            raise ConfigError("webhook_max_attempts must be at least 1")
        for name in (
            "invoice_will_be_due_days",
            "invoice_overdue_days",
            "test_clock_advance_ms",
            "bank_debit_days",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} cannot be negative")
        if self.bank_debit_settle_ms is not None and self.bank_debit_settle_ms < 0:
            raise ConfigError("bank_debit_settle_ms cannot be negative (null holds the debits)")

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["faults"] = [fault.as_json() for fault in self.faults]
        return data


def _coerce(name: str, value: Any) -> Any:
    try:
        if name == "rate_limit":
            return parse_rate_limit(value)
        if name == "faults":
            if not isinstance(value, list):
                raise ConfigError("faults is a list of objects")
            return [ScriptedFault(**fault) for fault in value]
        if name == "seed":
            return None if value is None else int(value)
        if name in _BOOLEAN_KNOBS:
            if not isinstance(value, bool):
                raise ConfigError(f"{name} is a boolean")
            return value
        if name in _INTEGER_KNOBS:
            return int(value)
        if name in _NULLABLE_FLOAT_KNOBS and value is None:
            return None
        return float(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid value for {name}: {value!r}") from None


def parse_rate_limit(value: Any) -> float | None:
    """A number of requests per second, or the preset names "test" / "live"."""
    if value is None or value == "" or value == "off":
        return None
    if isinstance(value, str) and value in RATE_LIMIT_PRESETS:
        return RATE_LIMIT_PRESETS[value]
    return float(value)
