"""What a resource handler gets: the store, the request's identity, and event emission."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from invoiceflow.sandbox import shapes
from invoiceflow.sandbox.store import JSON, Store, now


@dataclass
class Call:
    store: Store
    params: dict[str, Any]  # decoded form or query, still untyped
    request_id: str
    idempotency_key: str | None

    def emit(self, type_: str, snapshot: JSON, previous: JSON | None = None) -> JSON:
        """Record an event whose `data.object` is a snapshot of the object right now."""
        data: JSON = {"object": copy.deepcopy(snapshot)}
        if previous:
            data["previous_attributes"] = copy.deepcopy(previous)
        store = self.store
        pending = sum(
            1
            for endpoint in store.webhook_endpoints.values()
            if endpoint["status"] == "enabled" and matches(endpoint["enabled_events"], type_)
        )
        event = shapes.event(
            store.new_id("evt"),
            now(),
            type_,
            data,
            request_id=self.request_id,
            idempotency_key=self.idempotency_key,
            pending_webhooks=pending,
        )
        store.events[event["id"]] = event
        for listener in store.listeners:
            listener(event)
        return event


def matches(enabled_events: list[str], type_: str) -> bool:
    return "*" in enabled_events or type_ in enabled_events


def changed(before: JSON, after: JSON) -> JSON:
    """Stripe's `previous_attributes`: the old values of the top-level fields that changed."""
    return {key: value for key, value in before.items() if after.get(key) != value}
