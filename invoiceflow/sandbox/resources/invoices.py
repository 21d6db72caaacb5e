"""Invoices: /v1/invoices and the draft → open → paid | void | uncollectible machine."""

from __future__ import annotations

import copy
from typing import Any

from invoiceflow.sandbox import search, shapes
from invoiceflow.sandbox.context import Call, changed
from invoiceflow.sandbox.errors import (
    card_declined,
    exclusive,
    invalid,
    missing_parameter,
    not_editable,
    wrong_state,
)
from invoiceflow.sandbox.listing import paginate
from invoiceflow.sandbox.params import (
    LIST_PAGING,
    SEARCH,
    UNSET,
    Arr,
    Bool,
    Enum,
    Int,
    IntOrRange,
    Metadata,
    Obj,
    Str,
)
from invoiceflow.sandbox.resources import billing
from invoiceflow.sandbox.resources.common import (
    Route,
    assign,
    created_matches,
    merge_metadata,
    read,
)
from invoiceflow.sandbox.store import JSON, now

# Our invoice client sends add_lines in batches of 50, so the sandbox refuses bigger batches:
# a batch that only works here would be a bug waiting for production.
MAX_LINES_PER_ADD = 50
SECONDS_PER_DAY = 86_400
# Stripe retries automatic collection about an hour after finalization.
AUTO_COLLECTION_DELAY = 3_600
STATUSES = ("draft", "open", "paid", "uncollectible", "void")

# Stripe's test payment methods: which succeed, which decline and how.
_DECLINES = {
    "pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
}
_SUCCEEDS = {"pm_card_visa", "pm_card_mastercard", "pm_card_amex"}

_COLLECTION = Enum(values=("charge_automatically", "send_invoice"))
_DRAFT_FIELDS = {
    "collection_method": _COLLECTION,
    "days_until_due": Int(minimum=0),
    "due_date": Int(),
    "auto_advance": Bool(),
    "description": Str(max_length=1500),
    "footer": Str(),
    "metadata": Metadata(),
    "default_payment_method": Str(),
    "statement_descriptor": Str(max_length=22),
}
_CREATE = {
    **_DRAFT_FIELDS,
    "customer": Str(required=True),
    "currency": Str(),
    "pending_invoice_items_behavior": Enum(values=("exclude", "include")),
}
# What Stripe still lets you edit once an invoice is finalized.
_FINALIZED_EDITABLE = frozenset({"metadata", "description", "footer", "auto_advance", "expand"})
_PLAIN_FIELDS = (
    "collection_method",
    "auto_advance",
    "description",
    "footer",
    "default_payment_method",
    "statement_descriptor",
)
_LIST = {
    **LIST_PAGING,
    "customer": Str(),
    "status": Enum(values=STATUSES),
    "collection_method": _COLLECTION,
    "created": IntOrRange(),
    "due_date": IntOrRange(),
}
_ADD_LINES = {
    "lines": Arr(
        Obj(
            fields={
                **billing.CHARGE_FIELDS,
                "discountable": Bool(),
                "invoice_item": Str(),
            }
        ),
        required=True,
    ),
    "invoice_metadata": Metadata(),
}
SEARCH_FIELDS = ("customer", "status", "metadata", "number", "currency", "total", "created")


def create(call: Call) -> JSON:
    params = read(call, _CREATE)
    store = call.store
    customer = store.get("cus", params["customer"], param="customer")
    pending = [
        item
        for item in store.invoiceitems.values()
        if item["customer"] == customer["id"] and item["invoice"] is None
    ]
    include = params.get("pending_invoice_items_behavior") == "include"
    currency = (
        (params.get("currency") or "").lower()
        or customer["currency"]
        or (pending[0]["currency"] if include and pending else billing.DEFAULT_CURRENCY)
    )
    invoice = shapes.invoice(store.new_id("in"), now(), customer, currency)
    assign(invoice, params, _PLAIN_FIELDS)
    _apply_due_date(invoice, params)
    merge_metadata(invoice, params)
    store.invoices[invoice["id"]] = invoice
    store.invoice_lines[invoice["id"]] = []
    items = [item for item in pending if item["currency"] == currency] if include else []
    billing.attach(call, invoice, items)
    call.emit("invoice.created", invoice)
    return invoice


def retrieve(call: Call, id: str) -> JSON:
    read(call, {})
    return call.store.get("in", id)


def update(call: Call, id: str) -> JSON:
    invoice = call.store.get("in", id)
    params = read(call, _DRAFT_FIELDS)
    if invoice["status"] != "draft":
        for name in params:
            if name not in _FINALIZED_EDITABLE:
                raise not_editable(
                    f"Finalized invoices can't be updated in this way: `{name}` can only be "
                    f"changed while the invoice is a draft (this one is {invoice['status']}).",
                )
    before = copy.deepcopy(invoice)
    assign(invoice, params, _PLAIN_FIELDS)
    _apply_due_date(invoice, params)
    merge_metadata(invoice, params)
    call.emit("invoice.updated", invoice, changed(before, invoice))
    return invoice


def delete(call: Call, id: str) -> JSON:
    read(call, {})
    store = call.store
    invoice = store.get("in", id)
    if invoice["status"] != "draft":
        raise wrong_state(
            f"You can only delete draft invoices. This invoice is {invoice['status']}; void it "
            "or mark it uncollectible instead."
        )
    for line_id in store.invoice_lines.pop(id, []):
        line = store.lines.pop(line_id)
        store.invoiceitems.pop(line["parent"]["invoice_item_details"]["invoice_item"], None)
    del store.invoices[id]
    call.emit("invoice.deleted", invoice)
    return shapes.deleted(id, "invoice")


def list_(call: Call) -> JSON:
    params = read(call, _LIST)
    selected = (
        invoice
        for invoice in call.store.newest_first("in")
        if all(
            invoice[name] == params[name]
            for name in ("customer", "status", "collection_method")
            if name in params
        )
        and created_matches(invoice, params.get("created"))
        and created_matches(invoice, params.get("due_date"), "due_date")
    )
    return paginate(selected, params, "/v1/invoices")


def search_(call: Call) -> JSON:
    params = read(call, SEARCH)
    predicate = search.parse(params["query"], SEARCH_FIELDS)
    found = [invoice for invoice in call.store.newest_first("in") if predicate(invoice)]
    return search.page(found, params, "/v1/invoices/search")


def add_lines(call: Call, id: str) -> JSON:
    params = read(call, _ADD_LINES)
    store = call.store
    invoice = store.get("in", id)
    if invoice["status"] != "draft":
        raise not_editable(
            f"You can only add lines to draft invoices. This invoice is {invoice['status']}."
        )
    lines: list[dict[str, Any]] = params["lines"]
    if not lines:
        raise missing_parameter("lines")
    if len(lines) > MAX_LINES_PER_ADD:
        raise invalid(f"You can add at most {MAX_LINES_PER_ADD} lines per request.", param="lines")
    customer = store.get("cus", invoice["customer"], param="customer")
    items = []
    for index, line in enumerate(lines):
        if "invoice_item" in line:
            raise invalid(
                "Attaching existing invoice items through add_lines is not supported by the "
                "sandbox.",
                param=f"lines[{index}][invoice_item]",
            )
        item = billing.new_item(
            call, line, customer=customer, invoice=invoice, prefix=f"lines[{index}]"
        )
        if "discountable" in line:
            item["discountable"] = line["discountable"]
        items.append(item)
    before = copy.deepcopy(invoice)
    billing.attach(call, invoice, items)
    if "invoice_metadata" in params:
        merge_metadata(invoice, {"metadata": params["invoice_metadata"]})
    for item in items:
        call.emit("invoiceitem.created", item)
    call.emit("invoice.updated", invoice, changed(before, invoice))
    return invoice


def list_lines(call: Call, id: str) -> JSON:
    params = read(call, LIST_PAGING)
    store = call.store
    store.get("in", id)
    lines = [store.lines[line_id] for line_id in store.invoice_lines.get(id, [])]
    return paginate(lines, params, f"/v1/invoices/{id}/lines")


def finalize(call: Call, id: str) -> JSON:
    params = read(call, {"auto_advance": Bool()})
    invoice = call.store.get("in", id)
    if invoice["status"] != "draft":
        raise wrong_state(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice."
        )
    assign(invoice, params, ("auto_advance",))
    _finalize(call, invoice)
    return invoice


def send(call: Call, id: str) -> JSON:
    read(call, {})
    invoice = call.store.get("in", id)
    if invoice["collection_method"] != "send_invoice":
        raise invalid(
            "You can only manually send an invoice if its collection method is 'send_invoice'."
        )
    if invoice["status"] not in ("draft", "open"):
        raise wrong_state(f"You can't send an invoice that is {invoice['status']}.")
    if invoice["status"] == "draft":
        _finalize(call, invoice)  # Stripe finalizes a draft before sending it
    call.emit("invoice.sent", invoice)
    return invoice


def pay(call: Call, id: str) -> JSON:
    params = read(
        call,
        {
            "paid_out_of_band": Bool(),
            "payment_method": Str(),
            "forgive": Bool(),
            "off_session": Bool(),
        },
    )
    invoice = call.store.get("in", id)
    if invoice["status"] == "paid":
        raise wrong_state("Invoice is already paid")
    if invoice["status"] == "void":
        raise wrong_state("This invoice can no longer be paid: it is void.")
    method = params.get("payment_method") or invoice["default_payment_method"]
    if params.get("paid_out_of_band") and "payment_method" in params:
        raise exclusive(["paid_out_of_band", "payment_method"])
    if not params.get("paid_out_of_band"):
        _check_payment_method(method)
    if invoice["status"] == "draft":
        _finalize(call, invoice)  # Stripe finalizes a draft before attempting payment
        if invoice["status"] == "paid":  # a zero-amount invoice is paid on finalization
            return invoice
    if params.get("paid_out_of_band"):
        _mark_paid(call, invoice, attempted=False)
        return invoice
    before = copy.deepcopy(invoice)
    invoice["attempted"] = True
    invoice["attempt_count"] += 1
    if method in _DECLINES:
        decline_code, message = _DECLINES[method]
        invoice["next_payment_attempt"] = None
        call.emit("invoice.payment_failed", invoice)
        call.emit("invoice.updated", invoice, changed(before, invoice))
        raise card_declined(decline_code, message)
    _mark_paid(call, invoice, attempted=True, before=before)
    return invoice


def void(call: Call, id: str) -> JSON:
    read(call, {})
    return _transition(
        call,
        id,
        allowed=("open", "uncollectible"),
        to="void",
        stamp="voided_at",
        event="invoice.voided",
    )


def mark_uncollectible(call: Call, id: str) -> JSON:
    read(call, {})
    return _transition(
        call,
        id,
        allowed=("open",),
        to="uncollectible",
        stamp="marked_uncollectible_at",
        event="invoice.marked_uncollectible",
    )


def _transition(
    call: Call, id: str, *, allowed: tuple[str, ...], to: str, stamp: str, event: str
) -> JSON:
    invoice = call.store.get("in", id)
    if invoice["status"] not in allowed:
        raise wrong_state(
            f"You can only move an invoice to `{to}` when it is {' or '.join(allowed)}; "
            f"this invoice is {invoice['status']}."
        )
    before = copy.deepcopy(invoice)
    invoice["status"] = to
    invoice["status_transitions"][stamp] = now()
    invoice["next_payment_attempt"] = None
    if to == "void":
        invoice["amount_remaining"] = 0
    call.emit(event, invoice)
    call.emit("invoice.updated", invoice, changed(before, invoice))
    return invoice


def _finalize(call: Call, invoice: JSON) -> None:
    store = call.store
    customer = store.customers.get(invoice["customer"])
    prefix = customer["invoice_prefix"] if customer else "INVOICE"
    sequence = customer["next_invoice_sequence"] if customer else 1
    if customer is not None:
        customer["next_invoice_sequence"] = sequence + 1
    stamp = now()
    token = store.token(32)
    invoice.update(
        status="open",
        number=f"{prefix}-{sequence:04d}",
        effective_at=stamp,
        hosted_invoice_url=f"https://invoice.stripe.com/i/{shapes.ACCOUNT_ID}/test_{token}?s=ap",
        invoice_pdf=f"https://pay.stripe.com/invoice/{shapes.ACCOUNT_ID}/test_{token}/pdf?s=ap",
        webhooks_delivered_at=invoice["webhooks_delivered_at"] or stamp,
    )
    invoice["status_transitions"]["finalized_at"] = stamp
    if invoice["collection_method"] == "charge_automatically" and invoice["auto_advance"]:
        invoice["next_payment_attempt"] = stamp + AUTO_COLLECTION_DELAY
    call.emit("invoice.finalized", invoice)
    if invoice["amount_due"] == 0:
        # Stripe marks an invoice with nothing to collect as paid the moment it is finalized.
        _mark_paid(call, invoice, attempted=False)


def _mark_paid(call: Call, invoice: JSON, *, attempted: bool, before: JSON | None = None) -> None:
    before = before or copy.deepcopy(invoice)
    invoice.update(
        status="paid",
        amount_paid=invoice["amount_due"],
        amount_remaining=0,
        next_payment_attempt=None,
    )
    invoice["status_transitions"]["paid_at"] = now()
    call.emit("invoice.paid", invoice)
    if attempted:
        call.emit("invoice.payment_succeeded", invoice)
    call.emit("invoice.updated", invoice, changed(before, invoice))


def _apply_due_date(invoice: JSON, params: dict[str, Any]) -> None:
    """Stripe's rules tying `days_until_due`/`due_date` to `collection_method`.

    `days_until_due` is not a field of the invoice: Stripe turns it into `due_date`.
    """
    days = params.get("days_until_due")
    if isinstance(days, int):
        invoice["due_date"] = invoice["created"] + days * SECONDS_PER_DAY
    elif "due_date" in params:
        invoice["due_date"] = None if params["due_date"] is UNSET else params["due_date"]
    if invoice["collection_method"] == "send_invoice":
        if invoice["due_date"] is None:
            raise missing_parameter("days_until_due")
    elif "days_until_due" in params or "due_date" in params:
        raise invalid(
            "You can only set `days_until_due` or `due_date` on invoices with "
            "`collection_method=send_invoice`.",
            param="days_until_due" if "days_until_due" in params else "due_date",
        )
    else:
        invoice["due_date"] = None


def _check_payment_method(method: str | None) -> None:
    if not method:
        raise invalid(
            "This customer has no attached payment source or default payment method. Please "
            "consider adding a default payment method."
        )
    if method not in _SUCCEEDS and method not in _DECLINES:
        raise invalid(
            f"No such PaymentMethod: '{method}'", param="payment_method", code="resource_missing"
        )


ROUTES = [
    Route("POST", "/v1/invoices", create),
    Route("GET", "/v1/invoices", list_),
    Route("GET", "/v1/invoices/search", search_),
    Route("GET", "/v1/invoices/{id}", retrieve),
    Route("POST", "/v1/invoices/{id}", update),
    Route("DELETE", "/v1/invoices/{id}", delete),
    Route("POST", "/v1/invoices/{id}/add_lines", add_lines),
    Route("GET", "/v1/invoices/{id}/lines", list_lines),
    Route("POST", "/v1/invoices/{id}/finalize", finalize),
    Route("POST", "/v1/invoices/{id}/send", send),
    Route("POST", "/v1/invoices/{id}/pay", pay),
    Route("POST", "/v1/invoices/{id}/void", void),
    Route("POST", "/v1/invoices/{id}/mark_uncollectible", mark_uncollectible),
]
