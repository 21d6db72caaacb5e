"""The event sweep: Stripe's `/v1/events` since the cursor, applied like webhooks.

Each event goes through the receiver's own `receive` — one code path for a
webhook and a swept event, so the inbox's UNIQUE event id decides once and for
all whether it was applied. An event fetched with our API key is Stripe's
word already; it needs no signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import stripe

from invoiceflow import progress
from invoiceflow.reconcile.report import ReconcileReport
from invoiceflow.reconcile.window import advance_cursor
from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_paging import every
from invoiceflow.webhooks.apply import HANDLED_TYPES, ReadInvoice, receive

# Outcomes that changed our ledger (the rest: a duplicate, or nothing to move).
_CHANGED = ("applied", "recorded")
PROGRESS_EVERY_SECONDS = 5.0


def sweep_events(rt: Runtime, start: int, report: ReconcileReport, *, advance: bool) -> None:
    """Apply every handled event created at or after `start`, oldest first.

    `advance`: the sweep began at or before the cursor, so everything up to the
    newest event seen is applied and the cursor may move there. A `--since`
    later than the cursor leaves a gap before it, and the cursor where it is.
    """
    events = _list_events(rt, start)
    since = datetime.fromtimestamp(start, UTC)
    progress.note(
        "applying %d Stripe events created since %s", len(events), f"{since:%Y-%m-%d %H:%M}Z"
    )
    read_invoice = _invoice_reader(rt)
    # Listed under our key, so of our account and mode already; checked all the
    # same by the one function that decides whether an event is ours.
    livemode = rt.settings.stripe_mode() == "live"
    said = progress.Throttle(every=PROGRESS_EVERY_SECONDS)
    for done, event in enumerate(events, start=1):
        outcome = receive(rt.engine, event, read_invoice, livemode=livemode)
        if outcome.kind in _CHANGED:
            report.events_applied += 1
            report.changes.append(f"event {event['id']} ({event['type']}): {outcome.detail}")
        if said.due() and done < len(events):  # `applied`: the count the summary gives
            progress.note(
                "checked %d of %d events, %d applied", done, len(events), report.events_applied
            )
    if events and advance:
        advance_cursor(rt.engine, max(int(event["created"]) for event in events))


def _list_events(rt: Runtime, start: int) -> list[dict[str, Any]]:
    """Stripe lists newest first; we apply oldest first (a payment after its failure)."""
    params = {"types": list(HANDLED_TYPES), "created": {"gte": start}}
    listed = every(rt.stripe.v1.events.list, params, "list Stripe events")
    newest_first = [event.to_dict(for_json=True) for event in listed]
    # Stable for events of the same second: Stripe's own order, reversed.
    return sorted(reversed(newest_first), key=lambda event: int(event["created"]))


def _invoice_reader(rt: Runtime) -> ReadInvoice:
    def read(invoice_id: str) -> Mapping[str, Any]:
        invoice: stripe.Invoice = call_with_retries(
            lambda: rt.stripe.v1.invoices.retrieve(invoice_id), f"get {invoice_id}"
        )
        return invoice.to_dict(for_json=True)

    return read
