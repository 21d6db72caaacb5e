"""Invoice revisions (`from_invoice[action]=revision`), through the SDK, as Stripe does them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe

from stripe_sandbox import RunningSandbox
from tests.sandbox.conftest import API_KEY
from tests.sandbox.stripe_schemas import require_schemas, violations


def _events(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    """Every event, oldest first, as raw JSON."""
    events: list[dict[str, Any]] = httpx.get(
        f"{sandbox.url}/v1/events",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()["data"]
    return events[::-1]


def _sent_invoice(client: stripe.StripeClient, prefix: str = "REV") -> stripe.Invoice:
    customer = client.v1.customers.create({"email": "ada@example.com", "invoice_prefix": prefix})
    draft = client.v1.invoices.create(
        {
            "customer": customer.id,
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "description": "March",
            "metadata": {"request_id": "req-1"},
        }
    )
    client.v1.invoices.add_lines(
        draft.id,
        {
            "lines": [
                {"amount": 1200, "description": "Consulting"},
                {"amount": 300, "description": "Travel"},
            ]
        },
    )
    return client.v1.invoices.send_invoice(draft.id)


def _revise(client: stripe.StripeClient, invoice_id: str, **extra: Any) -> stripe.Invoice:
    params: Any = {"from_invoice": {"action": "revision", "invoice": invoice_id}, **extra}
    return client.v1.invoices.create(params)


def _customer(invoice: stripe.Invoice) -> str:
    return str(invoice.customer)


def test_a_revision_copies_its_original_and_replaces_it_when_finalized(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    original = _sent_invoice(client)
    assert (original.status, original.number) == ("open", "REV-0001")

    revision = _revise(client, original.id)

    assert revision.status == "draft" and revision.number is None
    assert revision.from_invoice is not None
    assert (revision.from_invoice.action, revision.from_invoice.invoice) == (
        "revision",
        original.id,
    )
    for name in ("customer", "currency", "collection_method", "due_date", "description"):
        assert getattr(revision, name) == getattr(original, name), name
    assert revision.metadata is not None and revision.metadata.to_dict() == {"request_id": "req-1"}
    copied = [(line.amount, line.description) for line in revision.lines.data]
    assert copied == [(1200, "Consulting"), (300, "Travel")]
    assert {line.id for line in revision.lines.data}.isdisjoint(
        line.id for line in original.lines.data
    )
    # Until the revision is finalized the original is untouched.
    assert client.v1.invoices.retrieve(original.id).latest_revision is None

    travel = revision.lines.data[1]
    client.v1.invoices.update_lines(revision.id, {"lines": [{"id": travel.id, "amount": 450}]})
    final = client.v1.invoices.finalize_invoice(revision.id)

    assert (final.status, final.number, final.total) == ("open", "REV-0001-1", 1650)
    voided = client.v1.invoices.retrieve(original.id)
    assert (voided.status, voided.latest_revision) == ("void", revision.id)
    assert voided.status_transitions.voided_at is not None
    # A revision takes no step of the customer's sequence.
    later = client.v1.invoices.create({"customer": _customer(original), "auto_advance": False})
    client.v1.invoice_items.create(
        {"customer": _customer(original), "invoice": later.id, "amount": 9}
    )
    assert client.v1.invoices.finalize_invoice(later.id).number == "REV-0002"

    assert final.last_response is not None
    events = _events(sandbox)
    finalizing = [
        (event["type"], event["data"]["object"]["id"])
        for event in events
        if event["request"]["id"] == final.last_response.request_id
    ]
    assert finalizing == [
        ("invoice.finalized", revision.id),
        ("invoice.voided", original.id),
        ("invoice.updated", original.id),
    ]
    voided_update = next(
        event
        for event in events
        if event["type"] == "invoice.updated"
        and event["data"]["object"]["id"] == original.id
        and event["data"]["object"]["status"] == "void"
    )
    assert voided_update["data"]["previous_attributes"]["latest_revision"] is None
    assert voided_update["data"]["previous_attributes"]["status"] == "open"


def test_versions_are_numbered_from_the_first_and_all_name_the_latest(
    client: stripe.StripeClient,
) -> None:
    first = _sent_invoice(client, prefix="CHN")
    second = client.v1.invoices.finalize_invoice(_revise(client, first.id).id)
    third = client.v1.invoices.finalize_invoice(_revise(client, second.id).id)

    assert (second.number, third.number) == ("CHN-0001-1", "CHN-0001-2")
    for older in (first, second):
        found = client.v1.invoices.retrieve(older.id)
        assert (found.status, found.latest_revision) == ("void", third.id)
    assert client.v1.invoices.retrieve(third.id).latest_revision is None


@pytest.mark.parametrize("status", ["paid", "void", "draft"])
def test_only_open_or_uncollectible_invoices_can_be_revised(
    client: stripe.StripeClient, status: str
) -> None:
    invoice = _sent_invoice(client)
    if status == "paid":
        client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})
    elif status == "void":
        client.v1.invoices.void_invoice(invoice.id)
    else:
        invoice = client.v1.invoices.create({"customer": _customer(invoice)})

    with pytest.raises(stripe.InvalidRequestError) as refused:
        _revise(client, invoice.id)

    assert refused.value.http_status == 400
    assert refused.value.param == "from_invoice[invoice]"
    assert f"is {status}" in str(refused.value.user_message)


def test_an_uncollectible_invoice_can_be_revised(client: stripe.StripeClient) -> None:
    invoice = _sent_invoice(client)
    client.v1.invoices.mark_uncollectible(invoice.id)
    revision = client.v1.invoices.finalize_invoice(_revise(client, invoice.id).id)
    assert client.v1.invoices.retrieve(invoice.id).status == "void"
    assert revision.status == "open"


def test_one_draft_revision_at_a_time_and_none_finalized_over_a_paid_original(
    client: stripe.StripeClient,
) -> None:
    original = _sent_invoice(client)
    draft = _revise(client, original.id)

    with pytest.raises(stripe.InvalidRequestError) as second:
        _revise(client, original.id)
    assert draft.id in str(second.value.user_message)

    client.v1.invoices.pay(original.id, {"paid_out_of_band": True})  # paid meanwhile
    with pytest.raises(stripe.InvalidRequestError) as finalizing:
        client.v1.invoices.finalize_invoice(draft.id)
    assert "is paid" in str(finalizing.value.user_message)
    assert client.v1.invoices.retrieve(draft.id).status == "draft"
    assert client.v1.invoices.retrieve(original.id).status == "paid"


def test_parameters_apply_on_top_but_the_customer_stays(client: stripe.StripeClient) -> None:
    original = _sent_invoice(client)
    other = client.v1.customers.create({})

    with pytest.raises(stripe.InvalidRequestError) as refused:
        _revise(client, original.id, customer=other.id)
    assert refused.value.param == "customer"

    revision = _revise(client, original.id, description="March, corrected", days_until_due=10)
    assert revision.description == "March, corrected"
    assert revision.due_date == revision.created + 10 * 86_400
    with pytest.raises(stripe.InvalidRequestError) as missing:
        _revise(client, "in_missing")
    assert missing.value.param == "from_invoice[invoice]"


def test_a_repeated_revision_request_replays_one_draft(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    original = _sent_invoice(client)
    params: Any = {"from_invoice": {"action": "revision", "invoice": original.id}}

    first = client.v1.invoices.create(params, {"idempotency_key": "revise-1"})
    again = client.v1.invoices.create(params, {"idempotency_key": "revise-1"})

    assert first.id == again.id
    drafts = client.v1.invoices.list({"customer": _customer(original), "status": "draft"})
    assert [invoice.id for invoice in drafts.data] == [first.id]
    creates = [entry for entry in sandbox.requests() if entry["path"] == "/v1/invoices"]
    assert [entry["replayed"] for entry in creates if entry["method"] == "POST"][-2:] == [
        False,
        True,
    ]


def test_revision_bodies_and_events_are_valid_under_stripes_schemas(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    require_schemas()
    sandbox.configure(record_responses=True)
    original = _sent_invoice(client)
    client.v1.invoices.finalize_invoice(_revise(client, original.id).id)
    with pytest.raises(stripe.InvalidRequestError):
        _revise(client, original.id)  # void now
    client.v1.invoices.retrieve(original.id, {"expand": ["latest_revision"]})

    problems = [
        problem
        for r in sandbox.responses()
        for problem in violations(r["body"], status=r["status"], where=r["path"])
    ]
    problems += [p for event in _events(sandbox) for p in violations(event, where=event["type"])]
    assert problems == [], "\n".join(problems[:20])
