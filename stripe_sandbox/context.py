"""What a resource handler gets: the store, the knobs, the request's identity, event emission."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from stripe_sandbox import shapes
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.store import JSON, Store

TEST_CLOCK_OBJECT = "test_helpers.test_clock"


@dataclass
class Call:
    store: Store
    params: dict[str, Any]  # decoded form or query, still untyped
    request_id: str | None  # None for what Stripe does on its own (a bank debit settling)
    idempotency_key: str | None
    # The sandbox's live knobs (the app's own object, so run-time changes show here).
    config: SandboxConfig = field(default_factory=SandboxConfig)

    def emit(self, type_: str, snapshot: JSON, previous: JSON | None = None) -> JSON:
        """Record an event whose `data.object` is a snapshot of the object right now."""
        return record_event(
            self.store,
            type_,
            snapshot,
            previous,
            request_id=self.request_id,
            idempotency_key=self.idempotency_key,
        )


def record_event(
    store: Store,
    type_: str,
    snapshot: JSON,
    previous: JSON | None = None,
    *,
    request_id: str | None = None,
    idempotency_key: str | None = None,
    created: int | None = None,
) -> JSON:
    """Store an event and hand it to the listeners (webhook delivery).

    `created` defaults to the object's own time: the frozen time of the test clock it
    belongs to (see `resources/test_clocks.py`), else the sandbox's clock. Events Stripe
    raises on its own (a clock advancing) have no request: `request_id` stays None.
    """
    data: JSON = {"object": copy.deepcopy(snapshot)}
    if previous:
        data["previous_attributes"] = copy.deepcopy(previous)
    pending = sum(
        1
        for endpoint in store.webhook_endpoints.values()
        if endpoint["status"] == "enabled" and matches(endpoint["enabled_events"], type_)
    )
    event = shapes.event(
        store.new_id("evt"),
        object_time(store, snapshot) if created is None else created,
        type_,
        data,
        request_id=request_id,
        idempotency_key=idempotency_key,
        pending_webhooks=pending,
    )
    store.events[event["id"]] = event
    for listener in store.listeners:
        listener(event)
    return event


def object_time(store: Store, obj: JSON) -> int:
    """Stripe's "now" for `obj`: its test clock's frozen time (a clock is its own), or now."""
    if obj.get("object") == TEST_CLOCK_OBJECT:
        frozen: int = obj["frozen_time"]
        return frozen
    clock = obj.get("test_clock")
    return store.clock_time(clock if isinstance(clock, str) else None)


def matches(enabled_events: list[str], type_: str) -> bool:
    return "*" in enabled_events or type_ in enabled_events


def changed(before: JSON, after: JSON) -> JSON:
    """Stripe's `previous_attributes`: the old values of the top-level fields that changed."""
    return {key: value for key, value in before.items() if after.get(key) != value}
