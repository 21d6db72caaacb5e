"""In-memory state of one sandbox: objects by id, in creation order, plus events.

Everything runs on the server's event loop and handlers never await while mutating, so a
handler's changes are atomic without locks.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from stripe_sandbox.errors import no_such

JSON = dict[str, Any]

_ID_ALPHABET = string.ascii_letters + string.digits
# Stripe's id lengths after the prefix: customers and products are short, the rest long.
_SHORT_ID = 14
_LONG_ID = 24

# prefix -> (collection attribute, Stripe's noun in "No such ..." messages, id length)
COLLECTIONS: dict[str, tuple[str, str, int]] = {
    "prod": ("products", "product", _SHORT_ID),
    "price": ("prices", "price", _LONG_ID),
    "cus": ("customers", "customer", _SHORT_ID),
    "in": ("invoices", "invoice", _LONG_ID),
    "ii": ("invoiceitems", "invoiceitem", _LONG_ID),
    "il": ("lines", "line item", _LONG_ID),
    "evt": ("events", "event", _LONG_ID),
    "we": ("webhook_endpoints", "webhook endpoint", _LONG_ID),
    "clock": ("test_clocks", "test clock", _LONG_ID),
    "card": ("cards", "source", _LONG_ID),
    "pi": ("payment_intents", "payment_intent", _LONG_ID),
    "inpay": ("invoice_payments", "invoice payment", _LONG_ID),
}


@dataclass
class Store:
    rng: random.Random
    products: dict[str, JSON] = field(default_factory=dict)
    prices: dict[str, JSON] = field(default_factory=dict)
    customers: dict[str, JSON] = field(default_factory=dict)
    invoices: dict[str, JSON] = field(default_factory=dict)
    invoiceitems: dict[str, JSON] = field(default_factory=dict)
    lines: dict[str, JSON] = field(default_factory=dict)
    # invoice id -> its line item ids in invoice order
    invoice_lines: dict[str, list[str]] = field(default_factory=dict)
    events: dict[str, JSON] = field(default_factory=dict)
    webhook_endpoints: dict[str, JSON] = field(default_factory=dict)
    test_clocks: dict[str, JSON] = field(default_factory=dict)
    # Card sources made from test tokens (`customers.create(source=…)`), see sources.py.
    cards: dict[str, JSON] = field(default_factory=dict)
    # Kept beside the endpoint: Stripe returns the secret only from the create call.
    webhook_secrets: dict[str, str] = field(default_factory=dict)
    # Deleted customers stay retrievable as `{"id", "object", "deleted": true}` like Stripe's.
    deleted_customers: dict[str, JSON] = field(default_factory=dict)
    # PaymentIntents of finalized invoices (not served on their own: no /v1/payment_intents).
    payment_intents: dict[str, JSON] = field(default_factory=dict)
    # Invoice payments by id (the same objects an invoice's `payments` list holds).
    invoice_payments: dict[str, JSON] = field(default_factory=dict)
    # PaymentIntent id -> its bank debit while `processing` (see resources/bank_debits.py).
    bank_debits: dict[str, Any] = field(default_factory=dict)
    # customer id -> its tax ids ({type, value}); Stripe shows them on invoices.
    tax_ids: dict[str, list[JSON]] = field(default_factory=dict)
    # (object id, field) -> value of an *includable* field: Stripe leaves these out of the
    # object unless the request says `expand[]=<field>` (invoice.payments, price.tiers).
    includable: dict[tuple[str, str], Any] = field(default_factory=dict)
    # Called with each new event (the webhook dispatcher subscribes here).
    listeners: list[Callable[[JSON], None]] = field(default_factory=list)
    # customer id -> ids of its invoice items that were pending (on no invoice) when
    # last noted, as an index of Stripe's would hold them: an invoice create asks for
    # the customer's pending items, and scanning every item ever made grew with the
    # account's history (a 10,000-invoice run scanned 20,000 items per create).
    maybe_pending: dict[str, dict[str, None]] = field(default_factory=dict)

    def new_id(self, prefix: str) -> str:
        length = COLLECTIONS[prefix][2] if prefix in COLLECTIONS else _LONG_ID
        return f"{prefix}_" + "".join(self.rng.choices(_ID_ALPHABET, k=length))

    def token(self, length: int) -> str:
        return "".join(self.rng.choices(_ID_ALPHABET, k=length))

    def collection(self, prefix: str) -> dict[str, JSON]:
        collection: dict[str, JSON] = getattr(self, COLLECTIONS[prefix][0])
        return collection

    def get(self, prefix: str, object_id: str, *, param: str = "id") -> JSON:
        """Fetch by id or answer Stripe's 404 `resource_missing`."""
        found = self.collection(prefix).get(object_id)
        if found is None:
            raise no_such(COLLECTIONS[prefix][1], object_id, param=param)
        return found

    def find(self, object_id: str) -> JSON | None:
        """Any object by id, for `expand[]` (which only knows the id)."""
        prefix = object_id.partition("_")[0]
        if prefix not in COLLECTIONS:
            return None
        return self.collection(prefix).get(object_id) or self.deleted_customers.get(object_id)

    def clock_time(self, clock_id: str | None) -> int:
        """Stripe's "now" for objects on test clock `clock_id` (its `frozen_time`); for
        objects on no clock (or a deleted one), the sandbox's own clock."""
        clock = self.test_clocks.get(clock_id) if clock_id else None
        if clock is None:
            return now()
        frozen: int = clock["frozen_time"]
        return frozen

    def note_pending(self, item: JSON) -> None:
        """Call whenever an item is left on no invoice (created so, or unassigned)."""
        self.maybe_pending.setdefault(item["customer"], {})[item["id"]] = None

    def pending_items(self, customer_id: str) -> list[JSON]:
        """The customer's items on no invoice, in the order they became pending; those
        attached or deleted since they were noted drop out of the index here."""
        noted = self.maybe_pending.get(customer_id, {})
        pending = []
        for item_id in list(noted):
            item = self.invoiceitems.get(item_id)
            if item is None or item["invoice"] is not None:
                del noted[item_id]
            else:
                pending.append(item)
        return pending

    def newest_first(self, prefix: str) -> Iterator[JSON]:
        return reversed(self.collection(prefix).values())

    def clear(self) -> None:
        for attribute, _, _ in COLLECTIONS.values():
            getattr(self, attribute).clear()
        self.invoice_lines.clear()
        self.webhook_secrets.clear()
        self.deleted_customers.clear()
        self.bank_debits.clear()
        self.tax_ids.clear()
        self.includable.clear()
        self.maybe_pending.clear()


# Set from SandboxConfig.clock_offset_s (one sandbox per process in practice).
_clock_offset_s = 0.0


def set_clock_offset(seconds: float) -> None:
    global _clock_offset_s
    _clock_offset_s = seconds


def now() -> int:
    """Stripe's clock: this machine's plus the configured offset."""
    return int(time.time() + _clock_offset_s)
