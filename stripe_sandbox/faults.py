"""Which request fails how: scripted one-shot faults first, then random fractions.

Fault kinds and what Stripe-side reality each one imitates:

* ``before_write``: a 500 before anything happened. Nothing is saved under the idempotency
  key and `Stripe-Should-Retry: true`, so a retry with the same key simply runs.
* ``after_write``: the write happened, then a 500. Like Stripe, the 500 is what the
  idempotency key now replays (`Stripe-Should-Retry: false`): a retry with the same key gets
  the same 500 until the key expires, and the client must find the object another way.
* ``drop_after_write``: the write happened and its response is saved under the key, but the
  connection is closed without a byte of response (a network failure). A retry with the
  same key replays the saved success.
* ``status_429`` / ``status_409``: refused up front (rate limit / concurrent request).

A request replaying a saved key can meet a fault too (the network does not know it is a
replay): it then fails or is dropped, and the saved response stays as it was.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from stripe_sandbox.config import SandboxConfig


@dataclass
class FaultPlan:
    config: SandboxConfig
    rng: random.Random

    def pick(self, method: str, path: str) -> str | None:
        for fault in self.config.faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times == 0:
                    self.config.faults.remove(fault)
                return fault.when
        config = self.config
        if not (config.fail_before_write or config.fail_after_write or config.drop_after_write):
            return None  # keep the common path free of random draws
        roll = self.rng.random()
        for kind, fraction in (
            ("before_write", config.fail_before_write),
            ("after_write", config.fail_after_write),
            ("drop_after_write", config.drop_after_write),
        ):
            if roll < fraction:
                return kind
            roll -= fraction
        return None


@dataclass
class RateLimiter:
    """A token bucket per API key, refilled at `rate` tokens a second, holding one second."""

    config: SandboxConfig
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> tokens, t

    def allow(self, account: str) -> bool:
        rate = self.config.rate_limit
        if rate is None:
            return True
        now = time.monotonic()
        tokens, last = self.buckets.get(account, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1.0:
            self.buckets[account] = (tokens, now)
            return False
        self.buckets[account] = (tokens - 1.0, now)
        return True

    def clear(self) -> None:
        self.buckets.clear()
