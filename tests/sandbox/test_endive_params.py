"""Each parameter Stripe accepts that the sandbox used to refuse: accepted and reflected."""

from __future__ import annotations

import pytest
import stripe


def test_customer_parameters(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        {
            "invoice_settings": {
                "footer": "Thanks",
                "custom_fields": [{"name": "PO", "value": "7"}],
            },
            "shipping": {"name": "Ann", "address": {"line1": "1 Main St", "country": "US"}},
            "tax_exempt": "reverse",
            "balance": -300,
            "next_invoice_sequence": 42,
            "business_name": "Ann Ltd",
            "tax_id_data": [{"type": "eu_vat", "value": "DE123456789"}],
        }
    )
    assert customer.invoice_settings.footer == "Thanks"
    assert customer.invoice_settings.custom_fields[0].name == "PO"
    assert customer.shipping is not None and customer.shipping.address.line1 == "1 Main St"
    assert (customer.tax_exempt, customer.balance) == ("reverse", -300)
    assert customer.next_invoice_sequence == 42 and customer.business_name == "Ann Ltd"
    invoice = client.v1.invoices.create({"customer": customer.id})
    assert invoice.footer == "Thanks" and invoice.custom_fields[0].value == "7"
    assert invoice.customer_tax_ids[0].value == "DE123456789"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.create({"tax_exempt": "sometimes"})  # type: ignore[typeddict-item]
    assert refused.value.param == "tax_exempt"


def test_invoice_parameters(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    invoice = client.v1.invoices.create(
        {
            "customer": customer.id,
            "custom_fields": [{"name": "Ref", "value": "A"}],
            "rendering": {"amount_tax_display": "exclude_tax", "pdf": {"page_size": "a4"}},
            "payment_settings": {"payment_method_types": ["card", "customer_balance"]},
            "number": "CUSTOM-1",
            "shipping_details": {"name": "Dock", "address": {"line1": "Pier 1"}},
            "effective_at": 1_900_000_000,
            "automatic_tax": {"enabled": True},
            "issuer": {"type": "self"},
        }
    )
    assert invoice.custom_fields[0].value == "A"
    assert invoice.rendering is not None and invoice.rendering.pdf.page_size == "a4"
    assert invoice.payment_settings.payment_method_types == ["card", "customer_balance"]
    assert invoice.shipping_details is not None and invoice.shipping_details.name == "Dock"
    assert invoice.automatic_tax.enabled and invoice.issuer.type == "self"
    client.v1.invoice_items.create({"customer": customer.id, "invoice": invoice.id, "amount": 900})
    final = client.v1.invoices.finalize_invoice(invoice.id)
    assert (final.number, final.effective_at) == ("CUSTOM-1", 1_900_000_000)
    updated = client.v1.invoices.update(
        final.id, {"custom_fields": [{"name": "Ref", "value": "B"}]}
    )
    assert updated.custom_fields[0].value == "B"  # still editable once finalized
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.invoices.create({"customer": customer.id, "issuer": {"type": "account"}})
    assert refused.value.param == "issuer[account]"


def test_invoice_item_parameters(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    item = client.v1.invoice_items.create(
        {
            "customer": customer.id,
            "currency": "usd",
            "unit_amount_decimal": "200",
            "quantity_decimal": "2.5",
            "tax_behavior": "exclusive",
        }
    )
    assert (item.amount, str(item.quantity_decimal)) == (500, "2.5")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.invoice_items.create(
            {"customer": customer.id, "currency": "usd", "amount": 1, "tax_behavior": "maybe"}  # type: ignore[typeddict-item]
        )
    assert refused.value.param == "tax_behavior"


def test_price_parameters(client: stripe.StripeClient) -> None:
    product = client.v1.products.create({"name": "Seats"})
    options = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1000,
            "currency_options": {"eur": {"unit_amount": 900}},
            "transform_quantity": {"divide_by": 10, "round": "up"},
            "expand": ["currency_options"],
        }
    )
    assert options.currency_options["eur"].unit_amount == 900
    assert options.transform_quantity is not None and options.transform_quantity.divide_by == 10
    tiered = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": 10, "unit_amount": 100}, {"up_to": "inf", "unit_amount": 50}],
        }
    )
    assert tiered.tiers_mode == "graduated" and "tiers" not in tiered  # includable only
    assert len(client.v1.prices.retrieve(tiered.id, {"expand": ["tiers"]}).tiers) == 2
    custom = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "custom_unit_amount": {"enabled": True, "minimum": 100},
        }
    )
    assert custom.custom_unit_amount is not None and custom.custom_unit_amount.minimum == 100
    customer = client.v1.customers.create({})
    graduated = client.v1.invoice_items.create(
        {"customer": customer.id, "pricing": {"price": tiered.id}, "quantity": 12}
    )
    assert graduated.amount == 10 * 100 + 2 * 50
    packaged = client.v1.invoice_items.create(
        {"customer": customer.id, "pricing": {"price": options.id}, "quantity": 11}
    )
    assert packaged.amount == 2 * 1000  # 11 / 10 rounded up
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "billing_scheme": "tiered",
                "tiers_mode": "volume",
                "tiers": [{"up_to": 10, "unit_amount": 1}],
            }
        )  # the last tier must be up_to=inf


def test_product_parameters(client: stripe.StripeClient) -> None:
    product = client.v1.products.create(
        {
            "name": "Box",
            "marketing_features": [{"name": "Sturdy"}],
            "package_dimensions": {"height": 1.5, "length": 2, "weight": 3, "width": 4},
            "tax_details": {"tax_code": "txcd_99999999"},
            "default_price_data": {"currency": "eur", "unit_amount": 1200},
        }
    )
    assert product.marketing_features[0].name == "Sturdy"
    assert product.package_dimensions is not None and product.package_dimensions.height == 1.5
    assert product.tax_details is not None and product.tax_details.tax_code == "txcd_99999999"
    price = client.v1.prices.retrieve(str(product.default_price))
    assert (price.currency, price.unit_amount, price.product) == ("eur", 1200, product.id)
