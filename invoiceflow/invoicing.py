"""The invoice's own steps: create the draft, add the lines, finalize, send, await payment.

Each step is an atomic phase in the rocket-rides sense:
1. read the recovery point and return at once if the step is already done;
2. record the write intent (its idempotency key, derived from the request id
   and the step) before calling Stripe;
3. if an earlier attempt recorded the same intent, it may have reached Stripe
   without our database hearing back — reconcile by *reading* Stripe first
   (this also covers Stripe's 24 h idempotency window having passed);
4. write to Stripe under the key, with retries of transient failures only;
5. in one transaction: store the Stripe id/state, close the intent, advance the
   recovery point, append to the audit log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial

import stripe

from invoiceflow import ledger
from invoiceflow.db.models import BillingRequestRow, PriceMap, RecoveryPoint, RequestLine, utcnow
from invoiceflow.request import BillingRequest
from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_keys import META_LINE, META_REQUEST_ID, metadata_of, request_step_key
from invoiceflow.stripe_write import write_once

log = logging.getLogger(__name__)

# Stripe's bulk line endpoints take a bounded number of lines per call; 50 keeps
# every call well inside the limit while a 250-line invoice still needs only 5.
LINES_PER_ADD_CALL = 50
# Largest page Stripe's list endpoints return.
PAGE_SIZE = 100
# Events can be created a little before the intent's clock says (clock skew
# between us and Stripe); look this far back when searching for our own send.
EVENT_CLOCK_SKEW = timedelta(minutes=5)
# Polling a sent invoice for payment: start quick (the demo pays at once), back
# off to this ceiling so a long wait costs few requests.
AWAIT_POLL_FIRST_SECONDS = 0.5
AWAIT_POLL_MAX_SECONDS = 15.0


class InvoiceMismatch(RuntimeError):
    """The Stripe invoice does not hold exactly the request's lines. Never finalized."""


def _request(row: BillingRequestRow) -> BillingRequest:
    return BillingRequest.model_validate(row.payload)


def _invoice_id(row: BillingRequestRow) -> str:
    assert row.stripe_invoice_id is not None, "step ran before the draft existed"
    return row.stripe_invoice_id


def _cache_invoice(row: BillingRequestRow, invoice: stripe.Invoice) -> None:
    """Copy what we show users from Stripe's invoice onto our row."""
    row.invoice_status = invoice.status
    row.invoice_number = invoice.number
    row.amount_due = invoice.amount_due
    row.hosted_invoice_url = invoice.hosted_invoice_url


def mark_catalog_ready(rt: Runtime, request_id: str, owner: str) -> None:
    """Join of the catalog branch: pin each line to its Stripe price."""
    row = ledger.require(rt.engine, request_id)
    if row.progress.reached(RecoveryPoint.CATALOG_READY):
        return
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        request_lines = ledger.lines_in(session, request_id)
        for line in request_lines:
            price = session.get(PriceMap, line.price_lookup_key)
            if price is None:
                raise RuntimeError(f"price for line {line.position} ({line.sku}) is not ready")
            line.stripe_price_id = price.stripe_price_id
            session.add(line)
        ledger.advance(session, row, RecoveryPoint.CATALOG_READY, "catalog ready")


def create_invoice(rt: Runtime, request_id: str, owner: str) -> str:
    row = ledger.require(rt.engine, request_id)
    if row.stripe_invoice_id is not None:
        return row.stripe_invoice_id
    assert row.stripe_customer_id is not None, "create_invoice ran before ensure_customer"
    request = _request(row)
    customer_id = row.stripe_customer_id

    params: stripe.params.InvoiceCreateParams = {
        "customer": customer_id,
        "currency": request.currency,
        "collection_method": "send_invoice",
        "days_until_due": request.days_until_due,
        # We drive every transition ourselves; Stripe must not finalize or
        # email on its own schedule behind our recovery points.
        "auto_advance": False,
        # Only the request's lines, never stray pending items of the customer.
        "pending_invoice_items_behavior": "exclude",
        "metadata": {**request.metadata, META_REQUEST_ID: request_id},
    }
    if request.description:
        params["description"] = request.description
    invoice, key = write_once(
        rt,
        key=request_step_key(request_id, "invoice.create"),
        step="invoice.create",
        request_id=request_id,
        write=lambda k: rt.stripe.v1.invoices.create(params, {"idempotency_key": k}),
        find=lambda _intent: _find_invoice(rt, customer_id, request_id),
        what=f"create invoice for {request_id}",
    )
    log.info("Draft invoice %s for request %s", invoice.id, request_id)

    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        row.stripe_invoice_id = invoice.id
        _cache_invoice(row, invoice)
        ledger.fulfil(session, key, invoice.id)
        ledger.advance(
            session, row, RecoveryPoint.DRAFT_CREATED, "draft invoice created", invoice=invoice.id
        )
    return invoice.id


def _find_invoice(rt: Runtime, customer_id: str, request_id: str) -> stripe.Invoice | None:
    """Our invoice for the request, by metadata, among the customer's invoices.

    Listing (not Search, which lags behind writes) finds an invoice created a
    moment ago by an attempt that crashed before recording it.
    """
    invoices = call_with_retries(
        lambda: rt.stripe.v1.invoices.list({"customer": customer_id, "limit": PAGE_SIZE}),
        f"list invoices of {customer_id}",
    )
    for invoice in invoices.auto_paging_iter():
        if metadata_of(invoice).get(META_REQUEST_ID) == request_id:
            return invoice
    return None


def _invoice_lines(rt: Runtime, invoice_id: str) -> Iterator[stripe.InvoiceLineItem]:
    page = call_with_retries(
        lambda: rt.stripe.v1.invoices.line_items.list(invoice_id, {"limit": PAGE_SIZE}),
        f"list lines of {invoice_id}",
    )
    return iter(page.auto_paging_iter())


def _lines_on_invoice(rt: Runtime, invoice_id: str) -> dict[int, stripe.InvoiceLineItem]:
    """The invoice's lines by our line position; a line we did not add is an error."""
    found: dict[int, stripe.InvoiceLineItem] = {}
    for line in _invoice_lines(rt, invoice_id):
        position = metadata_of(line).get(META_LINE)
        if position is None or not position.isdigit() or int(position) in found:
            raise InvoiceMismatch(
                f"invoice {invoice_id} holds line {line.id} that invoiceflow did not add; "
                "remove it in Stripe (or void the invoice) before resuming"
            )
        found[int(position)] = line
    return found


def add_items(rt: Runtime, request_id: str, owner: str) -> None:
    """Put exactly the request's lines on the draft, in as few calls as Stripe allows."""
    row = ledger.require(rt.engine, request_id)
    if row.progress.reached(RecoveryPoint.LINES_ADDED):
        return
    invoice_id = _invoice_id(row)
    request_lines = ledger.lines(rt.engine, request_id)

    for batch_no, start in enumerate(range(0, len(request_lines), LINES_PER_ADD_CALL)):
        batch = request_lines[start : start + LINES_PER_ADD_CALL]
        params: stripe.params.InvoiceAddLinesParams = {
            "lines": [_line_params(request_id, line) for line in batch]
        }
        _invoice, key = write_once(
            rt,
            key=request_step_key(request_id, f"lines.add.{batch_no}"),
            step="lines.add",
            request_id=request_id,
            write=partial(_add_lines, rt, invoice_id, params),
            find=partial(_batch_on_invoice, rt, invoice_id, batch),
            what=f"add lines {start}-{start + len(batch) - 1} to {invoice_id}",
        )
        with ledger.locked(rt.engine, request_id, owner) as (session, _row):
            ledger.fulfil(session, key, invoice_id)

    _verify_and_record_lines(rt, request_id, owner, invoice_id, request_lines)


def _add_lines(
    rt: Runtime, invoice_id: str, params: stripe.params.InvoiceAddLinesParams, key: str
) -> stripe.Invoice:
    return rt.stripe.v1.invoices.add_lines(invoice_id, params, {"idempotency_key": key})


def _batch_on_invoice(
    rt: Runtime, invoice_id: str, batch: list[RequestLine], _intent: ledger.Intent
) -> stripe.Invoice | None:
    """The invoice if an earlier attempt already added this batch (Stripe adds a
    batch atomically: all of its lines or none)."""
    present = _lines_on_invoice(rt, invoice_id)
    missing = [line.position for line in batch if line.position not in present]
    if not missing:
        return _retrieve(rt, invoice_id)
    if len(missing) != len(batch):
        raise InvoiceMismatch(
            f"invoice {invoice_id} holds only part of a batch (missing lines {missing}); "
            "someone edited the draft — remove those lines in Stripe before resuming"
        )
    return None


def _line_params(request_id: str, line: RequestLine) -> stripe.params.InvoiceAddLinesParamsLine:
    assert line.stripe_price_id is not None, "add_items ran before catalog_ready"
    params: stripe.params.InvoiceAddLinesParamsLine = {
        "pricing": {"price": line.stripe_price_id},
        "quantity": line.quantity,
        "metadata": {META_REQUEST_ID: request_id, META_LINE: str(line.position)},
    }
    if line.description:
        params["description"] = line.description
    return params


def _verify_and_record_lines(
    rt: Runtime, request_id: str, owner: str, invoice_id: str, request_lines: list[RequestLine]
) -> None:
    """The invoice must hold exactly our lines at our amounts before it may be finalized."""
    present = _lines_on_invoice(rt, invoice_id)
    expected = {line.position for line in request_lines}
    if set(present) != expected:
        raise InvoiceMismatch(
            f"invoice {invoice_id} has lines {sorted(present)}, the request {sorted(expected)}"
        )
    for line in request_lines:
        stripe_line = present[line.position]
        if stripe_line.amount != line.unit_amount * line.quantity:
            raise InvoiceMismatch(
                f"invoice {invoice_id} line {line.position} is {stripe_line.amount}, "
                f"expected {line.unit_amount * line.quantity}"
            )
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        for line in ledger.lines_in(session, request_id):
            line.stripe_line_id = present[line.position].id
            session.add(line)
        ledger.advance(session, row, RecoveryPoint.LINES_ADDED, "lines added", lines=len(present))


def finalize(rt: Runtime, request_id: str, owner: str) -> None:
    row = ledger.require(rt.engine, request_id)
    if row.progress.reached(RecoveryPoint.FINALIZED):
        return
    invoice_id = _invoice_id(row)
    key = request_step_key(request_id, "invoice.finalize")
    # Read first: an earlier attempt may have finalized it already, and the
    # total must match the request before the invoice becomes immutable.
    invoice = _retrieve(rt, invoice_id)
    if invoice.status == "draft":
        if invoice.total != row.total_amount:
            raise InvoiceMismatch(
                f"invoice {invoice_id} totals {invoice.total}, the request {row.total_amount}; "
                "not finalizing"
            )
        invoice, key = write_once(
            rt,
            key=key,
            step="invoice.finalize",
            request_id=request_id,
            write=lambda k: rt.stripe.v1.invoices.finalize_invoice(
                invoice_id, {"auto_advance": False}, {"idempotency_key": k}
            ),
            find=lambda _intent: _unless_status(_retrieve(rt, invoice_id), "draft"),
            what=f"finalize {invoice_id}",
        )
        log.info("Finalized invoice %s (%s)", invoice.id, invoice.number)
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        _cache_invoice(row, invoice)
        row.finalized_at = row.finalized_at or utcnow()
        ledger.fulfil(session, key, invoice.id)
        ledger.advance(session, row, RecoveryPoint.FINALIZED, "finalized", number=invoice.number)


def _unless_status(invoice: stripe.Invoice, status: str) -> stripe.Invoice | None:
    return None if invoice.status == status else invoice


def _retrieve(rt: Runtime, invoice_id: str) -> stripe.Invoice:
    return call_with_retries(
        lambda: rt.stripe.v1.invoices.retrieve(invoice_id), f"get {invoice_id}"
    )


def send(rt: Runtime, request_id: str, owner: str) -> None:
    """Email the invoice to the customer — once."""
    row = ledger.require(rt.engine, request_id)
    if row.progress.reached(RecoveryPoint.SENT):
        return
    invoice_id = _invoice_id(row)
    invoice, key = write_once(
        rt,
        key=request_step_key(request_id, "invoice.send"),
        step="invoice.send",
        request_id=request_id,
        write=lambda k: rt.stripe.v1.invoices.send_invoice(
            invoice_id, options={"idempotency_key": k}
        ),
        find=lambda intent: (
            _retrieve(rt, invoice_id) if _was_sent(rt, invoice_id, intent.intended_at) else None
        ),
        what=f"send {invoice_id}",
    )
    log.info("Invoice %s is sent to the customer", invoice_id)
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        _cache_invoice(row, invoice)
        row.sent_at = row.sent_at or utcnow()
        ledger.fulfil(session, key, invoice_id)
        ledger.advance(
            session, row, RecoveryPoint.SENT, "sent", hosted_invoice_url=invoice.hosted_invoice_url
        )


def _was_sent(rt: Runtime, invoice_id: str, since: datetime) -> bool:
    """Whether Stripe recorded an `invoice.sent` for this invoice since our intent.

    A resend under the same key is a harmless replay within Stripe's 24 h
    window, but past it would email the customer again; the event log tells.
    """
    if since.tzinfo is None:  # SQLite hands back naive UTC
        since = since.replace(tzinfo=UTC)
    created_gte = int((since - EVENT_CLOCK_SKEW).timestamp())
    events = call_with_retries(
        lambda: rt.stripe.v1.events.list(
            {"type": "invoice.sent", "created": {"gte": created_gte}, "limit": PAGE_SIZE}
        ),
        "list invoice.sent events",
    )
    return any(event.data.object["id"] == invoice_id for event in events.auto_paging_iter())


# Stripe statuses that end the wait, and the recovery point each one means.
_SETTLED = {
    "paid": RecoveryPoint.PAID,
    "void": RecoveryPoint.VOID,
    "uncollectible": RecoveryPoint.UNCOLLECTIBLE,
}


def await_paid(rt: Runtime, request_id: str, owner: str, timeout_seconds: float) -> RecoveryPoint:
    """Poll the sent invoice until it settles or `timeout_seconds` pass. Reads only."""
    row = ledger.require(rt.engine, request_id)
    if row.point.is_terminal:
        return row.point
    invoice_id = _invoice_id(row)
    deadline = time.monotonic() + timeout_seconds
    pause = AWAIT_POLL_FIRST_SECONDS
    while True:
        invoice = _retrieve(rt, invoice_id)
        settled = _SETTLED.get(invoice.status or "")
        if settled is not None:
            record_settlement(rt, request_id, owner, invoice, settled)
            return settled
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.info("Invoice %s is %s; still awaiting payment", invoice_id, invoice.status)
            return RecoveryPoint(ledger.require(rt.engine, request_id).recovery_point)
        if not ledger.acquire_lease(rt.engine, request_id, owner, rt.settings.lease_seconds):
            raise ledger.LeaseLost(f"request {request_id!r} was taken over while awaiting payment")
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, AWAIT_POLL_MAX_SECONDS)


def record_settlement(
    rt: Runtime, request_id: str, owner: str, invoice: stripe.Invoice, point: RecoveryPoint
) -> None:
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        _cache_invoice(row, invoice)
        if point is RecoveryPoint.PAID:
            row.paid_at = row.paid_at or utcnow()
        ledger.advance(session, row, point, f"invoice {invoice.status}", invoice=invoice.id)
    log.info("Invoice %s for request %s is %s", invoice.id, request_id, invoice.status)
