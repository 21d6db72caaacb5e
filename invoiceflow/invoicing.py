"""The invoice's own steps: create the draft, add the lines, finalize, send, await payment.

Each step is an atomic phase in the rocket-rides sense:
1. read the recovery point and return at once if the step is already done;
2. record the write intent (its idempotency key, derived from the request id
   and the step) before calling Stripe;
3. if an earlier attempt recorded the same intent, it may have reached Stripe
   without our database hearing back — reconcile by *reading* Stripe first.
   Before the first attempt too, unless the object provably cannot exist yet
   (`invoiceflow.fresh`): Stripe is the source of truth, and our database may
   be new, restored or another machine's;
4. write to Stripe under the key, with retries of transient failures only;
5. in one transaction: store the Stripe id/state, close the intent, advance the
   recovery point, append to the audit log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from functools import partial

import stripe

from invoiceflow import catalog, customers, fresh, invoice_facts, ledger, stripe_paging
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint, RequestLine, utcnow
from invoiceflow.request import BillingRequest
from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_clock import response_time
from invoiceflow.stripe_keys import (
    META_LINE,
    META_REQUEST_ID,
    digest,
    metadata_of,
    request_step_key,
)
from invoiceflow.stripe_write import precounted, write_once

log = logging.getLogger(__name__)

# Stripe's bulk line endpoints take a bounded number of lines per call; 50 keeps
# every call well inside the limit while a 250-line invoice still needs only 5.
LINES_PER_ADD_CALL = 50
# Largest page Stripe's list endpoints return.
PAGE_SIZE = 100
# Stripe keeps events for 30 days; an `invoice.sent` older than this margin
# may already be gone, so its absence proves nothing.
EVENT_RETENTION = timedelta(days=29)
# Lines checked from the answer of the add_lines call this process made moments
# ago are as current as a read right before finalizing would be; older, re-read.
VERIFIED_SECONDS = 60.0


# Whether each step says what it did (the invoice flow, where each step is a
# task run of its own), or the caller says it once per request (a billing run
# of thousands, where every line costs twice: the console and Prefect's API).
_steps_quiet: ContextVar[bool] = ContextVar("invoiceflow_steps_quiet", default=False)


@contextmanager
def quiet_steps() -> Iterator[None]:
    """Within the block, this thread's steps log at DEBUG; the caller sums up."""
    token = _steps_quiet.set(True)
    try:
        yield
    finally:
        _steps_quiet.reset(token)


def _step_done(message: str, *args: object) -> None:
    log.log(logging.DEBUG if _steps_quiet.get() else logging.INFO, message, *args)


# Each write's idempotency key, named in one place: a step records the next
# step's intent (`ledger.intend_in`) in its own commit under the same key.
def _create_key(request_id: str, customer_id: str) -> str:
    # The customer is part of the key: a request whose customer had to be
    # replaced writes anew instead of meeting the old customer's stored answer.
    return request_step_key(request_id, f"invoice.create.{customer_id}")


def _batch_key(request_id: str, invoice_id: str, batch_no: int) -> str:
    return request_step_key(request_id, f"lines.add.{invoice_id}.{batch_no}")


def _finalize_key(request_id: str, invoice_id: str) -> str:
    # Keys name the invoice: a replacement draft must never meet the answers
    # Stripe stored for a deleted one.
    return request_step_key(request_id, f"invoice.finalize.{invoice_id}")


def _send_key(request_id: str, invoice_id: str) -> str:
    return request_step_key(request_id, f"invoice.send.{invoice_id}")


# Drafts whose lines this process checked from its own add_lines answer, by
# (lease owner, invoice): taken once, by the finalize of the same attempt.
# A retried finalize, a rerun or another run reads the draft again.
_verified: dict[tuple[str, str], float] = {}
_verified_lock = threading.Lock()


def _note_verified(owner: str, invoice_id: str) -> None:
    now = time.monotonic()
    with _verified_lock:
        for stale in [k for k, at in _verified.items() if now - at > VERIFIED_SECONDS]:
            del _verified[stale]
        _verified[owner, invoice_id] = now


def _take_verified(owner: str, invoice_id: str) -> bool:
    with _verified_lock:
        at = _verified.pop((owner, invoice_id), None)
    return at is not None and time.monotonic() - at < VERIFIED_SECONDS


class InvoiceMismatch(RuntimeError):
    """The Stripe invoice does not hold exactly the request's lines. Never finalized."""


class DraftGone(RuntimeError):
    """Our draft was deleted in Stripe after we recorded it; the request starts a new one."""


class SendUnverifiable(RuntimeError):
    """We cannot tell whether the invoice was emailed (its events are past retention)."""


def _request(row: BillingRequestRow) -> BillingRequest:
    return BillingRequest.model_validate(row.payload)


def _invoice_id(row: BillingRequestRow) -> str:
    assert row.stripe_invoice_id is not None, "step ran before the draft existed"
    return row.stripe_invoice_id


def mark_catalog_ready(
    rt: Runtime, request_id: str, owner: str, customer: customers.Known | None = None
) -> None:
    """Join of the catalog branch: pin each line to its Stripe price.

    `customer`: a customer resolved without Stripe (`customers.known`), whose
    `customer_ready` is committed here too — one transaction, not two.
    """
    # Checked under the lock, not read first: this step writes in the common case.
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        if row.progress.reached(RecoveryPoint.CATALOG_READY):
            return
        if customer is not None and row.stripe_customer_id is None:
            customers.commit_known(session, row, customer)
        request_lines = ledger.lines_in(session, request_id)
        prices = catalog.prices_in(session, {line.price_lookup_key for line in request_lines})
        for line in request_lines:
            if line.price_lookup_key not in prices:
                raise RuntimeError(f"price for line {line.position} ({line.sku}) is not ready")
            line.stripe_price_id = prices[line.price_lookup_key]
            session.add(line)
        ledger.advance(session, row, RecoveryPoint.CATALOG_READY, "catalog ready")
        customer_id = row.stripe_customer_id
        create = None
        if customer_id is not None:  # the create's intent, recorded with this commit
            create = ledger.intend_in(
                session, _create_key(request_id, customer_id), "invoice.create", request_id
            )
    if create is not None:
        precounted(owner, create)


def create_invoice(rt: Runtime, request_id: str, owner: str) -> str:
    row = ledger.require(rt.engine, request_id)
    if row.stripe_invoice_id is not None:
        return row.stripe_invoice_id
    assert row.stripe_customer_id is not None, "create_invoice ran before ensure_customer"
    try:
        invoice, key = _create_draft(rt, row, row.stripe_customer_id)
    except stripe.InvalidRequestError as exc:
        if not _is_missing(exc, "customer"):
            raise
        # Our customer map points at a customer Stripe no longer has (deleted in
        # the Dashboard, or a database from another account): resolve it again.
        customer_id = _replace_customer(rt, request_id, owner, row.stripe_customer_id)
        invoice, key = _create_draft(rt, ledger.require(rt.engine, request_id), customer_id)
    _step_done("Draft invoice %s for request %s", invoice.id, request_id)

    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        row.stripe_invoice_id = invoice.id
        invoice_facts.merge_invoice(row, invoice)
        ledger.fulfil(session, key, invoice.id)
        ledger.advance(
            session, row, RecoveryPoint.DRAFT_CREATED, "draft invoice created", invoice=invoice.id
        )
        first_batch = ledger.intend_in(
            session, _batch_key(request_id, invoice.id, 0), "lines.add", request_id
        )
    precounted(owner, first_batch)
    return invoice.id


def _create_draft(
    rt: Runtime, row: BillingRequestRow, customer_id: str
) -> tuple[stripe.Invoice, str]:
    request = _request(row)
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
        fresh.note(created.id, created)
        return created

    return write_once(
        rt,
        key=_create_key(request_id, customer_id),
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
        look_first=not fresh.is_fresh(customer_id),
        find_first=lambda: _search_invoice(rt, customer_id, request_id),
        recheck_replays=True,
    )


def _replace_customer(rt: Runtime, request_id: str, owner: str, gone_id: str) -> str:
    row = ledger.require(rt.engine, request_id)
    customers.forget(rt.engine, row.customer_key, gone_id)
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        row.stripe_customer_id = None
        ledger.note(session, row, "customer no longer in Stripe; resolving again", customer=gone_id)
    return customers.ensure_customer(rt, request_id, owner)


def _is_missing(exc: stripe.InvalidRequestError, param: str) -> bool:
    """Stripe's `resource_missing` for the object passed as `param` (or the path's object)."""
    return exc.code == "resource_missing" and (exc.param or "") == param


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


def _invoice_lines(rt: Runtime, invoice_id: str) -> Iterator[stripe.InvoiceLineItem]:
    return stripe_paging.every(
        partial(rt.stripe.v1.invoices.line_items.list, invoice_id),
        {},
        f"list lines of {invoice_id}",
    )


def _by_position(
    invoice_id: str, stripe_lines: Iterable[stripe.InvoiceLineItem]
) -> dict[int, stripe.InvoiceLineItem]:
    """The invoice's lines by our line position; a line we did not add is an error."""
    found: dict[int, stripe.InvoiceLineItem] = {}
    for line in stripe_lines:
        position = metadata_of(line).get(META_LINE)
        if position is None or not position.isdigit() or int(position) in found:
            raise InvoiceMismatch(
                f"invoice {invoice_id} holds line {line.id} that invoiceflow did not add; "
                "remove it in Stripe (or void the invoice) before resuming"
            )
        found[int(position)] = line
    return found


def _lines_on_invoice(rt: Runtime, invoice_id: str) -> dict[int, stripe.InvoiceLineItem]:
    return _by_position(invoice_id, _invoice_lines(rt, invoice_id))


def add_items(rt: Runtime, request_id: str, owner: str) -> None:
    """Put exactly the request's lines on the draft, in as few calls as Stripe allows."""
    row = ledger.require(rt.engine, request_id)
    if row.progress.reached(RecoveryPoint.LINES_ADDED):
        return
    invoice_id = _invoice_id(row)
    request_lines = ledger.lines(rt.engine, request_id)
    # A draft this process created a moment ago holds no lines; any other may
    # (another ledger's run, a crash before we recorded a batch): look once.
    present = {} if fresh.is_fresh(invoice_id) else _present_or_gone(rt, request_id, owner, row)

    keys: list[str] = []  # closed with the recovery point, in one commit
    answer: stripe.Invoice | None = None  # Stripe's invoice after our last add
    for batch_no, start in enumerate(range(0, len(request_lines), LINES_PER_ADD_CALL)):
        batch = request_lines[start : start + LINES_PER_ADD_CALL]
        there = [line.position for line in batch if line.position in present]
        if len(there) == len(batch):
            continue
        if there:
            raise InvoiceMismatch(
                f"invoice {invoice_id} holds only part of a batch (lines {there}); "
                "someone edited the draft — remove those lines in Stripe before resuming"
            )
        key = _batch_key(request_id, invoice_id, batch_no)
        try:
            answer, key = _add_batch(rt, request_id, owner, invoice_id, batch, key)
        except stripe.InvalidRequestError as exc:
            # Stripe refused a price of ours (deleted, archived, another
            # account's): re-verify the batch's prices, then add it once more
            # under a key that names the new prices.
            if not (exc.param or "").startswith("lines[") or not catalog.heal_prices(
                rt, request_id, owner, batch
            ):
                raise
            positions = {line.position for line in batch}
            batch = [x for x in ledger.lines(rt.engine, request_id) if x.position in positions]
            prices = ",".join(sorted({str(line.stripe_price_id) for line in batch}))
            answer, key = _add_batch(
                rt, request_id, owner, invoice_id, batch, f"{key}:{digest(prices)}"
            )
            request_lines = ledger.lines(rt.engine, request_id)  # repointed to the new prices
        keys.append(key)

    _verify_and_record_lines(rt, request_id, owner, invoice_id, request_lines, answer, keys)


def _add_batch(
    rt: Runtime, request_id: str, owner: str, invoice_id: str, batch: list[RequestLine], key: str
) -> tuple[stripe.Invoice, str]:
    """Stripe's invoice after the batch was added (or found added), and the key used."""
    params: stripe.params.InvoiceAddLinesParams = {
        "lines": [_line_params(request_id, line) for line in batch]
    }
    first, last = batch[0].position, batch[-1].position
    return write_once(
        rt,
        key=key,
        step="lines.add",
        request_id=request_id,
        write=partial(_add_lines, rt, request_id, owner, invoice_id, params),
        find=partial(_batch_on_invoice, rt, invoice_id, batch),
        what=f"add lines {first}-{last} to {invoice_id}",
    )


def _present_or_gone(
    rt: Runtime, request_id: str, owner: str, row: BillingRequestRow
) -> dict[int, stripe.InvoiceLineItem]:
    invoice_id = _invoice_id(row)
    try:
        return _lines_on_invoice(rt, invoice_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            _forget_deleted_draft(rt, request_id, owner, invoice_id)
        raise


def _add_lines(
    rt: Runtime,
    request_id: str,
    owner: str,
    invoice_id: str,
    params: stripe.params.InvoiceAddLinesParams,
    key: str,
) -> stripe.Invoice:
    try:
        return rt.stripe.v1.invoices.add_lines(invoice_id, params, {"idempotency_key": key})
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404 and _is_missing(exc, "invoice"):
            _forget_deleted_draft(rt, request_id, owner, invoice_id)
        raise


def _forget_deleted_draft(rt: Runtime, request_id: str, owner: str, invoice_id: str) -> None:
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


def _batch_on_invoice(
    rt: Runtime, invoice_id: str, batch: list[RequestLine], _intent: ledger.Intent
) -> stripe.Invoice | None:
    """The invoice if an earlier attempt already added this batch (Stripe adds a
    batch atomically: all of its lines or none)."""
    present = _lines_on_invoice(rt, invoice_id)
    missing = [line.position for line in batch if line.position not in present]
    if not missing:
        return retrieve_invoice(rt, invoice_id)
    if len(missing) != len(batch):
        raise InvoiceMismatch(
            f"invoice {invoice_id} holds only part of a batch (missing lines {missing}); "
            "someone edited the draft — remove those lines in Stripe before resuming"
        )
    return None


def line_text(line: RequestLine) -> str:
    """What the invoice line reads: the request's item name (and its description).

    Set on every line, so that a new name for an existing sku shows on this
    invoice instead of the product's older name.
    """
    return f"{line.name} — {line.description}" if line.description else line.name


def _line_params(request_id: str, line: RequestLine) -> stripe.params.InvoiceAddLinesParamsLine:
    assert line.stripe_price_id is not None, "add_items ran before catalog_ready"
    return {
        "pricing": {"price": line.stripe_price_id},
        "quantity": line.quantity,
        "description": line_text(line),
        "metadata": {META_REQUEST_ID: request_id, META_LINE: str(line.position)},
    }


def _mismatches(
    invoice_id: str,
    present: dict[int, stripe.InvoiceLineItem],
    request_lines: list[RequestLine],
) -> list[str]:
    """Every way the invoice's lines differ from the request's, line by line."""
    expected = {line.position for line in request_lines}
    problems = []
    if set(present) != expected:
        problems.append(f"has lines {sorted(present)}, the request {sorted(expected)}")
    for line in request_lines:
        got = present.get(line.position)
        if got is None:
            continue
        want = {
            "amount": line.unit_amount * line.quantity,
            "quantity": line.quantity,
            "price": line.stripe_price_id,
            "description": line_text(line),
        }
        have = {
            "amount": got.amount,
            "quantity": got.quantity,
            "price": _line_price_id(got),
            "description": got.description,
        }
        for field, value in want.items():
            if have[field] != value:
                problems.append(
                    f"line {line.position} {field} is {have[field]!r}, expected {value!r}"
                )
    return problems


def _line_price_id(line: stripe.InvoiceLineItem) -> str | None:
    pricing = getattr(line, "pricing", None)
    details = getattr(pricing, "price_details", None) if pricing else None
    price = getattr(details, "price", None) if details else None
    return price if isinstance(price, str) else getattr(price, "id", None)


def _verify_and_record_lines(
    rt: Runtime,
    request_id: str,
    owner: str,
    invoice_id: str,
    request_lines: list[RequestLine],
    answer: stripe.Invoice | None,
    keys: list[str],
) -> None:
    """The invoice must hold exactly our lines before it may be finalized.

    Checked from Stripe's answer to our last add_lines when it holds every line
    and is not a replay (it is the invoice as of that moment), else from a read
    of the lines: a resumed run, whose draft anyone may have edited since.
    """
    current = answer is not None and not fresh.replayed(answer)
    embedded = answer.lines if answer is not None and current else None
    if embedded is not None and not embedded.has_more:
        present = _by_position(invoice_id, embedded.data)
    else:
        present = _lines_on_invoice(rt, invoice_id)
    problems = _mismatches(invoice_id, present, request_lines)
    if problems:
        raise InvoiceMismatch(f"invoice {invoice_id} " + "; ".join(problems))
    if answer is not None and current:
        # This attempt's finalize may trust this check instead of reading the draft again.
        _note_verified(owner, invoice_id)
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        for line in ledger.lines_in(session, request_id):
            line.stripe_line_id = present[line.position].id
            session.add(line)
        for key in keys:
            ledger.fulfil(session, key, invoice_id)
        ledger.advance(session, row, RecoveryPoint.LINES_ADDED, "lines added", lines=len(present))
        finalizing = ledger.intend_in(
            session, _finalize_key(request_id, invoice_id), "invoice.finalize", request_id
        )
    precounted(owner, finalizing)


def finalize(rt: Runtime, request_id: str, owner: str) -> None:
    row = ledger.require(rt.engine, request_id)
    if row.progress.reached(RecoveryPoint.FINALIZED):
        return
    invoice_id = _invoice_id(row)
    key = _finalize_key(request_id, invoice_id)
    invoice: stripe.Invoice | None = None
    # Read first — an earlier attempt may have finalized it already, and a draft
    # is checked line by line right before it becomes immutable, since anyone
    # may have edited it while no run was watching — unless this process
    # checked every line from Stripe's answer to its own add_lines moments
    # ago: that answer is as current as a read made now would be, and no
    # attempt can have finalized a draft we were still adding lines to.
    if not _take_verified(owner, invoice_id):
        try:
            invoice = retrieve_invoice(rt, invoice_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                _forget_deleted_draft(rt, request_id, owner, invoice_id)
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
                if exc.http_status == 404 and _is_missing(exc, "invoice"):
                    _forget_deleted_draft(rt, request_id, owner, invoice_id)
                raise
            # A draft we finalized here was never sent: nothing to look up before sending.
            fresh.note(f"{invoice_id}:finalized", finalized)
            return finalized

        written, key = write_once(
            rt,
            key=key,
            step="invoice.finalize",
            request_id=request_id,
            write=finalize_draft,
            find=lambda _intent: _unless_status(retrieve_invoice(rt, invoice_id), "draft"),
            what=f"finalize {invoice_id}",
        )
        _step_done("Finalized invoice %s (%s)", written.id, written.number)
        invoice = written
    assert invoice is not None  # read above, or the write's answer
    sending: ledger.Intent | None = None
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        invoice_facts.merge_invoice(row, invoice)
        row.finalized_at = row.finalized_at or utcnow()
        ledger.fulfil(session, key, invoice.id)
        ledger.advance(session, row, RecoveryPoint.FINALIZED, "finalized", number=invoice.number)
        if invoice.status == "open":
            sending = ledger.intend_in(
                session, _send_key(request_id, invoice_id), "invoice.send", request_id
            )
    if sending is not None:
        precounted(owner, sending)


def _verify_before_finalizing(rt: Runtime, row: BillingRequestRow, invoice: stripe.Invoice) -> None:
    """Exactly our lines (position, amount, quantity, price, text) and total, or no finalizing."""
    request_lines = ledger.lines(rt.engine, row.request_id)
    embedded = invoice.lines
    if embedded is not None and not embedded.has_more:
        present = _by_position(invoice.id, embedded.data)  # the retrieve just made holds them all
    else:
        present = _lines_on_invoice(rt, invoice.id)
    problems = _mismatches(invoice.id, present, request_lines)
    if invoice.total != row.total_amount:
        problems.append(f"totals {invoice.total}, the request {row.total_amount}")
    if problems:
        raise InvoiceMismatch(
            f"invoice {invoice.id} " + "; ".join(problems) + " — not finalizing; "
            "fix the draft in Stripe (or delete it to start over) and rerun"
        )


def _unless_status(invoice: stripe.Invoice, status: str) -> stripe.Invoice | None:
    return None if invoice.status == status else invoice


def retrieve_invoice(rt: Runtime, invoice_id: str) -> stripe.Invoice:
    return call_with_retries(
        lambda: rt.stripe.v1.invoices.retrieve(invoice_id), f"get {invoice_id}"
    )


def send(rt: Runtime, request_id: str, owner: str) -> None:
    """Email the invoice to the customer — once."""
    row = ledger.require(rt.engine, request_id)
    if row.progress.reached(RecoveryPoint.SENT):
        return
    invoice_id = _invoice_id(row)
    settled = _SETTLED.get(row.invoice_status or "")
    if settled is not None:  # paid at finalization (below Stripe's minimum charge)
        record_settlement(rt, request_id, owner, retrieve_invoice(rt, invoice_id), settled)
        return
    try:
        invoice, key = write_once(
            rt,
            key=_send_key(request_id, invoice_id),
            step="invoice.send",
            request_id=request_id,
            write=lambda k: rt.stripe.v1.invoices.send_invoice(
                invoice_id, options={"idempotency_key": k}
            ),
            find=lambda _intent: _sent_invoice(rt, invoice_id),
            what=f"send {invoice_id}",
            # Finalized by this process a moment ago: it cannot have been sent yet.
            look_first=not fresh.is_fresh(f"{invoice_id}:finalized"),
        )
    except stripe.InvalidRequestError:
        # Voided, paid or written off in the Dashboard since we finalized it:
        # that is the invoice's story now, and sending is moot.
        current = retrieve_invoice(rt, invoice_id)
        settled = _SETTLED.get(current.status or "")
        if settled is None:
            raise
        record_settlement(rt, request_id, owner, current, settled)
        return
    _step_done("Invoice %s is sent to the customer", invoice_id)
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        # The customer may have paid while the send was in flight, and the
        # receiver recorded it: this `open` answer (or a replay's, older
        # still) is then behind the row and changes none of it.
        invoice_facts.merge_invoice(row, invoice)
        row.sent_at = row.sent_at or utcnow()
        ledger.fulfil(session, key, invoice_id)
        ledger.advance(
            session, row, RecoveryPoint.SENT, "sent", hosted_invoice_url=invoice.hosted_invoice_url
        )


def _sent_invoice(rt: Runtime, invoice_id: str) -> stripe.Invoice | None:
    """The invoice if Stripe already emailed it, judged by Stripe's own clock.

    A resend under the same key is a harmless replay within Stripe's 24 h
    window, but past it would email the customer again; the event log tells.
    """
    invoice = retrieve_invoice(rt, invoice_id)
    if invoice.status == "draft":
        return None

    def unverifiable(finalized: datetime) -> Exception:
        return SendUnverifiable(
            f"invoice {invoice_id} was finalized on {finalized:%Y-%m-%d}; Stripe no longer keeps "
            "the events that would show whether it was emailed. Check it in the Dashboard and "
            "send it from there if needed"
        )

    return invoice if times_emailed(rt, invoice, unverifiable) else None


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


# Stripe statuses that end the wait, and the recovery point each one means.
_SETTLED = {
    "paid": RecoveryPoint.PAID,
    "void": RecoveryPoint.VOID,
    "uncollectible": RecoveryPoint.UNCOLLECTIBLE,
}


def refresh_settlement(rt: Runtime, request_id: str, owner: str) -> RecoveryPoint:
    """A rerun of a sent request: one read of the invoice, in case it settled while
    no webhook reached us (the receiver was down). Never a loop: waiting for a
    payment is the webhook receiver's job, not a worker's."""
    row = ledger.require(rt.engine, request_id)
    if row.point.is_terminal:
        return row.point
    invoice = retrieve_invoice(rt, _invoice_id(row))
    settled = _SETTLED.get(invoice.status or "")
    if settled is None:
        return row.point
    record_settlement(rt, request_id, owner, invoice, settled)
    return settled


def record_settlement(
    rt: Runtime, request_id: str, owner: str, invoice: stripe.Invoice, point: RecoveryPoint
) -> None:
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        # Forward-only: a payment the receiver recorded meanwhile outranks a
        # write-off answer read before it (`invoice_facts`).
        invoice_facts.merge_invoice(row, invoice)
        # Stripe's status machine past `open`, the same one the webhook receiver follows.
        ledger.settle(session, row, point, f"invoice {invoice.status}", invoice=invoice.id)
    log.info("Invoice %s for request %s is %s", invoice.id, request_id, invoice.status)
