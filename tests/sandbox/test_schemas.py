"""Every body the sandbox serves, success or error, is valid under Stripe's endive schemas.

A broad workload runs through the real SDK (every route, happy and error paths) with
`record_responses` on; then each recorded body is validated against `roots[<Object>]`
(lists item by item, events with their `data.object`) or, for errors, against Stripe's
error object. Zero violations allowed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import stripe

from stripe_sandbox import RunningSandbox
from tests.sandbox.conftest import API_KEY
from tests.sandbox.stripe_schemas import require_schemas, violations


def _attempt(action: Callable[[], Any]) -> None:
    """Run one SDK call whose outcome (object or Stripe error) the recording keeps."""
    with contextlib.suppress(stripe.StripeError):
        action()


def _workload(client: stripe.StripeClient) -> None:
    v1 = client.v1
    product = v1.products.create(
        {
            "name": "Widget",
            "marketing_features": [{"name": "Fast"}],
            "package_dimensions": {"height": 1, "length": 2, "weight": 3, "width": 4},
            "tax_details": {"tax_code": "txcd_10000000"},
        }
    )
    spare = v1.products.create(
        {"name": "Spare", "default_price_data": {"currency": "usd", "unit_amount": 300}}
    )
    v1.products.retrieve(product.id)
    v1.products.update(product.id, {"description": "A widget"})
    v1.products.list({"limit": 3})
    v1.products.search({"query": "name:'Widget'"})
    _attempt(lambda: v1.products.retrieve("prod_missing"))
    _attempt(lambda: v1.products.delete(spare.id))  # has a price
    lonely = v1.products.create({"name": "Lonely"})
    v1.products.delete(lonely.id)
    _attempt(lambda: v1.products.retrieve(lonely.id))

    price = v1.prices.create({"product": product.id, "unit_amount": 500, "currency": "usd"})
    v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 700,
            "currency_options": {"eur": {"unit_amount": 650}},
            "transform_quantity": {"divide_by": 10, "round": "up"},
        }
    )
    v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": 10, "unit_amount": 100}, {"up_to": "inf", "unit_amount": 80}],
        }
    )
    v1.prices.create(
        {"product": product.id, "currency": "usd", "custom_unit_amount": {"enabled": True}}
    )
    v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Plan"},
        }
    )
    v1.prices.retrieve(price.id)
    v1.prices.update(price.id, {"nickname": "standard"})
    v1.prices.list({"limit": 2})
    v1.prices.search({"query": "currency:'usd'"})
    _attempt(lambda: v1.prices.create({"product": product.id, "currency": "usd"}))
    _attempt(lambda: v1.prices.create({"product": product.id, "currency": "zzz", "unit_amount": 1}))

    customer = v1.customers.create(
        {
            "email": "buyer@example.com",
            "name": "Buyer",
            "invoice_prefix": "ABC",
            "invoice_settings": {
                "footer": "Thanks",
                "custom_fields": [{"name": "PO", "value": "42"}],
            },
            "shipping": {"name": "Buyer", "address": {"line1": "1 Main St", "country": "US"}},
            "tax_exempt": "none",
            "balance": 0,
            "next_invoice_sequence": 7,
            "business_name": "Buyer Ltd",
            "tax_id_data": [{"type": "eu_vat", "value": "DE123456789"}],
        }
    )
    v1.customers.retrieve(customer.id, {"expand": ["tax_ids"]})
    carded = v1.customers.create({"source": "tok_visa", "expand": ["sources", "default_source"]})
    _attempt(lambda: v1.customers.create({"source": "tok_nonsense"}))
    v1.customers.update(customer.id, {"phone": "+15555550100"})
    v1.customers.list({"limit": 2})
    v1.customers.search({"query": "email:'buyer@example.com'"})
    _attempt(lambda: v1.customers.create({"email": "not-an-email"}))
    _attempt(lambda: v1.customers.create({"invoice_prefix": "lower"}))
    gone = v1.customers.create({"name": "Gone"})
    v1.customers.delete(gone.id)
    v1.customers.retrieve(gone.id)

    invoice = v1.invoices.create(
        {
            "customer": customer.id,
            "custom_fields": [{"name": "Ref", "value": "A-1"}],
            "rendering": {"amount_tax_display": "exclude_tax"},
            "payment_settings": {"payment_method_types": ["card"]},
            "shipping_details": {"name": "Buyer", "address": {"line1": "1 Main St"}},
            "automatic_tax": {"enabled": False},
            "issuer": {"type": "self"},
        }
    )
    item = v1.invoice_items.create(
        {"customer": customer.id, "invoice": invoice.id, "pricing": {"price": price.id}}
    )
    v1.invoice_items.create(
        {
            "customer": customer.id,
            "invoice": invoice.id,
            "amount": 250,
            "tax_behavior": "exclusive",
        }
    )
    extra = v1.invoice_items.create(
        {
            "customer": customer.id,
            "invoice": invoice.id,
            "quantity_decimal": "1.5",
            "unit_amount_decimal": "100",
        }
    )
    v1.invoice_items.update(item.id, {"description": "Widgets"})
    v1.invoice_items.retrieve(item.id)
    v1.invoice_items.list({"invoice": invoice.id})
    v1.invoice_items.delete(extra.id)
    _attempt(lambda: v1.invoice_items.retrieve(extra.id))
    _attempt(lambda: v1.invoice_items.create({"customer": customer.id, "amount": "ten"}))  # type: ignore[typeddict-item]
    invoice = v1.invoices.add_lines(invoice.id, {"lines": [{"amount": 120, "description": "x"}]})
    line = invoice.lines.data[-1]
    v1.invoices.update_lines(
        invoice.id, {"lines": [{"id": line.id, "description": "Extra", "amount": 130}]}
    )
    v1.invoices.remove_lines(invoice.id, {"lines": [{"id": line.id, "behavior": "delete"}]})
    v1.invoices.update(invoice.id, {"custom_fields": [{"name": "Ref", "value": "A-2"}]})
    v1.invoices.line_items.list(invoice.id)
    v1.invoices.retrieve(invoice.id, {"expand": ["customer", "payments"]})
    v1.invoices.list({"customer": customer.id})
    v1.invoices.search({"query": f"customer:'{customer.id}'"})
    _attempt(lambda: v1.invoices.send_invoice(invoice.id))
    v1.invoices.finalize_invoice(invoice.id)
    _attempt(lambda: v1.invoices.finalize_invoice(invoice.id))
    _attempt(lambda: v1.invoices.add_lines(invoice.id, {"lines": [{"amount": 1}]}))
    _attempt(lambda: v1.invoices.pay(invoice.id, {"payment_method": "pm_card_chargeDeclined"}))
    v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
    v1.invoices.retrieve(invoice.id, {"expand": ["payments"]})
    _attempt(lambda: v1.invoices.pay(invoice.id))
    _attempt(lambda: v1.invoices.void_invoice(invoice.id))

    tiny = v1.invoices.create({"customer": customer.id})
    v1.invoice_items.create({"customer": customer.id, "invoice": tiny.id, "amount": 20})
    v1.invoices.finalize_invoice(tiny.id)
    sent = v1.invoices.create(
        {"customer": customer.id, "collection_method": "send_invoice", "days_until_due": 30}
    )
    v1.invoice_items.create({"customer": customer.id, "invoice": sent.id, "amount": 5000})
    v1.invoices.send_invoice(sent.id)
    by_card = v1.invoices.create({"customer": carded.id})
    v1.invoice_items.create({"customer": carded.id, "invoice": by_card.id, "amount": 700})
    _attempt(lambda: v1.invoices.pay(by_card.id, {"source": "card_missing"}))
    v1.invoices.pay(by_card.id, {"source": str(carded.default_source.id)})
    v1.invoices.mark_uncollectible(sent.id)
    v1.invoices.void_invoice(sent.id)
    draft = v1.invoices.create({"customer": customer.id})
    v1.invoices.delete(draft.id)
    _attempt(lambda: v1.invoices.retrieve("in_missing"))

    endpoint = v1.webhook_endpoints.create(
        {"url": "http://127.0.0.1:9/hook", "enabled_events": ["invoice.paid"]}
    )
    v1.webhook_endpoints.update(endpoint.id, {"description": "local"})
    v1.webhook_endpoints.retrieve(endpoint.id)
    v1.webhook_endpoints.list()
    v1.webhook_endpoints.delete(endpoint.id)
    events = v1.events.list({"limit": 100})
    v1.events.retrieve(events.data[0].id)
    _attempt(lambda: v1.events.list({"limit": 1000}))


def test_every_served_body_is_valid_under_stripes_schemas(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    require_schemas()
    sandbox.configure(record_responses=True)
    _workload(client)
    recorded = sandbox.responses()
    assert len(recorded) > 70
    assert {r["status"] for r in recorded} >= {200, 400, 402, 404}
    problems = [
        problem
        for r in recorded
        for problem in violations(
            r["body"], status=r["status"], where=f"{r['method']} {r['path']} {r['status']}"
        )
    ]
    assert problems == [], "\n".join(problems[:40])


def test_events_list_covers_every_invoice_event(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    require_schemas()
    _workload(client)
    types = {event.type for event in client.v1.events.list({"limit": 100}).auto_paging_iter()}
    assert {"invoice.finalized", "invoice.paid", "invoice.voided", "invoiceitem.deleted"} <= types
    # Raw JSON: the SDK's to_dict() turns decimal strings into Decimal objects.
    raw = httpx.get(
        sandbox.url + "/v1/events",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    problems = violations(raw, where="events")
    assert problems == [], "\n".join(problems[:40])


@pytest.fixture(autouse=True)
def _quiet_webhooks(sandbox: RunningSandbox) -> None:
    sandbox.configure(webhook_max_attempts=1)
