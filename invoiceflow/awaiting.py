"""Waiting for a payment by watching our own database, never Stripe.

The webhook receiver records a payment (`paid`, `void`, `uncollectible`) in
our ledger the moment Stripe's signed event arrives; whoever wants to know —
the CLI without `--no-wait`, the demo — watches the request's row. No worker
is held and Stripe is not polled while an invoice is open: it may be due in
30 days.
"""

from __future__ import annotations

import time

from sqlalchemy.engine import Engine

from invoiceflow import ledger, progress
from invoiceflow.db.models import BillingRequestRow

# Reading one row is cheap; a person watching wants to see the payment at once.
WATCH_INTERVAL_SECONDS = 0.25
NOTE_EVERY_SECONDS = 15.0


def until_settled(engine: Engine, request_id: str, timeout_seconds: float) -> BillingRequestRow:
    """The request's row once it is paid, void or uncollectible, or after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    said = progress.Throttle(every=NOTE_EVERY_SECONDS)
    while True:
        row = ledger.require(engine, request_id)
        remaining = deadline - time.monotonic()
        if row.point.is_terminal or remaining <= 0:
            return row
        if said.due():
            progress.note(
                "awaiting payment of %s (%s) via Stripe's webhook; up to %.0fs more",
                row.stripe_invoice_id,
                request_id,
                remaining,
            )
        time.sleep(min(WATCH_INTERVAL_SECONDS, remaining))
