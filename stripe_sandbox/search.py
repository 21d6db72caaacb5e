"""Stripe's search query language, the subset our code uses.

    metadata['order_id']:'42' AND status:'open'
    email:'a@example.com' OR name~'Acme'
    -status:'void'    created>1700000000

Clauses are joined by AND or by OR (Stripe forbids mixing them in one query). `:` is an
exact match, `~` a substring match (at least 3 characters, as Stripe requires), and
`>`, `<`, `>=`, `<=` compare numbers. A leading `-` negates a clause.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from stripe_sandbox.errors import invalid
from stripe_sandbox.listing import DEFAULT_LIMIT
from stripe_sandbox.store import JSON

# Stripe rejects queries with more than this many clauses.
MAX_CLAUSES = 10
MIN_SUBSTRING = 3

_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?
    (?P<field>metadata\[(?P<q1>['"])(?P<key>[^'"]+)(?P=q1)\]|[a-z_]+)
    (?P<op>>=|<=|:|~|>|<)
    (?:(?P<q2>['"])(?P<text>(?:\\.|(?!(?P=q2)).)*)(?P=q2)|(?P<number>-?\d+))
    \s*""",
    re.VERBOSE,
)
_JOIN = re.compile(r"\s+(AND|OR)\s+")


@dataclass(frozen=True)
class Clause:
    field: str  # "metadata" for metadata clauses
    key: str | None
    op: str
    value: str
    negated: bool

    def test(self, obj: JSON) -> bool:
        raw = obj.get("metadata", {}).get(self.key) if self.key else obj.get(self.field)
        result = _compare(raw, self.op, self.value)
        return result != self.negated


def _compare(raw: Any, op: str, value: str) -> bool:
    if raw is None:
        return False
    if isinstance(raw, bool):
        raw = "true" if raw else "false"
    if op == ":":
        return str(raw).lower() == value.lower()
    if op == "~":
        return value.lower() in str(raw).lower()
    if not isinstance(raw, int):
        return False
    number = int(value)
    return {">": raw > number, "<": raw < number, ">=": raw >= number, "<=": raw <= number}[op]


def parse(query: str, fields: Iterable[str]) -> Callable[[JSON], bool]:
    """A predicate for `query`, or Stripe's 400 for what it cannot parse."""
    allowed = set(fields)
    parts = _JOIN.split(query.strip())
    clauses_text, joins = parts[0::2], set(parts[1::2])
    if len(joins) > 1:
        raise _unparsable("Queries may not mix AND and OR.")
    if len(clauses_text) > MAX_CLAUSES:
        raise _unparsable(f"Queries support at most {MAX_CLAUSES} clauses.")
    clauses = [_clause(text, allowed) for text in clauses_text]
    if joins == {"OR"}:
        return lambda obj: any(clause.test(obj) for clause in clauses)
    return lambda obj: all(clause.test(obj) for clause in clauses)


def _clause(text: str, allowed: set[str]) -> Clause:
    match = _CLAUSE.fullmatch(text)
    if match is None:
        raise _unparsable(f"Could not parse `{text.strip()}`.")
    key = match["key"]
    field = "metadata" if key is not None else match["field"]
    if field not in allowed:
        raise invalid(f"Field `{field}` is an unsupported search field for this resource.")
    value = match["text"] if match["text"] is not None else match["number"]
    if match["op"] == "~" and len(value) < MIN_SUBSTRING:
        raise _unparsable(f"Substring search needs at least {MIN_SUBSTRING} characters.")
    if match["op"] in "<>=" and match["number"] is None:
        raise _unparsable(f"Range comparison on `{field}` needs a number.")
    return Clause(field, key, match["op"], value.replace("\\", ""), bool(match["neg"]))


def _unparsable(detail: str) -> Exception:
    return invalid(
        f"We were unable to parse your search query. {detail} Try using the format "
        "`metadata['key']:'value'` or `field:'value'`.",
        param="query",
    )


def page(matches: list[JSON], params: dict[str, Any], url: str) -> JSON:
    """A `search_result` page; `next_page` is an opaque cursor as in Stripe."""
    limit: int = params.get("limit", DEFAULT_LIMIT)
    offset = _decode_page(params["page"]) if params.get("page") else 0
    chunk = matches[offset : offset + limit]
    has_more = len(matches) > offset + limit
    result: JSON = {
        "object": "search_result",
        "data": chunk,
        "has_more": has_more,
        "next_page": _encode_page(offset + limit) if has_more else None,
        "url": url,
    }
    if "total_count" in params.get("expand", []):
        result["total_count"] = len(matches)
    return result


def _encode_page(offset: int) -> str:
    return base64.urlsafe_b64encode(f"sbx:{offset}".encode()).decode()


def _decode_page(token: str) -> int:
    try:
        prefix, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if prefix == "sbx" and offset.isdigit():
            return int(offset)
    except ValueError:
        pass
    raise invalid(f"Invalid page: {token}", param="page")
