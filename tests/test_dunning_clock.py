"""A month of dunning on Stripe's own test clock, as the daily schedule would run it.

Our customers join the clock (INVOICEFLOW_STRIPE_TEST_CLOCK); Stripe dates their
invoices by it, and the dunning flow, given no `as_of`, asks the clock what day it
is. Advancing the clock day by day makes the invoices overdue exactly as Stripe
would — `invoice.overdue` included — and a month runs in seconds.

The requests are billed through the plain pipeline and the month is dunned through
dunning's plain functions (tests/dunning_runs.py); that the dunning flow, given no
`as_of`, takes the clock's day is proven on the session's Prefect server.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.runtime import get_runtime, reset_runtime
from tests.clock import advance_clock
from tests.dunning_runs import dun_in_sequence
from tests.helpers import bill_plain, make_request, sent_events

pytestmark = pytest.mark.usefixtures("configured")

# Ahead of the wall clock: a "now" taken from this machine would see nothing overdue.
START = datetime(2031, 5, 4, 8, 0, tzinfo=UTC)
DAYS_UNTIL_DUE = 14


def _events(client: stripe.StripeClient, type_: str, invoice_id: str) -> int:
    listed = client.v1.events.list({"type": type_, "limit": 100}).data
    return sum(1 for event in listed if event.data.object["id"] == invoice_id)


def test_a_month_on_the_test_clock_reminds_then_writes_off_and_a_payment_stops_it(
    stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create(
        {"frozen_time": int(START.timestamp()), "name": "a month of dunning"}
    )
    monkeypatch.setenv("INVOICEFLOW_STRIPE_TEST_CLOCK", clock.id)
    reset_runtime()
    unpaid, paid = (
        bill_plain(make_request(rid, customer=f"cust-{rid}", days_until_due=DAYS_UNTIL_DUE))
        for rid in ("never-pays", "pays-day-9")
    )
    assert unpaid.stripe_invoice_id and paid.stripe_invoice_id
    due = START + timedelta(days=DAYS_UNTIL_DUE)

    emailed: dict[int, tuple[int, int]] = {}
    for day in (0, 1, 2, 7, 8, 9, 14, 15, 29, 30, 31):
        advance_clock(stripe_client, clock.id, due + timedelta(days=day, hours=1))
        if day == 9:
            stripe_client.v1.invoices.pay(paid.stripe_invoice_id, {"paid_out_of_band": True})
        dun_in_sequence()  # no as_of: each invoice is judged by its clock
        emailed[day] = (
            sent_events(stripe_client, unpaid.stripe_invoice_id),
            sent_events(stripe_client, paid.stripe_invoice_id),
        )

    # The first send, then reminders on days 1, 7 and 14, each once; none after day 9's payment.
    assert emailed == {
        0: (1, 1),
        1: (2, 2),
        2: (2, 2),
        7: (3, 3),
        8: (3, 3),
        9: (3, 3),
        14: (4, 3),
        15: (4, 3),
        29: (4, 3),
        30: (4, 3),
        31: (4, 3),
    }
    assert stripe_client.v1.invoices.retrieve(unpaid.stripe_invoice_id).status == "uncollectible"
    assert stripe_client.v1.invoices.retrieve(paid.stripe_invoice_id).status == "paid"
    engine = get_runtime().engine
    assert ledger.require(engine, "never-pays").recovery_point == "uncollectible"
    assert ledger.require(engine, "pays-day-9").recovery_point == "paid"
    # Stripe itself saw both pass their due date, once.
    for invoice_id in (unpaid.stripe_invoice_id, paid.stripe_invoice_id):
        assert _events(stripe_client, "invoice.overdue", invoice_id) == 1


@pytest.mark.usefixtures("prefect_api")  # the flow's contract: it runs here
def test_without_as_of_the_flow_uses_the_clock_not_this_machine(
    stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch, sandbox: Any
) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create(
        {"frozen_time": int(START.timestamp())}
    )
    monkeypatch.setenv("INVOICEFLOW_STRIPE_TEST_CLOCK", clock.id)
    reset_runtime()
    from flows.dunning import run_dunning

    report = run_dunning()

    assert report.as_of == START
