"""The invoice flow end to end: real Prefect server, real sandbox, SQLite and PostgreSQL.

The flow's own contracts run on the session's Prefect server: a run completes
(and a rerun too) with no secret in its parameters, ends `AwaitingPayment`, a
rerun picks up a payment, and the UI's tags, story artifact and failure line.
The business rules it runs are the plain pipeline's (`pipeline.bill`, the same
steps as tasks): those tests here run on `bill_plain`, without Prefect; the
transient-faults one runs through the flow too in the heavy tier (its customer
and catalog branches in parallel tasks).
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.db.utc import as_utc
from invoiceflow.runtime import get_runtime, reset_runtime
from tests.crashes import HAPPY_PATH
from tests.helpers import (
    assert_exactly_one_invoice,
    bill_plain,
    invoices_for,
    make_request,
    writes,
)

pytestmark = pytest.mark.usefixtures("configured")
# The flow's own contracts, on the session's Prefect server.
on_prefect = pytest.mark.usefixtures("prefect_api")


@on_prefect
def test_one_request_becomes_one_sent_invoice_and_a_rerun_writes_nothing(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    from flows.invoice import invoice_flow

    # Unique per run: the Prefect server (and its run names) outlives each database.
    request = make_request(f"req-{uuid.uuid4().hex[:8]}")
    status = invoice_flow(request)

    assert status.state is RecoveryPoint.SENT
    invoice = assert_exactly_one_invoice(stripe_client, request)
    assert invoice.status == "open"
    assert invoice.collection_method == "send_invoice"
    assert invoice.metadata.to_dict() == {
        "po": "PO-7",
        "invoiceflow_request_id": request.request_id,
    }
    assert status.stripe_invoice_id == invoice.id
    assert status.invoice_number == invoice.number
    assert status.hosted_invoice_url == invoice.hosted_invoice_url

    engine = get_runtime().engine
    trail = [
        event.to_point for event in ledger.audit_trail(engine, request.request_id) if event.to_point
    ]
    assert trail == HAPPY_PATH
    recorded = ledger.writes_for(engine, request.request_id)
    assert recorded and all(write.completed_at is not None for write in recorded)
    assert all(write.idempotency_key.startswith("invoiceflow:") for write in recorded)

    before = len(writes(sandbox))
    again = invoice_flow(request)
    assert again.state is RecoveryPoint.SENT
    assert len(writes(sandbox)) == before, "a rerun of a finished request wrote to Stripe"
    assert _flow_run_states(f"invoice-{request.request_id}") == ["COMPLETED", "COMPLETED"]
    _assert_no_secret_stored(engine, f"invoice-{request.request_id}")


def _assert_no_secret_stored(engine: Any, run_name: str) -> None:
    """The API key reaches neither our tables nor Prefect's record of the runs."""
    from sqlalchemy import text

    from tests.conftest import TEST_KEY

    with engine.connect() as connection:
        for table in (
            "billing_request",
            "request_line",
            "stripe_write",
            "audit_log",
            "stripe_customer",
            "stripe_product",
            "stripe_price",
        ):
            for row in connection.execute(text(f"SELECT * FROM {table}")):
                assert TEST_KEY not in repr(tuple(row)), table
    runs = _flow_runs(run_name)
    assert runs
    assert all(TEST_KEY not in repr(run.parameters) for run in runs)


def _flow_runs(name: str) -> list[Any]:
    """The Prefect flow runs with this name, read back from the Prefect server."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )
        )


def _flow_run_states(name: str) -> list[str]:
    return [run.state_type.value for run in _flow_runs(name) if run.state_type]


@on_prefect
def test_a_sent_invoice_ends_the_run_awaiting_payment(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    """No worker waits for a payment: the run ends at `sent`, in a state the UI names."""
    from flows.invoice import AWAITING_PAYMENT, invoice_flow

    request = make_request(f"req-awaiting-{uuid.uuid4().hex[:8]}")
    state = invoice_flow(request, return_state=True)

    assert state.is_completed() and state.name == AWAITING_PAYMENT
    assert state.result().state is RecoveryPoint.SENT
    [run] = _flow_runs(f"invoice-{request.request_id}")
    assert run.state is not None and run.state.name == AWAITING_PAYMENT


@on_prefect
def test_a_rerun_picks_up_a_payment_no_webhook_brought(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    """The receiver was down when the customer paid: a rerun reads the invoice once."""
    from flows.invoice import invoice_flow

    request = make_request(f"req-paid-{uuid.uuid4().hex[:8]}")
    invoice_flow(request)
    invoice_id = invoices_for(stripe_client, request.request_id)[0].id
    stripe_client.v1.invoices.pay(invoice_id, {"payment_method": "pm_card_visa"})
    before = len(writes(sandbox))

    state = invoice_flow(request, return_state=True)

    status = state.result()
    assert status.state is RecoveryPoint.PAID and state.name == "Paid"  # the UI says so
    assert status.invoice_status == "paid"
    # The same cache the webhook receiver writes (the chaos soak found this path
    # had left amount_paid empty): Stripe's amounts and Stripe's time of payment.
    paid = stripe_client.v1.invoices.retrieve(invoice_id)
    row = ledger.require(get_runtime().engine, request.request_id)
    assert (row.amount_paid, row.amount_due) == (paid.amount_paid, paid.amount_due)
    assert paid.amount_paid > 0 and paid.status_transitions.paid_at is not None
    assert as_utc(row.paid_at) == datetime.fromtimestamp(paid.status_transitions.paid_at, UTC)
    assert len(writes(sandbox)) == before


def _runner(name: str, request: pytest.FixtureRequest) -> Any:
    """How a test runs a request: the plain pipeline, or the invoice flow on the
    session's Prefect server."""
    if name == "plain":
        return bill_plain
    request.getfixturevalue("prefect_api")
    from flows.invoice import invoice_flow

    return invoice_flow


@pytest.mark.parametrize("runner", ["plain", pytest.param("flow", marks=pytest.mark.heavy)])
def test_thirty_percent_transient_faults_still_one_invoice_each(
    runner: str, sandbox: Any, stripe_client: stripe.StripeClient, request: pytest.FixtureRequest
) -> None:
    bill = _runner(runner, request)
    sandbox.configure(
        fail_before_write=0.1, fail_after_write=0.1, drop_after_write=0.1, seed=20261125
    )
    requests = [
        make_request(f"req-fault-{n}", customer=("acme", "globex", "initech")[n % 3])
        for n in range(6)
    ]
    for billing in requests:
        status = bill(billing)
        assert status.state is RecoveryPoint.SENT, status.last_error
    sandbox.configure(fail_before_write=0, fail_after_write=0, drop_after_write=0)

    faults = [entry for entry in sandbox.requests() if entry["fault"]]
    assert len(faults) >= 10, "the fault injection did not happen"
    for billing in requests:
        assert_exactly_one_invoice(stripe_client, billing)
    customers = list(stripe_client.v1.customers.list({"limit": 100}).auto_paging_iter())
    assert len(customers) == 3
    products = list(stripe_client.v1.products.list({"limit": 100}).auto_paging_iter())
    assert len(products) == 3


def test_resubmission_with_changed_content_is_a_conflict(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    request = make_request("req-conflict")
    bill_plain(request)
    before = len(writes(sandbox))

    changed = make_request(
        "req-conflict", items=[{"sku": "travel", "name": "Travel", "unit_amount": 1}]
    )
    with pytest.raises(ledger.RequestConflict, match="different content"):
        bill_plain(changed)

    assert len(writes(sandbox)) == before
    assert_exactly_one_invoice(stripe_client, request)


@pytest.mark.backend  # two runs racing for one request's lease
def test_two_concurrent_runs_of_one_request_make_one_invoice(
    sandbox: Any, stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Latency widens the window in which both runs are in flight.
    sandbox.configure(latency_ms=40)
    # The second run waits one lease TTL for the first to finish: the suite's 3 s
    # (short, for crash tests) is less than a whole invoice takes on a loaded machine,
    # where the second would give up busy instead of finding the work done.
    monkeypatch.setenv("INVOICEFLOW_LEASE_SECONDS", "60")
    reset_runtime()
    request = make_request("req-race")
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(bill_plain(request))
        except BaseException as exc:
            errors.append(exc)

    runners = [threading.Thread(target=run) for _ in range(2)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()

    assert not errors, errors
    assert [status.state for status in results] == [RecoveryPoint.SENT, RecoveryPoint.SENT]
    assert_exactly_one_invoice(stripe_client, request)


def test_an_invoice_edited_behind_our_back_is_never_finalized(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    request = make_request("req-tamper")
    # Fail the first finalize before it happens, so the draft stays a draft...
    sandbox.configure(
        faults=[{"method": "POST", "path": "/finalize$", "when": "status_409", "times": 100}]
    )
    with pytest.raises(stripe.StripeError):
        bill_plain(request)
    invoice = invoices_for(stripe_client, request.request_id)[0]
    # ...and meanwhile someone adds a line in the Dashboard.
    price = stripe_client.v1.prices.list({"limit": 1}).data[0]
    stripe_client.v1.invoices.add_lines(
        invoice.id, {"lines": [{"pricing": {"price": price.id}, "quantity": 1}]}
    )
    sandbox.configure(faults=[])

    from invoiceflow.invoicing import InvoiceMismatch

    with pytest.raises(InvoiceMismatch):
        bill_plain(request)
    assert stripe_client.v1.invoices.retrieve(invoice.id).status == "draft"
    row = ledger.require(get_runtime().engine, request.request_id)
    assert row.point is RecoveryPoint.FAILED
    assert row.last_error and "not invoiceflow" not in row.last_error


def test_250_lines_go_in_as_few_calls_as_stripe_allows(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    from invoiceflow.invoicing import LINES_PER_ADD_CALL

    items = [
        {
            "sku": f"sku-{n % 10}",
            "name": f"Item {n % 10}",
            "unit_amount": 100 + n % 7,
            "quantity": 1 + n % 3,
        }
        for n in range(250)
    ]
    request = make_request("req-250", items=items)
    status = bill_plain(request)

    assert status.state is RecoveryPoint.SENT
    assert_exactly_one_invoice(stripe_client, request)
    add_calls = [e for e in sandbox.requests() if e["path"].endswith("/add_lines")]
    assert len(add_calls) == 250 // LINES_PER_ADD_CALL == 5


@on_prefect
def test_the_ui_tells_each_invoices_story(sandbox: Any, stripe_client: stripe.StripeClient) -> None:
    """Runs are tagged by trigger, customer and currency; each request has a
    markdown artifact (a version per run); a failed run says why in one line."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.invoice import run_invoice
    from invoiceflow.story import artifact_key

    request = make_request(f"Story:{uuid.uuid4().hex[:8]}", customer="globex")
    status = run_invoice(request)
    [run] = _flow_runs(f"invoice-{request.request_id}")
    assert {"trigger:cli", "customer:globex", "currency:usd"} <= set(run.tags)
    key = artifact_key(request.request_id)
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    story = str(artifact.data)
    assert f"**Status:** sent · **Stripe invoice:** `{status.stripe_invoice_id}`" in story
    assert "Consulting hour (`consulting-hour`)" in story and "**Total:** 568.18 USD" in story
    assert "sk_test" not in story

    [price] = stripe_client.v1.prices.list({"lookup_keys": ["invoiceflow:travel:usd:4825"]}).data
    stripe_client.v1.prices.update(price.id, {"active": False})
    refused = make_request(f"story-refused-{uuid.uuid4().hex[:8]}", customer="globex")
    with pytest.raises(Exception, match="archived"):
        run_invoice(refused)
    [failed] = _flow_runs(f"invoice-{refused.request_id}")
    assert failed.state is not None and failed.state.is_failed()
    assert "reactivate it in the Dashboard" in (failed.state.message or "")
    assert "Stripe refused it for good" in (failed.state.message or "")
