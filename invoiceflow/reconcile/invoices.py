"""The invoice sweep: each unfinished request's invoice as Stripe has it now.

What webhooks (and events past Stripe's 30 days) missed is applied: a paid,
void or uncollectible invoice settles its request through the receiver's own
forward-only move. What cannot be repaired without a person is reported as
drift and left alone: an invoice total edited by hand, a draft whose lines were
changed in the Dashboard, an invoice gone from Stripe though we recorded it
finalized, an invoice carrying a request id of ours that is not its request's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import stripe
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from invoiceflow import ledger, progress
from invoiceflow.db.engine import reading
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint, RequestLine
from invoiceflow.reconcile.report import ReconcileReport
from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import Runtime
from invoiceflow.settlement import settled_point
from invoiceflow.stripe_keys import META_LINE, META_REQUEST_ID, metadata_of
from invoiceflow.stripe_paging import every
from invoiceflow.webhooks.apply import settle_from_invoice


@dataclass
class InvoiceSweep:
    """What the sweep saw: invoices by id, and which requests must not be resumed."""

    invoices: dict[str, stripe.Invoice | None] = field(default_factory=dict)
    drifted: set[str] = field(default_factory=set)


def sweep_invoices(
    rt: Runtime, rows: Sequence[BillingRequestRow], start: int | None, report: ReconcileReport
) -> InvoiceSweep:
    """Settle what Stripe settled, report drift; `start` bounds the listing (Stripe's clock)."""
    sweep = InvoiceSweep()
    listed = _list_invoices(rt, start) if start is not None else []
    sweep.invoices = {invoice.id: invoice for invoice in listed}
    _report_strangers(rt.engine, listed, sweep, report)
    with_invoice = [row for row in rows if row.stripe_invoice_id]
    progress.note("checking the Stripe invoices of %d requests", len(with_invoice))
    for row in with_invoice:
        invoice_id = row.stripe_invoice_id
        assert invoice_id is not None
        if invoice_id not in sweep.invoices:  # older than the listing, or deleted
            sweep.invoices[invoice_id] = _retrieve_or_none(rt, invoice_id)
        _check(rt, row, sweep.invoices[invoice_id], sweep, report)
    return sweep


def _list_invoices(rt: Runtime, start: int) -> list[stripe.Invoice]:
    params = {"created": {"gte": start}}
    return list(every(rt.stripe.v1.invoices.list, params, "list Stripe invoices"))


def _retrieve_or_none(rt: Runtime, invoice_id: str) -> stripe.Invoice | None:
    try:
        return call_with_retries(
            lambda: rt.stripe.v1.invoices.retrieve(invoice_id), f"get {invoice_id}"
        )
    except stripe.InvalidRequestError as exc:
        if exc.code == "resource_missing":
            return None  # a deleted draft is gone for good
        raise


def _check(
    rt: Runtime,
    row: BillingRequestRow,
    invoice: stripe.Invoice | None,
    sweep: InvoiceSweep,
    report: ReconcileReport,
) -> None:
    request_id = row.request_id
    problems = _drift(rt, row, invoice)
    if problems:
        sweep.drifted.add(request_id)
        report.drift += [f"{request_id}: {problem}; left alone" for problem in problems]
    if invoice is not None and settled_point(invoice.status) is not None:
        outcome = settle_from_invoice(rt.engine, invoice.to_dict(for_json=True))
        if outcome.kind == "applied":  # else the events (or the receiver) got there first
            report.settled += 1
            report.settled_ids.append(request_id)
            report.changes.append(f"settled {request_id}: invoice {invoice.id} is {invoice.status}")


def _drift(rt: Runtime, row: BillingRequestRow, invoice: stripe.Invoice | None) -> list[str]:
    invoice_id = row.stripe_invoice_id
    if invoice is None:
        if row.progress.reached(RecoveryPoint.FINALIZED):
            return [f"invoice {invoice_id} is gone from Stripe, though we recorded it finalized"]
        return []  # a draft deleted in the Dashboard: the invoice flow makes a new one
    if invoice.status == "draft":
        if row.progress.reached(RecoveryPoint.FINALIZED):
            return [f"invoice {invoice_id} is a draft in Stripe, though we recorded it finalized"]
        return _line_drift(rt, row, invoice)
    if invoice.total != row.total_amount:
        return [
            f"invoice {invoice_id} totals {invoice.total} {invoice.currency}, the request "
            f"{row.total_amount} (edited by hand?)"
        ]
    return []


def _line_drift(rt: Runtime, row: BillingRequestRow, invoice: stripe.Invoice) -> list[str]:
    """A draft's lines against the request's: each line of ours as we added it, no others."""
    ours = {line.position: line for line in ledger.lines(rt.engine, row.request_id)}
    lines = every(
        lambda params: rt.stripe.v1.invoices.line_items.list(invoice.id, params),
        {},
        f"list lines of {invoice.id}",
    )
    problems: list[str] = []
    seen: set[int] = set()
    for line in lines:
        position = metadata_of(line).get(META_LINE, "")
        mine = ours.get(int(position)) if position.isdigit() else None
        if mine is None or int(position) in seen:
            problems.append(f"draft {invoice.id} holds line {line.id} that invoiceflow did not add")
            continue
        seen.add(mine.position)
        if not _same(line, mine):
            problems.append(
                f"draft {invoice.id} line {mine.position} ({mine.sku}) is {line.quantity} x "
                f"{line.amount}, the request {mine.quantity} x {mine.unit_amount} (edited by hand?)"
            )
    if row.progress.reached(RecoveryPoint.LINES_ADDED):
        missing = sorted(set(ours) - seen)
        if missing:
            problems.append(f"draft {invoice.id} lacks lines {missing} that were added")
    return problems


def _same(line: stripe.InvoiceLineItem, mine: RequestLine) -> bool:
    return line.quantity == mine.quantity and line.amount == mine.unit_amount * mine.quantity


def _report_strangers(
    engine: Engine,
    invoices: Iterable[stripe.Invoice],
    sweep: InvoiceSweep,
    report: ReconcileReport,
) -> None:
    """Invoices stamped with one of our request ids that are not that request's invoice.

    A void one cannot charge anyone; any other may be a second bill for the same work.
    """
    stamped = {
        invoice.id: metadata_of(invoice)[META_REQUEST_ID]
        for invoice in invoices
        if META_REQUEST_ID in metadata_of(invoice) and invoice.status != "void"
    }
    known = _invoice_ids(engine, set(stamped.values()))
    for invoice_id, request_id in sorted(stamped.items()):
        if request_id not in known:
            report.drift.append(
                f"{request_id}: invoice {invoice_id} carries this request id, which our ledger "
                "does not know; left alone"
            )
        elif known[request_id] not in (None, invoice_id):
            sweep.drifted.add(request_id)
            report.drift.append(
                f"{request_id}: invoice {invoice_id} carries this request id, but the request's "
                f"invoice is {known[request_id]}; left alone"
            )


def _invoice_ids(engine: Engine, request_ids: set[str]) -> dict[str, str | None]:
    """Our invoice id for each of `request_ids` we know (None: not created yet)."""
    if not request_ids:
        return {}
    with reading(engine) as session:
        statement = select(BillingRequestRow.request_id, BillingRequestRow.stripe_invoice_id).where(
            col(BillingRequestRow.request_id).in_(request_ids)
        )
        return {request_id: invoice_id for request_id, invoice_id in session.exec(statement)}
