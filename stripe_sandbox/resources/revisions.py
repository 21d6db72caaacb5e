"""Invoice revisions: `POST /v1/invoices` with `from_invoice[action]=revision`.

What Stripe documents (docs.stripe.com/invoicing/invoice-edits, API tab; the SDK's
field descriptions) and the sandbox does:

- Only an `open` or `uncollectible` invoice may be revised; a `draft`, `paid` or `void`
  one is refused (400, `param=from_invoice[invoice]`).
- The revision is a new draft, `from_invoice: {action: "revision", invoice: <original>}`,
  with the original's fields (customer, currency, collection method, due date,
  description, footer, custom fields, metadata, payment settings, …) and a copy of
  every line (new `ii_`/`il_` ids). The customer's details are its current ones.
  Pending invoice items are not pulled in. Parameters given with `from_invoice` apply
  on top, as on any create.
- Finalizing the revision voids the original (`invoice.voided`), and the original's
  `latest_revision` ("the most recent non-draft revision") names it; so does every
  older version's in a chain of revisions.

Sandbox choices where the docs we could read say nothing (see README):

- The revision's number is the first version's number with `-N` for the N-th version
  (`ABC-0007` → `ABC-0007-1` → `ABC-0007-2`), given at finalization, with no step of the
  customer's sequence.
- One draft revision per invoice at a time: a second is refused, naming the first.
- A revision cannot be finalized once its original is no longer open or uncollectible
  (paid meanwhile, voided), nor while the original's payment is processing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from stripe_sandbox.errors import StripeError, invalid
from stripe_sandbox.params import Enum, Obj, Str
from stripe_sandbox.resources import bank_debits
from stripe_sandbox.store import JSON, Store

FROM_INVOICE = Obj(
    fields={
        "action": Enum(required=True, values=("revision",)),
        "invoice": Str(required=True),
    }
)
REVISABLE = ("open", "uncollectible")
_PARAM = "from_invoice[invoice]"
# What a revision takes over from its original as it is (lines are copied apart).
_COPIED_FIELDS = (
    "auto_advance",
    "automatic_tax",
    "collection_method",
    "custom_fields",
    "default_payment_method",
    "default_source",
    "description",
    "due_date",
    "footer",
    "issuer",
    "metadata",
    "payment_settings",
    "rendering",
    "shipping_details",
    "statement_descriptor",
)


def original_of(store: Store, params: dict[str, Any]) -> JSON | None:
    """The invoice `from_invoice` revises (checked revisable), or None without it."""
    wanted = params.get("from_invoice")
    if not isinstance(wanted, dict):
        return None
    original = store.get("in", wanted["invoice"], param=_PARAM)
    if original["status"] not in REVISABLE:
        raise invalid(
            f"You can only revise an invoice that is open or uncollectible; invoice "
            f"{original['id']} is {original['status']}.",
            param=_PARAM,
        )
    bank_debits.refuse_while_processing(store, original, "revise")
    for draft in store.invoices.values():
        revises = (draft["from_invoice"] or {}).get("invoice")
        if draft["status"] == "draft" and revises == original["id"]:
            raise invalid(
                f"Invoice {original['id']} already has a draft revision, {draft['id']}: "
                "finalize or delete it before starting another.",
                param=_PARAM,
            )
    for name in ("customer", "currency"):
        given = params.get(name)
        if given and str(given).lower() != original[name]:
            raise invalid(
                f"A revision keeps its original's {name} ({original[name]}); leave out "
                f"`{name}` or revise in a new invoice.",
                param=name,
            )
    return original


def copy_fields(revision: JSON, original: JSON) -> None:
    for name in _COPIED_FIELDS:
        revision[name] = copy.deepcopy(original[name])
    revision["from_invoice"] = {"action": "revision", "invoice": original["id"]}


def copied_items(store: Store, original: JSON, created: int) -> list[JSON]:
    """New invoice items (not yet stored) repeating each of the original's lines."""
    items = []
    for line_id in store.invoice_lines.get(original["id"], []):
        source = store.lines[line_id]["parent"]["invoice_item_details"]["invoice_item"]
        item = copy.deepcopy(store.invoiceitems[source])
        item.update(id=store.new_id("ii"), date=created, invoice=None)
        items.append(item)
    return items


def number(store: Store, revision: JSON) -> str:
    """`<first version's number>-<N>` for the N-th version of an invoice."""
    versions = list(older_versions(store, revision))
    first = versions[-1]
    return f"{first['number']}-{len(versions)}"


def older_versions(store: Store, revision: JSON) -> Iterator[JSON]:
    """The invoices this one revises, newest first (its original, that one's, …)."""
    current = revision
    while current["from_invoice"] is not None:
        current = store.invoices[current["from_invoice"]["invoice"]]
        yield current


def check_can_finalize(store: Store, revision: JSON) -> None:
    """Finalizing voids the original, so the original must still be voidable."""
    if revision["from_invoice"] is None:
        return
    original = store.invoices[revision["from_invoice"]["invoice"]]
    if original["status"] not in REVISABLE:
        raise StripeError(
            400,
            "invalid_request_error",
            f"This revision can't be finalized: the invoice it revises, {original['id']}, "
            f"is {original['status']} and can no longer be voided.",
        )
    bank_debits.refuse_while_processing(store, original, "finalize a revision of")
