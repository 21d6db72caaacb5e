"""Apply one verified Stripe event: keep it once, move our request forward only.

Everything happens in ONE transaction: the inbox insert (ON CONFLICT DO NOTHING
on Stripe's event id, so a redelivery finds its first copy and changes
nothing), the request's row lock, the move and its audit row. Either all of it
is committed — and only then does the receiver answer 2xx — or none of it, and
Stripe redelivers.

No lease is taken: a run may hold it for minutes, and a payment must not wait
for that. The row lock (`SELECT … FOR UPDATE`; SQLite's write lock) serialises
us with the run's own commits, and both sides only move the point forward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from invoiceflow import ledger
from invoiceflow.db.engine import insert_if_absent, transaction
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint, utcnow
from invoiceflow.stripe_keys import META_REQUEST_ID
from invoiceflow.webhooks.inbox import InboxEvent

# Reads an invoice from Stripe as a plain dict (the receiver passes one built
# from STRIPE_API_KEY; without it, snapshots are trusted as they are).
ReadInvoice = Callable[[str], Mapping[str, Any]]

# The event types that settle an invoice, and the Stripe status each one means.
_SETTLING = {
    "invoice.paid": "paid",
    "invoice.payment_succeeded": "paid",
    "invoice.voided": "void",
    "invoice.marked_uncollectible": "uncollectible",
}
_POINT = {
    "paid": RecoveryPoint.PAID,
    "void": RecoveryPoint.VOID,
    "uncollectible": RecoveryPoint.UNCOLLECTIBLE,
}
# Every event type this module acts on (reconciliation sweeps Stripe's event log for these).
HANDLED_TYPES = (*_SETTLING, "invoice.payment_failed")


class MalformedEvent(ValueError):
    """Signed by Stripe, but not an event we can read (answered 400)."""


@dataclass(frozen=True)
class Outcome:
    """`kind` is duplicate | applied | recorded | unchanged | ignored; `detail` says why."""

    kind: str
    detail: str

    @property
    def text(self) -> str:
        return f"{self.kind}: {self.detail}"


def parse_event(event: Any) -> tuple[str, str, int, Mapping[str, Any]]:
    """The event's id, type, Stripe's `created` and `data.object`, or MalformedEvent."""
    if not isinstance(event, dict):
        raise MalformedEvent("the body is not a JSON object")
    event_id, type_, created = event.get("id"), event.get("type"), event.get("created")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not (isinstance(event_id, str) and event_id.startswith("evt_") and len(event_id) <= 255):
        raise MalformedEvent("the event has no valid id")
    if not isinstance(type_, str) or not type_ or len(type_) > 128:
        raise MalformedEvent("the event has no valid type")
    if not isinstance(created, int) or isinstance(created, bool):
        raise MalformedEvent("the event has no valid created time")
    if not isinstance(obj, dict):
        raise MalformedEvent("the event has no data.object")
    return event_id, type_, created, obj


def receive(
    engine: Engine, event: Mapping[str, Any], read_invoice: ReadInvoice | None = None
) -> Outcome:
    """Store `event` once and apply it to its request, in one transaction."""
    event_id, type_, created, obj = parse_event(event)
    invoice = obj if type_.startswith("invoice.") and obj.get("object") == "invoice" else None
    invoice_id = invoice.get("id") if invoice else None
    status = _SETTLING.get(type_)
    reread = False
    if invoice and status and invoice.get("status") != status and read_invoice and invoice_id:
        # The snapshot contradicts its own type (a thin or odd event): ask Stripe
        # where the invoice stands now, outside the transaction.
        invoice, reread = dict(read_invoice(str(invoice_id))), True
        current = invoice.get("status")
        status = current if isinstance(current, str) and current in _POINT else None

    with transaction(engine) as session:
        if not insert_if_absent(
            session,
            InboxEvent,
            "event_id",
            event_id=event_id,
            type=type_,
            created=created,
            invoice_id=invoice_id if isinstance(invoice_id, str) else None,
            payload=dict(event),
            received_at=utcnow(),
            outcome="received",
            needs_settle=False,
        ):
            return Outcome("duplicate", f"event {event_id} was already received")
        row = _locked_request(session, invoice) if invoice else None
        if row is None:
            outcome = Outcome("ignored", f"{type_} is not about an invoice of ours")
        else:
            outcome = _apply(session, row, event_id, type_, invoice or {}, status, reread)
        stored = session.get(InboxEvent, event_id)
        assert stored is not None
        stored.request_id = row.request_id if row else None
        stored.outcome = outcome.text[:2000]
        stored.needs_settle = outcome.kind == "applied"
        session.add(stored)
        return outcome


def settle_from_invoice(engine: Engine, invoice: Mapping[str, Any]) -> Outcome:
    """Apply an invoice's settled status as read from Stripe (no event: reconciliation
    found it by listing), through the same forward-only move as an event."""
    status = invoice.get("status")
    if not isinstance(status, str) or status not in _POINT:
        return Outcome("unchanged", f"invoice {invoice.get('id')} is {status}")
    with transaction(engine) as session:
        row = _locked_request(session, invoice)
        if row is None or row.stripe_invoice_id != invoice.get("id"):
            return Outcome("ignored", f"{invoice.get('id')} is not the invoice of a request")
        return _settle(session, row, None, "invoice read", invoice, _POINT[status], True)


def _locked_request(session: Session, invoice: Mapping[str, Any]) -> BillingRequestRow | None:
    """Our request for this invoice, row-locked: by our metadata, else by the invoice id."""
    metadata = invoice.get("metadata")
    request_id = metadata.get(META_REQUEST_ID) if isinstance(metadata, dict) else None
    if isinstance(request_id, str):
        return ledger.lock_row(session, request_id)
    if not isinstance(invoice.get("id"), str):
        return None
    statement = (
        select(BillingRequestRow)
        .where(BillingRequestRow.stripe_invoice_id == invoice["id"])
        .with_for_update()
    )
    return session.exec(statement).one_or_none()


def _apply(
    session: Session,
    row: BillingRequestRow,
    event_id: str,
    type_: str,
    invoice: Mapping[str, Any],
    status: str | None,
    reread: bool,
) -> Outcome:
    invoice_id = str(invoice.get("id"))
    if row.stripe_invoice_id not in (None, invoice_id):
        # Another invoice carrying our request id: never let it decide this
        # request's state, but leave a trace for a human.
        ledger.note(
            session, row, "Stripe event for another invoice", event=event_id, invoice=invoice_id
        )
        return Outcome("ignored", f"{invoice_id} is not the request's invoice")
    if status is not None:
        return _settle(session, row, event_id, type_, invoice, _POINT[status], reread)
    if type_ == "invoice.payment_failed":
        if row.point.is_terminal:
            return Outcome("unchanged", f"payment failure after {row.point.value}")
        reason = decline_reason(invoice)
        if row.point is not RecoveryPoint.FAILED:  # keep a failed run's own reason in front
            row.last_error = reason[:2000]
        ledger.note(session, row, "payment failed", reason=reason, event=event_id)
        return Outcome("recorded", reason)
    return Outcome("unchanged", f"{type_} moves nothing")


def _settle(
    session: Session,
    row: BillingRequestRow,
    event_id: str | None,
    type_: str,
    invoice: Mapping[str, Any],
    to: RecoveryPoint,
    reread: bool,
) -> Outcome:
    invoice_id = str(invoice.get("id"))
    source = "read from Stripe" if reread else type_
    # An event's id is kept with the move; a status read by listing has none.
    detail = {"invoice": invoice_id} | ({"event": event_id} if event_id else {})
    if not ledger.settle(session, row, to, f"invoice {to.value} ({source})", **detail):
        return Outcome("unchanged", f"request already {row.point.value}")
    # Only a move refreshes the cache: a late event's snapshot is older than it.
    row.stripe_invoice_id = invoice_id
    row.invoice_status = str(invoice.get("status") or to.value)
    for field in ("amount_due", "amount_paid"):
        if isinstance(invoice.get(field), int):
            setattr(row, field, invoice[field])
    if to is RecoveryPoint.PAID:
        transitions = invoice.get("status_transitions")
        paid_at = transitions.get("paid_at") if isinstance(transitions, dict) else None
        row.paid_at = datetime.fromtimestamp(paid_at, UTC) if isinstance(paid_at, int) else utcnow()
    session.add(row)
    return Outcome("applied", f"request {row.request_id} is {to.value}")


def decline_reason(invoice: Mapping[str, Any]) -> str:
    """Why a payment failed, from what the event carries.

    Stripe puts the decline on the payment (`last_payment_error`) rather than on
    the invoice; when the snapshot has none, the attempt count is all we know.
    """
    error = invoice.get("last_payment_error") or invoice.get("last_finalization_error")
    if isinstance(error, dict):
        code = error.get("decline_code") or error.get("code") or "payment_failed"
        message = error.get("message") or ""
        return f"payment failed: {code}" + (f" — {message}" if message else "")
    return f"payment failed (attempt {invoice.get('attempt_count') or 1})"
