"""What Stripe's invoice status means for a request: settled or not, at which
recovery point, and when it was paid.

Stripe's status machine past `open` (`invoice_facts` orders it):

    open → paid | void | uncollectible,   uncollectible → paid | void

Three parts of invoiceflow hear an invoice's status: a run's steps (a send
answered "already paid", a rerun's one read), dunning (its one read before a
reminder) and the webhook receiver (an event, or reconciliation's listing).
They read it here, from one map, so that they cannot disagree on which statuses
end the wait and what each one means for the request. Nothing here trusts an
event more than Stripe's own answer; callers decide whose snapshot they hold
(see `webhooks.apply` for the trust model).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import stripe

from invoiceflow.db.models import RecoveryPoint

# An invoice as Stripe answered it (the SDK's object) or as an event carried it (JSON).
Snapshot = Mapping[str, Any] | stripe.StripeObject

# Stripe statuses that end the wait for payment, and the recovery point each one means.
SETTLED_POINTS: Mapping[str, RecoveryPoint] = MappingProxyType(
    {
        "paid": RecoveryPoint.PAID,
        "void": RecoveryPoint.VOID,
        "uncollectible": RecoveryPoint.UNCOLLECTIBLE,
    }
)


def settled_point(status: object) -> RecoveryPoint | None:
    """The recovery point a Stripe invoice status settles the request at; None while
    the invoice is not settled (draft, open) or the status is none we know."""
    return SETTLED_POINTS.get(status) if isinstance(status, str) else None


def field(snapshot: Snapshot | None, name: str) -> Any:
    """`snapshot[name]`, or None when the snapshot does not carry it (either shape)."""
    if snapshot is None or name not in snapshot:
        return None
    return snapshot[name]


def paid_at(invoice: Snapshot) -> datetime | None:
    """When Stripe says the invoice was paid (`status_transitions.paid_at`), if it says."""
    stamp = field(field(invoice, "status_transitions"), "paid_at")
    if isinstance(stamp, int) and not isinstance(stamp, bool):
        return datetime.fromtimestamp(stamp, UTC)
    return None
