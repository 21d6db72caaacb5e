"""Finalizing: the draft becomes immutable, so it is checked right before — unless
this attempt checked every line from Stripe's own answer moments ago."""

from __future__ import annotations

import stripe

from invoiceflow import ledger
from invoiceflow.attempt import Attempt
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint, utcnow
from invoiceflow.invoice_facts import merge_invoice
from invoiceflow.invoicing.common import (
    InvoiceMismatch,
    current_row,
    finalize_key,
    forget_deleted_draft,
    invoice_id_of,
    is_missing,
    log,
    retrieve_invoice,
    send_key,
)
from invoiceflow.invoicing.lines import by_position, lines_on_invoice, mismatches
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_write import write_once


def finalize(rt: Runtime, request_id: str, attempt: Attempt) -> None:
    owner = attempt.owner
    row = current_row(rt, attempt)
    if row.progress.reached(RecoveryPoint.FINALIZED):
        return
    invoice_id = invoice_id_of(row)
    key = finalize_key(request_id, invoice_id)
    invoice: stripe.Invoice | None = None
    # Read first — an earlier attempt may have finalized it already, and a draft
    # is checked line by line right before it becomes immutable, since anyone
    # may have edited it while no run was watching — unless this attempt
    # checked every line from Stripe's answer to its own add_lines moments
    # ago: that answer is as current as a read made now would be, and no
    # attempt can have finalized a draft we were still adding lines to.
    if not attempt.take_verified(invoice_id):
        try:
            invoice = retrieve_invoice(rt, invoice_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                forget_deleted_draft(rt, request_id, owner, invoice_id)
            raise
        if invoice.status == "draft":
            _verify_before_finalizing(rt, row, invoice)
    if invoice is None or invoice.status == "draft":

        def finalize_draft(k: str) -> stripe.Invoice:
            try:
                finalized = rt.stripe.v1.invoices.finalize_invoice(
                    invoice_id, {"auto_advance": False}, {"idempotency_key": k}
                )
            except stripe.InvalidRequestError as exc:
                if exc.http_status == 404 and is_missing(exc, "invoice"):
                    forget_deleted_draft(rt, request_id, owner, invoice_id)
                raise
            # A draft we finalized here was never sent: nothing to look up before sending.
            attempt.note_made(f"{invoice_id}:finalized", finalized)
            return finalized

        written, key = write_once(
            rt,
            key=key,
            step="invoice.finalize",
            request_id=request_id,
            write=finalize_draft,
            find=lambda _intent: _unless_status(retrieve_invoice(rt, invoice_id), "draft"),
            what=f"finalize {invoice_id}",
            attempt=attempt,
        )
        attempt.done(log, "Finalized invoice %s (%s)", written.id, written.number)
        invoice = written
    assert invoice is not None  # read above, or the write's answer
    sending: ledger.Intent | None = None
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        merge_invoice(row, invoice)
        row.finalized_at = row.finalized_at or utcnow()
        ledger.fulfil(session, key, invoice.id)
        ledger.advance(session, row, RecoveryPoint.FINALIZED, "finalized", number=invoice.number)
        if invoice.status == "open":
            sending = ledger.intend_in(
                session, send_key(request_id, invoice_id), "invoice.send", request_id
            )
    if sending is not None:
        attempt.recorded(sending)


def _verify_before_finalizing(rt: Runtime, row: BillingRequestRow, invoice: stripe.Invoice) -> None:
    """Exactly our lines (position, amount, quantity, price, text) and total, or no finalizing."""
    request_lines = ledger.lines(rt.engine, row.request_id)
    embedded = invoice.lines
    if embedded is not None and not embedded.has_more:
        present = by_position(invoice.id, embedded.data)  # the retrieve just made holds them all
    else:
        present = lines_on_invoice(rt, invoice.id)
    problems = mismatches(invoice.id, present, request_lines)
    if invoice.total != row.total_amount:
        problems.append(f"totals {invoice.total}, the request {row.total_amount}")
    if problems:
        raise InvoiceMismatch(
            f"invoice {invoice.id} " + "; ".join(problems) + " — not finalizing; "
            "fix the draft in Stripe (or delete it to start over) and rerun"
        )


def _unless_status(invoice: stripe.Invoice, status: str) -> stripe.Invoice | None:
    return None if invoice.status == status else invoice
