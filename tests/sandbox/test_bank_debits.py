"""Bank debits (Stripe's ACH test payment methods): processing, then paid or failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import stripe

from stripe_sandbox import RunningSandbox
from tests.clock import advance_clock
from tests.helpers import wait_for
from tests.sandbox.conftest import API_KEY
from tests.sandbox.stripe_schemas import require_schemas, violations

DAY = 86_400
START = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)


def _events(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    """Every event, oldest first, as raw JSON."""
    events: list[dict[str, Any]] = httpx.get(
        f"{sandbox.url}/v1/events",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()["data"]
    return events[::-1]


def _since(events: list[dict[str, Any]], first_type: str) -> list[tuple[str, str]]:
    """(type, object id) of the events from the first of `first_type` on."""
    start = next(i for i, event in enumerate(events) if event["type"] == first_type)
    return [(event["type"], event["data"]["object"]["id"]) for event in events[start:]]


def _open_invoice(client: stripe.StripeClient, **customer: Any) -> stripe.Invoice:
    params: Any = {"email": "ada@example.com", **customer}
    payer = client.v1.customers.create(params)
    draft = client.v1.invoices.create({"customer": payer.id})
    client.v1.invoice_items.create({"customer": payer.id, "invoice": draft.id, "amount": 5000})
    return client.v1.invoices.finalize_invoice(draft.id)


def _intent_of(client: stripe.StripeClient, invoice_id: str) -> str:
    (payment,) = client.v1.invoice_payments.list({"invoice": invoice_id}).data
    return str(payment.payment.payment_intent)


@pytest.fixture(autouse=True)
def _held_debits(sandbox: RunningSandbox) -> None:
    """Outcomes only when a test asks for them (`settle_bank_debits`)."""
    sandbox.configure(bank_debit_settle_ms=None)


def test_a_bank_debit_processes_then_pays_the_invoice(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    invoice = _open_invoice(client)
    intent = _intent_of(client, invoice.id)

    paying = client.v1.invoices.pay(invoice.id, {"payment_method": "pm_usBankAccount_success"})

    assert (paying.status, paying.attempted, paying.attempt_count) == ("open", True, 1)
    assert paying.amount_paid == 0 and paying.amount_remaining == 5000
    # The PaymentIntent an event names leads back to its invoice.
    (found,) = client.v1.invoice_payments.list(
        {"payment": {"type": "payment_intent", "payment_intent": intent}}
    ).data
    assert (found.invoice, found.status) == (invoice.id, "open")
    assert _since(_events(sandbox), "payment_intent.processing") == [
        ("payment_intent.processing", intent),
        ("invoice.updated", invoice.id),
    ]
    processing = _events(sandbox)[-2]["data"]["object"]
    assert (processing["status"], processing["payment_method"]) == (
        "processing",
        "pm_usBankAccount_success",
    )
    with pytest.raises(stripe.InvalidRequestError) as paying_twice:
        client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
    with pytest.raises(stripe.InvalidRequestError) as voiding:
        client.v1.invoices.void_invoice(invoice.id)
    for refused in (paying_twice, voiding):
        assert refused.value.code == "payment_intent_unexpected_state"

    assert sandbox.settle_bank_debits() == [intent]

    paid = client.v1.invoices.retrieve(invoice.id)
    assert (paid.status, paid.amount_paid) == ("paid", 5000)
    assert paid.status_transitions.paid_at is not None
    assert _since(_events(sandbox), "payment_intent.succeeded") == [
        ("payment_intent.succeeded", intent),
        ("invoice.paid", invoice.id),
        ("invoice.payment_succeeded", invoice.id),
        ("invoice.updated", invoice.id),
    ]
    assert all(event["request"]["id"] is None for event in _events(sandbox)[-4:])
    assert sandbox.settle_bank_debits() == []  # settled once


def test_a_failed_bank_debit_leaves_the_invoice_open_with_the_reason(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    invoice = _open_invoice(client)
    intent = _intent_of(client, invoice.id)
    client.v1.invoices.pay(invoice.id, {"payment_method": "pm_usBankAccount_insufficientFunds"})

    sandbox.settle_bank_debits(invoice.id)

    still = client.v1.invoices.retrieve(invoice.id)
    assert (still.status, still.amount_remaining, still.attempt_count) == ("open", 5000, 1)
    assert _since(_events(sandbox), "payment_intent.payment_failed") == [
        ("payment_intent.payment_failed", intent),
        ("invoice.payment_failed", invoice.id),
        ("invoice.updated", invoice.id),
    ]
    failed = next(
        event["data"]["object"]
        for event in _events(sandbox)
        if event["type"] == "payment_intent.payment_failed"
    )
    assert failed["status"] == "requires_payment_method"
    error = failed["last_payment_error"]
    assert (error["code"], error["payment_method_type"]) == (
        "insufficient_funds",
        "us_bank_account",
    )
    assert "insufficient funds" in error["message"]
    # The customer can pay again, by card this time.
    assert client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"}).status == "paid"


def test_without_a_test_clock_the_outcome_comes_after_the_configured_wait(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    sandbox.configure(bank_debit_settle_ms=50)
    invoice = _open_invoice(client)
    client.v1.invoices.pay(invoice.id, {"payment_method": "pm_usBankAccount_accountClosed"})

    failed = wait_for(
        lambda: [e for e in _events(sandbox) if e["type"] == "invoice.payment_failed"],
        "the bank debit's outcome",
        timeout=10,
    )

    assert failed[0]["data"]["object"]["id"] == invoice.id
    intent = client.v1.invoice_payments.list({"invoice": invoice.id}).data[0].payment
    assert intent.payment_intent is not None


def test_on_a_test_clock_the_outcome_comes_bank_debit_days_later(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(START.timestamp())})
    invoice = _open_invoice(client, test_clock=clock.id)
    client.v1.invoices.pay(invoice.id, {"payment_method": "pm_usBankAccount_success"})

    advance_clock(client, clock.id, START + timedelta(days=3))
    assert client.v1.invoices.retrieve(invoice.id).status == "open"
    advance_clock(client, clock.id, START + timedelta(days=10))

    paid = client.v1.invoices.retrieve(invoice.id)
    settled_at = int((START + timedelta(days=4)).timestamp())
    assert (paid.status, paid.status_transitions.paid_at) == ("paid", settled_at)
    stamps = {
        event["type"]: event["created"]
        for event in _events(sandbox)
        if event["type"].startswith(("payment_intent.", "invoice.paid"))
    }
    assert stamps == {
        "payment_intent.processing": int(START.timestamp()),
        "payment_intent.succeeded": settled_at,
        "invoice.paid": settled_at,
    }


def test_what_a_bank_debit_cannot_pay(sandbox: RunningSandbox, client: stripe.StripeClient) -> None:
    euros = _open_invoice(client)
    euro_draft = client.v1.invoices.create({"customer": str(euros.customer), "currency": "eur"})
    client.v1.invoice_items.create(
        {"customer": str(euros.customer), "invoice": euro_draft.id, "amount": 900}
    )
    with pytest.raises(stripe.InvalidRequestError) as currency:
        client.v1.invoices.pay(euro_draft.id, {"payment_method": "pm_usBankAccount_success"})
    assert currency.value.param == "payment_method"
    assert client.v1.invoices.retrieve(euro_draft.id).status == "draft"  # refused up front

    cards_only = client.v1.invoices.create(
        {"customer": str(euros.customer), "payment_settings": {"payment_method_types": ["card"]}}
    )
    client.v1.invoice_items.create(
        {"customer": str(euros.customer), "invoice": cards_only.id, "amount": 900}
    )
    with pytest.raises(stripe.InvalidRequestError) as method_type:
        client.v1.invoices.pay(cards_only.id, {"payment_method": "pm_usBankAccount_success"})
    assert "payment_method_types" in str(method_type.value.user_message)

    forever = _open_invoice(client)
    client.v1.invoices.pay(forever.id, {"payment_method": "pm_usBankAccount_processing"})
    assert sandbox.settle_bank_debits() == []  # Stripe's "stays in processing" method
    with pytest.raises(stripe.InvalidRequestError) as revise:
        client.v1.invoices.create({"from_invoice": {"action": "revision", "invoice": forever.id}})
    assert revise.value.code == "payment_intent_unexpected_state"


def test_bank_debit_bodies_and_events_are_valid_under_stripes_schemas(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    require_schemas()
    sandbox.configure(record_responses=True)
    for method in ("pm_usBankAccount_success", "pm_usBankAccount_debitNotAuthorized"):
        invoice = _open_invoice(client)
        client.v1.invoices.pay(invoice.id, {"payment_method": method})
        client.v1.invoice_payments.retrieve(
            client.v1.invoice_payments.list({"invoice": invoice.id}).data[0].id
        )
    sandbox.settle_bank_debits()
    client.v1.invoices.retrieve(invoice.id, {"expand": ["payments.data.payment.payment_intent"]})

    problems = [
        problem
        for r in sandbox.responses()
        for problem in violations(r["body"], status=r["status"], where=r["path"])
    ]
    problems += [p for event in _events(sandbox) for p in violations(event, where=event["type"])]
    assert problems == [], "\n".join(problems[:20])
