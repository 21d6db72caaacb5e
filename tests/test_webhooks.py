"""The webhook receiver end to end: a request billed through the plain pipeline (the
invoice flow runs the same steps as tasks), the sandbox signing and delivering to our
receiver over HTTP, SQLite and PostgreSQL. Receiving an event needs no Prefect
server; telling its ending in the Prefect UI (serve's sweeper) runs against the
session's Prefect server, in process."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from sqlalchemy import text

from invoiceflow import ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.db.utc import as_utc
from invoiceflow.status import RequestStatus
from invoiceflow.webhooks import inbox
from tests.helpers import bill_plain, invoices_for, make_request, wait_for
from tests.webhooks import (
    Receiver,
    delivered_ok,
    event_of,
    inbox_rows,
    moves_to,
    registered_receiver,
)

pytestmark = pytest.mark.usefixtures("configured")


@pytest.fixture
def receiver(
    stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> Any:
    with registered_receiver(stripe_client, monkeypatch, database_url) as running:
        yield running


def _sent_invoice(client: stripe.StripeClient, name: str) -> tuple[str, str]:
    """Bill a request up to `sent`; the request id and its Stripe invoice id."""
    request = make_request(f"req-{name}-{uuid.uuid4().hex[:8]}")
    assert bill_plain(request).state is RecoveryPoint.SENT
    [invoice] = invoices_for(client, request.request_id)
    return request.request_id, invoice.id


def _point(receiver: Receiver, request_id: str) -> RecoveryPoint:
    return RequestStatus.from_row(ledger.require(receiver.engine, request_id)).state


def _wait_point(receiver: Receiver, request_id: str, point: RecoveryPoint) -> None:
    wait_for(lambda: _point(receiver, request_id) is point, f"{request_id} to be {point.value}")


def test_paid_out_of_band_applied_once_though_delivered_three_times(
    sandbox: Any, stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    sandbox.configure(webhook_duplicate=1.0)  # every event delivered twice
    request_id, invoice_id = _sent_invoice(stripe_client, "oob")
    paid = stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})

    # What `invoiceflow status` reads: paid, within the wait (generous on a busy machine).
    wait_for(lambda: _point(receiver, request_id) is RecoveryPoint.PAID, "paid", timeout=5)
    wait_for(lambda: delivered_ok(sandbox, "invoice.paid") == 2, "both copies answered 2xx")
    third = receiver.post_signed(event_of(stripe_client, "invoice.paid", invoice_id))
    assert third.status_code == 200 and third.json()["outcome"] == "duplicate"

    row = ledger.require(receiver.engine, request_id)
    assert moves_to(receiver.engine, request_id, "paid") == 1
    assert row.amount_paid == paid.amount_paid == row.total_amount
    assert row.invoice_status == "paid"
    assert paid.status_transitions.paid_at is not None
    assert as_utc(row.paid_at) == datetime.fromtimestamp(paid.status_transitions.paid_at, UTC)
    [stored] = inbox_rows(receiver.engine, "invoice.paid")
    assert stored.request_id == request_id and stored.invoice_id == invoice_id
    assert stored.outcome.startswith("applied") and stored.needs_settle
    assert [e.event_id for e in inbox.pending_settles(receiver.engine)] == [stored.event_id]
    assert inbox.mark_told(receiver.engine, [stored.event_id]) == 1
    assert inbox.mark_told(receiver.engine, [stored.event_id]) == 0
    assert inbox.pending_settles(receiver.engine) == []
    # Every event the sandbox emitted is kept exactly once, ours or not.
    emitted = {e.id for e in stripe_client.v1.events.list({"limit": 100}).auto_paging_iter()}
    wait_for(lambda: {r.event_id for r in inbox_rows(receiver.engine)} == emitted, "every event")


def test_shuffled_and_delayed_card_payment_and_a_late_finalized(
    sandbox: Any, stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    sandbox.configure(webhook_reorder=True, webhook_reorder_window_ms=400, webhook_delay_ms=200)
    request_id, invoice_id = _sent_invoice(stripe_client, "card")
    stripe_client.v1.invoices.pay(invoice_id, {"payment_method": "pm_card_visa"})
    _wait_point(receiver, request_id, RecoveryPoint.PAID)
    emitted = {e.id for e in stripe_client.v1.events.list({"limit": 100}).auto_paging_iter()}
    wait_for(lambda: {r.event_id for r in inbox_rows(receiver.engine)} == emitted, "every event")

    # A finalized event arriving after the payment (a new id, so not a duplicate).
    late = event_of(stripe_client, "invoice.finalized", invoice_id)
    late["id"] = "evt_late_finalized"
    trail = len(ledger.audit_trail(receiver.engine, request_id))
    answer = receiver.post_signed(late)
    assert answer.status_code == 200 and answer.json()["outcome"] == "unchanged"
    late_void = event_of(stripe_client, "invoice.paid", invoice_id)
    late_void.update(id="evt_late_void", type="invoice.voided")
    late_void["data"]["object"]["status"] = "void"
    assert receiver.post_signed(late_void).json()["outcome"] == "unchanged"
    assert _point(receiver, request_id) is RecoveryPoint.PAID
    assert len(ledger.audit_trail(receiver.engine, request_id)) == trail
    assert moves_to(receiver.engine, request_id, "paid") == 1


def test_declined_then_paid(
    sandbox: Any, stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    request_id, invoice_id = _sent_invoice(stripe_client, "declined")
    with pytest.raises(stripe.CardError):
        stripe_client.v1.invoices.pay(invoice_id, {"payment_method": "pm_card_chargeDeclined"})
    wait_for(lambda: inbox_rows(receiver.engine, "invoice.payment_failed"), "the failure")
    row = ledger.require(receiver.engine, request_id)
    assert row.point is RecoveryPoint.SENT  # still collectible
    assert row.last_error == "payment failed (attempt 1)"
    notes = [
        e for e in ledger.audit_trail(receiver.engine, request_id) if e.message == "payment failed"
    ]
    assert len(notes) == 1 and notes[0].detail["reason"] == row.last_error

    stripe_client.v1.invoices.pay(invoice_id, {"payment_method": "pm_card_visa"})
    _wait_point(receiver, request_id, RecoveryPoint.PAID)
    assert moves_to(receiver.engine, request_id, "paid") == 1
    assert ledger.require(receiver.engine, request_id).last_error is None


def test_voided_is_void(
    sandbox: Any, stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    request_id, invoice_id = _sent_invoice(stripe_client, "void")
    stripe_client.v1.invoices.void_invoice(invoice_id)
    _wait_point(receiver, request_id, RecoveryPoint.VOID)
    assert moves_to(receiver.engine, request_id, "void") == 1
    assert ledger.require(receiver.engine, request_id).invoice_status == "void"


def test_uncollectible_then_paid_as_stripe_allows(
    sandbox: Any, stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    request_id, invoice_id = _sent_invoice(stripe_client, "uncollectible")
    stripe_client.v1.invoices.mark_uncollectible(invoice_id)
    _wait_point(receiver, request_id, RecoveryPoint.UNCOLLECTIBLE)
    stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
    _wait_point(receiver, request_id, RecoveryPoint.PAID)
    trail = [e.to_point for e in ledger.audit_trail(receiver.engine, request_id) if e.to_point]
    assert trail[-2:] == ["uncollectible", "paid"]


def test_events_not_about_our_invoices_are_stored_and_ignored(
    sandbox: Any, stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    request_id, invoice_id = _sent_invoice(stripe_client, "others")
    customer = stripe_client.v1.customers.create({"email": "other@example.com"})
    for metadata in ({}, {"invoiceflow_request_id": "someone-elses-request"}):
        other = stripe_client.v1.invoices.create(
            {
                "customer": customer.id,
                "collection_method": "send_invoice",
                "days_until_due": 7,
                "metadata": metadata,
            }
        )
        stripe_client.v1.invoices.pay(other.id, {"paid_out_of_band": True})
    wait_for(lambda: len(inbox_rows(receiver.engine, "invoice.paid")) == 2, "both payments")
    for stored in inbox_rows(receiver.engine, "invoice.paid"):
        assert stored.request_id is None and stored.outcome.startswith("ignored")
    [created] = inbox_rows(receiver.engine, "customer.created")[-1:]
    assert created.outcome.startswith("ignored")

    unknown = event_of(stripe_client, "invoice.finalized", invoice_id)
    unknown.update(id="evt_unknown_type", type="invoice.something_new")
    answer = receiver.post_signed(unknown)
    assert answer.status_code == 200 and answer.json()["outcome"] == "unchanged"
    assert inbox.get(receiver.engine, "evt_unknown_type") is not None
    assert _point(receiver, request_id) is RecoveryPoint.SENT


def test_a_storage_failure_answers_5xx_and_stripe_redelivers(
    sandbox: Any, stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    sandbox.configure(webhook_retry_base_ms=200, webhook_retry_max_ms=400)
    request_id, invoice_id = _sent_invoice(stripe_client, "dbdown")
    with receiver.engine.begin() as connection:  # the inbox is gone: every insert fails
        connection.execute(text("ALTER TABLE webhook_event RENAME TO webhook_event_away"))
    stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
    wait_for(
        lambda: any(
            d["type"] == "invoice.paid" and d["status"] == 503 for d in sandbox.webhook_deliveries()
        ),
        "a 503 for invoice.paid",
    )
    assert _point(receiver, request_id) is RecoveryPoint.SENT
    with receiver.engine.begin() as connection:
        connection.execute(text("ALTER TABLE webhook_event_away RENAME TO webhook_event"))
    _wait_point(receiver, request_id, RecoveryPoint.PAID)
    assert moves_to(receiver.engine, request_id, "paid") == 1


def _flow_runs_since(since: datetime) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterExpectedStartTime

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
            )
        )
    # Made since, not merely due since: the session's server also holds other tests'
    # runs scheduled for later (stranded ones, rescued or crashed meanwhile).
    return [run for run in runs if run.created is not None and run.created >= since]


def _stories(request_id: str) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from invoiceflow import story

    with get_client(sync_client=True) as client:
        versions = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[story.artifact_key(request_id)])
            )
        )
    # Oldest first: the server sorts by id (a UUID), not by time.
    return sorted(versions, key=lambda version: version.created or datetime.min.replace(tzinfo=UTC))


@pytest.mark.usefixtures("prefect_api")  # the ending told through Prefect's API
def test_a_payment_turns_the_awaiting_invoice_run_paid_in_one_sweep_without_a_flow_run(
    sandbox: Any, stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    """The invoice run ends `AwaitingPayment`; the customer pays; one sweep of serve's
    sweeper turns that run `Paid` (read back from Prefect's API) and publishes the
    story at `paid`, starting no flow run. A second sweep, or the same ending told
    again, changes nothing."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from flows.invoice import AWAITING_PAYMENT, invoice_flow
    from invoiceflow import endings
    from invoiceflow.service.sweeper import sweep_once

    request = make_request(f"req-ending-{uuid.uuid4().hex[:8]}")
    assert invoice_flow(request, return_state=True).name == AWAITING_PAYMENT
    request_id = request.request_id
    [invoice] = invoices_for(stripe_client, request_id)
    stripe_client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})
    _wait_point(receiver, request_id, RecoveryPoint.PAID)
    [event] = [e for e in inbox.events_for(receiver.engine, request_id) if e.type == "invoice.paid"]
    versions = len(_stories(request_id))
    before = datetime.now(UTC)

    assert sweep_once(receiver.engine) == 1
    assert sweep_once(receiver.engine) == 0  # told: never twice

    assert _flow_runs_since(before) == []  # the ending took no flow run
    assert inbox.get(receiver.engine, event.event_id).settle_started_at is not None  # type: ignore[union-attr]
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"invoice-{request_id}"]))
        )
        assert run.state is not None and run.state.is_completed(), run.state
        assert run.state.name == "Paid"
        assert run.state.message is not None and run.state.message.startswith(f"{request_id}: paid")
        stories = _stories(request_id)
        assert len(stories) == versions + 1
        assert "**Status:** paid" in str(stories[-1].data)
        assert stories[-1].flow_run_id == run.id  # on the invoice run's page

        again = endings.tell(client, receiver.engine, [request_id, request_id])
        assert again.done == [request_id] and again.runs_updated == 0
        assert again.stories_published == 0 and len(_stories(request_id)) == versions + 1


@pytest.mark.usefixtures("prefect_api")
def test_many_payments_are_told_in_one_sweep_in_seconds(
    sandbox: Any, stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    """Twenty write-offs' events (the issue's fifty, scaled to the default tier) are
    told in one sweep of a few seconds, with no flow run; each event once."""
    import time

    from invoiceflow.service.sweeper import sweep_once

    ids = [_sent_invoice(stripe_client, f"many{n}") for n in range(20)]
    for _, invoice_id in ids:
        stripe_client.v1.invoices.mark_uncollectible(invoice_id)
    for request_id, _ in ids:
        _wait_point(receiver, request_id, RecoveryPoint.UNCOLLECTIBLE)
    before = datetime.now(UTC)
    started = time.monotonic()

    assert sweep_once(receiver.engine) == len(ids)

    assert time.monotonic() - started < 15, "a sweep of twenty endings took too long"
    assert _flow_runs_since(before) == []
    assert sweep_once(receiver.engine) == 0
    for request_id, _ in ids:
        assert "**Status:** uncollectible" in str(_stories(request_id)[-1].data)


@pytest.mark.heavy  # a real `invoiceflow invoice` process running the flow, awaiting payment
@pytest.mark.usefixtures("prefect_api")
def test_the_cli_awaits_the_payment_by_watching_our_database_not_stripe(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    receiver: Receiver,
    database_url: str,
    tmp_path: Any,
) -> None:
    """`invoiceflow invoice` without --no-wait: the flow run ends at `sent`, the
    CLI watches our ledger, the customer pays, the signed webhook lands, and the
    CLI reports paid — without one read of the invoice from Stripe meanwhile."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO, app_env

    request = make_request(f"req-cli-wait-{uuid.uuid4().hex[:8]}")
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request.model_dump(mode="json")))
    env = app_env(sandbox.url, database_url, INVOICEFLOW_AWAIT_PAID_SECONDS="300")
    process = subprocess.Popen(
        [sys.executable, "-m", "invoiceflow", "invoice", str(request_file)],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (
                (row := ledger.load(receiver.engine, request.request_id)) is not None
                and row.point is RecoveryPoint.SENT
            ),
            "the run to send the invoice",
        )
        [invoice] = invoices_for(stripe_client, request.request_id)
        stripe_client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == 0, err
    assert out.startswith(f"{request.request_id}: paid"), out
    log = sandbox.requests()
    sent_at = max(i for i, e in enumerate(log) if e["path"].endswith("/send"))
    polled = [e for e in log[sent_at:] if e["method"] == "GET" and invoice.id in e["path"]]
    assert polled == [], "Stripe was polled while the invoice was open"
