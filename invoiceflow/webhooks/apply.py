"""Apply one verified Stripe event: keep it once, move our request forward only.

Everything happens in ONE transaction: the inbox insert (ON CONFLICT DO NOTHING
on Stripe's event id, so a redelivery finds its first copy and changes
nothing), the request's row lock, the move and its audit row. Either all of it
is committed — and only then does the receiver answer 2xx — or none of it, and
Stripe redelivers.

No lease is taken: a run may hold it for minutes, and a payment must not wait
for that. The row lock (`SELECT … FOR UPDATE`; SQLite's write lock) serialises
us with the run's own commits, and both sides only move the point forward.

A correctly signed event is not yet an event about *our* invoice. It moves a
request only when it is of our account and our mode, and its invoice is the
one the request recorded — or, for a request that recorded none yet (a run
that died before hearing Stripe's answer), one that Stripe shows under our
own key carrying the request's id. A paid invoice must bill the request's
total. Everything else is kept in the inbox as `ignored`, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from invoiceflow import invoice_facts, ledger
from invoiceflow.amend import settled
from invoiceflow.db.engine import insert_if_absent, transaction
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint, utcnow
from invoiceflow.settlement import settled_point
from invoiceflow.stripe_keys import META_REQUEST_ID
from invoiceflow.webhooks.inbox import InboxEvent
from invoiceflow.webhooks.payments import InvoiceOfPayment

# Reads an invoice from Stripe, under our API key, as a plain dict. Without
# one, snapshots of recorded invoices are trusted as they are, and an invoice
# no request recorded is never taken for ours.
ReadInvoice = Callable[[str], Mapping[str, Any]]

# The event types that settle an invoice, and the Stripe status each one means.
_SETTLING = {
    "invoice.paid": "paid",
    "invoice.payment_succeeded": "paid",
    "invoice.voided": "void",
    "invoice.marked_uncollectible": "uncollectible",
}
# Every event type this module acts on (reconciliation sweeps Stripe's event log for these).
HANDLED_TYPES = (*_SETTLING, "invoice.payment_failed")
# A payment under way (a bank debit): the invoice shows "payment pending" until
# Stripe says it failed or the invoice is paid. The event names a PaymentIntent,
# not an invoice: Stripe's invoice payments, read under our key, say whose it is.
PAYMENT_PENDING = "payment_intent.processing"
# Every event type the receiver wants Stripe to send (a webhook endpoint's enabled_events).
WANTED_TYPES = (*HANDLED_TYPES, PAYMENT_PENDING)


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


def not_ours(event: Mapping[str, Any], livemode: bool) -> str | None:
    """Why a signed event is not of our account in our mode; None when it is.

    `livemode`: we bill with a live key (sk_live_/rk_live_), not a test one.
    """
    # We are a plain (non-Connect) integration billing on our own account, and
    # Stripe sets `account` only on a connected account's events (as a Connect
    # endpoint receives them): an event that names any account is not ours.
    account = event.get("account")
    if account:
        return f"an event of connected account {str(account)[:64]}, not of our own account"
    mode = event.get("livemode")
    if not isinstance(mode, bool):
        return "the event does not say its mode (livemode)"
    if mode is not livemode:
        theirs, ours = ("live", "test") if mode else ("test", "live")
        return f"a {theirs}-mode event, and we bill in {ours} mode"
    return None


def receive(
    engine: Engine,
    event: Mapping[str, Any],
    read_invoice: ReadInvoice | None = None,
    *,
    livemode: bool,
    invoice_of_payment: InvoiceOfPayment | None = None,
) -> Outcome:
    """Store `event` once and apply it to its request, in one transaction.

    `livemode`: the mode of our API key; an event of the other mode is ignored.
    `invoice_of_payment`: which invoice a PaymentIntent pays, read under our key;
    without it a `payment_intent.*` event is never taken for ours.
    """
    event_id, type_, created, obj = parse_event(event)
    invoice = obj if type_.startswith("invoice.") and obj.get("object") == "invoice" else None
    invoice_id = invoice.get("id") if invoice else None
    foreign = not_ours(event, livemode)
    status = _SETTLING.get(type_)
    reread = still_processing = False
    payment_intent = obj.get("id") if obj.get("object") == "payment_intent" else None
    if type_ == PAYMENT_PENDING and foreign is None and invoice_of_payment and payment_intent:
        paid = invoice_of_payment(str(payment_intent))  # outside the transaction, like a read
        if paid is not None:
            invoice, reread, still_processing = dict(paid.invoice), True, paid.processing
            invoice_id = invoice.get("id")
    if (
        foreign is None
        and invoice
        and type_ in HANDLED_TYPES
        and isinstance(invoice_id, str)
        and read_invoice
        and ((status and invoice.get("status") != status) or _unrecorded(engine, invoice))
    ):
        # The snapshot contradicts its own type (a thin or odd event), or no
        # request recorded this invoice yet: ask Stripe, under our key and
        # outside the transaction, where the invoice stands and whose it is.
        read = _read(read_invoice, invoice_id)
        if read is not None:
            invoice, reread = dict(read), True
            current = invoice.get("status")
            if status is not None:
                status = current if settled_point(current) is not None else None

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
        row = _locked_request(session, invoice) if invoice and foreign is None else None
        if foreign is not None:
            outcome = Outcome("ignored", foreign)
        elif row is None:
            outcome = Outcome("ignored", f"{type_} is not about an invoice of ours")
        elif type_ == PAYMENT_PENDING:
            at = datetime.fromtimestamp(created, UTC)
            outcome = _payment_pending(
                session, row, event_id, str(invoice_id), invoice or {}, still_processing, at
            )
        else:
            outcome = _apply(
                session, row, event_id, type_, str(invoice_id), invoice or {}, status, reread
            )
        stored = session.get(InboxEvent, event_id)
        assert stored is not None
        stored.request_id = row.request_id if row else None
        stored.outcome = outcome.text[:2000]
        # To tell in the Prefect UI (`invoiceflow.endings`, idempotent): a settlement,
        # a payment pending or failed, and a settling event finding its move made
        # already (dunning's write-off, told by nobody if no dunning flow ran).
        stored.needs_settle = row is not None and (
            outcome.kind in ("applied", "recorded")
            or (outcome.kind == "unchanged" and type_ in _SETTLING)
        )
        session.add(stored)
        return outcome


def settle_from_invoice(engine: Engine, invoice: Mapping[str, Any]) -> Outcome:
    """Apply an invoice's settled status as read from Stripe (no event: reconciliation
    found it by listing), through the same forward-only move as an event."""
    status = invoice.get("status")
    point = settled_point(status)
    if point is None:
        return Outcome("unchanged", f"invoice {invoice.get('id')} is {status}")
    with transaction(engine) as session:
        row = _locked_request(session, invoice)
        if row is None or row.stripe_invoice_id != invoice.get("id"):
            return Outcome("ignored", f"{invoice.get('id')} is not the invoice of a request")
        return _settle(session, row, None, "invoice read", invoice, point, True)


def _request_id_of(invoice: Mapping[str, Any]) -> str | None:
    metadata = invoice.get("metadata")
    request_id = metadata.get(META_REQUEST_ID) if isinstance(metadata, dict) else None
    return request_id if isinstance(request_id, str) else None


def _unrecorded(engine: Engine, invoice: Mapping[str, Any]) -> bool:
    """The invoice names a request of ours that has recorded no invoice yet.

    A peek without the lock, to decide whether Stripe must be asked before the
    transaction; `_apply` decides again under the lock.
    """
    request_id = _request_id_of(invoice)
    row = ledger.load(engine, request_id) if request_id else None
    return row is not None and row.stripe_invoice_id is None


def _read(read_invoice: ReadInvoice, invoice_id: str) -> Mapping[str, Any] | None:
    """The invoice as Stripe shows it under our key; None if Stripe has no such
    invoice there (another account's, or the other mode's). Any other failure
    raises: not committed, so Stripe delivers the event again later."""
    try:
        return read_invoice(invoice_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return None
        raise


def _locked_request(session: Session, invoice: Mapping[str, Any]) -> BillingRequestRow | None:
    """Our request for this invoice, row-locked: by our metadata, else by the invoice id."""
    request_id = _request_id_of(invoice)
    if request_id is not None:
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
    invoice_id: str,
    invoice: Mapping[str, Any],
    status: str | None,
    reread: bool,
) -> Outcome:
    if row.stripe_invoice_id not in (None, invoice_id):
        # Unless it is the invoice being revised, paid before its revision was final.
        source = "read from Stripe" if reread else type_
        moved = settled.event_of_revised(
            session, row, invoice, settled_point(status), source, event_id
        )
        if moved is not None:
            return Outcome(*moved)
        # Another invoice carrying our request id: never let it decide this
        # request's state, but leave a trace for a human.
        ledger.note(
            session, row, "Stripe event for another invoice", event=event_id, invoice=invoice_id
        )
        return Outcome("ignored", f"{invoice_id} is not the request's invoice")
    if type_ not in HANDLED_TYPES:
        return Outcome("unchanged", f"{type_} moves nothing")
    if row.stripe_invoice_id is None and not _confirmed(row, invoice_id, invoice, reread):
        # No invoice recorded yet, and Stripe did not show this one under our
        # key with the request's id: it may be anyone's. Taking it would mark
        # the request settled on a stranger's invoice, and never invoice it.
        reason = f"{invoice_id} is not recorded for the request, and Stripe does not confirm it"
        ledger.note(session, row, "Stripe event for an unconfirmed invoice", event=event_id)
        return Outcome("ignored", reason)
    point = settled_point(status)
    if point is not None:
        return _settle(session, row, event_id, type_, invoice, point, reread)
    if type_ == "invoice.payment_failed":
        if row.point.is_terminal:
            return Outcome("unchanged", f"payment failure after {row.point.value}")
        reason = decline_reason(invoice)
        if row.point is not RecoveryPoint.FAILED:  # keep a failed run's own reason in front
            row.last_error = reason[:2000]
        row.payment_pending_since = None  # the payment under way ended: open again
        ledger.note(session, row, "payment failed", reason=reason, event=event_id)
        return Outcome("recorded", reason)
    return Outcome("unchanged", f"{type_} moves nothing")


def _confirmed(
    row: BillingRequestRow, invoice_id: str, invoice: Mapping[str, Any], reread: bool
) -> bool:
    """Stripe itself, read under our key, shows this invoice with the request's id."""
    return reread and invoice.get("id") == invoice_id and _request_id_of(invoice) == row.request_id


def _amount_problem(row: BillingRequestRow, invoice: Mapping[str, Any]) -> str | None:
    """Why a paid invoice cannot be the request's payment; None when it can.

    It must bill exactly the request's total. `amount_paid` may be less (a
    customer credit applied, or an amount below Stripe's minimum charge carried
    to the customer's balance), never more.
    """
    total, paid = invoice.get("total"), invoice.get("amount_paid")
    if total != row.total_amount:
        return f"invoice {invoice.get('id')} totals {total}, the request {row.total_amount}"
    if not isinstance(paid, int) or not 0 <= paid <= row.total_amount:
        return f"invoice {invoice.get('id')} says {paid} paid of the request's {row.total_amount}"
    return None


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
    if to is RecoveryPoint.PAID and (problem := _amount_problem(row, invoice)):
        ledger.note(session, row, "Stripe payment not recorded", reason=problem, **detail)
        return Outcome("ignored", problem)
    moved = ledger.settle(session, row, to, f"invoice {to.value} ({source})", **detail)
    if row.point.is_terminal:
        row.payment_pending_since = None  # settled: nothing is pending any more
    # The cache moves forward only (`invoice_facts`): a late event's snapshot,
    # older than what a run or another event recorded, changes none of it.
    snapshot = invoice if invoice.get("status") else {**invoice, "status": to.value}
    invoice_facts.merge_invoice(row, snapshot)
    session.add(row)
    if not moved:
        return Outcome("unchanged", f"request already {row.point.value}")
    return Outcome("applied", f"request {row.request_id} is {to.value}")


def _payment_pending(
    session: Session,
    row: BillingRequestRow,
    event_id: str,
    invoice_id: str,
    invoice: Mapping[str, Any],
    still_processing: bool,
    at: datetime,
) -> Outcome:
    """A payment of the request's invoice is processing (read from Stripe just now)."""
    if row.stripe_invoice_id != invoice_id:
        return Outcome("ignored", f"{invoice_id} is not the request's recorded invoice")
    if row.point.is_terminal:
        return Outcome("unchanged", f"payment processing after {row.point.value}")
    if not still_processing:  # a late or redelivered event: the payment already ended
        return Outcome("unchanged", f"the payment of {invoice_id} is no longer processing")
    invoice_facts.merge_invoice(row, invoice)
    if row.payment_pending_since is None:
        row.payment_pending_since = at
        ledger.note(session, row, "payment pending", invoice=invoice_id, event=event_id)
    session.add(row)
    return Outcome("recorded", f"request {row.request_id}: payment pending")


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
