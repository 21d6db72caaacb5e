"""Invoice items: /v1/invoiceitems (pending on the customer, or on a draft invoice)."""

from __future__ import annotations

import copy

from stripe_sandbox import shapes
from stripe_sandbox.context import Call, changed
from stripe_sandbox.errors import invalid, not_editable
from stripe_sandbox.listing import paginate
from stripe_sandbox.params import LIST_PAGING, Bool, Currency, IntOrRange, Str
from stripe_sandbox.resources import billing
from stripe_sandbox.resources.common import Route, created_matches, read
from stripe_sandbox.store import JSON

_CREATE = {
    **billing.CHARGE_FIELDS,
    "customer": Str(required=True),
    "invoice": Str(),
    "currency": Currency(),
    "discountable": Bool(),
}
_UPDATE = {**billing.CHARGE_FIELDS, "discountable": Bool()}
_LIST = {
    **LIST_PAGING,
    "customer": Str(),
    "invoice": Str(),
    "pending": Bool(),
    "created": IntOrRange(),
}


def create(call: Call) -> JSON:
    params = read(call, _CREATE)
    store = call.store
    customer = store.get("cus", params["customer"], param="customer")
    invoice = None
    if params.get("invoice"):
        invoice = store.get("in", params["invoice"], param="invoice")
        if invoice["status"] != "draft":
            raise not_editable(
                "Invoice items can only be added to draft invoices; invoice "
                f"{invoice['id']} is {invoice['status']}."
            )
        if invoice["customer"] != customer["id"]:
            raise invalid(
                f"The invoice {invoice['id']} belongs to another customer.", param="invoice"
            )
    item = billing.new_item(call, params, customer=customer, invoice=invoice)
    if "discountable" in params:
        item["discountable"] = params["discountable"]
    if invoice is None:
        store.invoiceitems[item["id"]] = item
        store.note_pending(item)
        call.emit("invoiceitem.created", item)
        return item
    before = copy.deepcopy(invoice)
    billing.attach(call, invoice, [item])
    call.emit("invoiceitem.created", item)
    call.emit("invoice.updated", invoice, changed(before, invoice))
    return item


def retrieve(call: Call, id: str) -> JSON:
    read(call, {})
    return call.store.get("ii", id)


def update(call: Call, id: str) -> JSON:
    params = read(call, _UPDATE)
    store = call.store
    item = store.get("ii", id)
    invoice = _editable_invoice(call, item)
    invoice_before = copy.deepcopy(invoice) if invoice else None
    billing.replace(call, item, params)  # Stripe has no invoiceitem.updated event
    if invoice is not None and invoice_before is not None:
        call.emit("invoice.updated", invoice, changed(invoice_before, invoice))
    return item


def delete(call: Call, id: str) -> JSON:
    read(call, {})
    store = call.store
    item = store.get("ii", id)
    invoice = _editable_invoice(call, item)
    invoice_before = copy.deepcopy(invoice) if invoice else None
    billing.detach(store, id)
    del store.invoiceitems[id]
    call.emit("invoiceitem.deleted", item)
    if invoice is not None and invoice_before is not None:
        call.emit("invoice.updated", invoice, changed(invoice_before, invoice))
    return shapes.deleted(id, "invoiceitem")


def _editable_invoice(call: Call, item: JSON) -> JSON | None:
    """The draft invoice an item is on (None when pending); finalized ones refuse edits."""
    if item["invoice"] is None:
        return None
    invoice = call.store.get("in", item["invoice"])
    if invoice["status"] != "draft":
        raise not_editable(
            f"This invoice item is on invoice {invoice['id']}, which is {invoice['status']}; "
            "only items of draft invoices can be changed."
        )
    return invoice


def list_(call: Call) -> JSON:
    params = read(call, _LIST)
    selected = (
        item
        for item in call.store.newest_first("ii")
        if ("customer" not in params or item["customer"] == params["customer"])
        and ("invoice" not in params or item["invoice"] == params["invoice"])
        and ("pending" not in params or (item["invoice"] is None) == params["pending"])
        and created_matches(item, params.get("created"), "date")
    )
    return paginate(selected, params, "/v1/invoiceitems")


ROUTES = [
    Route("POST", "/v1/invoiceitems", create),
    Route("GET", "/v1/invoiceitems", list_),
    Route("GET", "/v1/invoiceitems/{id}", retrieve),
    Route("POST", "/v1/invoiceitems/{id}", update),
    Route("DELETE", "/v1/invoiceitems/{id}", delete),
]
