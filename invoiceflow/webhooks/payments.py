"""Which invoice a PaymentIntent pays, as Stripe shows it under our key.

A `payment_intent.*` event names no invoice. Stripe's invoice payments do
(`GET /v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]=pi_…`),
and listing them under our own key is also the proof that the payment is of our
account: another account's PaymentIntent lists nothing here. The PaymentIntent
comes expanded, so its status *now* decides, not the event's snapshot: a
`processing` event redelivered after the payment failed finds it failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import stripe

from invoiceflow.retry import RetryPolicy, call_with_retries


@dataclass(frozen=True)
class PaidInvoice:
    """The invoice a PaymentIntent pays, and whether that payment is processing now."""

    invoice: Mapping[str, Any]
    processing: bool


# The invoice a PaymentIntent pays (None: none of ours), read from Stripe.
InvoiceOfPayment = Callable[[str], PaidInvoice | None]


def invoice_of_payment_reader(
    client: stripe.StripeClient, policy: RetryPolicy | None = None
) -> InvoiceOfPayment:
    """A reader through the shared rate limit, under `policy` (None: the default)."""

    def read(payment_intent: str) -> PaidInvoice | None:
        params: dict[str, Any] = {
            "payment": {"type": "payment_intent", "payment_intent": payment_intent},
            "expand": ["data.payment.payment_intent"],
            "limit": 1,
        }
        found = call_with_retries(
            lambda: client.v1.invoice_payments.list(params),  # type: ignore[arg-type]
            f"invoice of {payment_intent}",
            policy=policy,
        )
        if not found.data:
            return None
        payment = found.data[0].to_dict()
        intent = (payment.get("payment") or {}).get("payment_intent")
        processing = isinstance(intent, dict) and intent.get("status") == "processing"
        invoice_id = payment.get("invoice")
        if not isinstance(invoice_id, str):
            return None
        invoice = call_with_retries(
            lambda: client.v1.invoices.retrieve(invoice_id),
            f"get {invoice_id}",
            policy=policy,
        )
        return PaidInvoice(invoice.to_dict(), processing)

    return read
