"""Settling by hand what a run stopped for: a person's answer, audited, that the next run acts on.

Today one stop needs a person: a finalized invoice whose send was never
recorded, past Stripe's event retention (`SendUnverifiable`): nothing in
Stripe says any more whether it was emailed. Someone checks the Dashboard (or
asks the customer) and answers:

- `sent`: the request is recorded as sent (its send intent closed), and a
  rerun goes on to await payment without sending;
- `not sent`: the invoice is recorded as confirmed unsent, and a rerun's send
  step sends it once, without asking the event log again.

The answer is written under the request's lease, so no run is halfway through
the request meanwhile, and in one transaction with its audit row (who, note).
Nothing is written to Stripe: the invoice is only read, to refuse an answer
that Stripe already contradicts (a draft was never sent).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from invoiceflow import lease, ledger
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.invoice_facts import merge_invoice
from invoiceflow.invoicing.common import retrieve_invoice, send_key
from invoiceflow.runtime import Runtime

# How long the answer holds the request's lease: one read and one commit.
RESOLVE_LEASE_SECONDS = 60.0


class NothingToResolve(RuntimeError):
    """The request is not stopped where a person's answer applies."""


@dataclass(frozen=True)
class Answer:
    """A person's answer to "was this invoice emailed?", and who gave it and why."""

    sent: bool
    by: str
    note: str

    @property
    def said(self) -> str:
        return "sent" if self.sent else "not sent"


def resolve_send(rt: Runtime, request_id: str, answer: Answer) -> BillingRequestRow:
    """Record `answer` for a finalized request whose send is not recorded; its row after.

    `ledger.RequestNotFound` for an unknown id, `ledger.RequestBusy` while a run
    holds the request, `NothingToResolve` when there is nothing to answer.
    """
    if not answer.note.strip():
        raise ValueError("--note must say what was checked (it goes to the audit log)")
    row = ledger.require(rt.engine, request_id)
    invoice_id = _awaiting_an_answer(row)
    owner = lease.new_owner(f"resolve-{uuid.uuid4().hex[:8]}")
    if not ledger.acquire_lease(rt.engine, request_id, owner, RESOLVE_LEASE_SECONDS):
        raise ledger.RequestBusy(f"a run holds request {request_id!r}; resolve it once it ends")
    try:
        invoice = retrieve_invoice(rt, invoice_id)
        if invoice.status == "draft":
            raise NothingToResolve(
                f"invoice {invoice_id} of {request_id} is still a draft, so it was never sent; "
                "rerun `invoiceflow invoice` to finalize and send it"
            )
        with ledger.locked(rt.engine, request_id, owner) as (session, locked_row):
            _awaiting_an_answer(locked_row)  # a run may have finished it meanwhile
            merge_invoice(locked_row, invoice)
            detail = {"invoice": invoice_id, "by": answer.by, "note": answer.note}
            if answer.sent:
                ledger.fulfil(session, send_key(request_id, invoice_id), invoice_id)
                ledger.advance(session, locked_row, RecoveryPoint.SENT, "resolved: sent", **detail)
            else:
                locked_row.unsent_confirmed_invoice = invoice_id
                ledger.note(session, locked_row, "resolved: not sent", **detail)
        return ledger.require(rt.engine, request_id)
    finally:
        ledger.release_lease(rt.engine, request_id, owner)


def _awaiting_an_answer(row: BillingRequestRow) -> str:
    """The invoice whose send a person may answer for: finalized, its send not recorded."""
    if row.progress is not RecoveryPoint.FINALIZED or row.stripe_invoice_id is None:
        raise NothingToResolve(
            f"request {row.request_id} is at {row.recovery_point} (progress "
            f"{row.progress_point}); resolve answers only for a finalized invoice whose send "
            "is unrecorded"
        )
    return row.stripe_invoice_id
