"""The customer pays the original invoice while its revision is still a draft.

Stripe then refuses to finalize the revision (its original can no longer be voided),
and the payment is the request's outcome whichever we hear of first: the signed
`invoice.paid` (our receiver, served over HTTP, puts the request back at the paid
version) or Stripe's refusal (amend reads the original and does the same). Both end
with the request paid on the original, the draft revision deleted, one payment, and
`amend` saying so in one line with exit 4.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.amend import versions
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.runtime import get_runtime
from tests.helpers import invoices_for, stalled, wait_for
from tests.inprocess_cli import Invoke, configured_cli
from tests.test_amend import _changed, _file, _sent
from tests.webhooks import Receiver, inbox_rows, registered_receiver, serve_receiver

FINALIZE = {"method": "POST", "path": "/finalize$", "when": "stall_before_write"}


@pytest.fixture
def cli(
    configured: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Invoke:
    return configured_cli(monkeypatch, request, configured)


def _pay_while_finalize_stalls(
    sandbox: Any, stripe_client: stripe.StripeClient, invoice_id: str, heard: Any = None
) -> threading.Thread:
    """Hold amend's finalize open, pay `invoice_id` meanwhile (and wait for `heard()`,
    the receiver's record of it), then let the finalize go to Stripe."""
    sandbox.configure(stall_ms=120_000, faults=[FINALIZE])

    def pay() -> None:
        try:
            wait_for(lambda: stalled(sandbox, "stall_before_write"), "amend's finalize to stall")
            stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
            if heard is not None:
                wait_for(heard, "invoice.paid to be applied while the finalize is held")
        finally:
            sandbox.release_stalls()

    payer = threading.Thread(target=pay)
    payer.start()
    return payer


def _assert_paid_on_the_original(
    stripe_client: stripe.StripeClient, rid: str, original: str, refused: Any, status: Any
) -> None:
    assert refused.exit_code == 4, (refused.stdout, refused.stderr[-3000:])
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {rid}: invoice {original} was paid meanwhile, so version 2 was not made "
        "(its draft revision deleted) — the request stays as it was paid; bill the change "
        "under a new request_id"
    )
    engine = get_runtime().engine
    row = ledger.require(engine, rid)
    assert (row.point, row.stripe_invoice_id) == (RecoveryPoint.PAID, original)
    [invoice] = invoices_for(stripe_client, rid)  # the draft revision is gone
    assert (invoice.id, invoice.status, invoice.amount_paid) == (original, "paid", row.total_amount)
    assert row.total_amount == invoice.total  # the row is the paid version's content again
    paid = [
        e
        for e in stripe_client.v1.events.list({"type": "invoice.paid", "limit": 100}).data
        if e.data.object["id"] == original
    ]
    assert len(paid) == 1  # one payment
    chain = [(v.version, v.state) for v in versions.chain(engine, rid)]
    assert chain == [(1, "paid"), (2, "dropped")]
    assert status.exit_code == 0, status.stdout
    assert f"v1 {original} {row.invoice_number} paid" in status.stdout
    assert "dropped" in status.stdout


@pytest.mark.backend  # the row lock the webhook and amend share, on both databases
def test_invoice_paid_heard_before_amends_finalize_leaves_the_original_paid(
    cli: Invoke,
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    tmp_path: Path,
) -> None:
    request = _sent(uuid.uuid4().hex[:8])
    rid = request.request_id
    engine = get_runtime().engine
    original = str(ledger.require(engine, rid).stripe_invoice_id)
    with registered_receiver(stripe_client, monkeypatch, database_url):
        payer = _pay_while_finalize_stalls(
            sandbox,
            stripe_client,
            original,
            heard=lambda: ledger.require(engine, rid).point is RecoveryPoint.PAID,
        )
        refused = cli("amend", _file(tmp_path, _changed(request)))
        payer.join(timeout=120)
    sandbox.configure(faults=[])

    [applied] = [e for e in inbox_rows(engine, "invoice.paid") if e.invoice_id == original]
    assert applied.outcome.startswith("applied"), applied.outcome
    _assert_paid_on_the_original(stripe_client, rid, original, refused, cli("status", rid))


@pytest.mark.backend
def test_invoice_paid_heard_after_the_refusal_changes_nothing_more(
    cli: Invoke,
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    tmp_path: Path,
) -> None:
    request = _sent(uuid.uuid4().hex[:8])
    rid = request.request_id
    original = str(ledger.require(get_runtime().engine, rid).stripe_invoice_id)
    payer = _pay_while_finalize_stalls(sandbox, stripe_client, original)  # no receiver yet
    refused = cli("amend", _file(tmp_path, _changed(request)))
    payer.join(timeout=120)
    sandbox.configure(faults=[])

    [event] = [
        e
        for e in stripe_client.v1.events.list({"type": "invoice.paid", "limit": 100}).data
        if e.data.object["id"] == original
    ]
    with serve_receiver(monkeypatch, database_url, ["whsec_amendPaidLate0123456789abcd"]) as got:
        receiver: Receiver = got
        # As Stripe would send it again (Decimal amounts as JSON strings, Stripe's own form).
        answer = receiver.post_signed(json.loads(json.dumps(event.to_dict(), default=str)))
    assert answer.status_code == 200, answer.text
    [late] = [e for e in inbox_rows(receiver.engine, "invoice.paid") if e.event_id == event.id]
    assert late.outcome == "unchanged: request already paid", late.outcome
    _assert_paid_on_the_original(stripe_client, rid, original, refused, cli("status", rid))
    again = cli("amend", _file(tmp_path, _changed(request)))
    assert again.exit_code == 4 and "is paid" in again.stderr
