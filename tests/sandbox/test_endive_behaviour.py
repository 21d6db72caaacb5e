"""Behaviours where the sandbox used to differ from Stripe."""

from __future__ import annotations

import httpx
import pytest
import stripe

from stripe_sandbox import RunningSandbox
from stripe_sandbox.webhooks import REMOTE_REFUSED, is_loopback
from tests.sandbox.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_delete_ignores_idempotency_keys(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    first, second = (client.v1.customers.create({}) for _ in range(2))
    headers = {**AUTH, "Idempotency-Key": "same-key"}
    one = httpx.delete(f"{sandbox.url}/v1/customers/{first.id}", headers=headers)
    two = httpx.delete(f"{sandbox.url}/v1/customers/{second.id}", headers=headers)
    assert one.status_code == two.status_code == 200  # no mismatch: the key is ignored
    assert "Idempotent-Replayed" not in two.headers and two.json()["id"] == second.id


def test_deleted_customer_is_retrievable(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    client.v1.customers.delete(customer.id)
    gone = client.v1.customers.retrieve(customer.id)
    assert gone.to_dict() == {"id": customer.id, "object": "customer", "deleted": True}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.invoices.create({"customer": customer.id})
    assert refused.value.code == "resource_missing"


def test_invalid_currency_and_email_are_refused(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as currency:
        client.v1.prices.create(
            {"product_data": {"name": "x"}, "currency": "zzz", "unit_amount": 1}
        )
    assert currency.value.param == "currency"
    with pytest.raises(stripe.InvalidRequestError) as email:
        client.v1.customers.create({"email": "not-an-email"})
    assert (email.value.code, email.value.param) == ("email_invalid", "email")


def test_invoice_prefix_is_three_to_twelve_characters(client: stripe.StripeClient) -> None:
    """Stripe documents 3-12 uppercase letters or digits; the issue's 1-12 is not what it says."""
    assert client.v1.customers.create({"invoice_prefix": "ABC"}).invoice_prefix == "ABC"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.create({"invoice_prefix": "AB"})


@pytest.mark.parametrize("amount", [20, 0])
def test_below_minimum_invoice_is_paid_at_finalization(
    client: stripe.StripeClient, amount: int
) -> None:
    customer = client.v1.customers.create({})
    invoice = client.v1.invoices.create({"customer": customer.id})
    if amount:
        client.v1.invoice_items.create(
            {"customer": customer.id, "invoice": invoice.id, "amount": amount}
        )
    final = client.v1.invoices.finalize_invoice(invoice.id)
    assert final.status == "paid" and final.amount_remaining == 0
    assert client.v1.customers.retrieve(customer.id).balance == amount  # owed next time
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})


def test_card_error_carries_the_payment_intent_and_payments_expand(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create({})
    invoice = client.v1.invoices.create({"customer": customer.id})
    client.v1.invoice_items.create({"customer": customer.id, "invoice": invoice.id, "amount": 900})
    client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.CardError) as declined:
        client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_chargeDeclined"})
    intent = declined.value.json_body["error"]["payment_intent"]  # type: ignore[index]
    assert (
        intent["object"] == "payment_intent"
        and intent["last_payment_error"]["code"] == "card_declined"
    )
    client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
    paid = client.v1.invoices.retrieve(invoice.id, {"expand": ["payments"]})
    assert paid.payments.data[0].status == "paid"
    assert paid.payments.data[0].payment.payment_intent == intent["id"]


def test_invoice_item_update_and_delete(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    invoice = client.v1.invoices.create({"customer": customer.id})
    item = client.v1.invoice_items.create(
        {"customer": customer.id, "invoice": invoice.id, "amount": 900}
    )
    assert client.v1.invoice_items.update(item.id, {"amount": 1200}).amount == 1200
    assert client.v1.invoices.retrieve(invoice.id).total == 1200
    assert client.v1.invoice_items.delete(item.id).deleted is True
    assert client.v1.invoices.retrieve(invoice.id).total == 0


def test_remove_and_update_lines(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    invoice = client.v1.invoices.create({"customer": customer.id})
    invoice = client.v1.invoices.add_lines(
        invoice.id, {"lines": [{"amount": 100}, {"amount": 200}]}
    )
    first, second = invoice.lines.data
    invoice = client.v1.invoices.update_lines(
        invoice.id, {"lines": [{"id": first.id, "amount": 150}]}
    )
    assert invoice.total == 350
    invoice = client.v1.invoices.remove_lines(
        invoice.id, {"lines": [{"id": second.id, "behavior": "unassign"}]}
    )
    assert invoice.total == 150
    pending = client.v1.invoice_items.list({"customer": customer.id, "pending": True}).data
    assert [item.amount for item in pending] == [200]
    client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.invoices.remove_lines(
            invoice.id, {"lines": [{"id": first.id, "behavior": "delete"}]}
        )
    assert refused.value.code == "invoice_not_editable"
    # The unassigned line is the customer's pending item: the next invoice takes it.
    following = client.v1.invoices.create(
        {"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    assert following.total == 200
    assert client.v1.invoice_items.list({"customer": customer.id, "pending": True}).data == []


def test_product_delete_refused_with_prices(client: stripe.StripeClient) -> None:
    priced = client.v1.products.create(
        {"name": "P", "default_price_data": {"currency": "usd", "unit_amount": 5}}
    )
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.delete(priced.id)
    bare = client.v1.products.create({"name": "Bare"})
    assert client.v1.products.delete(bare.id).deleted is True


def test_webhooks_go_to_loopback_only(sandbox: RunningSandbox, client: stripe.StripeClient) -> None:
    assert is_loopback("http://127.0.0.5:9/x") and is_loopback("http://[::1]:9/x")
    assert is_loopback("http://localhost/x") and not is_loopback("https://example.com/x")
    assert not is_loopback("http://10.0.0.1/x")
    client.v1.webhook_endpoints.create({"url": "https://example.com/hook", "enabled_events": ["*"]})
    client.v1.customers.create({})
    deliveries = _wait_for_deliveries(sandbox)
    assert deliveries and all(d["error"] == REMOTE_REFUSED for d in deliveries)
    assert sandbox.configure(allow_remote_webhooks=True)["allow_remote_webhooks"] is True


def _wait_for_deliveries(sandbox: RunningSandbox) -> list[dict[str, object]]:
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = sandbox.webhook_deliveries()
        if found:
            return found
        time.sleep(0.05)
    return []
