"""Customers: /v1/customers."""

from __future__ import annotations

import copy
import re
import string
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
    Email,
    Enum,
    Int,
    IntOrRange,
    Metadata,
    Obj,
    Str,
)
from stripe_sandbox.resources import fields, sources
from stripe_sandbox.resources.common import (
    Route,
    assign,
    created_matches,
    merge_metadata,
    read,
)
from stripe_sandbox.store import JSON

# Stripe documents invoice prefixes as 3-12 uppercase letters or digits (the endive schema
# only says "string"); generated ones have 8.
INVOICE_PREFIX_LENGTH = 8
_PREFIX_ALPHABET = string.ascii_uppercase + string.digits
# Stripe accepts up to 25 tax ids per customer; types look like `eu_vat`, `us_ein`.
MAX_TAX_IDS = 25
_TAX_ID_TYPE = re.compile(r"^[a-z]{2}_[a-z_]+$")

_INVOICE_SETTINGS = Obj(
    fields={
        "custom_fields": fields.CUSTOM_FIELDS,
        "default_payment_method": Str(),
        "footer": Str(),
        "rendering_options": Obj(
            fields={"amount_tax_display": fields.AMOUNT_TAX_DISPLAY, "template": Str()}
        ),
    }
)
_FIELDS = {
    "email": Email(),
    "name": Str(max_length=256),
    "description": Str(),
    "phone": Str(max_length=20),
    "metadata": Metadata(),
    "address": fields.ADDRESS,
    "preferred_locales": Arr(Str()),
    "invoice_prefix": Str(max_length=12),
    "invoice_settings": _INVOICE_SETTINGS,
    "shipping": fields.SHIPPING,
    "tax_exempt": Enum(values=("exempt", "none", "reverse")),
    "balance": Int(),
    "next_invoice_sequence": Int(minimum=1),
    "business_name": Str(max_length=150),
}
_CREATE = {
    **_FIELDS,
    "tax_id_data": Arr(
        Obj(fields={"type": Str(required=True), "value": Str(required=True)}),
        max_items=MAX_TAX_IDS,
    ),
    # A test token (`tok_visa`) made into the customer's default card source.
    "source": Str(),
    # Only at creation: Stripe never moves a customer onto or off a clock afterwards.
    "test_clock": Str(),
}
_LIST = {
    **LIST_PAGING,
    "email": Str(max_length=512),
    "created": IntOrRange(),
    "test_clock": Str(),
}
_PLAIN_FIELDS = (
    "email",
    "name",
    "description",
    "phone",
    "preferred_locales",
    "tax_exempt",
    "balance",
    "next_invoice_sequence",
)
SEARCH_FIELDS = ("email", "name", "phone", "metadata", "created")


def create(call: Call) -> JSON:
    params = read(call, _CREATE)
    store = call.store
    prefix = params.get("invoice_prefix") or "".join(
        store.rng.choices(_PREFIX_ALPHABET, k=INVOICE_PREFIX_LENGTH)
    )
    _check_prefix(prefix)
    tax_ids = [_tax_id(datum, index) for index, datum in enumerate(params.get("tax_id_data", []))]
    clock = params.get("test_clock")
    clock = clock if isinstance(clock, str) and clock else None  # `test_clock=` means none
    if clock is not None:
        store.get("clock", clock, param="test_clock")  # Stripe's 404 naming `test_clock`
    customer = shapes.customer(store.new_id("cus"), store.clock_time(clock), prefix)
    customer["test_clock"] = clock
    _apply(customer, params)
    if params.get("source"):  # checked before anything is stored: nothing half created
        sources.attach_token(store, customer, params["source"])
    store.customers[customer["id"]] = customer
    sources.tax_ids(store, customer, tax_ids)
    call.emit("customer.created", customer)
    return customer


def retrieve(call: Call, id: str) -> JSON:
    read(call, {})
    store = call.store
    customer = store.customers.get(id) or store.deleted_customers.get(id)
    if customer is None:
        return store.get("cus", id)  # raises Stripe's 404
    return customer


def update(call: Call, id: str) -> JSON:
    params = read(call, _FIELDS)
    customer = call.store.get("cus", id)
    if "invoice_prefix" in params:
        _check_prefix(params["invoice_prefix"])
    before = copy.deepcopy(customer)
    assign(customer, params, ("invoice_prefix",))
    _apply(customer, params)
    call.emit("customer.updated", customer, changed(before, customer))
    return customer


def delete(call: Call, id: str) -> JSON:
    read(call, {})
    return remove(call, call.store.get("cus", id))


def remove(call: Call, customer: JSON) -> JSON:
    """Delete a customer, leaving Stripe's tombstone; also used when its test clock goes."""
    store = call.store
    del store.customers[customer["id"]]
    tombstone = shapes.deleted(customer["id"], "customer")
    store.deleted_customers[customer["id"]] = tombstone
    call.emit("customer.deleted", customer)
    return tombstone


def list_(call: Call) -> JSON:
    params = read(call, _LIST)
    selected = (
        customer
        for customer in call.store.newest_first("cus")
        if ("email" not in params or customer["email"] == params["email"])
        and ("test_clock" not in params or customer["test_clock"] == params["test_clock"])
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


def _apply(customer: JSON, params: dict[str, Any]) -> None:
    """Set the fields create and update share (Stripe's clearing rules for each)."""
    assign(customer, params, _PLAIN_FIELDS)
    if "address" in params:
        customer["address"] = fields.address(params["address"])
    if "shipping" in params:
        customer["shipping"] = fields.shipping(params["shipping"])
    if params.get("business_name"):  # optional in the object: absent until set
        customer["business_name"] = params["business_name"]
    elif params.get("business_name") is UNSET:
        customer.pop("business_name", None)
    settings = params.get("invoice_settings")
    if isinstance(settings, dict):
        current = customer["invoice_settings"]
        if "custom_fields" in settings:
            current["custom_fields"] = fields.custom_fields(settings["custom_fields"])
        assign(current, settings, ("default_payment_method", "footer"))
        options = settings.get("rendering_options")
        if options is UNSET:
            current["rendering_options"] = None
        elif isinstance(options, dict):
            current["rendering_options"] = {
                "amount_tax_display": _or_none(options.get("amount_tax_display")),
                "template": _or_none(options.get("template")),
            }
    merge_metadata(customer, params)


def _tax_id(datum: dict[str, Any], index: int) -> JSON:
    """One `tax_id_data` entry checked by shape (sources.tax_ids makes the objects)."""
    if not _TAX_ID_TYPE.match(datum["type"]):
        raise invalid(
            f"Invalid value for tax_id_data[{index}][type]: {datum['type']}",
            param=f"tax_id_data[{index}][type]",
        )
    return {"type": datum["type"], "value": datum["value"]}


def _or_none(value: Any) -> Any:
    return None if value is UNSET else value


ROUTES = [
    Route("POST", "/v1/customers", create),
    Route("GET", "/v1/customers", list_),
    Route("GET", "/v1/customers/search", search_),
    Route("GET", "/v1/customers/{id}", retrieve),
    Route("POST", "/v1/customers/{id}", update),
    Route("DELETE", "/v1/customers/{id}", delete),
]
