"""The "done when": only the SDK, from catalog to paid invoice, with signed events arriving."""

from __future__ import annotations

import stripe

from stripe_sandbox import RunningSandbox
from tests.sandbox.conftest import API_KEY
from tests.sandbox.receiver import webhook_receiver

EXPECTED = [
    "product.created",
    "price.created",
    "customer.created",
    "invoice.created",
    "invoiceitem.created",
    "invoice.finalized",
    "invoice.sent",
    "invoice.paid",
    "invoice.payment_succeeded",
]


def test_invoice_from_catalog_to_paid_with_signed_webhooks(sandbox: RunningSandbox) -> None:
    client = stripe.StripeClient(API_KEY, base_addresses={"api": sandbox.url})
    with webhook_receiver() as receiver:
        endpoint = client.v1.webhook_endpoints.create(
            {"url": receiver.url, "enabled_events": ["*"]}
        )
        product = client.v1.products.create({"name": "Monthly retainer"})
        price = client.v1.prices.create(
            {
                "product": product.id,
                "unit_amount": 120_000,
                "currency": "usd",
                "lookup_key": "retainer",
            }
        )
        customer = client.v1.customers.create(
            {"email": "billing@acme.test", "name": "Acme", "metadata": {"account": "acme"}}
        )
        invoice = client.v1.invoices.create(
            {
                "customer": customer.id,
                "collection_method": "send_invoice",
                "days_until_due": 30,
                "metadata": {"run": "2026-11"},
            }
        )
        client.v1.invoice_items.create(
            {"customer": customer.id, "invoice": invoice.id, "pricing": {"price": price.id}}
        )
        client.v1.invoices.add_lines(
            invoice.id, {"lines": [{"amount": 5_000, "description": "Expenses"}]}
        )
        finalized = client.v1.invoices.finalize_invoice(invoice.id)
        assert finalized.status == "open" and finalized.amount_due == 125_000
        client.v1.invoices.send_invoice(invoice.id)
        paid = client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
        assert paid.status == "paid" and paid.amount_remaining == 0

        total = len(client.v1.events.list({"limit": 100}).data)
        received = receiver.wait_for(total)
        events = [
            stripe.Webhook.construct_event(r.body, r.signature, endpoint.secret) for r in received
        ]
    types = {event.type for event in events}
    assert set(EXPECTED) <= types
    paid_event = next(e for e in events if e.type == "invoice.paid")
    assert paid_event.data.object.id == invoice.id
    assert paid_event.data.object.status == "paid"
