"""The draft's lines: exactly the request's, added in as few calls as Stripe allows,
and checked line by line before the draft may be finalized."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial

import stripe
from sqlalchemy import case, update
from sqlmodel import Session

from invoiceflow import catalog, ledger, stripe_paging
from invoiceflow.attempt import Attempt
from invoiceflow.db.engine import table_of
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint, RequestLine
from invoiceflow.fresh import replayed
from invoiceflow.invoicing.common import (
    InvoiceMismatch,
    batch_key,
    current_row,
    finalize_key,
    forget_deleted_draft,
    invoice_id_of,
    is_missing,
    retrieve_invoice,
)
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_keys import META_LINE, META_REQUEST_ID, digest, metadata_of
from invoiceflow.stripe_write import write_once

# Stripe's bulk line endpoints take a bounded number of lines per call; 50 keeps
# every call well inside the limit while a 250-line invoice still needs only 5.
LINES_PER_ADD_CALL = 50


def add_items(rt: Runtime, request_id: str, attempt: Attempt) -> None:
    """Put exactly the request's lines on the draft, in as few calls as Stripe allows."""
    owner = attempt.owner
    row = current_row(rt, attempt)
    if row.progress.reached(RecoveryPoint.LINES_ADDED):
        return
    invoice_id = invoice_id_of(row)
    pinned = attempt.take_pinned()  # as this attempt's catalog_ready committed them
    request_lines = pinned if pinned is not None else ledger.lines(rt.engine, request_id)
    # A draft this process created a moment ago holds no lines; any other may
    # (another ledger's run, a crash before we recorded a batch): look once.
    present = {} if attempt.made_here(invoice_id) else _present_or_gone(rt, request_id, owner, row)

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
        key = batch_key(request_id, invoice_id, batch_no)
        try:
            answer, key = _add_batch(rt, attempt, invoice_id, batch, key)
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
            answer, key = _add_batch(rt, attempt, invoice_id, batch, f"{key}:{digest(prices)}")
            request_lines = ledger.lines(rt.engine, request_id)  # repointed to the new prices
        keys.append(key)

    _verify_and_record_lines(rt, attempt, invoice_id, request_lines, answer, keys)


def _add_batch(
    rt: Runtime, attempt: Attempt, invoice_id: str, batch: list[RequestLine], key: str
) -> tuple[stripe.Invoice, str]:
    """Stripe's invoice after the batch was added (or found added), and the key used."""
    request_id, owner = attempt.request_id, attempt.owner
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
        attempt=attempt,
    )


def _present_or_gone(
    rt: Runtime, request_id: str, owner: str, row: BillingRequestRow
) -> dict[int, stripe.InvoiceLineItem]:
    invoice_id = invoice_id_of(row)
    try:
        return lines_on_invoice(rt, invoice_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            forget_deleted_draft(rt, request_id, owner, invoice_id)
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
        if exc.http_status == 404 and is_missing(exc, "invoice"):
            forget_deleted_draft(rt, request_id, owner, invoice_id)
        raise


def _batch_on_invoice(
    rt: Runtime, invoice_id: str, batch: list[RequestLine], _intent: ledger.Intent
) -> stripe.Invoice | None:
    """The invoice if an earlier attempt already added this batch (Stripe adds a
    batch atomically: all of its lines or none)."""
    present = lines_on_invoice(rt, invoice_id)
    missing = [line.position for line in batch if line.position not in present]
    if not missing:
        return retrieve_invoice(rt, invoice_id)
    if len(missing) != len(batch):
        raise InvoiceMismatch(
            f"invoice {invoice_id} holds only part of a batch (missing lines {missing}); "
            "someone edited the draft — remove those lines in Stripe before resuming"
        )
    return None


def _invoice_lines(rt: Runtime, invoice_id: str) -> Iterator[stripe.InvoiceLineItem]:
    return stripe_paging.every(
        partial(rt.stripe.v1.invoices.line_items.list, invoice_id),
        {},
        f"list lines of {invoice_id}",
    )


def by_position(
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


def lines_on_invoice(rt: Runtime, invoice_id: str) -> dict[int, stripe.InvoiceLineItem]:
    return by_position(invoice_id, _invoice_lines(rt, invoice_id))


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


def mismatches(
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
    attempt: Attempt,
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
    current = answer is not None and not replayed(answer)
    embedded = answer.lines if answer is not None and current else None
    if embedded is not None and not embedded.has_more:
        present = by_position(invoice_id, embedded.data)
    else:
        present = lines_on_invoice(rt, invoice_id)
    problems = mismatches(invoice_id, present, request_lines)
    if problems:
        raise InvoiceMismatch(f"invoice {invoice_id} " + "; ".join(problems))
    if answer is not None and current:
        # This attempt's finalize may trust this check instead of reading the draft again.
        attempt.verified(invoice_id)
    request_id = attempt.request_id
    with ledger.locked(rt.engine, request_id, attempt.owner) as (session, row):
        line_ids = {line.position: present[line.position].id for line in request_lines}
        _record_line_ids(session, request_id, line_ids)
        for key in keys:
            ledger.fulfil(session, key, invoice_id)
        ledger.advance(session, row, RecoveryPoint.LINES_ADDED, "lines added", lines=len(present))
        finalizing = ledger.intend_in(
            session, finalize_key(request_id, invoice_id), "invoice.finalize", request_id
        )
    attempt.recorded(finalizing)


def _record_line_ids(session: Session, request_id: str, line_ids: dict[int, str]) -> None:
    """Write Stripe's line id on each of the request's lines: one UPDATE, no read back.

    It covers every line of the request (one not in `line_ids` would get none),
    so the row count proves the ledger holds exactly the lines just checked on
    the invoice, as the read it replaces did; otherwise the caller's transaction
    rolls back. Each id stays UNIQUE (`RequestLine.stripe_line_id`).
    """
    table = table_of(RequestLine)
    statement = (
        update(table)
        .where(table.c.request_id == request_id)
        .values(stripe_line_id=case(line_ids, value=table.c.position, else_=None))
    )
    written = session.connection().execute(statement).rowcount
    if written != len(line_ids):
        raise RuntimeError(
            f"request {request_id} has {written} lines in the ledger, the invoice {len(line_ids)}"
        )
