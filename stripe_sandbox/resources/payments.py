"""An invoice's payments: the PaymentIntent Stripe opens at finalization and its record.

Stripe creates one PaymentIntent per finalized invoice with something to collect, and an
`invoice_payment` tying the two; `expand[]=payments` shows them on the invoice, and a card
error carries the PaymentIntent (with its `last_payment_error`). Their timestamps are the
invoice's time: its test clock's frozen time when it has one.
"""

from __future__ import annotations

from stripe_sandbox import shapes
from stripe_sandbox.store import JSON, Store


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


def decline(store: Store, invoice: JSON, error: JSON) -> JSON | None:
    """Record a declined attempt on the PaymentIntent; returns it for the error body."""
    payment = _default_payment(store, invoice)
    if payment is None:
        return None
    intent = store.payment_intents[payment["payment"]["payment_intent"]]
    intent.update(
        status="requires_payment_method",
        payment_method=None,
        last_payment_error={**error, "payment_method_type": "card"},
    )
    return intent


def _default_payment(store: Store, invoice: JSON) -> JSON | None:
    payments = store.includable.get((invoice["id"], "payments"))
    if not payments:
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
