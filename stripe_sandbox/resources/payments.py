"""An invoice's payments: the PaymentIntent Stripe opens at finalization and its record.

Stripe creates one PaymentIntent per finalized invoice with something to collect, and an
`invoice_payment` tying the two; `expand[]=payments` shows them on the invoice,
`GET /v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]=pi_…`
finds the invoice of a PaymentIntent (what a `payment_intent.*` event names), and a card
error carries the PaymentIntent (with its `last_payment_error`). Their timestamps are the
invoice's time: its test clock's frozen time when it has one.
"""

from __future__ import annotations

import copy

from stripe_sandbox import shapes
from stripe_sandbox.context import Call, changed
from stripe_sandbox.listing import paginate
from stripe_sandbox.params import LIST_PAGING, Enum, IntOrRange, Obj, Str
from stripe_sandbox.resources.common import Route, created_matches, read
from stripe_sandbox.store import JSON, Store

_LIST = {
    **LIST_PAGING,
    "invoice": Str(),
    "status": Enum(values=("canceled", "open", "paid")),
    "created": IntOrRange(),
    "payment": Obj(
        fields={
            "type": Enum(required=True, values=("payment_intent", "payment_record")),
            "payment_intent": Str(),
            "payment_record": Str(),
        }
    ),
}


def no_payments(store: Store, invoice: JSON) -> None:
    """A draft's `payments`: an empty list until finalization opens one."""
    store.includable[(invoice["id"], "payments")] = _payments_list(invoice, [])


def _payments_list(invoice: JSON, data: list[JSON]) -> JSON:
    return shapes.list_of(data, f"/v1/invoice_payments?invoice={invoice['id']}", False)


def open_payment(store: Store, invoice: JSON) -> None:
    """At finalization: the invoice's PaymentIntent and its default invoice payment."""
    created = store.clock_time(invoice["test_clock"])
    intent = _payment_intent(store.new_id("pi"), created, invoice)
    payment = {
        "id": store.new_id("inpay"),
        "object": "invoice_payment",
        "amount_paid": None,
        "amount_requested": invoice["amount_due"],
        "created": created,
        "currency": invoice["currency"],
        "invoice": invoice["id"],
        "is_default": True,
        "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": intent["id"]},
        "status": "open",
        "status_transitions": {"canceled_at": None, "paid_at": None},
    }
    store.payment_intents[intent["id"]] = intent
    store.invoice_payments[payment["id"]] = payment  # the same object the list holds
    store.includable[(invoice["id"], "payments")] = _payments_list(invoice, [payment])


def settle(store: Store, invoice: JSON, *, succeeded: bool, payment_method: str | None) -> None:
    """The payment's outcome: paid by card, or canceled (paid out of band, voided)."""
    payment = _default_payment(store, invoice)
    if payment is None:
        return
    intent = store.payment_intents[payment["payment"]["payment_intent"]]
    stamp = store.clock_time(invoice["test_clock"])
    if succeeded:
        payment.update(status="paid", amount_paid=invoice["amount_due"])
        payment["status_transitions"]["paid_at"] = stamp
        intent.update(
            status="succeeded",
            amount_received=intent["amount"],
            payment_method=payment_method,
            last_payment_error=None,
        )
    else:
        payment["status"] = "canceled"
        payment["status_transitions"]["canceled_at"] = stamp
        intent.update(status="canceled", canceled_at=stamp, cancellation_reason="void_invoice")


def decline(
    store: Store, invoice: JSON, error: JSON, payment_method_type: str = "card"
) -> JSON | None:
    """Record a failed attempt on the PaymentIntent (a card declined, a bank debit
    returned): it wants a payment method again. Returns it for the error body or event."""
    intent = intent_of(store, invoice)
    if intent is None:
        return None
    intent.update(
        status="requires_payment_method",
        payment_method=None,
        last_payment_error={**error, "payment_method_type": payment_method_type},
    )
    return intent


def processing(store: Store, invoice: JSON, payment_method: str, method_type: str) -> JSON:
    """A delayed-notification payment under way: the PaymentIntent is `processing`."""
    intent = intent_of(store, invoice)
    assert intent is not None, "an invoice being paid has its PaymentIntent"
    intent.update(status="processing", payment_method=payment_method, last_payment_error=None)
    if method_type not in intent["payment_method_types"]:
        intent["payment_method_types"] = [*intent["payment_method_types"], method_type]
    return intent


def intent_of(store: Store, invoice: JSON) -> JSON | None:
    """The invoice's PaymentIntent (None before finalization or with nothing to collect)."""
    payment = _default_payment(store, invoice)
    if payment is None:
        return None
    intent: JSON = store.payment_intents[payment["payment"]["payment_intent"]]
    return intent


def is_processing(store: Store, invoice: JSON) -> bool:
    intent = intent_of(store, invoice)
    return intent is not None and intent["status"] == "processing"


def mark_paid(
    call: Call,
    invoice: JSON,
    *,
    attempted: bool,
    before: JSON | None = None,
    amount_paid: int | None = None,
) -> None:
    """The invoice becomes `paid`: `invoice.paid` (+ `payment_succeeded` when a payment
    was attempted) and `invoice.updated`."""
    before = before or copy.deepcopy(invoice)
    invoice.update(
        status="paid",
        amount_paid=invoice["amount_due"] if amount_paid is None else amount_paid,
        amount_remaining=0,
        next_payment_attempt=None,
    )
    invoice["status_transitions"]["paid_at"] = call.store.clock_time(invoice["test_clock"])
    call.emit("invoice.paid", invoice)
    if attempted:
        call.emit("invoice.payment_succeeded", invoice)
    call.emit("invoice.updated", invoice, changed(before, invoice))


def list_(call: Call) -> JSON:
    params = read(call, _LIST)
    payment = params.get("payment", {})
    selected = (
        item
        for item in reversed(call.store.invoice_payments.values())
        if all(item[name] == params[name] for name in ("invoice", "status") if name in params)
        and created_matches(item, params.get("created"))
        and (not payment or item["payment"]["type"] == payment["type"])
        and all(
            item["payment"].get(name) == payment[name]
            for name in ("payment_intent", "payment_record")
            if name in payment
        )
    )
    return paginate(selected, params, "/v1/invoice_payments")


def retrieve(call: Call, id: str) -> JSON:
    read(call, {})
    return call.store.get("inpay", id)


ROUTES = [
    Route("GET", "/v1/invoice_payments", list_),
    Route("GET", "/v1/invoice_payments/{id}", retrieve),
]


def _default_payment(store: Store, invoice: JSON) -> JSON | None:
    payments = store.includable.get((invoice["id"], "payments"))
    if not payments or not payments["data"]:  # a draft's list is empty
        return None
    payment: JSON = payments["data"][0]
    return payment


def _payment_intent(object_id: str, created: int, invoice: JSON) -> JSON:
    return {
        "id": object_id,
        "object": "payment_intent",
        "allowed_payment_method_types": None,
        "amount": invoice["amount_due"],
        "amount_capturable": 0,
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "client_secret": f"{object_id}_secret_sandbox",
        "confirmation_method": "automatic",
        "created": created,
        "currency": invoice["currency"],
        "customer": invoice["customer"],
        "customer_account": None,
        "description": f"Payment for Invoice {invoice['number']}",
        "excluded_payment_method_types": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": None,
        "payment_method_types": ["card"],
        "payment_record": None,
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "requires_payment_method",
        "transfer_group": None,
    }
