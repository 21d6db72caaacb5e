"""What the receiver refuses (400, nothing changed), rotation, ambiguity, and a paid
invoice our ledger had not seen sent. Genuine bodies are the sandbox's own signed
deliveries, captured on their way and replayed to our receiver over HTTP. Requests are
billed through the plain pipeline: no Prefect server takes part in receiving."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy import update

from invoiceflow import ledger
from invoiceflow.db.engine import transaction
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from stripe_sandbox.webhooks import sign
from tests.helpers import bill_plain, invoices_for, make_request, wait_for
from tests.sandbox.receiver import Received, webhook_receiver
from tests.sandbox.receiver import Receiver as Capture
from tests.webhooks import Receiver, event_of, inbox_rows, moves_to, serve_receiver

pytestmark = pytest.mark.usefixtures("configured")

NEW_SECRET = "whsec_theNewOneAfterRotation0123456789"


@pytest.fixture
def capture(stripe_client: stripe.StripeClient) -> Iterator[tuple[Capture, str]]:
    """A stand-in endpoint in the sandbox that records each signed delivery, and its secret."""
    with webhook_receiver() as recorder:
        secret = stripe_client.v1.webhook_endpoints.create(
            {"url": recorder.url, "enabled_events": ["*"]}
        ).secret
        yield recorder, secret


@pytest.fixture
def receiver(
    capture: tuple[Capture, str], monkeypatch: pytest.MonkeyPatch, database_url: str
) -> Iterator[Receiver]:
    """Our receiver mid-rotation: the sandbox endpoint's (old) secret and a new one."""
    with serve_receiver(monkeypatch, database_url, [capture[1], NEW_SECRET]) as running:
        yield running


def _paid_delivery(
    client: stripe.StripeClient, capture: Capture, how: dict[str, Any]
) -> tuple[str, str, Received]:
    """Bill a request to `sent`, pay; the request id, invoice id and the signed invoice.paid."""
    request = make_request(f"req-in-{uuid.uuid4().hex[:8]}")
    bill_plain(request)
    [invoice] = invoices_for(client, request.request_id)
    client.v1.invoices.pay(invoice.id, how)

    def paid() -> Received | None:
        return next(
            (r for r in list(capture.received) if json.loads(r.body)["type"] == "invoice.paid"),
            None,
        )

    received: Received = wait_for(paid, "the sandbox to deliver invoice.paid", timeout=30)
    return request.request_id, invoice.id, received


def _bad(receiver: Receiver, body: bytes, signature: str | None, reason: str) -> None:
    answer = receiver.post(body, signature)
    assert answer.status_code == 400, answer.text
    assert reason in answer.json()["errors"][0]
    assert "whsec_" not in answer.text  # no secret, and no signature, is ever echoed
    assert not signature or signature not in answer.text


def test_bad_requests_get_400_and_change_nothing(
    stripe_client: stripe.StripeClient,
    capture: tuple[Capture, str],
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    request_id, _invoice_id, genuine = _paid_delivery(
        stripe_client, capture[0], {"paid_out_of_band": True}
    )
    body, secret, now = genuine.body, capture[1], int(time.time())
    trail = len(ledger.audit_trail(receiver.engine, request_id))
    tampered = genuine.signature[:-4] + ("0000" if genuine.signature[-4:] != "0000" else "1111")

    _bad(receiver, body, None, "missing Stripe-Signature")
    _bad(receiver, body, "v1=abc", "malformed Stripe-Signature")
    _bad(receiver, body, tampered, "no Stripe-Signature matches")
    _bad(receiver, body, sign(body, secret, now - 400), "outside the tolerance")
    _bad(receiver, body, sign(body, "whsec_wrong", now), "no Stripe-Signature matches")
    _bad(receiver, body[:-20], genuine.signature, "no Stripe-Signature matches")  # truncated
    _bad(receiver, body[:-20], sign(body[:-20], secret, now), "not valid JSON")
    _bad(receiver, b"[1, 2]", sign(b"[1, 2]", secret, now), "not a JSON object")
    huge = json.dumps({**json.loads(body), "padding": "x" * 300_000}).encode()
    _bad(receiver, huge, sign(huge, secret, now), "body larger than")

    assert inbox_rows(receiver.engine) == []
    assert ledger.require(receiver.engine, request_id).point is RecoveryPoint.SENT
    assert len(ledger.audit_trail(receiver.engine, request_id)) == trail

    answer = receiver.post(body, genuine.signature)  # the real one, signed by the old secret
    assert answer.status_code == 200 and answer.json()["outcome"] == "applied"
    assert ledger.require(receiver.engine, request_id).point is RecoveryPoint.PAID
    again = receiver.post(body, genuine.signature)
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert moves_to(receiver.engine, request_id, "paid") == 1
    assert httpx.get(receiver.base + "/healthz", timeout=10).json() == {"ok": True}
    for secret_value in (secret, NEW_SECRET):
        assert secret_value not in caplog.text
        assert all(secret_value not in repr(row) for row in inbox_rows(receiver.engine))


def test_rotation_accepts_old_and_new_secret(
    stripe_client: stripe.StripeClient, capture: tuple[Capture, str], receiver: Receiver
) -> None:
    request_id, invoice_id, genuine = _paid_delivery(
        stripe_client, capture[0], {"payment_method": "pm_card_visa"}
    )
    assert receiver.post(genuine.body, genuine.signature).status_code == 200  # old secret
    updated = event_of(stripe_client, "invoice.updated", invoice_id)
    answer = receiver.post_signed(updated, NEW_SECRET)
    assert answer.status_code == 200 and answer.json()["outcome"] == "unchanged"
    assert {r.type for r in inbox_rows(receiver.engine)} == {"invoice.paid", "invoice.updated"}
    assert moves_to(receiver.engine, request_id, "paid") == 1


def test_an_ambiguous_event_is_settled_by_reading_stripe(
    stripe_client: stripe.StripeClient, capture: tuple[Capture, str], receiver: Receiver
) -> None:
    request_id, invoice_id, _genuine = _paid_delivery(
        stripe_client, capture[0], {"paid_out_of_band": True}
    )
    # Says "paid" but carries an open snapshot: Stripe itself is asked.
    odd = event_of(stripe_client, "invoice.finalized", invoice_id)
    odd.update(id="evt_odd_snapshot", type="invoice.paid")
    assert odd["data"]["object"]["status"] == "open"
    answer = receiver.post_signed(odd, NEW_SECRET)
    assert answer.status_code == 200 and answer.json()["outcome"] == "applied"
    [paid] = [e for e in ledger.audit_trail(receiver.engine, request_id) if e.to_point == "paid"]
    assert paid.message == "invoice paid (read from Stripe)"
    assert ledger.require(receiver.engine, request_id).amount_paid is not None


def test_paid_in_stripe_before_our_ledger_saw_it_sent(
    stripe_client: stripe.StripeClient, capture: tuple[Capture, str], receiver: Receiver
) -> None:
    request_id, _invoice_id, genuine = _paid_delivery(
        stripe_client, capture[0], {"paid_out_of_band": True}
    )
    # As a run that failed right after finalizing leaves it.
    with transaction(receiver.engine) as session:
        session.execute(
            update(BillingRequestRow)
            .where(BillingRequestRow.request_id == request_id)  # type: ignore[arg-type]
            .values(recovery_point="failed", progress_point="finalized", last_error="boom")
        )
    # A run holds the request's lease: the payment is recorded all the same (the
    # row lock serialises us with it; no lease is needed to record Stripe's fact).
    assert ledger.acquire_lease(receiver.engine, request_id, "another-run", 300)
    assert receiver.post(genuine.body, genuine.signature).json()["outcome"] == "applied"
    row = ledger.require(receiver.engine, request_id)
    assert row.point is RecoveryPoint.PAID and row.progress is RecoveryPoint.PAID
    assert row.lease_owner == "another-run"  # untouched: it is that run's to release
    assert row.last_error is None
    [paid] = [e for e in ledger.audit_trail(receiver.engine, request_id) if e.to_point == "paid"]
    assert paid.from_point == "failed"
