"""Events: /v1/events (read-only; handlers record them through `Call.emit`)."""

from __future__ import annotations

from stripe_sandbox.context import Call
from stripe_sandbox.errors import exclusive
from stripe_sandbox.listing import paginate
from stripe_sandbox.params import LIST_PAGING, Arr, Bool, IntOrRange, Str
from stripe_sandbox.resources.common import Route, created_matches, read
from stripe_sandbox.store import JSON

# Stripe accepts at most 20 entries in `types[]`.
MAX_TYPES = 20

_LIST = {
    **LIST_PAGING,
    "type": Str(),
    "types": Arr(Str(), max_items=MAX_TYPES),
    "created": IntOrRange(),
    "delivery_success": Bool(),
}


def retrieve(call: Call, id: str) -> JSON:
    read(call, {})
    return call.store.get("evt", id)


def list_(call: Call) -> JSON:
    params = read(call, _LIST)
    if "type" in params and "types" in params:
        raise exclusive(["type", "types"])
    patterns = params.get("types") or ([params["type"]] if "type" in params else [])
    selected = (
        event
        for event in call.store.newest_first("evt")
        if (not patterns or any(_type_matches(p, event["type"]) for p in patterns))
        and created_matches(event, params.get("created"))
    )
    return paginate(selected, params, "/v1/events")


def _type_matches(pattern: str, type_: str) -> bool:
    """Stripe allows one trailing wildcard: `invoice.*`."""
    if pattern.endswith(".*"):
        return type_.startswith(pattern[:-1])
    return pattern == type_


ROUTES = [
    Route("GET", "/v1/events", list_),
    Route("GET", "/v1/events/{id}", retrieve),
]
