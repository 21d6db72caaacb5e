"""Helpers every resource module uses to read parameters and apply updates."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stripe_sandbox.context import Call
from stripe_sandbox.params import EXPAND, UNSET, Kind, parse_fields
from stripe_sandbox.store import JSON

Handler = Callable[..., JSON]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # path with `{name}` placeholders for ids
    handler: Handler


def read(call: Call, schema: Mapping[str, Kind]) -> dict[str, Any]:
    """Typed parameters of this call; every endpoint also accepts `expand`."""
    return parse_fields({**schema, "expand": EXPAND}, call.params)


def assign(obj: JSON, params: Mapping[str, Any], names: Iterable[str]) -> None:
    """Copy the given optional fields; an empty string (UNSET) clears a field to null."""
    for name in names:
        if name in params:
            value = params[name]
            obj[name] = None if value is UNSET else value


def merge_metadata(obj: JSON, params: Mapping[str, Any]) -> None:
    """Stripe's metadata update: keys merge, `metadata[k]=` deletes k, `metadata=` clears."""
    if "metadata" not in params:
        return
    update = params["metadata"]
    if update is UNSET:
        obj["metadata"] = {}
        return
    merged = dict(obj["metadata"])
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    obj["metadata"] = merged


def created_matches(obj: JSON, bounds: Mapping[str, int] | None, field: str = "created") -> bool:
    """The `created[gte]=…` family of list filters."""
    if not bounds:
        return True
    value = obj[field]
    if value is None:
        return False
    checks = {
        "eq": lambda b: value == b,
        "gt": lambda b: value > b,
        "gte": lambda b: value >= b,
        "lt": lambda b: value < b,
        "lte": lambda b: value <= b,
    }
    return all(checks[op](bound) for op, bound in bounds.items())
