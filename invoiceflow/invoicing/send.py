"""Sending: the invoice is emailed to the customer once, judged by Stripe's own
event log past its 24 h idempotency window."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import stripe

from invoiceflow import ledger, stripe_paging
from invoiceflow.attempt import Attempt
from invoiceflow.db.models import RecoveryPoint, utcnow
from invoiceflow.invoice_facts import merge_invoice
from invoiceflow.invoicing.common import (
    SendUnverifiable,
    current_row,
    invoice_id_of,
    log,
    retrieve_invoice,
    send_key,
)
from invoiceflow.invoicing.settle import record_settlement
from invoiceflow.runtime import Runtime
from invoiceflow.settlement import settled_point
from invoiceflow.stripe_clock import response_time
from invoiceflow.stripe_limits import EVENT_RETENTION
from invoiceflow.stripe_write import write_once


def send(rt: Runtime, request_id: str, attempt: Attempt) -> None:
    """Email the invoice to the customer — once."""
    row = current_row(rt, attempt)
    if row.progress.reached(RecoveryPoint.SENT):
        return
    invoice_id, owner = invoice_id_of(row), attempt.owner
    settled = settled_point(row.invoice_status)
    if settled is not None:  # paid at finalization (below Stripe's minimum charge)
        record_settlement(rt, request_id, owner, retrieve_invoice(rt, invoice_id), settled)
        return
    try:
        invoice, key = write_once(
            rt,
            key=send_key(request_id, invoice_id),
            step="invoice.send",
            request_id=request_id,
            write=lambda k: rt.stripe.v1.invoices.send_invoice(
                invoice_id, options={"idempotency_key": k}
            ),
            find=lambda _intent: _sent_invoice(
                rt, invoice_id, confirmed_unsent=row.unsent_confirmed_invoice == invoice_id
            ),
            what=f"send {invoice_id}",
            # Finalized by this process a moment ago: it cannot have been sent yet.
            look_first=not attempt.made_here(f"{invoice_id}:finalized"),
            attempt=attempt,
        )
    except stripe.InvalidRequestError:
        # Voided, paid or written off in the Dashboard since we finalized it:
        # that is the invoice's story now, and sending is moot.
        current = retrieve_invoice(rt, invoice_id)
        settled = settled_point(current.status)
        if settled is None:
            raise
        record_settlement(rt, request_id, owner, current, settled)
        return
    attempt.done(log, "Invoice %s is sent to the customer", invoice_id)
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        # The customer may have paid while the send was in flight, and the
        # receiver recorded it: this `open` answer (or a replay's, older
        # still) is then behind the row and changes none of it.
        merge_invoice(row, invoice)
        row.sent_at = row.sent_at or utcnow()
        ledger.fulfil(session, key, invoice_id)
        ledger.advance(
            session, row, RecoveryPoint.SENT, "sent", hosted_invoice_url=invoice.hosted_invoice_url
        )


def _sent_invoice(
    rt: Runtime, invoice_id: str, confirmed_unsent: bool = False
) -> stripe.Invoice | None:
    """The invoice if Stripe already emailed it, judged by Stripe's own clock.

    A resend under the same key is a harmless replay within Stripe's 24 h
    window, but past it would email the customer again; the event log tells.
    Past its retention only a person can (`confirmed_unsent`: `invoiceflow
    resolve --not-sent`).
    """
    invoice = retrieve_invoice(rt, invoice_id)
    if invoice.status == "draft":
        return None

    def unverifiable(finalized: datetime) -> Exception:
        return SendUnverifiable(
            f"invoice {invoice_id} was finalized on {finalized:%Y-%m-%d}; Stripe no longer keeps "
            "the events that would show whether it was emailed. Check it in the Dashboard, then "
            "record what you found: `invoiceflow resolve REQUEST --sent | --not-sent --note TEXT`"
        )

    try:
        return invoice if times_emailed(rt, invoice, unverifiable) else None
    except SendUnverifiable:
        if confirmed_unsent:
            return None
        raise


def times_emailed(
    rt: Runtime, invoice: stripe.Invoice, expired: Callable[[datetime], Exception]
) -> int:
    """How many times Stripe emailed `invoice` (its `invoice.sent` events).

    The search starts at the invoice's finalization as Stripe stamped it (it
    cannot have been sent before), never at a time from our clock, which may
    run ahead of Stripe's. Past Stripe's event retention the count proves
    nothing: `expired(finalized)` is raised instead.
    """
    transitions = invoice.status_transitions
    finalized_at = transitions.finalized_at if transitions else None
    if finalized_at is None:
        return 0
    finalized = datetime.fromtimestamp(finalized_at, UTC)
    if response_time(invoice) - finalized > EVENT_RETENTION:
        raise expired(finalized)
    events = stripe_paging.every(
        rt.stripe.v1.events.list,
        {"type": "invoice.sent", "created": {"gte": finalized_at}},
        "list invoice.sent events",
    )
    return sum(1 for event in events if event.data.object["id"] == invoice.id)
