"""Complete Stripe objects with every top-level field of Stripe's fixtures.

Each builder returns the object as a fresh account would hold it (Stripe's defaults, nulls
where nothing is set), so that code reading any field finds it here as it would in Stripe.
tests/sandbox/test_shapes.py compares the field sets with Stripe's own fixtures3.json, and
tests/sandbox/test_schemas.py validates every served body against the endive JSON Schemas
(which win where the two disagree: the fixtures predate endive).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

JSON = dict[str, Any]

# The API version Stripe reports on events: the one this SDK release is pinned to.
API_VERSION = "2026-10-28.endive"
# Account identity used in hosted invoice URLs; any stable test-mode-looking id will do.
ACCOUNT_ID = "acct_1SandboxInvoiceflw"
ACCOUNT_COUNTRY = "US"
# How many embedded list items Stripe inlines (e.g. `invoice.lines`) before `has_more`.
EMBEDDED_LIST_LIMIT = 10


def product(object_id: str, created: int, name: str) -> JSON:
    return {
        "id": object_id,
        "object": "product",
        "active": True,
        "created": created,
        "default_price": None,
        "description": None,
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": {},
        "name": name,
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "tax_details": None,
        "type": "service",
        "unit_label": None,
        "updated": created,
        "url": None,
    }


def price(object_id: str, created: int, product_id: str, currency: str) -> JSON:
    return {
        "id": object_id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": created,
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "product": product_id,
        "recurring": None,
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "one_time",
        "unit_amount": None,
        "unit_amount_decimal": None,
    }


def customer(object_id: str, created: int, invoice_prefix: str) -> JSON:
    return {
        "id": object_id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": created,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": invoice_prefix,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def invoice(object_id: str, created: int, customer_obj: JSON, currency: str) -> JSON:
    """A draft invoice. `lines` is not stored here: it is rendered from the line items."""
    return {
        "id": object_id,
        "object": "invoice",
        "account_country": ACCOUNT_COUNTRY,
        "account_name": None,
        "account_tax_ids": None,
        "amount_due": 0,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": False,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": None,
        "billing_reason": "manual",
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "custom_fields": None,
        "customer": customer_obj["id"],
        "customer_account": None,
        "customer_address": customer_obj["address"],
        "customer_email": customer_obj["email"],
        "customer_name": customer_obj["name"],
        "customer_phone": customer_obj["phone"],
        "customer_shipping": customer_obj["shipping"],
        "customer_tax_exempt": customer_obj["tax_exempt"],
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": None,
        "ending_balance": None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": None,
        "on_behalf_of": None,
        "parent": None,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": created,
        "period_start": created,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "test_clock": None,
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None,
    }


def decimal_string(number: Decimal) -> str:
    """Stripe's decimal strings: "2000", "12.5" (no exponent, no trailing zeros)."""
    return format(number.normalize(), "f")


def pricing(price_obj: JSON | None, unit_amount_decimal: str) -> JSON:
    """Stripe omits `price_details` (never null) when the amount was given without a price."""
    result: JSON = {"type": "price_details", "unit_amount_decimal": unit_amount_decimal}
    if price_obj is not None:
        result["price_details"] = {"price": price_obj["id"], "product": price_obj["product"]}
    return result


def invoiceitem(
    object_id: str,
    created: int,
    *,
    customer_id: str,
    currency: str,
    amount: int,
    quantity: int,
    pricing_obj: JSON,
) -> JSON:
    return {
        "id": object_id,
        "object": "invoiceitem",
        "amount": amount,
        "currency": currency,
        "customer": customer_id,
        "customer_account": None,
        "date": created,
        "description": None,
        "discountable": True,
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": {},
        "net_amount": amount,
        "parent": None,
        "period": {"end": created, "start": created},
        "pricing": pricing_obj,
        "proration": False,
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "tax_rates": [],
        "test_clock": None,
    }


def line_item(object_id: str, item: JSON, invoice_id: str) -> JSON:
    """The invoice's view of an invoice item (Stripe's `il_` line item)."""
    return {
        "id": object_id,
        "object": "line_item",
        "amount": item["amount"],
        "currency": item["currency"],
        "description": item["description"],
        "discount_amounts": [],
        "discountable": item["discountable"],
        "discounts": [],
        "invoice": invoice_id,
        "livemode": False,
        "metadata": dict(item["metadata"]),
        "parent": {
            "type": "invoice_item_details",
            "invoice_item_details": {
                "invoice_item": item["id"],
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": None,
            },
            "subscription_item_details": None,
        },
        "period": dict(item["period"]),
        "pretax_credit_amounts": [],
        "pricing": item["pricing"],
        "quantity": item["quantity"],
        "quantity_decimal": item["quantity_decimal"],
        "subscription": None,
        "subtotal": item["amount"],
        "taxes": [],
    }


def event(
    object_id: str,
    created: int,
    type_: str,
    data: JSON,
    *,
    request_id: str | None,
    idempotency_key: str | None,
    pending_webhooks: int,
) -> JSON:
    return {
        "id": object_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": pending_webhooks,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": type_,
    }


def webhook_endpoint(object_id: str, created: int, url: str, enabled_events: list[str]) -> JSON:
    return {
        "id": object_id,
        "object": "webhook_endpoint",
        "api_version": None,
        "application": None,
        "created": created,
        "description": None,
        "enabled_events": enabled_events,
        "livemode": False,
        "metadata": {},
        "status": "enabled",
        "url": url,
    }


def deleted(object_id: str, object_type: str) -> JSON:
    return {"id": object_id, "object": object_type, "deleted": True}


def list_of(data: list[JSON], url: str, has_more: bool) -> JSON:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}
