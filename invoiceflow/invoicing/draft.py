"""The draft: the join of the customer and catalog branches, then the draft invoice
itself — created once, found again by its metadata, never made twice."""

from __future__ import annotations

import stripe

from invoiceflow import catalog, customers, ledger, stripe_paging
from invoiceflow.attempt import Attempt
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.invoice_facts import merge_invoice
from invoiceflow.invoicing.common import (
    batch_key,
    create_key,
    current_row,
    is_missing,
    log,
    request_of,
)
from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_keys import META_REQUEST_ID, metadata_of
from invoiceflow.stripe_write import write_once


def mark_catalog_ready(
    rt: Runtime, request_id: str, attempt: Attempt, customer: customers.Known | None = None
) -> None:
    """Join of the catalog branch: pin each line to its Stripe price.

    `customer`: a customer resolved without Stripe (`customers.known`), whose
    `customer_ready` is committed here too — one transaction, not two.
    """
    # Checked under the lock, not read first: this step writes in the common case.
    with ledger.locked(rt.engine, request_id, attempt.owner) as (session, row):
        if row.progress.reached(RecoveryPoint.CATALOG_READY):
            return
        if customer is not None and row.stripe_customer_id is None:
            customers.commit_known(session, row, customer)
        # One statement: the lines pinned to the prices as mapped now (`pin_prices`).
        pinned = catalog.pin_prices(session, request_id)
        ledger.advance(session, row, RecoveryPoint.CATALOG_READY, "catalog ready")
        customer_id = row.stripe_customer_id
        create = None
        if customer_id is not None:  # the create's intent, recorded with this commit
            create = ledger.intend_in(
                session, create_key(request_id, customer_id), "invoice.create", request_id
            )
    # Committed: add_items starts from these lines instead of reading them (`Attempt.take_pinned`).
    attempt.pinned(pinned)
    if create is not None:
        attempt.recorded(create)


def create_invoice(rt: Runtime, request_id: str, attempt: Attempt) -> str:
    owner = attempt.owner
    row = current_row(rt, attempt)
    if row.stripe_invoice_id is not None:
        return row.stripe_invoice_id
    assert row.stripe_customer_id is not None, "create_invoice ran before ensure_customer"
    try:
        invoice, key = _create_draft(rt, attempt, row, row.stripe_customer_id)
    except stripe.InvalidRequestError as exc:
        if not is_missing(exc, "customer"):
            raise
        # Our customer map points at a customer Stripe no longer has (deleted in
        # the Dashboard, or a database from another account): resolve it again.
        customer_id = _replace_customer(rt, request_id, owner, row.stripe_customer_id)
        invoice, key = _create_draft(
            rt, attempt, ledger.require(rt.engine, request_id), customer_id
        )
    attempt.done(log, "Draft invoice %s for request %s", invoice.id, request_id)

    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        row.stripe_invoice_id = invoice.id
        merge_invoice(row, invoice)
        ledger.fulfil(session, key, invoice.id)
        ledger.advance(
            session, row, RecoveryPoint.DRAFT_CREATED, "draft invoice created", invoice=invoice.id
        )
        first_batch = ledger.intend_in(
            session, batch_key(request_id, invoice.id, 0), "lines.add", request_id
        )
    attempt.recorded(first_batch)
    return invoice.id


def _create_draft(
    rt: Runtime, attempt: Attempt, row: BillingRequestRow, customer_id: str
) -> tuple[stripe.Invoice, str]:
    request = request_of(row)
    request_id = request.request_id
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

    def create(key: str) -> stripe.Invoice:
        created = rt.stripe.v1.invoices.create(params, {"idempotency_key": key})
        attempt.note_made(created.id, created)
        return created

    return write_once(
        rt,
        key=create_key(request_id, customer_id),
        step="invoice.create",
        request_id=request_id,
        write=create,
        find=lambda _intent: _find_invoice(rt, customer_id, request_id),
        what=f"create invoice for {request_id}",
        # A customer this process created a moment ago has no invoices yet.
        # Any other may hold ours already — made by a run that died before
        # recording it, with a ledger that is new, restored or another
        # machine's — and past Stripe's 24 h key window only this read
        # stops a second invoice. It is one Search, not a list of the
        # customer's invoices: that list grows with the customer's history
        # (a page per 100 invoices, every month, for every request).
        look_first=not attempt.made_here(customer_id),
        find_first=lambda: _search_invoice(rt, customer_id, request_id),
        recheck_replays=True,
        attempt=attempt,
    )


def _replace_customer(rt: Runtime, request_id: str, owner: str, gone_id: str) -> str:
    row = ledger.require(rt.engine, request_id)
    customers.forget(rt.engine, row.customer_key, gone_id)
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        row.stripe_customer_id = None
        ledger.note(session, row, "customer no longer in Stripe; resolving again", customer=gone_id)
    return customers.ensure_customer(rt, request_id, owner)


def _find_invoice(rt: Runtime, customer_id: str, request_id: str) -> stripe.Invoice | None:
    """Our invoice for the request, by metadata, among the customer's invoices.

    Listing (not Search, which lags behind writes) finds an invoice created a
    moment ago by an attempt that crashed before recording it. Deleted drafts
    are not listed.
    """
    invoices = stripe_paging.every(
        rt.stripe.v1.invoices.list, {"customer": customer_id}, f"list invoices of {customer_id}"
    )
    for invoice in invoices:
        if metadata_of(invoice).get(META_REQUEST_ID) == request_id:
            return invoice
    return None


def _search_invoice(rt: Runtime, customer_id: str, request_id: str) -> stripe.Invoice | None:
    """Our invoice for the request, by metadata, through Stripe's Search: one call
    however many invoices the customer has.

    Search lags behind writes (under a minute, up to an hour in an outage, as
    Stripe documents it), so this is only the look before a first create, which
    must find what Stripe's 24 h key window no longer covers: such an invoice
    was indexed long ago. One younger than 24 h it may miss, but the create
    then sends the key that made it and gets a replay (or the stored 500) back,
    and `write_once` checks that with `_find_invoice`, the consistent list.
    """
    query = f"customer:'{customer_id}' AND metadata['{META_REQUEST_ID}']:'{request_id}'"
    found = call_with_retries(
        lambda: rt.stripe.v1.invoices.search({"query": query, "limit": 2}),
        f"search invoices of {customer_id}",
        search=True,
    )
    ours = [i for i in found.data if metadata_of(i).get(META_REQUEST_ID) == request_id]
    return ours[0] if ours else None
