"""Invoice items, line items and totals: the rules invoices and invoiceitems share."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from invoiceflow.sandbox import shapes
from invoiceflow.sandbox.context import Call
from invoiceflow.sandbox.errors import exclusive, invalid, missing_parameter
from invoiceflow.sandbox.params import Dec, Int, Metadata, Obj, Str
from invoiceflow.sandbox.resources.common import merge_metadata
from invoiceflow.sandbox.store import JSON, Store, now

# Stripe's documented ceiling on invoice items per invoice.
MAX_ITEMS_PER_INVOICE = 250
# Stripe's default currency for an account that has not charged anyone yet (a US account).
DEFAULT_CURRENCY = "usd"

PRICING = Obj(fields={"price": Str()})
PERIOD = Obj(fields={"start": Int(required=True), "end": Int(required=True)})
PRICE_DATA = Obj(
    fields={
        "currency": Str(required=True),
        "product": Str(required=True),
        "unit_amount": Int(minimum=0),
        "unit_amount_decimal": Dec(),
    }
)
# The parameters describing what is charged, common to invoice items and add_lines.
CHARGE_FIELDS = {
    "pricing": PRICING,
    "price_data": PRICE_DATA,
    "quantity": Int(minimum=0),
    "amount": Int(),
    "unit_amount_decimal": Dec(),
    "description": Str(),
    "metadata": Metadata(),
    "period": PERIOD,
}


def new_item(
    call: Call,
    params: dict[str, Any],
    *,
    customer: JSON,
    invoice: JSON | None,
    prefix: str = "",
) -> JSON:
    """Validate one charge and build its invoice item (not yet stored).

    `prefix` names parameters inside add_lines (`lines[3]`) so errors point where Stripe's do.
    """
    store = call.store
    where = (lambda name: f"{prefix}[{name}]") if prefix else (lambda name: name)
    price_id = params.get("pricing", {}).get("price")
    given: list[str] = [
        name for name in ("amount", "price_data", "unit_amount_decimal") if name in params
    ]
    if price_id:
        given.insert(0, "pricing")
    if len(given) > 1:
        raise exclusive(given, param=where(given[1]))
    quantity: int = params.get("quantity", 1)
    price = None
    if price_id:
        price = store.get("price", price_id, param=where("pricing[price]"))
        _check_price(price, where("pricing[price]"))
        currency, unit = price["currency"], Decimal(price["unit_amount_decimal"])
    elif "price_data" in params:
        data = params["price_data"]
        store.get("prod", data["product"], param=where("price_data[product]"))
        currency = data["currency"].lower()
        if "unit_amount" in data:
            unit = Decimal(data["unit_amount"])
        elif "unit_amount_decimal" in data:
            unit = data["unit_amount_decimal"]
        else:
            raise missing_parameter(where("price_data[unit_amount]"))
    elif "amount" in params:
        if quantity != 1:
            raise invalid(
                "When `amount` is set, `quantity` must be 1; pass `pricing[price]` or "
                "`unit_amount_decimal` to charge several units.",
                param=where("quantity"),
            )
        currency = _item_currency(params, customer, invoice, where("currency"))
        unit = Decimal(params["amount"])
    elif "unit_amount_decimal" in params:
        currency = _item_currency(params, customer, invoice, where("currency"))
        unit = params["unit_amount_decimal"]
    else:
        raise missing_parameter(where("amount"))
    if invoice is not None and currency != invoice["currency"]:
        raise invalid(
            f"The currency of this item ({currency}) does not match the currency of the "
            f"invoice ({invoice['currency']}).",
            param=where("pricing[price]" if price else "currency"),
        )
    created = now()
    item = shapes.invoiceitem(
        store.new_id("ii"),
        created,
        customer_id=customer["id"],
        currency=currency,
        amount=int((unit * quantity).to_integral_value()),
        quantity=quantity,
        pricing_obj=shapes.pricing(price, shapes.decimal_string(unit)),
    )
    if price is not None:
        item["description"] = store.products[price["product"]]["name"]
    if "description" in params:
        item["description"] = params["description"] or None
    if "period" in params:
        item["period"] = {"start": params["period"]["start"], "end": params["period"]["end"]}
    merge_metadata(item, params)
    return item


def attach(call: Call, invoice: JSON, items: list[JSON]) -> None:
    """Put items on a draft invoice (each gets its `il_` line) and recompute its totals."""
    store = call.store
    line_ids = store.invoice_lines.setdefault(invoice["id"], [])
    if len(line_ids) + len(items) > MAX_ITEMS_PER_INVOICE:
        raise invalid(
            f"An invoice can have at most {MAX_ITEMS_PER_INVOICE} invoice items; this one has "
            f"{len(line_ids)} and the request adds {len(items)}.",
            param="invoice",
        )
    for item in items:
        item["invoice"] = invoice["id"]
        store.invoiceitems[item["id"]] = item
        line = shapes.line_item(store.new_id("il"), item, invoice["id"])
        store.lines[line["id"]] = line
        line_ids.append(line["id"])
    refresh(store, invoice)


def refresh(store: Store, invoice: JSON) -> None:
    """Recompute totals and the embedded `lines` list from the invoice's line items."""
    lines = [store.lines[line_id] for line_id in store.invoice_lines.get(invoice["id"], [])]
    subtotal = sum(line["amount"] for line in lines)
    invoice.update(
        subtotal=subtotal,
        subtotal_excluding_tax=subtotal,
        total=subtotal,
        total_excluding_tax=subtotal,
        amount_due=max(0, subtotal + invoice["starting_balance"]),
    )
    invoice["amount_remaining"] = invoice["amount_due"] - invoice["amount_paid"]
    invoice["lines"] = shapes.list_of(
        lines[: shapes.EMBEDDED_LIST_LIMIT],
        f"/v1/invoices/{invoice['id']}/lines",
        len(lines) > shapes.EMBEDDED_LIST_LIMIT,
    )


def _check_price(price: JSON, param: str) -> None:
    if not price["active"]:
        raise invalid(
            f"The price specified ({price['id']}) is inactive. This field only accepts active "
            "prices.",
            param=param,
        )
    if price["type"] != "one_time":
        raise invalid(
            f"The price specified ({price['id']}) is set to `type=recurring` but this field "
            "only accepts prices with `type=one_time`.",
            param=param,
        )


def _item_currency(params: dict[str, Any], customer: JSON, invoice: JSON | None, param: str) -> str:
    if "currency" in params:
        return str(params["currency"]).lower()
    if invoice is not None:
        return str(invoice["currency"])
    if customer["currency"]:
        return str(customer["currency"])
    raise missing_parameter(param)
