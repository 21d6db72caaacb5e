"""The invoice lifecycle through the SDK: items, totals, numbering, status machine."""

from __future__ import annotations

import pytest
import stripe

from stripe_sandbox.resources.invoices import MAX_LINES_PER_ADD


def _setup(client: stripe.StripeClient, amount: int = 1500) -> tuple[str, str]:
    product = client.v1.products.create({"name": "Consulting"})
    price = client.v1.prices.create(
        {"product": product.id, "unit_amount": amount, "currency": "usd"}
    )
    customer = client.v1.customers.create({"email": "ada@example.com", "name": "Ada"})
    return price.id, customer.id


def _draft(client: stripe.StripeClient, customer: str, **extra: object) -> stripe.Invoice:
    params = {"customer": customer, "collection_method": "send_invoice", "days_until_due": 14}
    params.update(extra)
    return client.v1.invoices.create(params)  # type: ignore[arg-type]


def test_add_lines_totals_and_line_shapes(client: stripe.StripeClient) -> None:
    price, customer = _setup(client)
    invoice = _draft(client, customer)
    assert invoice.status == "draft" and invoice.number is None
    assert invoice.due_date == invoice.created + 14 * 86400
    invoice = client.v1.invoices.add_lines(
        invoice.id,
        {
            "lines": [
                {"pricing": {"price": price}, "quantity": 3, "metadata": {"row": "1"}},
                {"amount": 250, "description": "Setup fee"},
            ],
            "invoice_metadata": {"order": "o-1"},
        },
    )
    assert (invoice.subtotal, invoice.total, invoice.amount_due) == (4750, 4750, 4750)
    assert invoice.amount_remaining == 4750 and invoice.amount_paid == 0
    assert invoice.metadata["order"] == "o-1"
    first, second = invoice.lines.data
    assert first.amount == 4500 and first.quantity == 3 and first.description == "Consulting"
    assert first.pricing.price_details.price == price
    assert str(first.pricing.unit_amount_decimal) == "1500"
    assert first.parent.type == "invoice_item_details"
    item = client.v1.invoice_items.retrieve(first.parent.invoice_item_details.invoice_item)
    assert item.invoice == invoice.id and item.metadata["row"] == "1"
    assert second.amount == 250 and second.description == "Setup fee"
    lines = client.v1.invoices.line_items.list(invoice.id)
    assert [line.id for line in lines.data] == [first.id, second.id]


def test_finalize_send_pay_lifecycle(client: stripe.StripeClient) -> None:
    price, customer = _setup(client)
    invoice = _draft(client, customer)
    client.v1.invoices.add_lines(invoice.id, {"lines": [{"pricing": {"price": price}}]})
    prefix = client.v1.customers.retrieve(customer).invoice_prefix
    sent = client.v1.invoices.send_invoice(invoice.id)  # sending a draft finalizes it
    assert sent.status == "open"
    assert sent.number == f"{prefix}-0001"
    assert sent.hosted_invoice_url.startswith("https://invoice.stripe.com/i/")
    assert sent.invoice_pdf.endswith("/pdf?s=ap")
    assert sent.status_transitions.finalized_at is not None
    assert client.v1.customers.retrieve(customer).next_invoice_sequence == 2
    paid = client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
    assert paid.status == "paid" and paid.amount_paid == 1500 and paid.amount_remaining == 0
    assert paid.attempt_count == 1 and paid.attempted
    assert paid.status_transitions.paid_at is not None
    types = [event.type for event in client.v1.events.list({"limit": 100}).data]
    for expected in (
        "invoice.created",
        "invoice.finalized",
        "invoice.sent",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoiceitem.created",
        "customer.created",
        "product.created",
        "price.created",
    ):
        assert expected in types


def test_illegal_moves_answer_like_stripe(client: stripe.StripeClient) -> None:
    price, customer = _setup(client)
    invoice = _draft(client, customer)
    client.v1.invoices.add_lines(invoice.id, {"lines": [{"pricing": {"price": price}}]})
    client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError, match="already finalized"):
        client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError, match="only add lines to draft"):
        client.v1.invoices.add_lines(invoice.id, {"lines": [{"amount": 1}]})
    with pytest.raises(stripe.InvalidRequestError, match="draft"):
        client.v1.invoice_items.create({"customer": customer, "invoice": invoice.id, "amount": 5})
    with pytest.raises(stripe.InvalidRequestError, match="can't be updated"):
        client.v1.invoices.update(invoice.id, {"collection_method": "charge_automatically"})
    updated = client.v1.invoices.update(invoice.id, {"metadata": {"ok": "yes"}})
    assert updated.metadata["ok"] == "yes"
    with pytest.raises(stripe.InvalidRequestError, match="only delete draft"):
        client.v1.invoices.delete(invoice.id)
    client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})
    with pytest.raises(stripe.InvalidRequestError, match="Invoice is already paid"):
        client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.void_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.mark_uncollectible(invoice.id)


def test_uncollectible_then_paid_or_void(client: stripe.StripeClient) -> None:
    price, customer = _setup(client)
    ids = []
    for _ in range(2):
        invoice = _draft(client, customer)
        client.v1.invoices.add_lines(invoice.id, {"lines": [{"pricing": {"price": price}}]})
        client.v1.invoices.finalize_invoice(invoice.id)
        marked = client.v1.invoices.mark_uncollectible(invoice.id)
        assert marked.status == "uncollectible"
        assert marked.status_transitions.marked_uncollectible_at is not None
        ids.append(invoice.id)
    assert client.v1.invoices.pay(ids[0], {"paid_out_of_band": True}).status == "paid"
    voided = client.v1.invoices.void_invoice(ids[1])
    assert voided.status == "void" and voided.status_transitions.voided_at is not None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(ids[1], {"paid_out_of_band": True})


def test_draft_delete_and_send_requires_send_invoice(client: stripe.StripeClient) -> None:
    _, customer = _setup(client)
    auto = client.v1.invoices.create({"customer": customer})
    assert auto.collection_method == "charge_automatically" and auto.due_date is None
    with pytest.raises(stripe.InvalidRequestError, match="send_invoice"):
        client.v1.invoices.send_invoice(auto.id)
    deleted = client.v1.invoices.delete(auto.id)
    assert deleted.deleted is True
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.invoices.retrieve(auto.id)
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as no_due:
        client.v1.invoices.create({"customer": customer, "collection_method": "send_invoice"})
    assert no_due.value.code == "parameter_missing"


@pytest.mark.parametrize(
    ("method", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
def test_card_declines(client: stripe.StripeClient, method: str, decline_code: str) -> None:
    price, customer = _setup(client)
    invoice = client.v1.invoices.create({"customer": customer})
    client.v1.invoices.add_lines(invoice.id, {"lines": [{"pricing": {"price": price}}]})
    client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.CardError) as declined:
        client.v1.invoices.pay(invoice.id, {"payment_method": method})
    assert declined.value.http_status == 402
    assert declined.value.code == "card_declined"
    assert declined.value.error.decline_code == decline_code
    after = client.v1.invoices.retrieve(invoice.id)
    assert after.status == "open" and after.attempt_count == 1 and after.attempted
    failed = client.v1.events.list({"type": "invoice.payment_failed"}).data
    assert [event.data.object.id for event in failed] == [invoice.id]
    assert client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"}).status == "paid"


def test_zero_amount_invoice_is_paid_on_finalize(client: stripe.StripeClient) -> None:
    _, customer = _setup(client)
    draft = client.v1.invoices.create({"customer": customer})
    invoice = client.v1.invoices.finalize_invoice(draft.id)
    assert invoice.status == "paid" and invoice.amount_due == 0


def test_item_limits(client: stripe.StripeClient) -> None:
    price, customer = _setup(client, amount=1)
    invoice = _draft(client, customer)
    batch = [{"pricing": {"price": price}} for _ in range(MAX_LINES_PER_ADD)]
    with pytest.raises(stripe.InvalidRequestError, match="at most 50 lines"):
        client.v1.invoices.add_lines(invoice.id, {"lines": [*batch, batch[0]]})
    for _ in range(5):
        invoice = client.v1.invoices.add_lines(invoice.id, {"lines": batch})
    assert invoice.total == 250
    assert len(invoice.lines.data) == 10 and invoice.lines.has_more
    with pytest.raises(stripe.InvalidRequestError, match="at most 250"):
        client.v1.invoices.add_lines(invoice.id, {"lines": batch[:1]})
    with pytest.raises(stripe.InvalidRequestError, match="at most 250"):
        client.v1.invoice_items.create(
            {"customer": customer, "invoice": invoice.id, "pricing": {"price": price}}
        )
    every = list(client.v1.invoices.line_items.list(invoice.id, {"limit": 100}).auto_paging_iter())
    assert len(every) == 250


def test_currency_rules_and_pending_items(client: stripe.StripeClient) -> None:
    product = client.v1.products.create({"name": "Widget"})
    eur = client.v1.prices.create({"product": product.id, "unit_amount": 700, "currency": "eur"})
    customer = client.v1.customers.create({"name": "Berta"})
    pending = client.v1.invoice_items.create(
        {"customer": customer.id, "pricing": {"price": eur.id}, "quantity": 2}
    )
    assert pending.invoice is None and pending.amount == 1400 and pending.currency == "eur"
    listed = client.v1.invoice_items.list({"customer": customer.id, "pending": True})
    assert [item.id for item in listed.data] == [pending.id]
    invoice = client.v1.invoices.create(
        {"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    assert invoice.currency == "eur" and invoice.total == 1400
    assert client.v1.invoice_items.retrieve(pending.id).invoice == invoice.id
    with pytest.raises(stripe.InvalidRequestError, match="currency"):
        client.v1.invoices.add_lines(
            invoice.id,
            {
                "lines": [
                    {"price_data": {"currency": "usd", "product": product.id, "unit_amount": 5}}
                ]
            },
        )
    usd_invoice = client.v1.invoices.create({"customer": customer.id, "currency": "usd"})
    with pytest.raises(stripe.InvalidRequestError, match="currency"):
        client.v1.invoice_items.create(
            {"customer": customer.id, "invoice": usd_invoice.id, "pricing": {"price": eur.id}}
        )
