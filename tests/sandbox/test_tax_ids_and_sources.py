"""Two parameters Stripe's spec allows that the sandbox refused (issue 19): a customer's
`tax_id_data` shown as its `tax_ids`, and `source` on `invoices.pay`."""

from __future__ import annotations

import pytest
import stripe


def _open_invoice(client: stripe.StripeClient, customer_id: str, amount: int = 900) -> str:
    invoice = client.v1.invoices.create({"customer": customer_id})
    client.v1.invoice_items.create(
        {"customer": customer_id, "invoice": invoice.id, "amount": amount}
    )
    return str(client.v1.invoices.finalize_invoice(invoice.id).id)


def test_tax_id_data_is_the_customers_tax_ids(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        {
            "tax_id_data": [
                {"type": "eu_vat", "value": "DE123456789"},
                {"type": "us_ein", "value": "12-3456789"},
            ],
            "expand": ["tax_ids"],
        }
    )
    assert customer.tax_ids is not None
    tax_ids = customer.tax_ids.data
    assert [(t.type, t.value, t.country) for t in tax_ids] == [
        ("eu_vat", "DE123456789", "DE"),
        ("us_ein", "12-3456789", "US"),
    ]
    assert all(t.object == "tax_id" and t.customer == customer.id for t in tax_ids)
    assert tax_ids[0].verification is not None and tax_ids[0].verification.status == "pending"
    # Includable, as in Stripe: absent unless asked for, the same when retrieved.
    assert "tax_ids" not in client.v1.customers.retrieve(customer.id)
    again = client.v1.customers.retrieve(customer.id, {"expand": ["tax_ids"]})
    assert again.tax_ids is not None
    assert [t.id for t in again.tax_ids.data] == [t.id for t in tax_ids]
    invoice = client.v1.invoices.create({"customer": customer.id})
    assert [(t.type, t.value) for t in invoice.customer_tax_ids or []] == [
        ("eu_vat", "DE123456789"),
        ("us_ein", "12-3456789"),
    ]
    plain = client.v1.customers.create({"expand": ["tax_ids"]})
    assert plain.tax_ids is not None and plain.tax_ids.data == []


def test_a_malformed_tax_id_creates_no_customer(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.create({"tax_id_data": [{"type": "vat", "value": "1"}]})
    assert refused.value.param == "tax_id_data[0][type]"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.customers.create({"tax_id_data": [{"type": "eu_vat"}]})  # type: ignore[arg-type]
    assert missing.value.param == "tax_id_data[0][value]"
    assert client.v1.customers.list().data == []


def test_pay_with_a_source_of_the_customer(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"source": "tok_visa"})
    assert isinstance(customer.default_source, str) and customer.default_source.startswith("card_")
    invoice_id = _open_invoice(client, customer.id)
    paid = client.v1.invoices.pay(invoice_id, {"source": customer.default_source})
    assert (paid.status, paid.amount_paid) == ("paid", 900)
    payments = client.v1.invoices.retrieve(invoice_id, {"expand": ["payments"]}).payments
    assert payments is not None and payments.data[0].status == "paid"
    # With nothing named, Stripe charges the customer's default source.
    assert client.v1.invoices.pay(_open_invoice(client, customer.id)).status == "paid"


def test_pay_with_an_unknown_or_foreign_source_is_refused(client: stripe.StripeClient) -> None:
    owner = client.v1.customers.create({"source": "tok_visa"})
    other = client.v1.customers.create({})
    invoice_id = _open_invoice(client, other.id)
    for source in ("card_missing", str(owner.default_source)):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.invoices.pay(invoice_id, {"source": source})
        error = refused.value
        assert (error.http_status, error.code, error.param) == (400, "resource_missing", "source")
        assert f"No such source: '{source}'" in str(error.user_message)
    with pytest.raises(stripe.InvalidRequestError) as both:
        client.v1.invoices.pay(
            invoice_id, {"source": str(owner.default_source), "payment_method": "pm_card_visa"}
        )
    assert both.value.code == "parameters_exclusive"
    invoice = client.v1.invoices.retrieve(invoice_id)
    assert (invoice.status, invoice.attempt_count) == ("open", 0)


def test_a_declining_source_declines(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"source": "tok_chargeDeclinedInsufficientFunds"})
    invoice_id = _open_invoice(client, customer.id)
    with pytest.raises(stripe.CardError) as declined:
        client.v1.invoices.pay(invoice_id, {"source": str(customer.default_source)})
    assert declined.value.error is not None
    assert declined.value.error.decline_code == "insufficient_funds"
    assert client.v1.invoices.retrieve(invoice_id).status == "open"


def test_an_unknown_token_creates_no_customer(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.create({"source": "tok_nonsense"})
    assert (refused.value.code, refused.value.param) == ("resource_missing", "source")
    assert client.v1.customers.list().data == []
