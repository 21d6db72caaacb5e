"""Every object the sandbox serves has the fields of Stripe's own fixture for its type.

Compared with `fixtures3.json` from Stripe's OpenAPI repository, kept in the repository
(`tests/sandbox/stripe/`, with Stripe's licence), so code reading any field finds it here as it
would in Stripe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from stripe_sandbox import RunningSandbox
from tests.sandbox.conftest import API_KEY

FIXTURES = Path(__file__).resolve().parent / "stripe" / "fixtures3.json"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Fields Stripe returns beside the documented object in exactly one call.
ONE_CALL_EXTRAS = {("webhook_endpoint", "create"): {"secret"}}
# The fixtures are from 2026-08-21, older than API version 2026-10-28.endive the SDK pins;
# where they differ, endive's schemas (test_schemas.py) decide. Per object: fields the
# fixture has that endive dropped, and fields endive requires that the fixture lacks.
DROPPED_SINCE_FIXTURE = {"invoice": {"subscription"}}
ADDED_SINCE_FIXTURE = {"product": {"tax_details"}}


@pytest.fixture(scope="module")
def fixtures() -> dict[str, Any]:
    assert FIXTURES.exists(), f"Stripe's fixtures are missing from {FIXTURES}"
    resources: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return resources


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def assert_shape(obj: dict[str, Any], fixture: dict[str, Any], call: str = "") -> None:
    extras = ONE_CALL_EXTRAS.get((obj["object"], call), set()) | ADDED_SINCE_FIXTURE.get(
        obj["object"], set()
    )
    expected = set(fixture) - DROPPED_SINCE_FIXTURE.get(obj["object"], set())
    assert set(obj) - extras == expected, (
        f"{obj['object']}: missing {sorted(expected - set(obj))}, "
        f"extra {sorted(set(obj) - extras - expected)}"
    )
    for key, value in obj.items():
        if key in extras or value is None or fixture[key] is None:
            continue
        assert _json_type(value) == _json_type(fixture[key]), (obj["object"], key, value)


def _call(sandbox: RunningSandbox, method: str, path: str, **data: Any) -> dict[str, Any]:
    if method == "GET":
        response = httpx.get(sandbox.url + path, headers=AUTH, params=data)
    else:
        response = httpx.request(method, sandbox.url + path, headers=AUTH, data=data or None)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_every_served_type_matches_stripes_fixture(
    sandbox: RunningSandbox, fixtures: dict[str, Any]
) -> None:
    with_secret = _call(
        sandbox,
        "POST",
        "/v1/webhook_endpoints",
        url="https://example.com/h",
        **{"enabled_events[]": "*"},
    )
    assert_shape(with_secret, fixtures["webhook_endpoint"], "create")
    product = _call(sandbox, "POST", "/v1/products", name="Widget")
    price = _call(
        sandbox, "POST", "/v1/prices", product=product["id"], unit_amount="500", currency="usd"
    )
    customer = _call(sandbox, "POST", "/v1/customers", email="s@example.com")
    invoice = _call(sandbox, "POST", "/v1/invoices", customer=customer["id"])
    item = _call(
        sandbox,
        "POST",
        "/v1/invoiceitems",
        customer=customer["id"],
        invoice=invoice["id"],
        **{"pricing[price]": price["id"]},
    )
    invoice = _call(sandbox, "POST", f"/v1/invoices/{invoice['id']}/finalize")
    paid = _call(sandbox, "POST", f"/v1/invoices/{invoice['id']}/pay", paid_out_of_band="true")
    lines = _call(sandbox, "GET", f"/v1/invoices/{invoice['id']}/lines")
    events = _call(sandbox, "GET", "/v1/events")

    served = {
        "product": [product, _call(sandbox, "GET", f"/v1/products/{product['id']}")],
        "price": [price],
        "customer": [customer],
        "invoice": [invoice, paid],
        "invoiceitem": [item],
        "line_item": [*lines["data"], *paid["lines"]["data"]],
        "event": events["data"],
        "webhook_endpoint": [_call(sandbox, "GET", "/v1/webhook_endpoints")["data"][0]],
    }
    for type_, objects in served.items():
        assert objects, type_
        for obj in objects:
            assert obj["object"] == type_
            assert_shape(obj, fixtures[type_])
    for event in events["data"]:
        snapshot = event["data"]["object"]
        assert_shape(snapshot, fixtures[snapshot["object"]])


def test_lists_and_deleted_objects(sandbox: RunningSandbox, fixtures: dict[str, Any]) -> None:
    # Stripe's fixtures have no list object; its documented shape is these four fields.
    listed = _call(sandbox, "GET", "/v1/customers")
    assert set(listed) == {"object", "data", "has_more", "url"}
    searched = _call(sandbox, "GET", "/v1/customers/search", query="email:'x@example.com'")
    assert set(searched) == {"object", "data", "has_more", "next_page", "url"}
    customer = _call(sandbox, "POST", "/v1/customers")
    gone = _call(sandbox, "DELETE", f"/v1/customers/{customer['id']}")
    assert set(gone) == set(fixtures["deleted_customer"])
    invoice = _call(
        sandbox, "POST", "/v1/invoices", customer=_call(sandbox, "POST", "/v1/customers")["id"]
    )
    assert set(_call(sandbox, "DELETE", f"/v1/invoices/{invoice['id']}")) == set(
        fixtures["deleted_invoice"]
    )


def test_endive_shapes(sandbox: RunningSandbox) -> None:
    """The three places the sandbox once drifted from endive."""
    customer = _call(sandbox, "POST", "/v1/customers")
    invoice = _call(sandbox, "POST", "/v1/invoices", customer=customer["id"])
    assert "subscription" not in invoice  # moved to parent.subscription_details in 2025-03-31
    _call(
        sandbox,
        "POST",
        "/v1/invoiceitems",
        customer=customer["id"],
        invoice=invoice["id"],
        amount="300",
    )
    item = _call(sandbox, "GET", "/v1/invoiceitems")["data"][0]
    line = _call(sandbox, "GET", f"/v1/invoices/{invoice['id']}/lines")["data"][0]
    for priced in (item, line):
        # Optional but never null: absent when the amount was given without a price.
        assert priced["pricing"] == {"type": "price_details", "unit_amount_decimal": "300"}
    assert _call(sandbox, "POST", "/v1/products", name="P")["tax_details"] is None
