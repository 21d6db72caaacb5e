"""Stripe's invoice as cached on our request row: its facts only move forward.

The row's invoice fields (status, number, amounts, hosted URL, due date,
`paid_at`) are a cache of Stripe's invoice, written by whoever last heard from
Stripe: a run's step, dunning, the webhook receiver, reconciliation. Their
answers race. A run whose `send` was answered `open` a moment before the
customer paid commits that answer after the receiver recorded the payment;
arrival order says nothing about which snapshot is newer. Stripe's own status
machine does, since an invoice never goes back along it:

    draft → open → uncollectible → paid | void
                 ↘ paid | void  (final)

`merge_invoice` is the one place a snapshot reaches the row: it copies the
snapshot only when it stands at or past the row's cached status, so an older
answer never replaces a newer one, whichever commits last.
"""

from __future__ import annotations

from datetime import UTC, datetime

from invoiceflow.db.models import BillingRequestRow, utcnow
from invoiceflow.settlement import Snapshot, field, paid_at

# How far along Stripe's status machine each status stands. Paid and void are
# final and exclude each other, so they share the last rank.
_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}
_FINAL = ("paid", "void")


def moves_forward(cached: str | None, status: object) -> bool:
    """Whether a snapshot with `status` is at or past a row that caches `cached`."""
    if not isinstance(status, str) or status not in _RANK:
        return False  # no status, or one we do not know: nothing to order it by
    if cached not in _RANK:
        return True  # nothing cached yet (or a new draft after a deleted one)
    if cached in _FINAL:
        return status == cached  # a final status is only ever refreshed by itself
    return _RANK[status] >= _RANK[cached]


def merge_invoice(row: BillingRequestRow, invoice: Snapshot) -> bool:
    """Copy Stripe's `invoice` onto `row` if it is not older than what the row holds.

    False (nothing copied) for an older snapshot, or one of another invoice
    than the row's. The caller holds the row lock and commits.
    """
    invoice_id = field(invoice, "id")
    if not isinstance(invoice_id, str):
        return False
    if row.stripe_invoice_id not in (None, invoice_id):
        return False
    status = field(invoice, "status")
    if not moves_forward(row.invoice_status, status):
        return False
    row.stripe_invoice_id = invoice_id
    row.invoice_status = status
    if "number" in invoice:
        row.invoice_number = field(invoice, "number")
    if "hosted_invoice_url" in invoice:
        row.hosted_invoice_url = field(invoice, "hosted_invoice_url")
    for name in ("amount_due", "amount_paid"):
        value = field(invoice, name)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(row, name, value)
    if "due_date" in invoice:
        due = field(invoice, "due_date")
        row.due_date = datetime.fromtimestamp(due, UTC) if isinstance(due, int) else None
    if status == "paid":
        # Stripe's time of payment; ours only if Stripe's invoice has none and
        # the row does not know one already.
        row.paid_at = paid_at(invoice) or row.paid_at or utcnow()
    return True
