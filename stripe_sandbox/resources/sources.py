"""A customer's card sources and tax ids: what `customers.create` attaches besides itself.

Stripe's legacy payment sources: `customers.create(source="tok_visa")` turns a test token
into a `card_…` on the customer and makes it the default source; `invoices.pay(source=…)`
charges a source of the invoice's customer (or, with nothing named, the default source).
Like Stripe's test cards, a card's last four digits say how a charge goes: 0002 declines,
9995 declines for insufficient funds, the others succeed.

Tax ids (`tax_id_data` on create) become `tax_id` objects, shown on the customer with
`expand[]=tax_ids` and copied onto its invoices as `customer_tax_ids`.
"""

from __future__ import annotations

from stripe_sandbox import shapes
from stripe_sandbox.errors import invalid
from stripe_sandbox.store import JSON, Store

# Stripe's test tokens: (brand, last4).
TOKENS: dict[str, tuple[str, str]] = {
    "tok_visa": ("Visa", "4242"),
    "tok_mastercard": ("MasterCard", "4444"),
    "tok_amex": ("American Express", "8431"),
    "tok_chargeDeclined": ("Visa", "0002"),
    "tok_chargeDeclinedInsufficientFunds": ("Visa", "9995"),
}
_DECLINES_BY_LAST4 = {
    "0002": ("generic_decline", "Your card was declined."),
    "9995": ("insufficient_funds", "Your card has insufficient funds."),
}
# Tax id types Stripe verifies with a registry; it reports the others `unavailable`.
_VERIFIED_TYPES = frozenset({"eu_vat", "gb_vat", "au_abn", "in_gst"})


def attach_token(store: Store, customer: JSON, token: str) -> JSON:
    """A card made from test token `token`, now the customer's default source."""
    if token not in TOKENS:
        raise invalid(f"No such token: '{token}'", param="source", code="resource_missing")
    brand, last4 = TOKENS[token]
    card = {
        "id": store.new_id("card"),
        "object": "card",
        "address_city": None,
        "address_country": None,
        "address_line1": None,
        "address_line1_check": None,
        "address_line2": None,
        "address_state": None,
        "address_zip": None,
        "address_zip_check": None,
        "brand": brand,
        "country": "US",
        "customer": customer["id"],
        "cvc_check": "pass",
        "dynamic_last4": None,
        "exp_month": 12,
        "exp_year": 2034,
        "fingerprint": store.token(16),
        "funding": "credit",
        "last4": last4,
        "metadata": {},
        "name": None,
        "regulated_status": "unregulated",
        "tokenization_method": None,
    }
    store.cards[card["id"]] = card
    customer["default_source"] = card["id"]
    store.includable[(customer["id"], "sources")] = shapes.list_of(
        [card], f"/v1/customers/{customer['id']}/sources", False
    )
    return card


def of_customer(store: Store, customer_id: str, source_id: str) -> JSON:
    """The source `source_id` of this customer; another customer's is as unknown as none."""
    card = store.cards.get(source_id)
    if card is None or card["customer"] != customer_id:
        # A parameter naming a missing object: 400 `resource_missing`, as for payment_method.
        raise invalid(f"No such source: '{source_id}'", param="source", code="resource_missing")
    return card


def default_of(store: Store, customer_id: str) -> JSON | None:
    customer = store.customers.get(customer_id)
    source = customer["default_source"] if customer else None
    return store.cards.get(source) if isinstance(source, str) else None


def decline_of(card: JSON) -> tuple[str, str] | None:
    """(decline code, message) when charging this card declines, else None."""
    return _DECLINES_BY_LAST4.get(card["last4"])


def tax_ids(store: Store, customer: JSON, data: list[JSON]) -> None:
    """Record `tax_id_data` as the customer's tax ids (includable) and invoice copies."""
    objects = [
        {
            "id": store.new_id("txi"),
            "object": "tax_id",
            "country": _country(datum["type"], datum["value"]),
            "created": customer["created"],
            "customer": customer["id"],
            "customer_account": None,
            "livemode": False,
            "owner": {"type": "customer", "customer": customer["id"], "customer_account": None},
            "type": datum["type"],
            "value": datum["value"],
            "verification": {
                "status": "pending" if datum["type"] in _VERIFIED_TYPES else "unavailable",
                "verified_address": None,
                "verified_name": None,
            },
        }
        for datum in data
    ]
    store.includable[(customer["id"], "tax_ids")] = shapes.list_of(
        objects, f"/v1/customers/{customer['id']}/tax_ids", False
    )
    if objects:
        store.tax_ids[customer["id"]] = [{"type": o["type"], "value": o["value"]} for o in objects]


def _country(kind: str, value: str) -> str | None:
    """Stripe derives the country from the type (`us_ein` → US), EU VAT from the number."""
    if kind.startswith("eu_"):
        prefix = value[:2].upper()
        return {"EL": "GR"}.get(prefix, prefix) if prefix.isalpha() else None
    return kind[:2].upper()
