"""Stripe test clocks in the sandbox: the resource, time on the clock, due-date events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import httpx
import pytest
import stripe

from stripe_sandbox import RunningSandbox
from tests.clock import advance_clock
from tests.helpers import wait_for
from tests.sandbox.conftest import API_KEY
from tests.sandbox.receiver import webhook_receiver

# The private helpers give the renamed definitions and the event envelope check; TestClock
# is not one of the schema file's `roots`, so `violations` alone cannot judge it.
from tests.sandbox.stripe_schemas import _check, _document, require_schemas, violations

DAY = 86_400
# A frozen time well ahead of the wall clock: a timestamp taken from the wall clock by
# mistake would fall before it, so every "on clock time" assertion below can fail.
START = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)
T0 = int(START.timestamp())
CLOCK_DEF = "resources~TestHelpers~TestClocks#TestClock"


@cache
def _clock_validator() -> Any:
    """Stripe's TestClock schema (not one of the file's `roots`, so not in `violations`)."""
    from jsonschema import Draft202012Validator

    document = _document()  # the renamed `$defs`; TestClock is the n-th definition
    raw = json.loads(_schemas_text())
    name = "d" + str(list(raw["$defs"]).index(CLOCK_DEF))
    return Draft202012Validator({"$defs": document["defs"], "$ref": f"#/$defs/{name}"})


@cache
def _schemas_text() -> str:
    from tests.sandbox.stripe_schemas import SCHEMAS

    return SCHEMAS.read_text()


def _clock_problems(body: Any, where: str) -> list[str]:
    if body.get("deleted") is True:  # Stripe's DeletedTestClock: exactly these three fields
        expected = {"id": body["id"], "object": "test_helpers.test_clock", "deleted": True}
        return [] if body == expected else [f"{where}: deleted shape {body}"]
    return [f"{where}: {error.message[:200]}" for error in _clock_validator().iter_errors(body)]


def _problems(body: Any, where: str) -> list[str]:
    """`violations`, taught the test clock: as an object, in a list, inside an event."""
    if body.get("object") == "list":
        return [p for item in body["data"] for p in _problems(item, where + ".data[]")]
    if body.get("object") == "test_helpers.test_clock":
        return _clock_problems(body, where)
    if (
        body.get("object") == "event"
        and body["data"]["object"]["object"] == "test_helpers.test_clock"
    ):
        envelope = {**body, "data": {key: {} for key in body["data"]}}
        return _check("roots", "EventBase", envelope, where) + _clock_problems(
            body["data"]["object"], where + ".data.object"
        )
    return violations(body, where=where)


def _served_problems(recorded: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    for r in recorded:
        where, body = f"{r['method']} {r['path']} {r['status']}", r["body"]
        if r["status"] != 200:
            problems += violations(body, status=r["status"], where=where)
        else:
            problems += _problems(body, where)
    return problems


def _raw_events(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    """Every event, oldest first, as JSON (the SDK would turn decimals into Decimal)."""
    events: list[dict[str, Any]] = httpx.get(
        f"{sandbox.url}/v1/events",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()["data"]
    return events[::-1]


def _clocked_customer(client: stripe.StripeClient, frozen: int = T0) -> tuple[str, str]:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": frozen})
    customer = client.v1.customers.create({"email": "ada@example.com", "test_clock": clock.id})
    return clock.id, customer.id


def _open_invoice(client: stripe.StripeClient, customer: str, days: int) -> stripe.Invoice:
    invoice = client.v1.invoices.create(
        {"customer": customer, "collection_method": "send_invoice", "days_until_due": days}
    )
    client.v1.invoice_items.create({"customer": customer, "invoice": invoice.id, "amount": 900})
    return client.v1.invoices.finalize_invoice(invoice.id)


def test_create_retrieve_list_advance_delete(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    require_schemas()
    sandbox.configure(record_responses=True)
    clocks = client.v1.test_helpers.test_clocks
    clock = clocks.create({"frozen_time": T0, "name": "Dunning"})
    assert clock.id.startswith("clock_") and clock.object == "test_helpers.test_clock"
    assert (clock.frozen_time, clock.name, clock.status, clock.livemode) == (
        T0,
        "Dunning",
        "ready",
        False,
    )
    assert clock.deletes_after == clock.created + 30 * DAY
    assert clocks.retrieve(clock.id).to_dict() == clock.to_dict()
    others = [clocks.create({"frozen_time": T0 + n}).id for n in range(2)]
    page = clocks.list({"limit": 2})
    assert [c.id for c in page.data] == others[::-1] and page.has_more
    rest = clocks.list({"limit": 2, "starting_after": page.data[-1].id})
    assert [c.id for c in rest.data] == [clock.id] and not rest.has_more

    target = T0 + 3 * DAY
    advancing = clocks.advance(clock.id, {"frozen_time": target})
    assert advancing.status == "advancing" and advancing.frozen_time == T0
    assert advancing.status_details.advancing.target_frozen_time == target
    ready = wait_for(
        lambda: (c := clocks.retrieve(clock.id)).status == "ready" and c, "clock ready"
    )
    assert ready.frozen_time == target and ready.to_dict()["status_details"] == {}

    customer = client.v1.customers.create({"name": "On the clock", "test_clock": clock.id})
    assert customer.test_clock == clock.id and customer.created == target
    assert [c.id for c in client.v1.customers.list({"test_clock": clock.id}).data] == [customer.id]
    gone = clocks.delete(clock.id)
    assert gone.to_dict() == {"id": clock.id, "object": "test_helpers.test_clock", "deleted": True}
    assert client.v1.customers.retrieve(customer.id).deleted is True  # its customers go too
    with pytest.raises(stripe.InvalidRequestError) as missing:
        clocks.retrieve(clock.id)
    assert missing.value.code == "resource_missing" and missing.value.http_status == 404

    types = [e["type"] for e in _raw_events(sandbox)]
    assert [t for t in types if t.startswith("test_helpers.")] == [
        *["test_helpers.test_clock.created"] * 3,
        "test_helpers.test_clock.advancing",
        "test_helpers.test_clock.ready",
        "test_helpers.test_clock.deleted",
    ]
    assert types.index("customer.deleted") < types.index("test_helpers.test_clock.deleted")
    problems = _served_problems(sandbox.responses())
    assert problems == [], "\n".join(problems)


def test_frozen_time_must_move_forward_and_not_too_far(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    require_schemas()
    sandbox.configure(record_responses=True)
    clocks = client.v1.test_helpers.test_clocks
    with pytest.raises(stripe.InvalidRequestError) as missing:
        clocks.create({})  # type: ignore[typeddict-item]
    assert missing.value.param == "frozen_time" and missing.value.code == "parameter_missing"
    clock = clocks.create({"frozen_time": T0})
    for bad in (T0, T0 - 1):
        with pytest.raises(stripe.InvalidRequestError) as backwards:
            clocks.advance(clock.id, {"frozen_time": bad})
        assert backwards.value.param == "frozen_time" and backwards.value.http_status == 400
        assert "after the test clock's current frozen_time" in str(backwards.value.user_message)
    two_years = int(START.replace(year=START.year + 2).timestamp())
    with pytest.raises(stripe.InvalidRequestError) as too_far:
        clocks.advance(clock.id, {"frozen_time": two_years + 1})
    assert too_far.value.param == "frozen_time"
    assert clocks.retrieve(clock.id).status == "ready"  # refused advances change nothing

    sandbox.configure(test_clock_advance_ms=60_000)  # stays advancing for this test
    assert clocks.advance(clock.id, {"frozen_time": two_years}).status == "advancing"
    with pytest.raises(stripe.InvalidRequestError) as busy:
        clocks.advance(clock.id, {"frozen_time": two_years + DAY})
    assert "advancing" in str(busy.value.user_message)
    problems = _served_problems(sandbox.responses())
    assert problems == [], "\n".join(problems)


def test_customer_on_unknown_clock_is_refused(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.customers.create({"name": "Ada", "test_clock": "clock_missing"})
    error = unknown.value
    assert (error.http_status, error.code, error.param) == (404, "resource_missing", "test_clock")
    assert "clock_missing" in str(error.user_message)
    assert client.v1.customers.list().data == []
    plain = client.v1.customers.create({"name": "Ada"})
    assert plain.test_clock is None


def test_clock_created_for_an_existing_customer_takes_it(client: stripe.StripeClient) -> None:
    clocks = client.v1.test_helpers.test_clocks
    customer = client.v1.customers.create({"name": "Ada"})
    clock = clocks.create({"frozen_time": T0, "customer": customer.id})
    assert client.v1.customers.retrieve(customer.id).test_clock == clock.id
    with pytest.raises(stripe.InvalidRequestError) as taken:
        clocks.create({"frozen_time": T0, "customer": customer.id})
    assert taken.value.param == "customer"  # once on a clock, a customer stays on it
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        clocks.create({"frozen_time": T0, "customer": "cus_missing"})
    assert (unknown.value.code, unknown.value.param) == ("resource_missing", "customer")
    assert [c.id for c in clocks.list().data] == [clock.id]


def test_clocked_objects_take_the_clocks_time(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    require_schemas()
    sandbox.configure(record_responses=True)
    clock, customer = _clocked_customer(client)
    assert client.v1.customers.retrieve(customer).created == T0
    invoice = _open_invoice(client, customer, days=30)
    assert invoice.test_clock == clock
    assert (invoice.created, invoice.period_start, invoice.effective_at) == (T0, T0, T0)
    assert invoice.status_transitions.finalized_at == T0
    assert invoice.due_date == T0 + 30 * DAY
    item = client.v1.invoice_items.list({"customer": customer}).data[0]
    assert (item.date, item.test_clock) == (T0, clock)

    paid_on = START + timedelta(days=5, hours=2)
    advance_clock(client, clock, paid_on)
    paid = client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})
    assert paid.status_transitions.paid_at == int(paid_on.timestamp())
    payment = client.v1.invoices.retrieve(invoice.id, {"expand": ["payments"]}).payments.data[0]
    assert payment.status_transitions.canceled_at == int(paid_on.timestamp())
    paid_event = client.v1.events.list({"type": "invoice.paid"}).data[0]
    assert paid_event.created == int(paid_on.timestamp())

    # Objects on no clock keep the sandbox's own time.
    elsewhere = client.v1.customers.create({"name": "Wall clock"})
    assert elsewhere.created < T0
    problems = _served_problems(sandbox.responses())
    assert problems == [], "\n".join(problems)


def test_sent_event_is_found_from_finalized_at_after_an_advance(
    client: stripe.StripeClient,
) -> None:
    clock, customer = _clocked_customer(client)
    invoice = client.v1.invoices.create(
        {"customer": customer, "collection_method": "send_invoice", "days_until_due": 14}
    )
    client.v1.invoice_items.create({"customer": customer, "invoice": invoice.id, "amount": 500})
    client.v1.invoices.finalize_invoice(invoice.id)
    sent = client.v1.invoices.send_invoice(invoice.id)
    finalized_at = sent.status_transitions.finalized_at
    advance_clock(client, clock, START + timedelta(days=20))
    found = client.v1.events.list(
        {"type": "invoice.sent", "created": {"gte": finalized_at}, "limit": 100}
    ).data
    assert [event.data.object.id for event in found] == [invoice.id]


def test_will_be_due_and_overdue_once_each_in_time_order(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    require_schemas()
    sandbox.configure(invoice_will_be_due_days=7, invoice_overdue_days=1)
    with webhook_receiver() as receiver:
        secret = client.v1.webhook_endpoints.create(
            {"url": receiver.url, "enabled_events": ["invoice.will_be_due", "invoice.overdue"]}
        ).secret
        clock, customer = _clocked_customer(client)
        first = _open_invoice(client, customer, days=10)  # will be due day 3, overdue day 11
        second = _open_invoice(client, customer, days=20)  # day 13, day 21
        settled = _open_invoice(client, customer, days=10)
        client.v1.invoices.pay(settled.id, {"paid_out_of_band": True})  # paid: no reminders
        _, stranger = _clocked_customer(client)
        _open_invoice(client, stranger, days=10)  # another clock, never advanced

        def reminders() -> list[dict[str, Any]]:
            return [
                e
                for e in _raw_events(sandbox)
                if e["type"] in ("invoice.will_be_due", "invoice.overdue")
            ]

        advance_clock(client, clock, START + timedelta(days=2))
        assert reminders() == []
        advance_clock(client, clock, START + timedelta(days=15))
        assert [(e["type"], e["data"]["object"]["id"], e["created"]) for e in reminders()] == [
            ("invoice.will_be_due", first.id, T0 + 3 * DAY),
            ("invoice.overdue", first.id, T0 + 11 * DAY),
            ("invoice.will_be_due", second.id, T0 + 13 * DAY),
        ]
        advance_clock(client, clock, START + timedelta(days=30))
        advance_clock(client, clock, START + timedelta(days=60))
        events = reminders()
        assert [(e["type"], e["data"]["object"]["id"]) for e in events] == [
            ("invoice.will_be_due", first.id),
            ("invoice.overdue", first.id),
            ("invoice.will_be_due", second.id),
            ("invoice.overdue", second.id),
        ]
        assert events[-1]["created"] == T0 + 21 * DAY
        assert all(e["data"]["object"]["status"] == "open" for e in events)
        assert all(e["request"] == {"id": None, "idempotency_key": None} for e in events)
        problems = [p for e in events for p in violations(e, where=e["type"])]
        assert problems == [], "\n".join(problems)

        received = receiver.wait_for(4, timeout=60)
        delivered = [stripe.Webhook.construct_event(r.body, r.signature, secret) for r in received]
        assert sorted((e.type, e.data.object.id) for e in delivered) == sorted(
            (e["type"], e["data"]["object"]["id"]) for e in events
        )
