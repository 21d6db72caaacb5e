"""Which Stripe failures are worth retrying, and how long to wait before the next try.

Transient: connection errors and timeouts, 5xx, 409 (a concurrent request holds
our idempotency key or the object's lock), 429. Permanent: card errors and every
other 4xx — retrying them only repeats the same answer. Stripe's own
`Stripe-Should-Retry` header overrides the status code when present.

A retry always resends the exact same call under the exact same idempotency
key; nothing here builds a request.

Every attempt first takes a slot of the shared rate limit
(`invoiceflow.ratelimit`), and a 429 pushes that limit back for everyone who
shares it: one caller meeting Stripe's limit slows all of them down, instead
of each finding out on its own with a 429 of its own. A limit whose store is
down fails closed (no slot, no call) and is transient like a connection error:
retried here with backoff, then `temporary` for the run, which a rerun resumes.

An address that refuses or never answers the connection (`is_unreachable`: a
wrong STRIPE_API_BASE, no network) is retried for at most
`RetryPolicy.unreachable_seconds`, and the step is not retried again later:
waiting minutes cannot fix a setting. It is described in one line naming the
address and the setting that points there, never the SDK's "let us know at
support@stripe.com".
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import stripe

from invoiceflow import progress
from invoiceflow.ratelimit import Limiter, RateLimitStoreDown, Unlimited, limiter

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with equal jitter (half the ceiling fixed, half drawn), capped,
    within a deadline: never a near-zero wait that hammers a struggling Stripe."""

    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0
    # Longest we honour a server's Retry-After before giving the retry back to
    # the orchestrator (which retries the whole task later).
    max_retry_after: float = 30.0
    # Longest we keep retrying an unreachable Stripe (connection refused, name
    # not resolved, connect timeout): one more attempt may start before it ends,
    # so the wait is bounded by this plus one INVOICEFLOW_STRIPE_TIMEOUT_SECONDS.
    unreachable_seconds: float = 20.0

    def delay(self, attempt: int, exc: BaseException) -> float:
        hinted = retry_after_seconds(exc)
        if hinted is not None:
            return min(hinted, self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def configured_policy() -> RetryPolicy:
    from invoiceflow.settings import get_settings

    settings = get_settings()
    return RetryPolicy(
        attempts=settings.retry_attempts,
        base_delay=settings.retry_base_delay_seconds,
        max_delay=settings.retry_max_delay_seconds,
    )


def _headers(exc: stripe.StripeError) -> dict[str, str]:
    return {k.lower(): v for k, v in (exc.headers or {}).items()}


def retry_after_seconds(exc: BaseException) -> float | None:
    if not isinstance(exc, stripe.StripeError):
        return None
    value = _headers(exc).get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def is_rate_limited(exc: BaseException) -> bool:
    """Stripe said 429: the shared limit, not only this call, must slow down."""
    return isinstance(exc, stripe.RateLimitError) or (
        isinstance(exc, stripe.StripeError) and exc.http_status == 429
    )


def is_transient(exc: BaseException, *, read: bool = False) -> bool:
    """True when the same call may succeed if simply made again.

    `read`: the call only reads, so no idempotency key can have stored its
    failure and any 5xx is worth another try whatever Stripe-Should-Retry says.
    """
    if isinstance(exc, stripe.APIConnectionError | RateLimitStoreDown):
        return True  # the store: no call was made, so a write is as safe to retry as a read
    if not isinstance(exc, stripe.StripeError):
        return False
    if read and (exc.http_status or 0) >= 500:
        return True
    should_retry = _headers(exc).get("stripe-should-retry")
    if should_retry is not None:
        return should_retry == "true"
    if isinstance(exc, stripe.CardError | stripe.AuthenticationError | stripe.PermissionError):
        return False
    status = exc.http_status or 0
    return status >= 500 or status == 409 or is_rate_limited(exc)


def call_with_retries(
    call: Callable[[], T],
    what: str,
    *,
    read: bool = True,
    search: bool = False,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `call`, retrying transient Stripe failures; permanent ones raise at once.

    Most calls are reads; writes go through `invoiceflow.stripe_write.write_once`,
    which passes `read=False`. `search`: the call is a Stripe Search, which
    has a budget of its own besides the global one.
    """
    policy = policy or configured_policy()
    gate = limiter()
    attempt = 1
    started = time.monotonic()
    while True:
        try:
            gate.acquire("search" if search else "api")  # in the try: its store may be down
            return call()
        except Exception as exc:
            wait = policy.delay(attempt, exc)
            if (
                not is_transient(exc, read=read)
                or attempt >= policy.attempts
                or _past_unreachable_budget(exc, policy, time.monotonic() - started + wait)
            ):
                _name_the_call(exc, what)
                raise
            if is_rate_limited(exc):
                _push_back(gate, wait)
            progress.log.warning(
                "Stripe: %s: %s; retry %d in %.1fs", what, describe(exc), attempt, wait
            )
            sleep(wait)
            attempt += 1


def _past_unreachable_budget(exc: BaseException, policy: RetryPolicy, waited: float) -> bool:
    return is_unreachable(exc) and waited > policy.unreachable_seconds


def _push_back(gate: Limiter | Unlimited, seconds: float) -> None:
    """Hold the sharers back after a 429; with the store down, this caller's own
    backoff must do (its next slot fails closed until the store is back)."""
    try:
        gate.push_back(seconds)
    except RateLimitStoreDown as exc:
        progress.log.warning("Could not hold back the rate limit's sharers: %s", exc)


def _name_the_call(exc: BaseException, what: str) -> None:
    """Remember which call failed, so the one-line reason says what we were doing."""
    if not getattr(exc, "__notes__", None):
        exc.add_note(what)


# Longest failure description we log or store; Stripe's connection errors
# carry whole urllib3 chains in their message.
MAX_DESCRIPTION = 300


def describe(exc: BaseException) -> str:
    """A one-line, secret-free description of a failure for logs and the ledger."""
    if isinstance(exc, stripe.APIConnectionError):
        text = _unreachable(exc)  # the SDK's text is a paragraph ending in Stripe's support
    elif isinstance(exc, stripe.StripeError):
        status = f"HTTP {exc.http_status} " if exc.http_status else ""
        code = f"{exc.code}: " if exc.code else ""
        text = f"{type(exc).__name__} {status}{code}{exc.user_message or exc._message or ''}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    notes = getattr(exc, "__notes__", None)
    if notes:
        text = f"{notes[0]}: {text}"
    text = " ".join(text.split())
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


# --- Stripe unreachable --------------------------------------------------------


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it came from: requests' error, urllib3's, the socket's."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        inner = getattr(seen, "reason", None)  # urllib3's MaxRetryError holds it here
        if not isinstance(inner, BaseException):
            inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = seen.__cause__ or seen.__context__ or inner
    return chain


def is_unreachable(exc: BaseException) -> bool:
    """No connection to Stripe was made: refused, name not resolved, connect timeout.

    Not a read timeout or a dropped connection: those reached Stripe, which may
    have done the work and is merely slow to say so.
    """
    if not isinstance(exc, stripe.APIConnectionError):
        return False
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    return any(isinstance(one, NewConnectionError | ConnectTimeoutError) for one in _causes(exc))


def _network_reason(exc: BaseException) -> str:
    text = " ".join(str(one) for one in _causes(exc)[1:]).lower()
    for needle, reason in (
        ("refused", "connection refused"),
        ("resolve", "name not resolved"),
        ("not known", "name not resolved"),
        ("getaddrinfo", "name not resolved"),
        ("timed out", "timed out"),
        ("certificate", "TLS certificate not trusted"),
        ("ssl", "TLS error"),
        ("unreachable", "network unreachable"),
    ):
        if needle in text:
            return reason
    cause = exc.__cause__
    return type(cause).__name__ if cause is not None else "connection failed"


def _where_stripe_is() -> tuple[str, str]:
    """Stripe's address as configured (no credentials), and what to check."""
    from urllib.parse import urlsplit

    from invoiceflow.settings import SettingsError, get_settings

    try:
        base = get_settings().stripe_api_base
    except SettingsError:
        base = None
    if not base:
        return "https://api.stripe.com", "check the network (or set STRIPE_API_BASE)"
    parts = urlsplit(base)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}", "check STRIPE_API_BASE"


def _unreachable(exc: stripe.APIConnectionError) -> str:
    where, check = _where_stripe_is()
    verb = "unreachable" if is_unreachable(exc) else "connection failed"
    return f"Stripe {verb} at {where} ({_network_reason(exc)}); {check}"
