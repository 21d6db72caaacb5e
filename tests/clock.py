"""Move a Stripe test clock in a test, the way a client of real Stripe has to.

Advancing is asynchronous in Stripe: the call answers `status: advancing`, and the clock's
new time (with everything it set off) holds only once retrieve says `ready`.
"""

from __future__ import annotations

from datetime import datetime

import stripe

from tests.helpers import wait_for


def advance_clock(
    client: stripe.StripeClient, clock_id: str, to: datetime, timeout: float = 60
) -> stripe.test_helpers.TestClock:
    """Advance `clock_id` to `to` (timezone-aware) and poll until it is ready again."""
    if to.tzinfo is None:
        raise ValueError("advance_clock needs a timezone-aware datetime (e.g. tzinfo=UTC)")
    target = int(to.timestamp())
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": target})

    def ready() -> stripe.test_helpers.TestClock | None:
        clock = client.v1.test_helpers.test_clocks.retrieve(clock_id)
        if clock.status == "internal_failure":
            raise AssertionError(f"test clock {clock_id} failed to advance to {target}")
        return clock if clock.status == "ready" and clock.frozen_time == target else None

    clock: stripe.test_helpers.TestClock = wait_for(ready, f"test clock {clock_id} ready", timeout)
    return clock
