"""An invoice run never stays `AwaitingPayment` after its invoice moved on (issue 22,
item 6; issue 24.3): whoever moved the ledger without serve's sweeper tells the
ending too — reconcile settling by reading the invoice, the local-mode CLI after
its wait, a late webhook after dunning's own write-off — and a payment processing
shows `PaymentPending`, then `AwaitingPayment` with its reason when it fails.

Each is read back from Prefect's API (the session's server, in process), after the
sandbox moved the invoice over HTTP. SQLite: the telling does not depend on the
database (the ledger's moves are proven on both in their own tests).
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.runtime import get_runtime
from tests.helpers import invoices_for, make_request, wait_for
from tests.inprocess_cli import in_process_cli
from tests.webhooks import event_of, registered_receiver, serve_receiver

pytestmark = [
    pytest.mark.usefixtures("configured", "prefect_api"),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


def _state(request_id: str) -> tuple[str, str]:
    """The name and message the Prefect UI shows on every invoice run of the request
    (a rerun is a run of its own: each is told alike)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"invoice-{request_id}"]))
        )
    states = {(run.state.name, run.state.message or "") for run in runs if run.state}
    assert len(runs) >= 1 and len(states) == 1, states
    assert all(run.state is not None and run.state.is_completed() for run in runs)
    [state] = states
    return state


def _story(request_id: str) -> str:
    """The story artifact's latest version (what the UI's artifact page shows first)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactCollectionFilter,
        ArtifactCollectionFilterKey,
    )

    from invoiceflow import story

    key = ArtifactCollectionFilterKey(any_=[story.artifact_key(request_id)])
    with get_client(sync_client=True) as client:
        [latest] = client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(key=key))
    return str(latest.data)


def _awaiting_payment(stripe_client: stripe.StripeClient, name: str) -> tuple[str, str]:
    """An invoice run ended `AwaitingPayment`: the request id and its invoice id."""
    from flows.invoice import AWAITING_PAYMENT, invoice_flow

    request = make_request(f"req-{name}-{uuid.uuid4().hex[:8]}")
    assert invoice_flow(request, return_state=True).name == AWAITING_PAYMENT
    [invoice] = invoices_for(stripe_client, request.request_id)
    return request.request_id, invoice.id


def test_reconcile_settling_by_reading_the_invoice_tells_the_ending(
    stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch, request: Any
) -> None:
    """No receiver, and no event left to sweep (a cursor past them, as after Stripe's
    30 days): `invoiceflow reconcile` settles the request by reading its invoice, and
    its invoice run turns `Paid`, its story `paid`."""
    from invoiceflow.reconcile.window import advance_cursor

    request_id, invoice_id = _awaiting_payment(stripe_client, "reconcile")
    stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
    newest = max(e.created for e in stripe_client.v1.events.list({"limit": 100}).auto_paging_iter())
    advance_cursor(get_runtime().engine, newest + 3600)

    result = in_process_cli(monkeypatch, request)("reconcile")

    assert result.exit_code == 0, result.stderr
    assert f"settled {request_id}: invoice {invoice_id} is paid" in result.stdout
    name, message = _state(request_id)
    assert name == "Paid" and message.startswith(f"{request_id}: paid")
    assert "**Status:** paid" in _story(request_id)


def test_the_local_cli_tells_the_ending_after_its_wait(
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
    request: Any,
    database_url: str,
    tmp_path: Path,
) -> None:
    """`invoiceflow invoice FILE` (no serve, no sweeper): the run ends `AwaitingPayment`,
    the CLI waits, the customer pays, the receiver records it; the CLI prints paid and
    the invoice run says `Paid` before the command returns."""
    billing = make_request(f"req-cli-{uuid.uuid4().hex[:8]}")
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(billing.model_dump(mode="json")))
    monkeypatch.setenv("INVOICEFLOW_AWAIT_PAID_SECONDS", "120")
    engine = get_runtime().engine

    def pay_once_sent() -> None:
        wait_for(
            lambda: (
                (row := ledger.load(engine, billing.request_id)) is not None
                and row.point is RecoveryPoint.SENT
            ),
            "the run to send the invoice",
        )
        [invoice] = invoices_for(stripe_client, billing.request_id)
        stripe_client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})

    with registered_receiver(stripe_client, monkeypatch, database_url):
        customer = threading.Thread(target=pay_once_sent, daemon=True)
        customer.start()
        result = in_process_cli(monkeypatch, request)("invoice", str(request_file))
        customer.join(timeout=30)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"{billing.request_id}: paid"), result.stdout
    assert _state(billing.request_id)[0] == "Paid"
    assert "**Status:** paid" in _story(billing.request_id)


def test_a_late_webhook_after_dunnings_write_off_is_told(
    stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """Dunning wrote the invoice off and recorded it, with no dunning flow to tell it;
    Stripe's `invoice.marked_uncollectible` arrives after, finding the request already
    uncollectible (`unchanged`). It is still told: one sweep turns the run
    `Uncollectible`, and a second finds nothing."""
    from invoiceflow.service.sweeper import sweep_once
    from invoiceflow.webhooks import inbox
    from tests.dunning_runs import dun_in_sequence

    request_id, invoice_id = _awaiting_payment(stripe_client, "writeoff")
    dun_in_sequence(datetime.now(UTC) + timedelta(days=365))
    engine = get_runtime().engine
    assert ledger.require(engine, request_id).point is RecoveryPoint.UNCOLLECTIBLE
    assert _state(request_id)[0] == "AwaitingPayment"  # nobody told it yet

    secret = f"whsec_{uuid.uuid4().hex}"
    with serve_receiver(monkeypatch, database_url, [secret]) as receiver:
        late = receiver.post_signed(
            event_of(stripe_client, "invoice.marked_uncollectible", invoice_id)
        )
    assert late.status_code == 200 and late.json()["outcome"] == "unchanged"
    assert [e.request_id for e in inbox.pending_settles(engine)] == [request_id]

    assert sweep_once(engine) == 1
    assert sweep_once(engine) == 0
    name, message = _state(request_id)
    assert name == "Uncollectible" and message.startswith(f"{request_id}: uncollectible")
    assert "**Status:** uncollectible" in _story(request_id)


def test_a_payment_pending_shows_then_fails_back_to_awaiting_with_its_reason(
    sandbox: Any, stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bank debit processing: the run says `PaymentPending` and the story 'payment
    pending' (a run ending meanwhile ends so too); the bank refuses it: the run is
    `AwaitingPayment` again with the decline in its message, and the story says sent
    with the reason."""
    from flows.invoice import invoice_flow
    from invoiceflow.service.sweeper import sweep_once

    sandbox.configure(bank_debit_settle_ms=None)  # the bank answers when the test says so
    database_url = get_runtime().settings.database_url
    with registered_receiver(stripe_client, monkeypatch, database_url) as receiver:
        request_id, invoice_id = _awaiting_payment(stripe_client, "debit")
        engine = receiver.engine
        stripe_client.v1.invoices.pay(
            invoice_id, {"payment_method": "pm_usBankAccount_insufficientFunds"}
        )
        wait_for(
            lambda: ledger.require(engine, request_id).payment_pending_since is not None,
            "the payment pending",
        )
        assert sweep_once(engine) == 1
        name, message = _state(request_id)
        assert name == "PaymentPending"
        assert message.startswith(f"{request_id}: payment pending — {invoice_id}")
        assert "**Status:** payment pending (since " in _story(request_id)
        # A run of the request meanwhile (a rerun) ends the same way.
        rerun = make_request(request_id)
        assert invoice_flow(rerun, return_state=True).name == "PaymentPending"

        sandbox.settle_bank_debits()  # the bank refuses it
        wait_for(
            lambda: ledger.require(engine, request_id).payment_pending_since is None,
            "the payment to fail",
        )
        wait_for(lambda: sweep_once(engine) >= 1, "the failure told")

    name, message = _state(request_id)
    assert name == "AwaitingPayment"
    assert message.startswith(f"{request_id}: sent — {invoice_id}")
    assert "payment failed" in message
    told = _story(request_id)
    assert "**Status:** sent" in told and "payment failed" in told


def test_every_name_an_invoice_run_ends_with_closes_the_crashed_runs_window() -> None:
    """A run ending `PaymentPending` (or any of our Completed names) has ended: the
    automation must not wait for its heartbeat and mark it Crashed."""
    from invoiceflow.endings import STATE_NAMES
    from invoiceflow.service.automations import FINAL_EVENTS

    assert {f"prefect.flow-run.{name}" for name in STATE_NAMES} <= set(FINAL_EVENTS)
