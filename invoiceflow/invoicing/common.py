"""What the invoice's steps share: their idempotency keys, their errors, the
invoice read, and what a deleted draft means for the request."""

from __future__ import annotations

import logging

import stripe

from invoiceflow import ledger
from invoiceflow.attempt import Attempt
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.request import BillingRequest
from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_keys import request_step_key

# One logger for every step, as before the split: operators filter on it.
log = logging.getLogger("invoiceflow.invoicing")


# Each write's idempotency key, named in one place: a step records the next
# step's intent (`ledger.intend_in`) in its own commit under the same key.
def create_key(request_id: str, customer_id: str) -> str:
    # The customer is part of the key: a request whose customer had to be
    # replaced writes anew instead of meeting the old customer's stored answer.
    return request_step_key(request_id, f"invoice.create.{customer_id}")


def batch_key(request_id: str, invoice_id: str, batch_no: int) -> str:
    return request_step_key(request_id, f"lines.add.{invoice_id}.{batch_no}")


def finalize_key(request_id: str, invoice_id: str) -> str:
    # Keys name the invoice: a replacement draft must never meet the answers
    # Stripe stored for a deleted one.
    return request_step_key(request_id, f"invoice.finalize.{invoice_id}")


def send_key(request_id: str, invoice_id: str) -> str:
    return request_step_key(request_id, f"invoice.send.{invoice_id}")


class InvoiceMismatch(RuntimeError):
    """The Stripe invoice does not hold exactly the request's lines. Never finalized."""


class DraftGone(RuntimeError):
    """Our draft was deleted in Stripe after we recorded it; the request starts a new one."""


class SendUnverifiable(RuntimeError):
    """We cannot tell whether the invoice was emailed (its events are past retention)."""


def current_row(rt: Runtime, attempt: Attempt) -> BillingRequestRow:
    """Where the request stands at a step's start: the row as this attempt's last
    commit left it (`Attempt.last_commit` says why that is as safe as a read), else
    read — a step run on its own, or the first step after another process's work."""
    row = attempt.last_commit()
    return row if row is not None else ledger.require(rt.engine, attempt.request_id)


def request_of(row: BillingRequestRow) -> BillingRequest:
    return BillingRequest.model_validate(row.payload)


def invoice_id_of(row: BillingRequestRow) -> str:
    assert row.stripe_invoice_id is not None, "step ran before the draft existed"
    return row.stripe_invoice_id


def is_missing(exc: stripe.InvalidRequestError, param: str) -> bool:
    """Stripe's `resource_missing` for the object passed as `param` (or the path's object)."""
    return exc.code == "resource_missing" and (exc.param or "") == param


def retrieve_invoice(rt: Runtime, invoice_id: str) -> stripe.Invoice:
    return call_with_retries(
        lambda: rt.stripe.v1.invoices.retrieve(invoice_id), f"get {invoice_id}"
    )


def forget_deleted_draft(rt: Runtime, request_id: str, owner: str, invoice_id: str) -> None:
    """Our recorded draft is gone from Stripe: back to `catalog_ready`, and say so.

    Only drafts can be deleted, so nothing of it was ever finalized or sent;
    the next run creates a new draft (the old key replays the deleted one,
    which `write_once` recognises and steps past).
    """
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        if row.stripe_invoice_id != invoice_id:
            return
        row.stripe_invoice_id = None
        row.invoice_status = row.invoice_number = row.hosted_invoice_url = None
        for line in ledger.lines_in(session, request_id):
            line.stripe_line_id = None
            session.add(line)
        ledger.rewind(
            session,
            row,
            RecoveryPoint.CATALOG_READY,
            "draft deleted in Stripe; a new one will be made",
            invoice=invoice_id,
        )
    raise DraftGone(f"draft {invoice_id} of {request_id} was deleted in Stripe")
