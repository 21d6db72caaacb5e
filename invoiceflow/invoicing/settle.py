"""Settlement as a run sees it: a sent invoice paid, voided or written off while
no webhook reached us. What each status means is `invoiceflow.settlement`'s."""

from __future__ import annotations

import stripe

from invoiceflow import ledger
from invoiceflow.attempt import Attempt
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.invoice_facts import merge_invoice
from invoiceflow.invoicing.common import invoice_id_of, log, retrieve_invoice
from invoiceflow.runtime import Runtime
from invoiceflow.settlement import settled_point


def refresh_settlement(rt: Runtime, request_id: str, attempt: Attempt) -> RecoveryPoint:
    """A rerun of a sent request: one read of the invoice, in case it settled while
    no webhook reached us (the receiver was down). Never a loop: waiting for a
    payment is the webhook receiver's job, not a worker's."""
    row = ledger.require(rt.engine, request_id)
    if row.point.is_terminal:
        return row.point
    invoice = retrieve_invoice(rt, invoice_id_of(row))
    settled = settled_point(invoice.status)
    if settled is None:
        return row.point
    record_settlement(rt, request_id, attempt.owner, invoice, settled)
    return settled


def record_settlement(
    rt: Runtime, request_id: str, owner: str, invoice: stripe.Invoice, point: RecoveryPoint
) -> None:
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        # Forward-only: a payment the receiver recorded meanwhile outranks a
        # write-off answer read before it (`invoice_facts`).
        merge_invoice(row, invoice)
        # Stripe's status machine past `open`, the same one the webhook receiver follows.
        ledger.settle(session, row, point, f"invoice {invoice.status}", invoice=invoice.id)
    log.info("Invoice %s for request %s is %s", invoice.id, request_id, invoice.status)
