"""Each invoice is dunned in its own customer's time (issue 19, hole 8).

INVOICEFLOW_STRIPE_TEST_CLOCK puts the customers we create from then on onto a
Stripe test clock; a customer created before (or on another clock) is not moved
by it. Advancing that clock 45 days makes its own invoices overdue, and only
those: an invoice of a customer off the clock is judged by the real time, in
which it is not due, so it is neither reminded nor written off.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from sqlmodel import select

from flows.dunning import run_dunning
from invoiceflow import ledger, pipeline
from invoiceflow.db.engine import reading
from invoiceflow.db.models import DunningStep, RecoveryPoint
from invoiceflow.dunning.report import Outcome
from invoiceflow.runtime import get_runtime, reset_runtime
from tests.clock import advance_clock
from tests.helpers import make_request, sent_events

pytestmark = pytest.mark.usefixtures("prefect_api", "configured")

# Ahead of the wall clock: judged by the clock, the unclocked invoice would be long overdue.
START = datetime(2031, 9, 1, 8, 0, tzinfo=UTC)


def _bill(request_id: str) -> str:
    """Bill one request to `sent` with the plain functions a billing run uses."""
    rt = get_runtime()
    request = make_request(request_id, customer=f"cust-{request_id}")
    ledger.submit(rt.engine, request)
    billed = pipeline.bill(rt, request, f"clock-test:{request_id}", pipeline.in_sequence(rt))
    assert billed.error is None, billed.error
    assert billed.row.point is RecoveryPoint.SENT and billed.row.stripe_invoice_id
    return billed.row.stripe_invoice_id


def _steps(request_id: str) -> list[str]:
    with reading(get_runtime().engine) as session:
        rows = session.exec(select(DunningStep).where(DunningStep.request_id == request_id))
        return sorted(f"{row.step}:{row.outcome}" for row in rows)


def test_advancing_the_clock_writes_off_only_the_invoices_on_it(
    sandbox: Any, stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A customer created before the clock was configured: it lives in real time.
    off_clock = _bill("off-the-clock")
    clock = stripe_client.v1.test_helpers.test_clocks.create(
        {"frozen_time": int(START.timestamp()), "name": "hole 8"}
    )
    monkeypatch.setenv("INVOICEFLOW_STRIPE_TEST_CLOCK", clock.id)
    reset_runtime()
    on_clock = _bill("on-the-clock")
    assert stripe_client.v1.invoices.retrieve(on_clock).test_clock == clock.id
    assert stripe_client.v1.invoices.retrieve(off_clock).test_clock is None

    advance_clock(stripe_client, clock.id, START + timedelta(days=45))
    report = run_dunning()  # no as_of: as the daily schedule runs it

    # On the clock: 31 days past due, so the write-off (missed reminders skipped).
    assert stripe_client.v1.invoices.retrieve(on_clock).status == "uncollectible"
    engine = get_runtime().engine
    assert ledger.require(engine, "on-the-clock").point is RecoveryPoint.UNCOLLECTIBLE
    # Off the clock: untouched, in Stripe and in our ledger, and never emailed again.
    assert stripe_client.v1.invoices.retrieve(off_clock).status == "open"
    assert ledger.require(engine, "off-the-clock").point is RecoveryPoint.SENT
    assert _steps("off-the-clock") == []
    assert sent_events(stripe_client, off_clock) == 1
    off_lines = [line for line in report.lines if line.request_id == "off-the-clock"]
    assert [(line.step, line.outcome) for line in off_lines] == [(None, Outcome.NOT_DUE)]


def test_as_of_still_judges_every_invoice_at_that_time(
    sandbox: Any, stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit --as-of is the operator's simulation: it applies to every invoice."""
    off_clock = _bill("as-of-off")
    clock = stripe_client.v1.test_helpers.test_clocks.create(
        {"frozen_time": int(START.timestamp())}
    )
    monkeypatch.setenv("INVOICEFLOW_STRIPE_TEST_CLOCK", clock.id)
    reset_runtime()
    due = stripe_client.v1.invoices.retrieve(off_clock).due_date
    assert due is not None

    report = run_dunning(as_of=datetime.fromtimestamp(due, UTC) + timedelta(days=1, hours=1))

    assert [line.step for line in report.lines if line.request_id == "as-of-off"] == ["reminder-1"]
    assert sent_events(stripe_client, off_clock) == 2
