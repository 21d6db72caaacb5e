"""What time it is in Stripe: the configured test clock's, else the real one.

With `INVOICEFLOW_STRIPE_TEST_CLOCK` set (test mode only), our customers live on that
clock and Stripe stamps their invoices with its frozen time, which a test advances by
days at once. Anything that asks "is this invoice overdue yet?" (dunning) must ask in
that time, not in this machine's, or it would never see a due date pass.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import stripe

from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import Runtime
from invoiceflow.settings import SettingsError


def stripe_now(rt: Runtime) -> datetime:
    """Stripe's current time for our customers, timezone-aware UTC.

    The test clock's `frozen_time` when one is configured (one retrieve, retried if
    transient); while the clock is still advancing that is the time it advances from.
    Without a clock, this machine's UTC time.
    """
    clock_id = rt.settings.stripe_test_clock
    if clock_id is None:
        return datetime.now(UTC)
    try:
        clock = call_with_retries(
            lambda: rt.stripe.v1.test_helpers.test_clocks.retrieve(clock_id),
            f"read test clock {clock_id}",
        )
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise SettingsError(
                f"INVOICEFLOW_STRIPE_TEST_CLOCK={clock_id} is not a test clock of this Stripe "
                "account (deleted, or made with another key); create one or unset it"
            ) from None
        raise
    return datetime.fromtimestamp(clock.frozen_time, UTC)


def response_time(stripe_object: object) -> datetime:
    """Stripe's clock, from the Date header of the response that brought `stripe_object`."""
    response = getattr(stripe_object, "last_response", None)
    headers = {k.lower(): v for k, v in (getattr(response, "headers", None) or {}).items()}
    try:
        return parsedate_to_datetime(headers["date"])
    except (KeyError, TypeError, ValueError):
        return datetime.now(UTC)
