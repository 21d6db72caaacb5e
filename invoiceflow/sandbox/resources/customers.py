"""Customers: /v1/customers."""

from __future__ import annotations

import string

from invoiceflow.sandbox import search, shapes
from invoiceflow.sandbox.context import Call, changed
from invoiceflow.sandbox.errors import invalid
from invoiceflow.sandbox.listing import paginate
from invoiceflow.sandbox.params import (
    LIST_PAGING,
    SEARCH,
    Arr,
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

# Stripe's invoice prefixes are 3-12 uppercase letters or digits; generated ones have 8.
INVOICE_PREFIX_LENGTH = 8
_PREFIX_ALPHABET = string.ascii_uppercase + string.digits

_ADDRESS = Obj(
    fields={name: Str() for name in ("city", "country", "line1", "line2", "postal_code", "state")}
)
_FIELDS = {
    "email": Str(max_length=512),
    "name": Str(max_length=256),
    "description": Str(),
    "phone": Str(max_length=20),
    "metadata": Metadata(),
    "address": _ADDRESS,
    "preferred_locales": Arr(Str()),
    "invoice_prefix": Str(max_length=12),
}
_LIST = {**LIST_PAGING, "email": Str(max_length=512), "created": IntOrRange()}
_PLAIN_FIELDS = ("email", "name", "description", "phone", "preferred_locales")
SEARCH_FIELDS = ("email", "name", "phone", "metadata", "created")


def create(call: Call) -> JSON:
    params = read(call, _FIELDS)
    store = call.store
    prefix = params.get("invoice_prefix") or "".join(
        store.rng.choices(_PREFIX_ALPHABET, k=INVOICE_PREFIX_LENGTH)
    )
    _check_prefix(prefix)
    customer = shapes.customer(store.new_id("cus"), now(), prefix)
    assign(customer, params, _PLAIN_FIELDS)
    if "address" in params:
        customer["address"] = _address(params["address"])
    merge_metadata(customer, params)
    store.customers[customer["id"]] = customer
    call.emit("customer.created", customer)
    return customer


def retrieve(call: Call, id: str) -> JSON:
    read(call, {})
    customer = call.store.customers.get(id)
    if customer is None:
        return call.store.get("cus", id)  # raises Stripe's 404
    return customer


def update(call: Call, id: str) -> JSON:
    params = read(call, _FIELDS)
    customer = call.store.get("cus", id)
    if "invoice_prefix" in params:
        _check_prefix(params["invoice_prefix"])
    before = dict(customer)
    assign(customer, params, (*_PLAIN_FIELDS, "invoice_prefix"))
    if "address" in params:
        customer["address"] = _address(params["address"])
    merge_metadata(customer, params)
    call.emit("customer.updated", customer, changed(before, customer))
    return customer


def delete(call: Call, id: str) -> JSON:
    read(call, {})
    customer = call.store.get("cus", id)
    del call.store.customers[id]
    call.emit("customer.deleted", customer)
    return shapes.deleted(id, "customer")


def list_(call: Call) -> JSON:
    params = read(call, _LIST)
    selected = (
        customer
        for customer in call.store.newest_first("cus")
        if ("email" not in params or customer["email"] == params["email"])
        and created_matches(customer, params.get("created"))
    )
    return paginate(selected, params, "/v1/customers")


def search_(call: Call) -> JSON:
    params = read(call, SEARCH)
    predicate = search.parse(params["query"], SEARCH_FIELDS)
    found = [customer for customer in call.store.newest_first("cus") if predicate(customer)]
    return search.page(found, params, "/v1/customers/search")


def _check_prefix(prefix: object) -> None:
    if not isinstance(prefix, str) or not (
        3 <= len(prefix) <= 12 and all(c in _PREFIX_ALPHABET for c in prefix)
    ):
        raise invalid(
            "Invoice prefix must be between 3 and 12 uppercase letters or digits.",
            param="invoice_prefix",
        )


def _address(value: object) -> JSON | None:
    if not isinstance(value, dict):
        return None
    fields = ("city", "country", "line1", "line2", "postal_code", "state")
    return {name: value.get(name) for name in fields}


ROUTES = [
    Route("POST", "/v1/customers", create),
    Route("GET", "/v1/customers", list_),
    Route("GET", "/v1/customers/search", search_),
    Route("GET", "/v1/customers/{id}", retrieve),
    Route("POST", "/v1/customers/{id}", update),
    Route("DELETE", "/v1/customers/{id}", delete),
]
