"""Stripe objects this process brought into being moments ago.

Before the first write of an object that carries our metadata, we look for it
in Stripe — unless it provably cannot exist yet. The proof we accept: the
object it would hang on (an invoice's customer, a line's invoice, a send's
finalization) came from a write that *this process executed* — Stripe did not
answer it as an idempotent replay — less than `FRESH_SECONDS` ago. Whatever a
run of the same request could have hung on it since was written within that
span under one of our deterministic keys, which Stripe replays for 24 h:
writing under the key again returns that object instead of making a second.

A lost or restored database, another machine's ledger or a rerun in a new
process proves nothing here, so they all look Stripe up first.
"""

from __future__ import annotations

import threading
import time
from itertools import islice

# Far inside Stripe's 24 h idempotency-key retention.
FRESH_SECONDS = 3600.0
# Stale ids forgotten per note: more than one, so the map shrinks after a burst.
PRUNE_PER_NOTE = 8

_made: dict[str, float] = {}
_lock = threading.Lock()


def replayed(stripe_object: object) -> bool:
    """Whether Stripe answered this object as a replay of an earlier request."""
    response = getattr(stripe_object, "last_response", None)
    headers = getattr(response, "headers", None) or {}
    return any(k.lower() == "idempotent-replayed" and v == "true" for k, v in headers.items())


def note(what: str, stripe_object: object) -> None:
    """Remember `what` (an object id, or e.g. "<invoice id>:finalized") as made here,
    unless Stripe's answer was a replay of somebody else's write."""
    if replayed(stripe_object):
        return
    now = time.monotonic()
    with _lock:
        # Oldest first (a re-noted id moves to the end), so forgetting what went
        # stale stops at the first fresh one. Scanning the whole map on every
        # note cost a long-lived worker more with each invoice: at 25 a second
        # it holds a quarter of a million ids by the end of the hour.
        _made.pop(what, None)
        _made[what] = now
        for oldest, made_at in list(islice(_made.items(), PRUNE_PER_NOTE)):
            if now - made_at <= FRESH_SECONDS:
                break
            del _made[oldest]


def is_fresh(what: str | None) -> bool:
    if what is None:
        return False
    with _lock:
        made_at = _made.get(what)
    return made_at is not None and time.monotonic() - made_at < FRESH_SECONDS
