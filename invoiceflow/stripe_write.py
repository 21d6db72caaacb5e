"""One Stripe write, made at most once in effect, whatever happened to earlier attempts.

Every step that writes to Stripe goes through `write_once`:

1. record the intent (the idempotency key) in our database before calling Stripe;
2. if an earlier attempt recorded the same intent it may have reached Stripe
   without our database hearing back, so look the result up first (`find`);
3. write under the key, retrying transient failures with the same key;
4. if Stripe answered 500 *after* starting the write, it stores that 500 under
   the key and replays it for 24 h (`Stripe-Should-Retry: false`): the outcome
   is unknown. Look it up again; only if it is certainly absent (consistent
   reads, never Search) write again under the next key of a deterministic chain.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

import stripe

from invoiceflow import ledger
from invoiceflow.retry import call_with_retries, is_transient
from invoiceflow.runtime import Runtime

T = TypeVar("T")

# A key Stripe answered with a stored 500 is spent; the next write uses this
# suffix. Three 500-after-write answers in a row is an incident, not noise:
# fail the step and let a later rerun (or a human) take it from there.
SPENT_KEY_SUFFIX = ":after-500"
MAX_KEYS_PER_WRITE = 3


def outcome_unknown(exc: BaseException) -> bool:
    """A 5xx that Stripe says not to retry: the write may or may not have happened."""
    return (
        isinstance(exc, stripe.APIError) and (exc.http_status or 0) >= 500 and not is_transient(exc)
    )


def write_once(
    rt: Runtime,
    *,
    key: str,
    step: str,
    request_id: str | None,
    write: Callable[[str], T],
    find: Callable[[ledger.Intent], T | None],
    what: str,
) -> tuple[T, str]:
    """The written (or found) object and the key it was finally written under."""
    for _ in range(MAX_KEYS_PER_WRITE):
        intent = ledger.intend(rt.engine, key, step, request_id)
        if intent.seen_before:
            found = find(intent)
            if found is not None:
                return found, key
        try:
            return call_with_retries(partial(write, key), what, read=False), key
        except stripe.StripeError as exc:
            if not outcome_unknown(exc):
                raise
            found = find(intent)
            if found is not None:
                return found, key
            key += SPENT_KEY_SUFFIX
    raise RuntimeError(f"{what}: Stripe failed {MAX_KEYS_PER_WRITE} times after starting the write")


def ensure_shared(
    rt: Runtime,
    *,
    key: str,
    step: str,
    request_id: str | None,
    find: Callable[[], T | None],
    create: Callable[[str], T],
    what: str,
) -> tuple[T, str]:
    """A Stripe object many requests share (product, price, customer): look it up
    first, else create it once.

    A create that Stripe refuses because a concurrent run created the object
    first (a custom id or lookup key already taken) adopts that object.
    """
    found = find()
    if found is not None:
        return found, key

    def create_or_adopt(idempotency_key: str) -> T:
        try:
            return create(idempotency_key)
        except stripe.InvalidRequestError:
            adopted = find()
            if adopted is None:
                raise
            return adopted

    return write_once(
        rt,
        key=key,
        step=step,
        request_id=request_id,
        write=create_or_adopt,
        find=lambda _intent: find(),
        what=what,
    )
