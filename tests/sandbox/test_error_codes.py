"""Stripe's error codes, each where Stripe uses it and nowhere else."""

from __future__ import annotations

import pytest
import stripe


def _finalized_invoice(client: stripe.StripeClient) -> stripe.Invoice:
    customer = client.v1.customers.create({"name": "Codes"})
    invoice = client.v1.invoices.create({"customer": customer.id})
    client.v1.invoice_items.create({"customer": customer.id, "invoice": invoice.id, "amount": 900})
    return client.v1.invoices.finalize_invoice(invoice.id)


def test_editing_a_finalized_invoice_is_invoice_not_editable(client: stripe.StripeClient) -> None:
    invoice = _finalized_invoice(client)
    attempts = [
        lambda: client.v1.invoices.update(invoice.id, {"collection_method": "send_invoice"}),
        lambda: client.v1.invoices.add_lines(invoice.id, {"lines": [{"amount": 5}]}),
        lambda: client.v1.invoice_items.create(
            {"customer": str(invoice.customer), "invoice": invoice.id, "amount": 5}
        ),
    ]
    for attempt in attempts:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            attempt()
        assert refused.value.code == "invoice_not_editable"


def test_wrong_state_errors_carry_no_code(client: stripe.StripeClient) -> None:
    """Stripe has no `invoice_unexpected_state`: these are plain invalid requests."""
    invoice = _finalized_invoice(client)
    client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})
    draft = client.v1.invoices.create({"customer": str(invoice.customer)})
    attempts = [
        lambda: client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True}),
        lambda: client.v1.invoices.void_invoice(invoice.id),
        lambda: client.v1.invoices.mark_uncollectible(draft.id),
        lambda: client.v1.invoices.finalize_invoice(invoice.id),
        lambda: client.v1.invoices.delete(invoice.id),
    ]
    for attempt in attempts:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            attempt()
        assert refused.value.code is None, refused.value.user_message


def test_non_integer_is_parameter_invalid_integer(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.invoice_items.create(
            {"customer": customer.id, "amount": "ten", "currency": "usd"}  # type: ignore[typeddict-item]
        )
    assert refused.value.code == "parameter_invalid_integer"
    assert refused.value.param == "amount"


def test_mutually_exclusive_parameters(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.list({"starting_after": "cus_a", "ending_before": "cus_b"})
    assert refused.value.code == "parameters_exclusive"


def test_empty_value_for_a_required_parameter(client: stripe.StripeClient) -> None:
    product = client.v1.products.create({"name": "Kept"})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.products.update(product.id, {"name": ""})
    assert refused.value.code == "parameter_invalid_empty"
