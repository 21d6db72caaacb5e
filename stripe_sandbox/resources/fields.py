"""Parameter schemas several resources share, with the object shapes they turn into."""

from __future__ import annotations

from typing import Any

from stripe_sandbox.params import UNSET, Arr, Enum, Obj, Str
from stripe_sandbox.store import JSON

# Stripe allows up to four custom fields, names of 40 and values of 140 characters.
MAX_CUSTOM_FIELDS = 4
ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")

ADDRESS = Obj(fields={name: Str() for name in ADDRESS_FIELDS})
CUSTOM_FIELDS = Arr(
    Obj(
        fields={
            "name": Str(required=True, max_length=40),
            "value": Str(required=True, max_length=140),
        }
    ),
    max_items=MAX_CUSTOM_FIELDS,
)
SHIPPING = Obj(
    fields={
        "address": Obj(required=True, fields=ADDRESS.fields),
        "name": Str(required=True),
        "phone": Str(),
    }
)
AMOUNT_TAX_DISPLAY = Enum(values=("exclude_tax", "include_inclusive_tax"))
TAX_BEHAVIOR = Enum(values=("exclusive", "inclusive", "unspecified"))


def address(value: Any) -> JSON | None:
    if not isinstance(value, dict):
        return None
    return {name: _or_none(value.get(name)) for name in ADDRESS_FIELDS}


def shipping(value: Any) -> JSON | None:
    """Stripe's shipping object (customer `shipping`, invoice `shipping_details`)."""
    if not isinstance(value, dict):
        return None
    return {
        "address": address(value["address"]),
        "carrier": None,
        "name": value["name"],
        "phone": _or_none(value.get("phone")),
        "tracking_number": None,
    }


def custom_fields(value: Any) -> list[JSON] | None:
    if value is UNSET or not value:
        return None
    return [{"name": field["name"], "value": field["value"]} for field in value]


def _or_none(value: Any) -> Any:
    return None if value is UNSET or value == "" else value
