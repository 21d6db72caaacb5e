"""Prices: /v1/prices, including Stripe's lookup-key uniqueness and transfer."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from invoiceflow.sandbox import search, shapes
from invoiceflow.sandbox.context import Call, changed
from invoiceflow.sandbox.errors import exclusive, invalid, missing_parameter
from invoiceflow.sandbox.listing import paginate
from invoiceflow.sandbox.params import (
    LIST_PAGING,
    SEARCH,
    UNSET,
    Arr,
    Bool,
    Dec,
    Enum,
    Int,
    IntOrRange,
    Metadata,
    Obj,
    Str,
)
from invoiceflow.sandbox.resources.common import (
    Route,
    assign,
    created_matches,
    merge_metadata,
    read,
)
from invoiceflow.sandbox.store import JSON, now

# Stripe caps lookup keys at 200 characters.
LOOKUP_KEY_MAX = 200
# Stripe caps `lookup_keys[]` in a list call at 10 keys.
LOOKUP_KEYS_PER_LIST = 10

_TAX_BEHAVIOR = Enum(values=("exclusive", "inclusive", "unspecified"))
_CREATE = {
    "currency": Str(required=True),
    "product": Str(),
    "product_data": Obj(fields={"name": Str(required=True), "metadata": Metadata()}),
    "unit_amount": Int(minimum=0),
    "unit_amount_decimal": Dec(),
    "recurring": Obj(
        fields={
            "interval": Enum(required=True, values=("day", "week", "month", "year")),
            "interval_count": Int(minimum=1),
        }
    ),
    "lookup_key": Str(max_length=LOOKUP_KEY_MAX),
    "transfer_lookup_key": Bool(),
    "metadata": Metadata(),
    "nickname": Str(),
    "active": Bool(),
    "tax_behavior": _TAX_BEHAVIOR,
    "billing_scheme": Enum(values=("per_unit",)),
}
_UPDATE = {
    "active": Bool(),
    "lookup_key": Str(max_length=LOOKUP_KEY_MAX),
    "transfer_lookup_key": Bool(),
    "metadata": Metadata(),
    "nickname": Str(),
    "tax_behavior": _TAX_BEHAVIOR,
}
_LIST = {
    **LIST_PAGING,
    "active": Bool(),
    "currency": Str(),
    "product": Str(),
    "type": Enum(values=("one_time", "recurring")),
    "lookup_keys": Arr(Str(), max_items=LOOKUP_KEYS_PER_LIST),
    "created": IntOrRange(),
}
SEARCH_FIELDS = ("active", "currency", "lookup_key", "product", "type", "metadata", "created")


def create(call: Call) -> JSON:
    params = read(call, _CREATE)
    store = call.store
    if "product" in params and "product_data" in params:
        raise exclusive(["product", "product_data"])
    if "unit_amount" not in params and "unit_amount_decimal" not in params:
        raise missing_parameter("unit_amount")
    currency = params["currency"].lower()
    if "product" in params:
        product_id = store.get("prod", params["product"], param="product")["id"]
    elif "product_data" in params:
        product_id = ""  # created below, once nothing else can fail
    else:
        raise missing_parameter("product")
    lookup_key = _lookup_key(params)
    _check_lookup_key(store.prices.values(), lookup_key, params, own_id=None)

    if not product_id:
        data = params["product_data"]
        product = shapes.product(store.new_id("prod"), now(), data["name"])
        product["metadata"] = data.get("metadata", {})
        store.products[product["id"]] = product
        call.emit("product.created", product)
        product_id = product["id"]
    price = shapes.price(store.new_id("price"), now(), product_id, currency)
    unit: Decimal = (
        Decimal(params["unit_amount"]) if "unit_amount" in params else params["unit_amount_decimal"]
    )
    price["unit_amount"] = int(unit) if unit == unit.to_integral_value() else None
    price["unit_amount_decimal"] = shapes.decimal_string(unit)
    if "recurring" in params:
        price["type"] = "recurring"
        price["recurring"] = {
            "interval": params["recurring"]["interval"],
            "interval_count": params["recurring"].get("interval_count", 1),
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }
    assign(price, params, ("nickname", "active", "tax_behavior"))
    merge_metadata(price, params)
    _take_lookup_key(call, lookup_key)
    price["lookup_key"] = lookup_key
    store.prices[price["id"]] = price
    call.emit("price.created", price)
    return price


def retrieve(call: Call, id: str) -> JSON:
    read(call, {})
    return call.store.get("price", id)


def update(call: Call, id: str) -> JSON:
    params = read(call, _UPDATE)
    price = call.store.get("price", id)
    before = dict(price)
    if "lookup_key" in params:
        lookup_key = _lookup_key(params)
        _check_lookup_key(call.store.prices.values(), lookup_key, params, own_id=id)
        _take_lookup_key(call, lookup_key, own_id=id)
        price["lookup_key"] = lookup_key
    assign(price, params, ("nickname", "active", "tax_behavior"))
    merge_metadata(price, params)
    call.emit("price.updated", price, changed(before, price))
    return price


def list_(call: Call) -> JSON:
    params = read(call, _LIST)
    lookup_keys = set(params.get("lookup_keys", ()))
    selected = (
        price
        for price in call.store.newest_first("price")
        if all(price[name] == params[name] for name in ("active", "type") if name in params)
        and ("currency" not in params or price["currency"] == params["currency"].lower())
        and ("product" not in params or price["product"] == params["product"])
        and (not lookup_keys or price["lookup_key"] in lookup_keys)
        and created_matches(price, params.get("created"))
    )
    return paginate(selected, params, "/v1/prices")


def search_(call: Call) -> JSON:
    params = read(call, SEARCH)
    predicate = search.parse(params["query"], SEARCH_FIELDS)
    found = [price for price in call.store.newest_first("price") if predicate(price)]
    return search.page(found, params, "/v1/prices/search")


def _lookup_key(params: dict[str, Any]) -> str | None:
    value = params.get("lookup_key")
    return None if value is None or value is UNSET else str(value)


def _check_lookup_key(
    prices: Any, lookup_key: str | None, params: dict[str, Any], own_id: str | None
) -> None:
    """A lookup key names one price; reusing it needs `transfer_lookup_key=true`."""
    if lookup_key is None or params.get("transfer_lookup_key"):
        return
    for other in prices:
        if other["lookup_key"] == lookup_key and other["id"] != own_id:
            raise invalid(
                f"A price (`{other['id']}`) already uses that lookup key. Pass "
                "`transfer_lookup_key=true` to move the lookup key to this price.",
                param="lookup_key",
            )


def _take_lookup_key(call: Call, lookup_key: str | None, own_id: str | None = None) -> None:
    """Detach `lookup_key` from whichever price holds it (only reached when allowed)."""
    if lookup_key is None:
        return
    for other in call.store.prices.values():
        if other["lookup_key"] == lookup_key and other["id"] != own_id:
            before = dict(other)
            other["lookup_key"] = None
            call.emit("price.updated", other, changed(before, other))


ROUTES = [
    Route("POST", "/v1/prices", create),
    Route("GET", "/v1/prices", list_),
    Route("GET", "/v1/prices/search", search_),
    Route("GET", "/v1/prices/{id}", retrieve),
    Route("POST", "/v1/prices/{id}", update),
]
