"""With INVOICEFLOW_STRIPE_TEST_CLOCK set, our customers and invoices live on Stripe's test
clock: billing a request creates the customer on it, Stripe dates the invoice by it, our
row caches that date, and `stripe_now` reads the clock's time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.db.utc import as_utc
from invoiceflow.runtime import get_runtime, reset_runtime
from invoiceflow.settings import SettingsError
from invoiceflow.stripe_clock import stripe_now
from tests.clock import advance_clock
from tests.helpers import assert_exactly_one_invoice, bill_plain, make_request, writes

pytestmark = pytest.mark.usefixtures("configured")

DAY = 86_400
# Ahead of the wall clock, so a date taken from our clock instead of Stripe's shows.
START = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)


def _use_clock(monkeypatch: pytest.MonkeyPatch, clock_id: str) -> None:
    monkeypatch.setenv("INVOICEFLOW_STRIPE_TEST_CLOCK", clock_id)
    reset_runtime()  # also clears the cached settings


def test_a_request_is_billed_on_the_test_clock(
    sandbox: Any, stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create(
        {"frozen_time": int(START.timestamp()), "name": "invoiceflow tests"}
    )
    _use_clock(monkeypatch, clock.id)
    customer_key = f"acme-{uuid.uuid4().hex[:6]}"
    request = make_request(f"req-{uuid.uuid4().hex[:8]}", customer=customer_key)

    status = bill_plain(request)

    assert status.state is RecoveryPoint.SENT
    invoice = assert_exactly_one_invoice(stripe_client, request)
    customer = stripe_client.v1.customers.retrieve(invoice.customer)
    assert customer.test_clock == clock.id
    assert invoice.test_clock == clock.id
    assert invoice.created == int(START.timestamp())
    assert invoice.due_date == invoice.created + request.days_until_due * DAY
    row = ledger.require(get_runtime().engine, request.request_id)
    assert as_utc(row.due_date) == datetime.fromtimestamp(invoice.due_date, UTC)
    assert row.due_date is not None and as_utc(row.due_date) == START + timedelta(days=14)

    # A second request for the same customer reuses the customer on the clock; a rerun of
    # the first writes nothing (the create params, clock included, never changed).
    before = len(writes(sandbox))
    assert bill_plain(request).state is RecoveryPoint.SENT
    assert len(writes(sandbox)) == before
    other = make_request(f"req-{uuid.uuid4().hex[:8]}", customer=customer_key)
    assert bill_plain(other).state is RecoveryPoint.SENT
    on_clock = stripe_client.v1.customers.list({"test_clock": clock.id}).data
    assert [c.id for c in on_clock] == [customer.id]


def test_stripe_now_reads_the_clock(
    sandbox: Any, stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = datetime.now(UTC)
    unclocked = stripe_now(get_runtime())
    assert unclocked.tzinfo is not None and before <= unclocked <= datetime.now(UTC)

    clock = stripe_client.v1.test_helpers.test_clocks.create(
        {"frozen_time": int(START.timestamp())}
    )
    _use_clock(monkeypatch, clock.id)
    assert stripe_now(get_runtime()) == START
    later = START + timedelta(days=31, hours=5)
    advance_clock(stripe_client, clock.id, later)
    assert stripe_now(get_runtime()) == later

    stripe_client.v1.test_helpers.test_clocks.delete(clock.id)
    with pytest.raises(SettingsError, match="INVOICEFLOW_STRIPE_TEST_CLOCK") as gone:
        stripe_now(get_runtime())
    assert clock.id in str(gone.value)
