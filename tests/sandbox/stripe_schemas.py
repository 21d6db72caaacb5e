"""Stripe's endive JSON Schemas, kept in `tests/sandbox/stripe/` with Stripe's licence.

The file names its definitions like `resources~Invoices#Invoice`, which are not valid JSON
pointer segments (`~` and `#` would need escaping), so the definitions are renamed to plain
tokens and every `$ref` is rewritten to match before jsonschema sees them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parent / "stripe" / "endive-schemas.json"
# Stripe's API error object: the schema file has no top-level error type, but an invoice's
# `last_finalization_error` is the very object Stripe sends as `{"error": {...}}`.
ERROR_DEF = "resources~Invoices#Invoice.LastFinalizationError"
# `object` value -> root name; a body with `deleted: true` uses the `Deleted…` root.
ROOT_OF_OBJECT = {
    "invoice": "Invoice",
    "line_item": "InvoiceLineItem",
    "invoiceitem": "InvoiceItem",
    "customer": "Customer",
    "product": "Product",
    "price": "Price",
    "event": "EventBase",
    "webhook_endpoint": "WebhookEndpoint",
}
# Objects the file has no root for, validated against their definition instead.
DEF_OF_OBJECT = {
    "payment_intent": "resources~PaymentIntents#PaymentIntent",
    "invoice_payment": "resources~InvoicePayments#InvoicePayment",
}
# Only the create call returns the endpoint's signing secret, beside the documented object.
CREATE_ONLY_FIELDS = {"webhook_endpoint": {"secret"}}


def require_schemas() -> None:
    # The schemas ship with the tests: a missing file is a broken checkout, not a reason to skip.
    assert SCHEMAS.exists(), f"Stripe's endive schemas are missing from {SCHEMAS}"


@cache
def _document() -> dict[str, Any]:
    raw = json.loads(SCHEMAS.read_text())
    safe = {name: f"d{index}" for index, name in enumerate(raw["$defs"])}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {key: rewrite(value) for key, value in node.items()}
            ref = out.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                out["$ref"] = "#/$defs/" + safe[ref.removeprefix("#/$defs/")]
            return out
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    return {
        "defs": {safe[name]: rewrite(schema) for name, schema in raw["$defs"].items()},
        "roots": {name: rewrite(schema) for name, schema in raw["roots"].items()},
        "params": {name: rewrite(schema) for name, schema in raw["params"].items()},
        "error": {"$ref": "#/$defs/" + safe[ERROR_DEF]},
        "objects": {
            kind: {"$ref": "#/$defs/" + safe[name]} for kind, name in DEF_OF_OBJECT.items()
        },
    }


@cache
def _validator(kind: str, name: str) -> Any:
    from jsonschema import Draft202012Validator

    document = _document()
    if kind == "error":
        target = document["error"]
    elif kind == "objects":
        target = document["objects"][name]
    elif kind == "partial":
        target = _without_required(document["defs"], document["roots"][name])
    else:
        target = document[kind][name]
    if kind == "error":
        target = {
            "type": "object",
            "properties": {"error": target},
            "required": ["error"],
            "additionalProperties": False,
        }
    schema = {"$defs": document["defs"], **target}
    return Draft202012Validator(schema)


def _without_required(defs: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """The root's own object schema with no property required (nested ones keep theirs)."""
    schema = defs[root["$ref"].removeprefix("#/$defs/")]
    return {key: value for key, value in schema.items() if key != "required"}


def params_schema(name: str) -> dict[str, Any]:
    """A params interface (`InvoiceCreateParams`) with its `$ref`s left unresolved."""
    schema: dict[str, Any] = _document()["params"][name]
    return schema


def violations(body: Any, *, status: int = 200, where: str = "") -> list[str]:
    """Every way `body` (a response Stripe could have sent) breaks Stripe's schemas."""
    found: list[str] = []
    if status != 200:
        found += _check("error", "", body, where)
        return found
    if isinstance(body, dict) and body.get("object") in ("list", "search_result"):
        for index, item in enumerate(body["data"]):
            found += violations(item, where=f"{where}.data[{index}]")
        return found
    if isinstance(body, dict) and body.get("object") in DEF_OF_OBJECT:
        return found + _check("objects", body["object"], body, where)
    if not isinstance(body, dict) or body.get("object") not in ROOT_OF_OBJECT:
        return [f"{where}: no schema for {str(body)[:80]}"]
    root = ROOT_OF_OBJECT[body["object"]]
    if body.get("deleted") is True:
        root = "Deleted" + root
    body = {k: v for k, v in body.items() if k not in CREATE_ONLY_FIELDS.get(body["object"], ())}
    if body["object"] != "event":
        return found + _check("roots", root, body, where)
    # stripe-node types `data.object` and `data.previous_attributes` as empty interfaces
    # (any object), which the mechanical conversion made `{}`-only. Validate the envelope
    # with them emptied, the object against its own root, and the previous attributes
    # against that root with nothing required.
    data = body["data"]
    envelope = {**body, "data": {key: {} for key in data}}
    found += _check("roots", root, envelope, where)
    found += violations(data["object"], where=f"{where}.data.object")
    if "previous_attributes" in data:
        inner = ROOT_OF_OBJECT.get(data["object"].get("object"), "")
        if inner:  # (no partial schema for the objects validated by definition)
            found += _check("partial", inner, data["previous_attributes"], f"{where}.previous")
    return found


def _check(kind: str, name: str, body: Any, where: str) -> list[str]:
    return [
        f"{where or name}: {'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"
        for error in _validator(kind, name).iter_errors(body)
    ]
