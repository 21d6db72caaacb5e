"""List pagination and `expand[]`, shared by every resource."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

from stripe_sandbox import shapes
from stripe_sandbox.errors import exclusive, invalid
from stripe_sandbox.store import JSON, Store

# Stripe's default page size when `limit` is absent.
DEFAULT_LIMIT = 10


def paginate(
    objects: Iterable[JSON],
    params: dict[str, Any],
    url: str,
    render: Callable[[JSON], JSON] = lambda obj: obj,
) -> JSON:
    """One page of `objects` (already in Stripe's order) honouring the cursor parameters."""
    ordered = list(objects)
    limit: int = params.get("limit", DEFAULT_LIMIT)
    after, before = params.get("starting_after"), params.get("ending_before")
    if after is not None and before is not None:
        raise exclusive(["starting_after", "ending_before"])
    position = {obj["id"]: index for index, obj in enumerate(ordered)}
    if after is not None:
        start = _cursor(position, after, "starting_after") + 1
        page, has_more = ordered[start : start + limit], len(ordered) > start + limit
    elif before is not None:
        end = _cursor(position, before, "ending_before")
        page, has_more = ordered[max(0, end - limit) : end], end - limit > 0
    else:
        page, has_more = ordered[:limit], len(ordered) > limit
    return shapes.list_of([render(obj) for obj in page], url, has_more)


def _cursor(position: dict[str, int], object_id: Any, param: str) -> int:
    if not isinstance(object_id, str) or object_id not in position:
        raise invalid(f"Invalid {param}: no such object {object_id}", param=param)
    return position[object_id]


def expand(store: Store, body: JSON, paths: list[str] | None) -> JSON:
    """Replace ids by objects along each dotted path (`customer`, `data.customer`)."""
    if not paths:
        return body
    body = copy.deepcopy(body)
    for path in paths:
        _expand_path(store, body, path.split("."), path)
    return body


def _expand_path(store: Store, node: Any, parts: list[str], path: str) -> None:
    if isinstance(node, list):
        for item in node:
            _expand_path(store, item, parts, path)
        return
    head, rest = parts[0], parts[1:]
    if isinstance(node, dict) and head not in node:
        # An includable field (invoice.payments, price.tiers): present only when asked for,
        # and expandable further (`payments.data.payment.payment_intent`).
        included = store.includable.get((str(node.get("id")), head))
        if included is not None:
            node[head] = copy.deepcopy(included)
            if rest:
                _expand_path(store, node[head], rest, path)
            return
    if not isinstance(node, dict) or head not in node:
        raise invalid(f"This property cannot be expanded ({path}).", param="expand")
    value = node[head]
    if rest:
        _expand_path(store, value, rest, path)
        return
    if value is None or isinstance(value, dict):
        return
    found = store.find(value) if isinstance(value, str) else None
    if found is None:
        raise invalid(f"This property cannot be expanded ({path}).", param="expand")
    node[head] = copy.deepcopy(found)
