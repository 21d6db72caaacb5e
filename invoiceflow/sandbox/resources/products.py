"""Products: /v1/products."""

from __future__ import annotations

from invoiceflow.sandbox import search, shapes
from invoiceflow.sandbox.context import Call, changed
from invoiceflow.sandbox.errors import invalid
from invoiceflow.sandbox.listing import paginate
from invoiceflow.sandbox.params import (
    LIST_PAGING,
    SEARCH,
    Arr,
    Bool,
    IntOrRange,
    Metadata,
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

_EDITABLE = {
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
_CREATE = {"id": Str(), "name": Str(required=True), **_EDITABLE}
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
    product = shapes.product(product_id, now(), params["name"])
    assign(product, params, _PLAIN_FIELDS)
    merge_metadata(product, params)
    store.products[product_id] = product
    call.emit("product.created", product)
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
    before = dict(product)
    assign(product, params, (*_PLAIN_FIELDS, "name", "default_price"))
    merge_metadata(product, params)
    product["updated"] = now()
    call.emit("product.updated", product, changed(before, product))
    return product


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
]
