"""One Stripe write, made at most once in effect, whatever happened to earlier attempts.

Every step that writes to Stripe goes through `write_once`:

1. record the intent (the idempotency key) in our database before calling Stripe
   (the step before may have recorded it with its own commit, and noted it on
   the attempt: `Attempt.recorded`);
2. if an earlier attempt recorded the same intent it may have reached Stripe
   without our database hearing back, so look the result up first (`find`);
3. write under the key, retrying transient failures with the same key;
4. if Stripe answered 500 *after* starting the write, it stores that 500 under
   the key and replays it for 24 h (`Stripe-Should-Retry: false`): the outcome
   is unknown. Look it up again; only if it is certainly absent (consistent
   reads, never Search) write again under the next key of a deterministic chain.

Before the first attempt, too, the step looks the object up (`look_first`)
unless it provably cannot exist yet (see `invoiceflow.fresh`): our database
may be new, restored or another machine's, and past Stripe's 24 h key window
only a lookup stops a second object.

For creates (`recheck_replays`), a replayed answer is checked against the
lookup: a key that replays an object the lookup cannot find replays a deleted
one (a draft deleted in the Dashboard). That key is spent too; never commit
the ghost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import stripe

from invoiceflow import fresh, lease, ledger
from invoiceflow.attempt import Attempt
from invoiceflow.retry import call_with_retries, is_transient
from invoiceflow.runtime import Runtime

T = TypeVar("T")
log = logging.getLogger(__name__)

# A key Stripe answered with a stored 500 is spent; the next write uses this
# suffix. Three 500-after-write answers in a row is an incident, not noise:
# fail the step and let a later rerun (or a human) take it from there.
SPENT_KEY_SUFFIX = ":after-500"
GONE_KEY_SUFFIX = ":after-delete"
MAX_KEYS_PER_WRITE = 5


def outcome_unknown(exc: BaseException) -> bool:
    """A 5xx that Stripe says not to retry: the write may or may not have happened."""
    return (
        isinstance(exc, stripe.APIError) and (exc.http_status or 0) >= 500 and not is_transient(exc)
    )


def _intend(
    rt: Runtime, key: str, step: str, request_id: str | None, attempt: Attempt | None
) -> ledger.Intent:
    # Recorded by the step before, in its own commit, in this very attempt: taken
    # once. A retry, a rerun or another run records (and counts) the intent itself.
    recorded = attempt.take_recorded(key) if attempt is not None else None
    return recorded if recorded is not None else ledger.intend(rt.engine, key, step, request_id)


def write_once(
    rt: Runtime,
    *,
    key: str,
    step: str,
    request_id: str | None,
    write: Callable[[str], T],
    find: Callable[[ledger.Intent], T | None],
    what: str,
    look_first: bool = False,
    find_first: Callable[[], T | None] | None = None,
    recheck_replays: bool = False,
    attempt: Attempt | None = None,
) -> tuple[T, str]:
    """The written (or found) object and the key it was finally written under.

    `attempt`: the billing attempt this write belongs to, whose step before may
    have recorded this write's intent already (None: shared objects, dunning).

    `find_first`, when given, is the `look_first` lookup instead of `find`: one
    that need only find what Stripe's key window no longer covers (older than
    24 h), because everything younger meets a replay or a stored 500 under our
    key, and those are checked with `find` (consistent) as always.
    """
    for _ in range(MAX_KEYS_PER_WRITE):
        intent = _intend(rt, key, step, request_id, attempt)
        if intent.seen_before or (look_first and find_first is None):
            found = find(intent)
            if found is not None:
                return found, key
        elif look_first and find_first is not None:
            found = find_first()
            if found is not None:
                return found, key
        try:
            written = call_with_retries(partial(_leased, write, key), what, read=False)
        except stripe.StripeError as exc:
            if not outcome_unknown(exc):
                raise
            found = find(intent)
            if found is not None:
                return found, key
            key += SPENT_KEY_SUFFIX
            continue
        if not (recheck_replays and fresh.replayed(written)):
            return written, key
        # Look again even if we looked before writing: a replay may be of this very
        # write, whose answer was lost (a dropped connection, a timeout) so that the
        # retry under the same key got it replayed. Only Stripe tells that apart
        # from a deleted object; the earlier lookup predates the write.
        found = find(intent)
        if found is not None:
            return found, key
        log.warning("%s: key %s replays an object Stripe no longer has; writing anew", what, key)
        key += GONE_KEY_SUFFIX
    raise RuntimeError(f"{what}: Stripe failed {MAX_KEYS_PER_WRITE} times after starting the write")


def _leased(write: Callable[[str], T], key: str) -> T:
    """Every attempt, retries included: a run that lost its lease makes no further write."""
    lease.check_current()
    return write(key)


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
        recheck_replays=True,
    )
