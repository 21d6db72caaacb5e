"""Products: /v1/products."""

from __future__ import annotations

import copy
from typing import Any

from stripe_sandbox import search, shapes
from stripe_sandbox.context import Call, changed
from stripe_sandbox.errors import invalid
from stripe_sandbox.listing import paginate
from stripe_sandbox.params import (
    LIST_PAGING,
    SEARCH,
    UNSET,
    Arr,
    Bool,
    Dec,
    Enum,
    IntOrRange,
    Metadata,
    Obj,
    Str,
)
from stripe_sandbox.resources import prices
from stripe_sandbox.resources.common import (
    Route,
    assign,
    created_matches,
    merge_metadata,
    read,
)
from stripe_sandbox.store import JSON, now

# Stripe allows 15 marketing features of up to 80 characters.
MAX_MARKETING_FEATURES = 15
_EDITABLE = {
    "marketing_features": Arr(
        Obj(fields={"name": Str(required=True, max_length=80)}), max_items=MAX_MARKETING_FEATURES
    ),
    "package_dimensions": Obj(
        fields={name: Dec(required=True) for name in ("height", "length", "weight", "width")}
    ),
    "tax_details": Obj(fields={"tax_code": Str(), "performance_location": Str()}),
    "active": Bool(),
    "description": Str(),
    "images": Arr(Str(), max_items=8),
    "metadata": Metadata(),
    "shippable": Bool(),
    "statement_descriptor": Str(max_length=22),
    "tax_code": Str(),
    "unit_label": Str(max_length=12),
    "url": Str(),
}
_CREATE = {
    "id": Str(),
    "name": Str(required=True),
    "type": Enum(values=("good", "service")),
    "default_price_data": Obj(fields=prices.PRICE_DATA_FIELDS),
    **_EDITABLE,
}
_UPDATE = {"name": Str(nullable=False), "default_price": Str(), **_EDITABLE}
_LIST = {
    **LIST_PAGING,
    "active": Bool(),
    "ids": Arr(Str()),
    "shippable": Bool(),
    "url": Str(),
    "created": IntOrRange(),
}
_PLAIN_FIELDS = (
    "active",
    "description",
    "images",
    "shippable",
    "statement_descriptor",
    "tax_code",
    "unit_label",
    "url",
)
SEARCH_FIELDS = ("active", "name", "description", "metadata", "shippable", "url", "created")


def create(call: Call) -> JSON:
    params = read(call, _CREATE)
    store = call.store
    product_id = params.get("id") or store.new_id("prod")
    if product_id in store.products:
        raise invalid(
            f"Product already exists: {product_id}", param="id", code="resource_already_exists"
        )
    price_data = params.get("default_price_data")
    if price_data is not None:
        prices.check_amounts(price_data, "default_price_data")
    product = shapes.product(product_id, now(), params["name"])
    assign(product, params, (*_PLAIN_FIELDS, "type"))
    _apply(product, params)
    store.products[product_id] = product
    call.emit("product.created", product)
    if price_data is not None:
        price = prices.build(call, price_data, product_id)
        store.prices[price["id"]] = price
        call.emit("price.created", price)
        product["default_price"] = price["id"]
    return product


def retrieve(call: Call, id: str) -> JSON:
    read(call, {})
    return call.store.get("prod", id)


def update(call: Call, id: str) -> JSON:
    params = read(call, _UPDATE)
    store = call.store
    product = store.get("prod", id)
    if params.get("default_price"):
        price = store.get("price", params["default_price"], param="default_price")
        if price["product"] != id:
            raise invalid(
                f"The price {price['id']} does not belong to product {id}.",
                param="default_price",
            )
    before = copy.deepcopy(product)
    assign(product, params, (*_PLAIN_FIELDS, "name", "default_price"))
    _apply(product, params)
    product["updated"] = now()
    call.emit("product.updated", product, changed(before, product))
    return product


def delete(call: Call, id: str) -> JSON:
    read(call, {})
    store = call.store
    product = store.get("prod", id)
    if any(price["product"] == id for price in store.prices.values()):
        raise invalid(
            "This product cannot be deleted because it has one or more user-created prices. "
            "Archive it instead (`active=false`).",
        )
    del store.products[id]
    call.emit("product.deleted", product)
    return shapes.deleted(id, "product")


def _apply(product: JSON, params: dict[str, Any]) -> None:
    """The structured fields create and update share."""
    if "marketing_features" in params:
        features = params["marketing_features"]
        product["marketing_features"] = [
            {"name": feature["name"]} for feature in (features if features is not UNSET else [])
        ]
    if "package_dimensions" in params:
        size = params["package_dimensions"]
        product["package_dimensions"] = (
            None if size is UNSET else {name: float(value) for name, value in size.items()}
        )
    if "tax_details" in params:
        details = params["tax_details"]
        if details is UNSET:
            product["tax_details"] = None
        else:
            tax_code = details.get("tax_code")
            product["tax_details"] = {
                "tax_code": None if tax_code is UNSET else tax_code,
                "performance_location": details.get("performance_location"),
            }
            product["tax_code"] = product["tax_details"]["tax_code"]
    merge_metadata(product, params)


def list_(call: Call) -> JSON:
    params = read(call, _LIST)
    ids = set(params.get("ids", ()))
    selected = (
        product
        for product in call.store.newest_first("prod")
        if all(
            product[name] == params[name]
            for name in ("active", "shippable", "url")
            if name in params
        )
        and (not ids or product["id"] in ids)
        and created_matches(product, params.get("created"))
    )
    return paginate(selected, params, "/v1/products")


def search_(call: Call) -> JSON:
    params = read(call, SEARCH)
    predicate = search.parse(params["query"], SEARCH_FIELDS)
    found = [product for product in call.store.newest_first("prod") if predicate(product)]
    return search.page(found, params, "/v1/products/search")


ROUTES = [
    Route("POST", "/v1/products", create),
    Route("GET", "/v1/products", list_),
    Route("GET", "/v1/products/search", search_),
    Route("GET", "/v1/products/{id}", retrieve),
    Route("POST", "/v1/products/{id}", update),
    Route("DELETE", "/v1/products/{id}", delete),
]
