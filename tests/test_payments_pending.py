"""Payments pending: a bank debit processes for days before it pays or fails.

The customer pays the sent invoice by bank debit in the sandbox; Stripe sends
`payment_intent.processing` (naming a PaymentIntent, not the invoice), signed, to our
receiver over HTTP, which finds the invoice through Stripe's invoice payments under our
key. `status` then says "payment pending" and dunning leaves the customer alone. When
the bank answers (the sandbox's settle), `invoice.payment_failed` returns the invoice to
open with its reason, or `invoice.paid` settles it. SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.dunning.report import Outcome
from invoiceflow.status import RequestStatus
from tests.dunning_runs import dun_in_sequence
from tests.helpers import bill_plain, make_request, wait_for
from tests.webhooks import Receiver, inbox_rows, registered_receiver

pytestmark = [pytest.mark.usefixtures("configured"), pytest.mark.backend]


@pytest.fixture
def receiver(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> Any:
    sandbox.configure(bank_debit_settle_ms=None)  # the bank answers when the test says so
    with registered_receiver(stripe_client, monkeypatch, database_url) as running:
        yield running


def _status(receiver: Receiver, request_id: str) -> RequestStatus:
    return RequestStatus.from_row(ledger.require(receiver.engine, request_id))


def _paying_by_bank_debit(
    receiver: Receiver, client: stripe.StripeClient, method: str
) -> tuple[str, str]:
    """A sent invoice its customer pays by bank debit: (request id, invoice id), pending."""
    request = make_request(f"debit-{uuid.uuid4().hex[:8]}")
    assert bill_plain(request).state is RecoveryPoint.SENT
    invoice_id = ledger.require(receiver.engine, request.request_id).stripe_invoice_id
    assert invoice_id is not None
    still_open = client.v1.invoices.pay(invoice_id, {"payment_method": method})
    assert still_open.status == "open"
    wait_for(lambda: _status(receiver, request.request_id).payment_pending, "the payment pending")
    return request.request_id, invoice_id


def test_a_failed_bank_debit_is_pending_then_open_with_its_reason_and_never_reminded(
    sandbox: Any, stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    request_id, invoice_id = _paying_by_bank_debit(
        receiver, stripe_client, "pm_usBankAccount_insufficientFunds"
    )
    pending = _status(receiver, request_id)
    assert pending.one_line().startswith(f"{request_id}: payment pending — {invoice_id}")
    [processing] = inbox_rows(receiver.engine, "payment_intent.processing")
    assert processing.request_id == request_id and processing.invoice_id == invoice_id
    assert processing.outcome == f"recorded: request {request_id}: payment pending"

    # Long past due: dunning would remind, but the customer has paid and the bank is slow.
    report = dun_in_sequence(datetime.now(UTC) + timedelta(days=30))
    [line] = [one for one in report.lines if one.request_id == request_id]
    assert line.outcome is Outcome.PAYMENT_PENDING
    assert not any(e.type == "invoice.sent" for e in _events_after_send(stripe_client, invoice_id))

    sandbox.settle_bank_debits()  # the bank refuses it
    wait_for(lambda: not _status(receiver, request_id).payment_pending, "the payment to end")
    failed = _status(receiver, request_id)
    assert failed.state is RecoveryPoint.SENT
    assert failed.one_line().startswith(f"{request_id}: sent — {invoice_id}")
    assert failed.last_error is not None and "payment failed" in failed.last_error
    assert stripe_client.v1.invoices.retrieve(invoice_id).status == "open"


def test_a_bank_debit_that_clears_settles_the_invoice(
    sandbox: Any, stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    request_id, invoice_id = _paying_by_bank_debit(
        receiver, stripe_client, "pm_usBankAccount_success"
    )

    sandbox.settle_bank_debits()

    wait_for(lambda: _status(receiver, request_id).state is RecoveryPoint.PAID, "paid")
    paid = _status(receiver, request_id)
    assert not paid.payment_pending
    assert ledger.require(receiver.engine, request_id).payment_pending_since is None
    assert paid.one_line().startswith(f"{request_id}: paid — {invoice_id}")


def test_a_processing_event_for_a_payment_not_ours_moves_nothing(
    stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    request = make_request(f"debit-{uuid.uuid4().hex[:8]}")
    bill_plain(request)
    forged = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": "payment_intent.processing",
        "created": int(datetime.now(UTC).timestamp()),
        "livemode": False,
        "data": {"object": {"id": "pi_someoneelses", "object": "payment_intent"}},
    }

    answer = receiver.post_signed(forged)

    assert answer.status_code == 200 and answer.json()["outcome"] == "ignored"
    assert not _status(receiver, request.request_id).payment_pending


def _events_after_send(client: stripe.StripeClient, invoice_id: str) -> list[Any]:
    """Reminders are `invoice.sent` events past the first one (the invoice's own send)."""
    sent = [
        event
        for event in client.v1.events.list({"type": "invoice.sent", "limit": 100}).data
        if event.data.object["id"] == invoice_id
    ]
    return sent[:-1]  # newest first: all but the original send
