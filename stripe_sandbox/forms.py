"""Decode Stripe's form encoding (`a[b][0][c]=v`, `expand[]=x`) into nested dicts and lists.

The SDK always indexes arrays (`expand[0]=customer`); curl users write `expand[]=`. Both become
Python lists. Leaves stay strings: typing them is the job of `params.py`, which knows the
expected schema and can name the offending parameter the way Stripe does.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from stripe_sandbox.errors import invalid

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_APPEND = ""  # `[]`: next position of an array


def decode(raw: bytes | str) -> dict[str, Any]:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        _assign(root, _split(key), value, key)
    return {key: _listify(value) for key, value in root.items()}


def _split(key: str) -> list[str]:
    head, bracket, _ = key.partition("[")
    if not bracket:
        return [key]
    rest = key[len(head) :]
    segments = _SEGMENT.findall(rest)
    if "".join(f"[{s}]" for s in segments) != rest:
        raise invalid(f"Invalid parameter name: {key}", param=key)
    return [head, *segments]


def _assign(node: dict[str, Any], path: list[str], value: str, key: str) -> None:
    for depth, segment in enumerate(path):
        last = depth == len(path) - 1
        if segment == _APPEND:
            # Append: give it the next free numeric slot so _listify orders it last.
            segment = str(len(node))
        if last:
            if isinstance(node.get(segment), dict):
                raise invalid(f"Invalid value for {key}: expected a hash", param=key)
            node[segment] = value
            return
        child = node.setdefault(segment, {})
        if not isinstance(child, dict):
            raise invalid(f"Invalid value for {key}: conflicting parameter names", param=key)
        node = child


def _listify(node: Any) -> Any:
    """Turn dicts keyed only by array indices into lists, recursively."""
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted
