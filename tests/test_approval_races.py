"""Approving while the customer pays: the payment's webhook and the approval meet on one row.

`approve` finalizes a held draft and sends it; the sandbox holds the send open (then
answers a retryable 500) while the customer pays the now-open invoice and Stripe delivers
`invoice.paid` to our receiver, which applies it under the row lock. The approval then
retries its send. Forward-only facts: the request ends paid (never back to sent), with one
invoice, sent at most once, and approving again writes nothing.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.approval import decide
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.runtime import get_runtime
from tests.helpers import invoices_for, make_request, sent_events, stalled, wait_for, writes
from tests.test_approval import _hold_in_process
from tests.webhooks import Receiver, registered_receiver

pytestmark = pytest.mark.usefixtures("configured")


@pytest.fixture
def receiver(
    stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> Any:
    with registered_receiver(stripe_client, monkeypatch, database_url) as running:
        yield running


@pytest.mark.backend  # the row lock the approval and the webhook share, on both databases
def test_a_payment_arriving_while_a_draft_is_approved_leaves_it_paid_and_sent_once(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    receiver: Receiver,
    database_url: str,
    tmp_path: Path,
) -> None:
    request = make_request(f"race-{uuid.uuid4().hex[:8]}", customer="race-acme")
    run_id = _hold_in_process(database_url, tmp_path, [request])
    engine = get_runtime().engine
    invoice_id = ledger.require(engine, request.request_id).stripe_invoice_id
    assert invoice_id is not None
    send = f"/v1/invoices/{invoice_id}/send"
    sandbox.configure(
        stall_ms=4000, faults=[{"method": "POST", "path": send, "when": "stall_before_write"}]
    )
    decisions: list[decide.Decision] = []
    approving = threading.Thread(
        target=lambda: decisions.append(decide.approve(get_runtime(), run_id, "alice"))
    )
    approving.start()

    wait_for(lambda: stalled(sandbox, "stall_before_write"), "the approval's send to stall")
    assert stripe_client.v1.invoices.retrieve(invoice_id).status == "open"  # finalized
    stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})  # paid meanwhile
    wait_for(
        lambda: ledger.require(engine, request.request_id).point is RecoveryPoint.PAID,
        "invoice.paid to be applied while the send is held",
    )
    approving.join(timeout=120)

    assert not approving.is_alive()
    [decision] = decisions
    assert decision.failures == [] and decision.decided == [request.request_id], decision
    [invoice] = invoices_for(stripe_client, request.request_id)
    assert (invoice.id, invoice.status) == (invoice_id, "paid")
    assert sent_events(stripe_client, invoice_id) <= 1
    row = ledger.require(engine, request.request_id)
    assert row.point is RecoveryPoint.PAID  # the payment stands: approving did not undo it
    points = [e.to_point for e in ledger.audit_trail(engine, request.request_id)]
    assert "sent" not in points[points.index("paid") :], points  # nothing moved it back

    writes_before = len(writes(sandbox))
    again = decide.approve(get_runtime(), run_id, "alice")
    assert again.already == [request.request_id] and again.failures == []
    assert len(writes(sandbox)) == writes_before
