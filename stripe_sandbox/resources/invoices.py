"""Invoices: /v1/invoices and the draft → open → paid | void | uncollectible machine."""

from __future__ import annotations

import copy
from typing import Any

from stripe_sandbox import currencies, search, shapes
from stripe_sandbox.context import Call, changed
from stripe_sandbox.errors import (
    card_declined,
    exclusive,
    invalid,
    missing_parameter,
    no_such,
    not_editable,
    wrong_state,
)
from stripe_sandbox.listing import paginate
from stripe_sandbox.params import (
    LIST_PAGING,
    SEARCH,
    UNSET,
    Arr,
    Bool,
    Currency,
    Enum,
    Int,
    IntOrRange,
    Metadata,
    Obj,
    Str,
)
from stripe_sandbox.resources import bank_debits, billing, fields, payments, revisions, sources
from stripe_sandbox.resources.common import (
    Route,
    assign,
    created_matches,
    merge_metadata,
    read,
)
from stripe_sandbox.store import JSON, Store

# Our invoice client sends add_lines in batches of 50, so the sandbox refuses bigger batches:
# a batch that only works here would be a bug waiting for production.
MAX_LINES_PER_ADD = 50
SECONDS_PER_DAY = 86_400
# Stripe retries automatic collection about an hour after finalization.
AUTO_COLLECTION_DELAY = 3_600
STATUSES = ("draft", "open", "paid", "uncollectible", "void")

# Stripe's invoice payment method types (Invoice.PaymentSettings.PaymentMethodType).
PAYMENT_METHOD_TYPES = tuple(
    """
    ach_credit_transfer ach_debit acss_debit affirm alipay amazon_pay au_becs_debit bacs_debit
    bancontact billie blik boleto card cashapp crypto custom customer_balance eps fpx giropay
    grabpay ideal jp_credit_transfer kakao_pay klarna konbini kr_card link mb_way multibanco
    naver_pay nz_bank_account p24 pay_by_bank payco paynow paypal payto pix promptpay
    revolut_pay satispay sepa_credit_transfer sepa_debit sequra sofort swish twint upi
    us_bank_account wechat_pay
    """.split()  # noqa: SIM905 - a word list reads better than 51 quoted strings
)
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
_ISSUER = Obj(fields={"type": Enum(required=True, values=("account", "self")), "account": Str()})
_DRAFT_FIELDS = {
    "custom_fields": fields.CUSTOM_FIELDS,
    "rendering": Obj(
        fields={
            "amount_tax_display": fields.AMOUNT_TAX_DISPLAY,
            "pdf": Obj(fields={"page_size": Enum(values=("a4", "auto", "letter"))}),
            "template": Str(),
            "template_version": Int(minimum=1),
        }
    ),
    "payment_settings": Obj(
        fields={
            "default_mandate": Str(),
            "payment_method_types": Arr(Enum(values=PAYMENT_METHOD_TYPES)),
        }
    ),
    "number": Str(max_length=26),
    "shipping_details": fields.SHIPPING,
    "effective_at": Int(minimum=0),
    "automatic_tax": Obj(fields={"enabled": Bool(required=True), "liability": _ISSUER}),
    "issuer": _ISSUER,
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
    "customer": Str(),  # required, unless `from_invoice` names the customer's invoice
    "currency": Currency(),
    "from_invoice": revisions.FROM_INVOICE,
    "pending_invoice_items_behavior": Enum(values=("exclude", "include")),
}
# What Stripe still lets you edit once an invoice is finalized.
_FINALIZED_EDITABLE = frozenset(
    {"metadata", "description", "footer", "auto_advance", "custom_fields", "expand"}
)
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
_REMOVE_LINES = {
    "lines": Arr(
        Obj(
            fields={
                "id": Str(required=True),
                "behavior": Enum(required=True, values=("delete", "unassign")),
            }
        ),
        required=True,
    ),
    "invoice_metadata": Metadata(),
}
_UPDATE_LINES = {
    "lines": Arr(
        Obj(fields={**billing.CHARGE_FIELDS, "id": Str(required=True), "discountable": Bool()}),
        required=True,
    ),
    "invoice_metadata": Metadata(),
}
SEARCH_FIELDS = ("customer", "status", "metadata", "number", "currency", "total", "created")


def create(call: Call) -> JSON:
    params = read(call, _CREATE)
    store = call.store
    original = revisions.original_of(store, params)  # a revision (see revisions.py)
    customer_id = original["customer"] if original else params.get("customer")
    if not customer_id:
        raise missing_parameter("customer")
    customer = store.get("cus", customer_id, param="customer")
    pending = store.pending_items(customer["id"])
    include = params.get("pending_invoice_items_behavior") == "include" and original is None
    currency = (
        original["currency"]
        if original
        else (params.get("currency") or "").lower()
        or customer["currency"]
        or (pending[0]["currency"] if include and pending else billing.DEFAULT_CURRENCY)
    )
    # An invoice lives on its customer's test clock, and so on the clock's time.
    created = store.clock_time(customer["test_clock"])
    invoice = shapes.invoice(store.new_id("in"), created, customer, currency)
    invoice["test_clock"] = customer["test_clock"]
    invoice["customer_tax_ids"] = copy.deepcopy(store.tax_ids.get(customer["id"], []))
    if original is not None:
        revisions.copy_fields(invoice, original)
    else:
        # Stripe starts from the customer's invoice settings; explicit parameters win.
        settings = customer["invoice_settings"]
        invoice["footer"] = settings["footer"]
        invoice["custom_fields"] = copy.deepcopy(settings["custom_fields"])
        if settings["rendering_options"] is not None:
            invoice["rendering"] = _rendering({**settings["rendering_options"]})
    _apply_draft_fields(invoice, params)
    _apply_due_date(invoice, params)
    store.invoices[invoice["id"]] = invoice
    store.invoice_lines[invoice["id"]] = []
    payments.no_payments(store, invoice)
    if original is not None:
        items = revisions.copied_items(store, original, created)
    else:
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
    _apply_draft_fields(invoice, params)
    _apply_due_date(invoice, params)
    call.emit("invoice.updated", invoice, changed(before, invoice))
    return invoice


def _apply_draft_fields(invoice: JSON, params: dict[str, Any]) -> None:
    assign(invoice, params, (*_PLAIN_FIELDS, "number", "effective_at"))
    if "custom_fields" in params:
        invoice["custom_fields"] = fields.custom_fields(params["custom_fields"])
    if "shipping_details" in params:
        invoice["shipping_details"] = fields.shipping(params["shipping_details"])
    if "rendering" in params:
        value = params["rendering"]
        invoice["rendering"] = None if value is UNSET else _rendering(value)
    if isinstance(params.get("payment_settings"), dict):
        settings = params["payment_settings"]
        current = invoice["payment_settings"]
        assign(current, settings, ("default_mandate", "payment_method_types"))
    if isinstance(params.get("issuer"), dict):
        invoice["issuer"] = _issuer(params["issuer"], "issuer")
    if isinstance(params.get("automatic_tax"), dict):
        tax = params["automatic_tax"]
        # The sandbox computes no tax: enabled automatic tax reports itself complete at 0.
        invoice["automatic_tax"] = {
            "disabled_reason": None,
            "enabled": tax["enabled"],
            "liability": (
                _issuer(tax.get("liability", {"type": "self"}), "automatic_tax[liability]")
                if tax["enabled"]
                else None
            ),
            "provider": "stripe" if tax["enabled"] else None,
            "status": "complete" if tax["enabled"] else None,
        }
    merge_metadata(invoice, params)


def _rendering(value: dict[str, Any]) -> JSON:
    pdf = value.get("pdf")
    return {
        "amount_tax_display": _or_none(value.get("amount_tax_display")),
        "pdf": {"page_size": pdf.get("page_size", "auto")} if isinstance(pdf, dict) else None,
        "template": _or_none(value.get("template")),
        "template_version": _or_none(value.get("template_version")),
    }


def _issuer(value: dict[str, Any], param: str) -> JSON:
    if value["type"] == "account":
        if not value.get("account"):
            raise missing_parameter(f"{param}[account]")
        return {"type": "account", "account": value["account"]}
    if value.get("account"):
        raise invalid("`account` can only be set when `type=account`.", param=f"{param}[account]")
    return {"type": "self"}


def _or_none(value: Any) -> Any:
    return None if value is UNSET else value


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


def remove_lines(call: Call, id: str) -> JSON:
    """Take lines off a draft: `delete` deletes their items, `unassign` makes them pending."""
    params = read(call, _REMOVE_LINES)
    store = call.store
    invoice = _draft_for_lines(store, id, "remove lines from")
    targets = [
        (_item_of_line(store, id, line["id"], index), line["behavior"])
        for index, line in enumerate(params["lines"])
    ]
    before = copy.deepcopy(invoice)
    for item_id, behavior in targets:
        billing.detach(store, item_id)
        item = store.invoiceitems[item_id]
        if behavior == "delete":
            del store.invoiceitems[item_id]
            call.emit("invoiceitem.deleted", item)
        else:
            item["invoice"] = None  # Stripe has no invoiceitem.updated event
            store.note_pending(item)
    if "invoice_metadata" in params:
        merge_metadata(invoice, {"metadata": params["invoice_metadata"]})
    call.emit("invoice.updated", invoice, changed(before, invoice))
    return invoice


def update_lines(call: Call, id: str) -> JSON:
    """Change lines of a draft in place; each line's item is re-priced like an update."""
    params = read(call, _UPDATE_LINES)
    store = call.store
    invoice = _draft_for_lines(store, id, "update lines of")
    targets = [
        (_item_of_line(store, id, line["id"], index), line)
        for index, line in enumerate(params["lines"])
    ]
    before = copy.deepcopy(invoice)
    for item_id, line in targets:
        # Stripe has no invoiceitem.updated event: only the invoice reports the change.
        billing.replace(
            call, store.invoiceitems[item_id], {k: v for k, v in line.items() if k != "id"}
        )
    if "invoice_metadata" in params:
        merge_metadata(invoice, {"metadata": params["invoice_metadata"]})
    call.emit("invoice.updated", invoice, changed(before, invoice))
    return invoice


def _draft_for_lines(store: Store, id: str, action: str) -> JSON:
    invoice = store.get("in", id)
    if invoice["status"] != "draft":
        raise not_editable(
            f"You can only {action} draft invoices. This invoice is {invoice['status']}."
        )
    return invoice


def _item_of_line(store: Store, invoice_id: str, line_id: str, index: int) -> str:
    if line_id not in store.invoice_lines.get(invoice_id, []):
        raise no_such("line item", line_id, param=f"lines[{index}][id]")
    item_id: str = store.lines[line_id]["parent"]["invoice_item_details"]["invoice_item"]
    return item_id


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
            "source": Str(),
            "forgive": Bool(),
            "off_session": Bool(),
        },
    )
    invoice = call.store.get("in", id)
    if invoice["status"] == "paid":
        raise wrong_state("Invoice is already paid")
    if invoice["status"] == "void":
        raise wrong_state("This invoice can no longer be paid: it is void.")
    bank_debits.refuse_while_processing(call.store, invoice, "pay")
    for first, second in (
        ("paid_out_of_band", "payment_method"),
        ("paid_out_of_band", "source"),
        ("payment_method", "source"),
    ):
        if params.get(first) and params.get(second):
            raise exclusive([first, second])
    method, decline = None, None
    if not params.get("paid_out_of_band"):
        method, decline = _payment_means(call.store, invoice, params)
        if bank_debits.is_bank_debit(method):
            bank_debits.check(invoice, method)
    if invoice["status"] == "draft":
        _finalize(call, invoice)  # Stripe finalizes a draft before attempting payment
        if invoice["status"] == "paid":  # a zero-amount invoice is paid on finalization
            return invoice
    if params.get("paid_out_of_band"):
        payments.settle(call.store, invoice, succeeded=False, payment_method=None)
        payments.mark_paid(call, invoice, attempted=False)
        return invoice
    before = copy.deepcopy(invoice)
    invoice["attempted"] = True
    invoice["attempt_count"] += 1
    if decline is not None:
        decline_code, message = decline
        invoice["next_payment_attempt"] = None
        error = card_declined(decline_code, message)
        # Stripe's card errors carry the invoice's PaymentIntent, its last error set.
        error.payment_intent = copy.deepcopy(payments.decline(call.store, invoice, error.summary()))
        call.emit("invoice.payment_failed", invoice)
        call.emit("invoice.updated", invoice, changed(before, invoice))
        raise error
    if bank_debits.is_bank_debit(method):
        assert method is not None
        bank_debits.start(call, invoice, method, before)  # open, processing, outcome later
        return invoice
    payments.settle(call.store, invoice, succeeded=True, payment_method=method)
    payments.mark_paid(call, invoice, attempted=True, before=before)
    return invoice


def _payment_means(
    store: Store, invoice: JSON, params: dict[str, Any]
) -> tuple[str, tuple[str, str] | None]:
    """What `pay` charges, and how it declines if it does: Stripe's order is the named
    payment method or source, then the invoice's default payment method, then the
    customer's default source."""
    if params.get("source"):
        named = sources.of_customer(store, invoice["customer"], params["source"])
        return named["id"], sources.decline_of(named)
    method = params.get("payment_method") or invoice["default_payment_method"]
    card = None if method else sources.default_of(store, invoice["customer"])
    if card is not None:
        return card["id"], sources.decline_of(card)
    if bank_debits.is_bank_debit(method):
        assert method is not None
        return method, None  # its outcome comes later (bank_debits.py)
    _check_payment_method(method)
    assert method is not None  # _check_payment_method refused an empty one
    return method, _DECLINES.get(method)


def void(call: Call, id: str) -> JSON:
    read(call, {})
    bank_debits.refuse_while_processing(call.store, call.store.get("in", id), "void")
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
    _move(call, invoice, to=to, stamp=stamp, event=event)
    return invoice


def _move(
    call: Call, invoice: JSON, *, to: str, stamp: str, event: str, also: JSON | None = None
) -> None:
    """Change status (and the fields in `also`), reported by `event` and invoice.updated."""
    before = copy.deepcopy(invoice)
    invoice.update(also or {})
    invoice["status"] = to
    invoice["status_transitions"][stamp] = call.store.clock_time(invoice["test_clock"])
    invoice["next_payment_attempt"] = None
    if to == "void":
        invoice["amount_remaining"] = 0
        payments.settle(call.store, invoice, succeeded=False, payment_method=None)
    call.emit(event, invoice)
    call.emit("invoice.updated", invoice, changed(before, invoice))


def _finalize(call: Call, invoice: JSON) -> None:
    store = call.store
    revisions.check_can_finalize(store, invoice)
    customer = store.customers.get(invoice["customer"])
    number = invoice["number"]
    if number is None and invoice["from_invoice"] is not None:
        number = revisions.number(store, invoice)  # no step of the customer's sequence
    if number is None:  # a number set on the draft is used as is, without a sequence step
        prefix = customer["invoice_prefix"] if customer else "INVOICE"
        sequence = customer["next_invoice_sequence"] if customer else 1
        if customer is not None:
            customer["next_invoice_sequence"] = sequence + 1
        number = f"{prefix}-{sequence:04d}"
    stamp = store.clock_time(invoice["test_clock"])
    token = store.token(32)
    _apply_customer_balance(call, invoice, customer)
    invoice.update(
        status="open",
        number=number,
        effective_at=invoice["effective_at"] or stamp,
        hosted_invoice_url=f"https://invoice.stripe.com/i/{shapes.ACCOUNT_ID}/test_{token}?s=ap",
        invoice_pdf=f"https://pay.stripe.com/invoice/{shapes.ACCOUNT_ID}/test_{token}/pdf?s=ap",
        webhooks_delivered_at=invoice["webhooks_delivered_at"] or stamp,
    )
    invoice["status_transitions"]["finalized_at"] = stamp
    if invoice["collection_method"] == "charge_automatically" and invoice["auto_advance"]:
        invoice["next_payment_attempt"] = stamp + AUTO_COLLECTION_DELAY
    minimum = currencies.minimum_charge(invoice["currency"])
    below_minimum = 0 < invoice["amount_due"] < minimum and customer is not None
    if below_minimum and customer is not None:
        # Stripe will not charge below the currency's minimum: it marks the invoice paid
        # and carries the amount to the customer's balance, owed on the next invoice.
        _carry_to_balance(call, invoice, customer)
    elif invoice["amount_due"] > 0:
        payments.open_payment(store, invoice)
    call.emit("invoice.finalized", invoice)
    if invoice["from_invoice"] is not None:
        _replace_versions(call, invoice)
    if below_minimum:
        payments.mark_paid(call, invoice, attempted=False, amount_paid=0)
    elif invoice["amount_due"] == 0:
        # Stripe marks an invoice with nothing to collect as paid the moment it is finalized.
        payments.mark_paid(call, invoice, attempted=False)


def _replace_versions(call: Call, revision: JSON) -> None:
    """A finalized revision voids its original; every older version names it latest."""
    older = list(revisions.older_versions(call.store, revision))
    _move(
        call,
        older[0],
        to="void",
        stamp="voided_at",
        event="invoice.voided",
        also={"latest_revision": revision["id"]},
    )
    for version in older[1:]:  # already void: only the pointer moves
        before = copy.deepcopy(version)
        version["latest_revision"] = revision["id"]
        call.emit("invoice.updated", version, changed(before, version))


def _apply_customer_balance(call: Call, invoice: JSON, customer: JSON | None) -> None:
    """Stripe applies the customer's balance (credit < 0, debit > 0) at finalization."""
    if customer is None or not customer["balance"]:
        invoice["ending_balance"] = customer["balance"] if customer else None
        return
    before = copy.deepcopy(customer)
    starting = customer["balance"]
    owed = invoice["total"] + starting
    invoice.update(
        starting_balance=starting,
        amount_due=max(0, owed),
        amount_remaining=max(0, owed),
        ending_balance=min(0, owed),
    )
    customer["balance"] = invoice["ending_balance"]
    call.emit("customer.updated", customer, changed(before, customer))


def _carry_to_balance(call: Call, invoice: JSON, customer: JSON) -> None:
    before = copy.deepcopy(customer)
    customer["balance"] += invoice["amount_due"]
    invoice["ending_balance"] = customer["balance"]
    call.emit("customer.updated", customer, changed(before, customer))


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
    Route("POST", "/v1/invoices/{id}/remove_lines", remove_lines),
    Route("POST", "/v1/invoices/{id}/update_lines", update_lines),
    Route("POST", "/v1/invoices/{id}/finalize", finalize),
    Route("POST", "/v1/invoices/{id}/send", send),
    Route("POST", "/v1/invoices/{id}/pay", pay),
    Route("POST", "/v1/invoices/{id}/void", void),
    Route("POST", "/v1/invoices/{id}/mark_uncollectible", mark_uncollectible),
]
