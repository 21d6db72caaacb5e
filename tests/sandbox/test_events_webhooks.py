"""Events (list filters, snapshots) and webhook delivery (signed, retried, duplicated)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
import stripe

from stripe_sandbox import RunningSandbox
from tests.helpers import wait_for
from tests.sandbox.receiver import webhook_receiver


def test_events_list_and_filters(client: stripe.StripeClient) -> None:
    product = client.v1.products.create({"name": "A"})
    client.v1.products.update(product.id, {"name": "B"})
    customer = client.v1.customers.create({"name": "C"})
    all_events = client.v1.events.list().data
    assert [e.type for e in all_events] == [
        "customer.created",
        "product.updated",
        "product.created",
    ]
    updated = client.v1.events.list({"type": "product.updated"}).data[0]
    assert updated.data.object.name == "B"
    assert updated.data.previous_attributes.name == "A"
    assert updated.api_version == "2026-10-28.endive"
    assert updated.request.id.startswith("req_") and updated.request.idempotency_key
    created = client.v1.events.list({"type": "product.created"}).data[0]
    assert created.data.object.name == "A"  # a snapshot, not the live object
    wildcard = client.v1.events.list({"type": "product.*"}).data
    assert len(wildcard) == 2
    several = client.v1.events.list({"types": ["customer.created", "product.created"]}).data
    assert {e.type for e in several} == {"customer.created", "product.created"}
    assert client.v1.events.retrieve(several[0].id).id == several[0].id
    now = int(time.time())
    assert len(client.v1.events.list({"created": {"gte": now - 60}}).data) == 3
    assert client.v1.events.list({"created": {"gt": now + 60}}).data == []
    assert len(client.v1.events.list({"created": {"lte": now + 60, "lt": now + 61}}).data) == 3
    page = client.v1.events.list({"limit": 2})
    assert page.has_more
    rest = client.v1.events.list({"limit": 2, "starting_after": page.data[-1].id})
    assert [e.data.object.id for e in rest.data] == [product.id]
    assert customer.id == all_events[0].data.object.id


def test_webhook_endpoints_crud(client: stripe.StripeClient) -> None:
    endpoint = client.v1.webhook_endpoints.create(
        {"url": "https://example.com/hook", "enabled_events": ["invoice.paid"]}
    )
    assert endpoint.secret.startswith("whsec_") and endpoint.status == "enabled"
    fetched = client.v1.webhook_endpoints.retrieve(endpoint.id)
    assert "secret" not in fetched  # Stripe reveals the secret only on create
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [endpoint.id]
    assert client.v1.webhook_endpoints.delete(endpoint.id).deleted is True
    assert client.v1.webhook_endpoints.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.webhook_endpoints.create({"url": "https://example.com/hook"})  # type: ignore[typeddict-item]
    assert missing.value.param == "enabled_events"


def test_signed_delivery_to_matching_endpoints(client: stripe.StripeClient) -> None:
    with webhook_receiver() as everything, webhook_receiver() as only_customers:
        all_secret = client.v1.webhook_endpoints.create(
            {"url": everything.url, "enabled_events": ["*"]}
        ).secret
        client.v1.webhook_endpoints.create(
            {"url": only_customers.url, "enabled_events": ["customer.created"]}
        )
        client.v1.products.create({"name": "P"})
        customer = client.v1.customers.create({"name": "C"})
        received = everything.wait_for(2)
        events = [stripe.Webhook.construct_event(r.body, r.signature, all_secret) for r in received]
        assert sorted(e.type for e in events) == ["customer.created", "product.created"]
        [only] = only_customers.wait_for(1)
        assert json.loads(only.body)["data"]["object"]["id"] == customer.id
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(only.body, only.signature, all_secret)


def test_delivery_retried_until_2xx(client: stripe.StripeClient, sandbox: RunningSandbox) -> None:
    with webhook_receiver(script=[500, 503, 404]) as receiver:
        client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": ["*"]})
        client.v1.customers.create({"name": "C"})
        attempts = receiver.wait_for(4)
        assert [a.status for a in attempts] == [500, 503, 404, 200]
        assert len({a.body for a in attempts}) == 1
        log = _when_done(sandbox)
        assert [(d["attempt"], d["status"]) for d in log] == [
            (1, 500),
            (2, 503),
            (3, 404),
            (4, 200),
        ]
        # Each POST started (`sent_at`) before its answer (`time`), after the last answer:
        # what a receiver's latency is measured from (bench/bench_payment_latency.py).
        assert all(d["sent_at"] <= d["time"] for d in log)
        assert all(a["time"] <= b["sent_at"] for a, b in itertools.pairwise(log))
        event = client.v1.events.list().data[0]
        assert event.pending_webhooks == 0


def _when_done(sandbox: RunningSandbox, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The delivery log once the sandbox has no delivery left under way (none waiting,
    being sent or between retries): every attempt it will ever make is in."""
    wait_for(
        lambda: sandbox.webhooks_in_flight() == 0,
        "the sandbox to end its webhook deliveries (delivered or given up)",
        timeout=timeout,
    )
    return sandbox.webhook_deliveries()


def test_delivery_gives_up_after_max_attempts(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    sandbox.configure(webhook_max_attempts=2)
    with webhook_receiver(script=[500] * 5) as receiver:
        client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": ["*"]})
        client.v1.customers.create({"name": "C"})
        # Once the sandbox has nothing left to send, count what arrived.
        log = _when_done(sandbox)
        assert [(d["attempt"], d["status"]) for d in log] == [(1, 500), (2, 500)]
        assert [r.status for r in receiver.received] == [500, 500]
        assert client.v1.events.list().data[0].pending_webhooks == 1


def test_duplicates_and_reordering(client: stripe.StripeClient, sandbox: RunningSandbox) -> None:
    sandbox.configure(
        webhook_duplicate=1.0, webhook_reorder=True, webhook_reorder_window_ms=200, seed=3
    )
    with webhook_receiver() as receiver:
        secret = client.v1.webhook_endpoints.create(
            {"url": receiver.url, "enabled_events": ["*"]}
        ).secret
        made = [client.v1.customers.create({"name": str(n)}).id for n in range(6)]
        received = receiver.wait_for(12)
        ids = [
            stripe.Webhook.construct_event(r.body, r.signature, secret).data.object.id
            for r in received
        ]
        assert sorted(ids) == sorted(made * 2)
        assert ids[::2] != made or ids[1::2] != made  # not simply in creation order


def test_delivery_delay(client: stripe.StripeClient, sandbox: RunningSandbox) -> None:
    sandbox.configure(webhook_delay_ms=2000)
    with webhook_receiver() as receiver:
        client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": ["*"]})
        started = time.monotonic()
        client.v1.customers.create({"name": "C"})
        # The API answered before the delivery: had it waited, the event would be in.
        assert receiver.received == []
        receiver.wait_for(1)
        assert time.monotonic() - started >= 1.95
