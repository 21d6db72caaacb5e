"""Invoice items, line items and totals: the rules invoices and invoiceitems share."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from stripe_sandbox import shapes
from stripe_sandbox.context import Call
from stripe_sandbox.errors import exclusive, invalid, missing_parameter
from stripe_sandbox.params import Currency, Dec, Int, Metadata, Obj, Str
from stripe_sandbox.resources import tiers
from stripe_sandbox.resources.common import merge_metadata
from stripe_sandbox.resources.fields import TAX_BEHAVIOR
from stripe_sandbox.store import JSON, Store

# Stripe's documented ceiling on invoice items per invoice.
MAX_ITEMS_PER_INVOICE = 250
# Stripe's default currency for an account that has not charged anyone yet (a US account).
DEFAULT_CURRENCY = "usd"

PRICING = Obj(fields={"price": Str()})
PERIOD = Obj(fields={"start": Int(required=True), "end": Int(required=True)})
PRICE_DATA = Obj(
    fields={
        "currency": Currency(required=True),
        "product": Str(required=True),
        "unit_amount": Int(minimum=0),
        "unit_amount_decimal": Dec(),
        "tax_behavior": TAX_BEHAVIOR,
    }
)
# The parameters describing what is charged, common to invoice items and add_lines.
CHARGE_FIELDS = {
    "pricing": PRICING,
    "price_data": PRICE_DATA,
    "quantity": Int(minimum=0),
    "quantity_decimal": Dec(),
    "tax_behavior": TAX_BEHAVIOR,
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
    if "quantity" in params and "quantity_decimal" in params:
        raise exclusive(["quantity", "quantity_decimal"], param=where("quantity_decimal"))
    quantity = Decimal(params.get("quantity", params.get("quantity_decimal", 1)))
    if quantity < 0:
        raise invalid(
            "This value must be greater than or equal to 0.", param=where("quantity_decimal")
        )
    price = None
    total: Decimal | None = None  # set when the price decides the total (tiers, transforms)
    if price_id:
        price = store.get("price", price_id, param=where("pricing[price]"))
        _check_price(price, where("pricing[price]"))
        currency = price["currency"]
        unit, total = _priced(store, price, quantity)
    elif "price_data" in params:
        data = params["price_data"]
        store.get("prod", data["product"], param=where("price_data[product]"))
        currency = data["currency"]
        if "unit_amount" in data:
            unit = Decimal(data["unit_amount"])
        elif "unit_amount_decimal" in data:
            unit = data["unit_amount_decimal"]
        else:
            raise missing_parameter(where("price_data[unit_amount]"))
    elif "amount" in params:
        if quantity != 1 or "quantity_decimal" in params:
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
    created = store.clock_time(customer["test_clock"])  # the customer's test clock, if any
    if total is None:
        total = unit * quantity
    item = shapes.invoiceitem(
        store.new_id("ii"),
        created,
        customer_id=customer["id"],
        currency=currency,
        amount=int(total.to_integral_value()),
        quantity=int(quantity.to_integral_value()),
        pricing_obj=shapes.pricing(price, shapes.decimal_string(unit)),
    )
    item["quantity_decimal"] = shapes.decimal_string(quantity)
    item["test_clock"] = customer["test_clock"]
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
    if price["custom_unit_amount"] is not None:
        raise invalid(
            f"The price specified ({price['id']}) has a customer-chosen amount "
            "(`custom_unit_amount`), which only Checkout can charge.",
            param=param,
        )
    if price["type"] != "one_time":
        raise invalid(
            f"The price specified ({price['id']}) is set to `type=recurring` but this field "
            "only accepts prices with `type=one_time`.",
            param=param,
        )


def _priced(store: Store, price: JSON, quantity: Decimal) -> tuple[Decimal, Decimal | None]:
    """Unit amount to show and, when the price's own rules set it, the total.

    Tiered prices charge by tier; `transform_quantity` bills `quantity / divide_by` units,
    rounded the way the price says.
    """
    if price["billing_scheme"] == "tiered":
        tier_list = store.includable[(price["id"], "tiers")]
        total = tiers.amount(tier_list, price["tiers_mode"], int(quantity.to_integral_value()))
        unit = total / quantity if quantity else Decimal(0)
        return unit.quantize(Decimal("0.000000000001")).normalize(), total
    unit = Decimal(price["unit_amount_decimal"])
    transform = price["transform_quantity"]
    if transform is None:
        return unit, None
    rounding = ROUND_CEILING if transform["round"] == "up" else ROUND_FLOOR
    billed = (quantity / transform["divide_by"]).to_integral_value(rounding=rounding)
    return unit, unit * billed


def _item_currency(params: dict[str, Any], customer: JSON, invoice: JSON | None, param: str) -> str:
    if "currency" in params:
        return str(params["currency"])
    if invoice is not None:
        return str(invoice["currency"])
    if customer["currency"]:
        return str(customer["currency"])
    raise missing_parameter(param)


def line_of(store: Store, item_id: str) -> str | None:
    """The `il_` line showing an invoice item, if it is on an invoice."""
    item = store.invoiceitems[item_id]
    for line_id in store.invoice_lines.get(item["invoice"] or "", []):
        if store.lines[line_id]["parent"]["invoice_item_details"]["invoice_item"] == item_id:
            return line_id
    return None


def replace(call: Call, item: JSON, params: dict[str, Any]) -> JSON:
    """Re-price an existing item from update parameters, keeping its id and invoice.

    The charge is rebuilt from the item's current pricing overlaid with the parameters, so
    `quantity` alone re-prices a priced item and `amount` alone replaces the amount.
    """
    store = call.store
    charge: dict[str, Any] = {}
    if not any(
        name in params for name in ("pricing", "price_data", "amount", "unit_amount_decimal")
    ):
        price_details = item["pricing"].get("price_details")
        if price_details:
            charge["pricing"] = {"price": price_details["price"]}
        elif "quantity" in params or "quantity_decimal" in params:
            charge["unit_amount_decimal"] = Decimal(item["pricing"]["unit_amount_decimal"])
            charge["currency"] = item["currency"]
        else:
            charge["amount"] = item["amount"]
            charge["currency"] = item["currency"]
    charge.update(params)
    customer = store.customers.get(item["customer"]) or {"id": item["customer"], "currency": None}
    invoice = store.invoices.get(item["invoice"] or "")
    fresh = new_item(call, charge, customer=customer, invoice=invoice)
    keep = ("id", "date", "invoice", "discountable", "metadata", "description", "period")
    for name in keep:
        fresh[name] = item[name]
    if "description" in params:
        fresh["description"] = params["description"] or None
    if "period" in params:
        fresh["period"] = {"start": params["period"]["start"], "end": params["period"]["end"]}
    if "discountable" in params:
        fresh["discountable"] = params["discountable"]
    merge_metadata(fresh, params)
    item.clear()
    item.update(fresh)
    line_id = line_of(store, item["id"])
    if line_id is not None:
        line = store.lines[line_id]
        store.lines[line_id] = shapes.line_item(line_id, item, line["invoice"])
    if invoice is not None:
        refresh(store, invoice)
    return item


def detach(store: Store, item_id: str) -> None:
    """Remove an item's line from its invoice (the item itself is the caller's business)."""
    item = store.invoiceitems[item_id]
    line_id = line_of(store, item_id)
    if line_id is not None and item["invoice"] is not None:
        store.invoice_lines[item["invoice"]].remove(line_id)
        del store.lines[line_id]
        refresh(store, store.invoices[item["invoice"]])
