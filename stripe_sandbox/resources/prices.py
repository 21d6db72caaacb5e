"""Prices: /v1/prices, including Stripe's lookup-key uniqueness and transfer."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from stripe_sandbox import search, shapes
from stripe_sandbox.context import Call, changed
from stripe_sandbox.errors import exclusive, invalid, missing_parameter
from stripe_sandbox.listing import paginate
from stripe_sandbox.params import (
    LIST_PAGING,
    SEARCH,
    UNSET,
    Arr,
    Bool,
    Currency,
    Dec,
    Enum,
    Int,
    IntOrRange,
    Keyed,
    Metadata,
    Obj,
    Str,
    UpTo,
)
from stripe_sandbox.resources import fields, tiers
from stripe_sandbox.resources.common import (
    Route,
    assign,
    created_matches,
    merge_metadata,
    read,
)
from stripe_sandbox.store import JSON, now

# Stripe caps lookup keys at 200 characters.
LOOKUP_KEY_MAX = 200
# Stripe caps `lookup_keys[]` in a list call at 10 keys.
LOOKUP_KEYS_PER_LIST = 10

_TAX_BEHAVIOR = fields.TAX_BEHAVIOR
_CUSTOM_UNIT_AMOUNT = Obj(
    fields={
        "enabled": Bool(required=True),
        "maximum": Int(minimum=0),
        "minimum": Int(minimum=0),
        "preset": Int(minimum=0),
    }
)
_TIER = Obj(
    fields={
        "up_to": UpTo(required=True),
        "unit_amount": Int(minimum=0),
        "unit_amount_decimal": Dec(),
        "flat_amount": Int(minimum=0),
        "flat_amount_decimal": Dec(),
    }
)
_CURRENCY_OPTION = Obj(
    fields={
        "unit_amount": Int(minimum=0),
        "unit_amount_decimal": Dec(),
        "tax_behavior": _TAX_BEHAVIOR,
        "custom_unit_amount": _CUSTOM_UNIT_AMOUNT,
        "tiers": Arr(_TIER),
    }
)
_RECURRING = Obj(
    fields={
        "interval": Enum(required=True, values=("day", "week", "month", "year")),
        "interval_count": Int(minimum=1),
    }
)
# What a price is made of; products' `default_price_data` takes the same (minus tiers).
PRICE_DATA_FIELDS = {
    "currency": Currency(required=True),
    "unit_amount": Int(minimum=0),
    "unit_amount_decimal": Dec(),
    "recurring": _RECURRING,
    "metadata": Metadata(),
    "tax_behavior": _TAX_BEHAVIOR,
    "currency_options": Keyed(key=Currency(), value=_CURRENCY_OPTION),
    "custom_unit_amount": _CUSTOM_UNIT_AMOUNT,
}
_CREATE = {
    **PRICE_DATA_FIELDS,
    "product": Str(),
    "product_data": Obj(fields={"name": Str(required=True), "metadata": Metadata()}),
    "lookup_key": Str(max_length=LOOKUP_KEY_MAX),
    "transfer_lookup_key": Bool(),
    "nickname": Str(),
    "active": Bool(),
    "billing_scheme": Enum(values=("per_unit", "tiered")),
    "tiers": Arr(_TIER),
    "tiers_mode": Enum(values=("graduated", "volume")),
    "transform_quantity": Obj(
        fields={
            "divide_by": Int(required=True, minimum=1),
            "round": Enum(required=True, values=("down", "up")),
        }
    ),
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
    check_amounts(params)
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
    price = build(call, params, product_id)
    assign(price, params, ("nickname", "active"))
    if "transform_quantity" in params:
        quantity = params["transform_quantity"]
        price["transform_quantity"] = {
            "divide_by": quantity["divide_by"],
            "round": quantity["round"],
        }
    _take_lookup_key(call, lookup_key)
    price["lookup_key"] = lookup_key
    store.prices[price["id"]] = price
    call.emit("price.created", price)
    return price


def check_amounts(params: dict[str, Any], prefix: str = "") -> None:
    """Exactly one way of pricing: a unit amount, tiers, or a customer-chosen amount."""
    where = (lambda name: f"{prefix}[{name}]") if prefix else (lambda name: name)
    given = [name for name in ("unit_amount", "unit_amount_decimal") if name in params]
    if len(given) > 1:
        raise exclusive(given, param=where(given[1]))
    tiered = params.get("billing_scheme") == "tiered"
    if tiered:
        if given:
            raise invalid(
                "You may not specify `unit_amount` for a tiered price; set it per tier.",
                param=where(given[0]),
            )
        if "tiers" not in params:
            raise missing_parameter(where("tiers"))
        if "tiers_mode" not in params:
            raise missing_parameter(where("tiers_mode"))
        tiers.check(params["tiers"], where("tiers"))
    elif "tiers" in params or "tiers_mode" in params:
        raise invalid(
            "`tiers` and `tiers_mode` can only be set when `billing_scheme=tiered`.",
            param=where("tiers" if "tiers" in params else "tiers_mode"),
        )
    custom = params.get("custom_unit_amount")
    if custom is not None:
        if given:
            raise exclusive(["custom_unit_amount", given[0]], param=where("custom_unit_amount"))
        if not custom["enabled"]:
            raise invalid(
                "`custom_unit_amount[enabled]` must be true when `custom_unit_amount` is set.",
                param=where("custom_unit_amount[enabled]"),
            )
        low, high = custom.get("minimum"), custom.get("maximum")
        if low is not None and high is not None and low > high:
            raise invalid(
                "`custom_unit_amount[minimum]` cannot be greater than the maximum.",
                param=where("custom_unit_amount[minimum]"),
            )
    elif not given and not tiered:
        raise missing_parameter(where("unit_amount"))
    for currency, option in params.get("currency_options", {}).items():
        if currency == params["currency"]:
            raise invalid(
                "`currency_options` cannot repeat the price's own currency.",
                param=where(f"currency_options[{currency}]"),
            )
        tiered_option = {**option, "currency": currency}
        if tiered:
            tiered_option.setdefault("billing_scheme", "tiered")
            tiered_option.setdefault("tiers_mode", params["tiers_mode"])
        check_amounts(tiered_option, where(f"currency_options[{currency}]"))


def build(call: Call, params: dict[str, Any], product_id: str) -> JSON:
    """A price (not yet stored) from already-checked price parameters."""
    store = call.store
    price = shapes.price(store.new_id("price"), now(), product_id, params["currency"])
    price.update(_amounts(params))
    if params.get("billing_scheme") == "tiered":
        price["billing_scheme"] = "tiered"
        price["tiers_mode"] = params["tiers_mode"]
        # Stripe leaves `tiers` out of the price unless asked: `expand[]=tiers`.
        store.includable[(price["id"], "tiers")] = tiers.render(params["tiers"])
    if "currency_options" in params:
        options = {params["currency"]: {**_amounts(params), "tax_behavior": price["tax_behavior"]}}
        for currency, option in params["currency_options"].items():
            options[currency] = {
                **_amounts(option),
                "tax_behavior": option.get("tax_behavior", "unspecified"),
            }
            if "tiers" in option:
                options[currency]["tiers"] = tiers.render(option["tiers"])
        if "tax_behavior" in params:
            options[params["currency"]]["tax_behavior"] = params["tax_behavior"]
        # Also includable only: `expand[]=currency_options`.
        store.includable[(price["id"], "currency_options")] = options
    if "recurring" in params:
        price["type"] = "recurring"
        price["recurring"] = {
            "interval": params["recurring"]["interval"],
            "interval_count": params["recurring"].get("interval_count", 1),
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }
    assign(price, params, ("tax_behavior",))
    merge_metadata(price, params)
    return price


def _amounts(params: dict[str, Any]) -> JSON:
    """`unit_amount`, `unit_amount_decimal` and `custom_unit_amount` as the price shows them."""
    custom = params.get("custom_unit_amount")
    result: JSON = {"unit_amount": None, "unit_amount_decimal": None, "custom_unit_amount": None}
    if custom is not None:
        result["custom_unit_amount"] = {
            name: custom.get(name) for name in ("maximum", "minimum", "preset")
        }
    elif "unit_amount" in params or "unit_amount_decimal" in params:
        unit: Decimal = (
            Decimal(params["unit_amount"])
            if "unit_amount" in params
            else params["unit_amount_decimal"]
        )
        result["unit_amount"] = int(unit) if unit == unit.to_integral_value() else None
        result["unit_amount_decimal"] = shapes.decimal_string(unit)
    return result


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
