"""What time it is in Stripe: a test clock's, else the real one.

With `INVOICEFLOW_STRIPE_TEST_CLOCK` set (test mode only), customers we create from
then on live on that clock and Stripe stamps their invoices with its frozen time,
which a test advances by days at once. Anything that asks "is this invoice overdue
yet?" (dunning) must ask in that time, not in this machine's, or it would never see
a due date pass.

But only for invoices on that clock: a customer created before the setting, or on
another clock, is not moved by it, and judging its invoice by the configured clock
would write it off before it is due. So each invoice is judged by its own clock
(`invoice_now`: Stripe names it on the invoice, `test_clock`, the customer's), or
by the real time when it has none.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import stripe

from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import Runtime
from invoiceflow.settings import SettingsError


def stripe_now(rt: Runtime) -> datetime:
    """Stripe's current time for customers we create now, timezone-aware UTC.

    The configured test clock's time (`clock_time`), else this machine's UTC time.
    """
    return clock_time(rt, rt.settings.stripe_test_clock)


def invoice_now(rt: Runtime, invoice: stripe.Invoice) -> datetime:
    """What time it is for `invoice`: its customer's test clock's, else the real time."""
    clock = getattr(invoice, "test_clock", None)
    clock_id = clock if isinstance(clock, str) or clock is None else clock.id
    return clock_time(rt, clock_id)


def clock_time(rt: Runtime, clock_id: str | None) -> datetime:
    """Test clock `clock_id`'s `frozen_time` (one retrieve, retried if transient),
    timezone-aware UTC; while the clock is still advancing, that is the time it
    advances from. None: this machine's UTC time.
    """
    if clock_id is None:
        return datetime.now(UTC)
    try:
        clock = call_with_retries(
            lambda: rt.stripe.v1.test_helpers.test_clocks.retrieve(clock_id),
            f"read test clock {clock_id}",
        )
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404 and clock_id == rt.settings.stripe_test_clock:
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
