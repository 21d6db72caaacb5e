"""The billing request: every bad input is refused with a field path and a fix."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from invoiceflow.money import (
    MAX_AMOUNT,
    SUPPORTED_CURRENCIES,
    currency_exponent,
    format_minor_units,
    to_minor_units,
)
from invoiceflow.request import (
    BillingRequest,
    Item,
    Problem,
    RequestError,
    load_request,
    parse_request,
)


def valid() -> dict[str, Any]:
    return {
        "request_id": "acme:2024-06",
        "customer": {"id": "cust-1", "email": "billing@acme.example", "name": "Acme Ltd"},
        "currency": "usd",
        "metadata": {"po": "4711"},
        "items": [
            {"sku": "widget", "name": "Widget", "unit_amount": 1234, "quantity": 2},
            {"sku": "gadget", "name": "Gadget", "unit_price": "5.00"},
        ],
    }


def with_(path: str, value: Any) -> dict[str, Any]:
    """valid() with one dotted path ('items.0.unit_amount') set, or deleted if value is DELETE."""
    data = valid()
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return data


DELETE = object()


def item(**fields: Any) -> dict[str, Any]:
    return {"sku": "x", "name": "X", **fields}


BAD_INPUTS: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, data, field path, fragment of the message)
    ("negative amount", with_("items.0.unit_amount", -5), "items[0].unit_amount", "greater than 0"),
    ("zero amount", with_("items.0.unit_amount", 0), "items[0].unit_amount", "greater than 0"),
    ("float amount", with_("items.0.unit_amount", 12.5), "items[0].unit_amount", "minor units"),
    ("bool amount", with_("items.0.unit_amount", True), "items[0].unit_amount", "boolean true"),
    ("string amount", with_("items.0.unit_amount", "1234"), "items[0].unit_amount", "'1234'"),
    (
        "amount over max",
        with_("items.0.unit_amount", MAX_AMOUNT + 1),
        "items[0].unit_amount",
        "at most 99999999",
    ),
    ("price as number", with_("items.1.unit_price", 5.0), "items[1].unit_price", "quote it"),
    ("price negative", with_("items.1.unit_price", "-5"), "items[1].unit_price", "positive"),
    ("price zero", with_("items.1.unit_price", "0.00"), "items[1].unit_price", "zero"),
    ("price exponent", with_("items.1.unit_price", "1e3"), "items[1].unit_price", "exponent"),
    ("price NaN", with_("items.1.unit_price", "NaN"), "items[1].unit_price", "only digits"),
    (
        "price not numeric",
        with_("items.1.unit_price", "five"),
        "items[1].unit_price",
        "not a valid amount",
    ),
    (
        "both amount and price",
        with_("items.1", item(unit_amount=1, unit_price="1")),
        "items[1]",
        "both given",
    ),
    ("neither amount nor price", with_("items.1", item()), "items[1]", "neither given"),
    ("unknown currency", with_("currency", "xyz"), "currency", "not a currency Stripe supports"),
    (
        "usd 3 decimals",
        with_("items.1.unit_price", "12.345"),
        "items[1].unit_price",
        "more decimals than USD allows (2); use e.g. '12.34'",
    ),
    (
        "jpy decimals",
        {**with_("items.1.unit_price", "12.5"), "currency": "jpy"},
        "items[1].unit_price",
        "JPY allows (0); use e.g. '12'",
    ),
    (
        "bhd 4 decimals",
        {**with_("items.1.unit_price", "1.2345"), "currency": "bhd"},
        "items[1].unit_price",
        "BHD allows (3)",
    ),
    (
        "bhd last digit",
        {**with_("items.1.unit_price", "1.234"), "currency": "bhd"},
        "items[1].unit_price",
        "must end in 0",
    ),
    ("no items", with_("items", []), "items", "at least 1"),
    ("251 items", with_("items", [item(unit_amount=1)] * 251), "items", "at most 250"),
    ("bad email", with_("customer.email", "billing@acme"), "customer.email", "valid email"),
    ("email with space", with_("customer.email", "a b@x.org"), "customer.email", "valid email"),
    ("missing request_id", with_("request_id", DELETE), "request_id", "is required"),
    ("missing customer", with_("customer", DELETE), "customer", "is required"),
    ("missing items", with_("items", DELETE), "items", "is required"),
    ("missing email", with_("customer.email", DELETE), "customer.email", "is required"),
    ("unknown field", with_("due_days", 3), "due_days", "unknown field"),
    (
        "misspelt item field",
        with_("items.0.quantiy", 3),
        "items[0].quantiy",
        "did you mean 'quantity'",
    ),
    ("request_id too long", with_("request_id", "r" * 129), "request_id", "at most 128"),
    ("request_id bad chars", with_("request_id", "a/b c"), "request_id", "remove ' ', '/'"),
    ("sku bad chars", with_("items.0.sku", "wid get!"), "items[0].sku", "remove ' ', '!'"),
    ("sku empty", with_("items.0.sku", ""), "items[0].sku", "must not be empty"),
    (
        "sku clash",
        with_("items.1", {"sku": "widget", "name": "Other", "unit_amount": 1}),
        "items[1].name",
        "sku 'widget' already named 'Widget' in items[0]; one sku, one name",
    ),
    (
        "51 metadata keys",
        with_("metadata", {f"k{i}": "v" for i in range(51)}),
        "metadata",
        "at most 45",
    ),
    (
        "46 metadata keys",
        with_("metadata", {f"k{i}": "v" for i in range(46)}),
        "metadata",
        "reserved for invoiceflow",
    ),
    ("long metadata key", with_("metadata", {"k" * 41: "v"}), "metadata." + "k" * 41, "at most 40"),
    ("long metadata value", with_("metadata.po", "v" * 501), "metadata.po", "at most 500"),
    ("bracket metadata key", with_("metadata", {"a[b]": "v"}), "metadata['a[b]']", "'['"),
    (
        "reserved metadata key",
        with_("metadata", {"invoiceflow_request_id": "x"}),
        "metadata.invoiceflow_request_id",
        "reserved",
    ),
    ("metadata number value", with_("metadata.po", 4711), "metadata.po", "quote it"),
    ("quantity zero", with_("items.0.quantity", 0), "items[0].quantity", "at least 1"),
    ("quantity huge", with_("items.0.quantity", 10**7), "items[0].quantity", "at most 1000000"),
    (
        "line over max",
        with_("items.0", item(unit_amount=MAX_AMOUNT, quantity=2)),
        "items[0].quantity",
        "exceeds Stripe's maximum of 999999.99 USD",
    ),
    (
        "total over max",
        with_("items", [item(unit_amount=MAX_AMOUNT)] * 2),
        "items",
        "invoice total 1999999.98 USD exceeds",
    ),
    ("days_until_due zero", with_("days_until_due", 0), "days_until_due", "at least 1"),
    ("days_until_due too long", with_("days_until_due", 366), "days_until_due", "at most 365"),
    ("customer not a mapping", with_("customer", "acme"), "customer", "must be a mapping"),
    ("name not a string", with_("customer.name", 42), "customer.name", "put it in quotes"),
]


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_refused_with_field_and_fix(
    data: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(RequestError) as caught:
        parse_request(data)
    messages = {p.field: p.message for p in caught.value.problems}
    assert field in messages, caught.value.problems
    assert fragment in messages[field]
    assert f"{field}: " in str(caught.value)


def test_all_violations_are_reported_at_once() -> None:
    data = valid()
    data["customer"]["email"] = "nope"
    data["currency"] = "USD"
    data["items"][0]["unit_amount"] = 1.5
    data["items"][1]["unit_price"] = "5.001"
    data["items"].append({"sku": "widget", "name": "Renamed", "unit_amount": 1})
    data["colour"] = "red"
    with pytest.raises(RequestError) as caught:
        parse_request(data)
    fields = [p.field for p in caught.value.problems]
    assert sorted(fields) == sorted(
        ["customer.email", "items[0].unit_amount", "items[1].unit_price", "items[2].name", "colour"]
    )
    assert len(str(caught.value).splitlines()) == 5


def test_non_mapping_request_is_refused() -> None:
    with pytest.raises(RequestError, match="must be a mapping"):
        parse_request(["not", "a", "request"])


# --- loading files ----------------------------------------------------------

YAML_REQUEST = """\
request_id: acme:2024-06
customer: {id: cust-1, email: billing@acme.example, name: Acme Ltd}
currency: USD
metadata: {po: "4711"}
items:
  - {sku: widget, name: Widget, unit_amount: 1234, quantity: 2}
  - {sku: gadget, name: Gadget, unit_price: "5.00"}
"""


def test_json_and_yaml_files_load_to_the_same_request(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps(valid()))
    (tmp_path / "r.yml").write_text(YAML_REQUEST)
    from_json = load_request(tmp_path / "r.json")
    from_yaml = load_request(str(tmp_path / "r.yml"))
    assert from_json == from_yaml
    assert from_json.total_amount() == 2 * 1234 + 500
    assert from_json.fingerprint() == from_yaml.fingerprint()


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("r.yaml", "- just\n- a list\n", "top level must be a mapping"),
        ("r.yaml", "request_id: [unclosed\n", "r.yaml, line 2: invalid YAML"),
        ("r.yaml", "request_id: a\nrequest_id: b\n", "line 2: invalid YAML: duplicate key"),
        ("r.json", '{"request_id": "a",\n "currency": }', "r.json, line 2 column 14: invalid JSON"),
        ("r.json", '{"a": 1, "a": 2}', "invalid JSON: duplicate key 'a'"),
        ("r.yaml", "", "got null"),
        ("r.json", '"just a string"', "got the string 'just a string'"),
        ("r.txt", "{}", "use .json, .yaml or .yml"),
    ],
)
def test_unloadable_files_name_file_and_line(
    tmp_path: Path, name: str, text: str, fragment: str
) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(RequestError) as caught:
        load_request(tmp_path / name)
    assert fragment in str(caught.value)
    assert name in str(caught.value)


def test_missing_file_is_a_request_error(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="cannot read"):
        load_request(tmp_path / "absent.json")


def test_json_number_for_unit_price_keeps_its_digits_in_the_message(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(valid()).replace('"5.00"', "5.10"))
    with pytest.raises(RequestError) as caught:
        load_request(path)
    assert caught.value.problems[0].field == "items[1].unit_price"
    assert "'5.10'" in caught.value.problems[0].message


# --- money ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "currency", "minor"),
    [
        ("12.34", "usd", 1234),
        ("12.340", "usd", 1234),
        ("12", "usd", 1200),
        ("0.01", "eur", 1),
        ("1200", "jpy", 1200),
        ("1.234", "bhd", 1234),
        ("0.5", "kwd", 500),
        ("7", "KRW", 7),
    ],
)
def test_to_minor_units_is_exact(price: str, currency: str, minor: int) -> None:
    assert to_minor_units(price, currency) == minor


@pytest.mark.parametrize(
    ("price", "currency", "fragment"),
    [
        ("12.345", "usd", "use e.g. '12.34'"),
        ("12.5", "jpy", "use e.g. '12'"),
        ("1.2345", "bhd", "use e.g. '1.234'"),
        ("0.001", "usd", "use e.g. '0.01'"),
        ("-1", "usd", "positive"),
        ("0", "usd", "zero"),
        ("1e3", "usd", "exponent"),
        ("NaN", "usd", "only digits"),
        ("Infinity", "usd", "only digits"),
        (" 1", "usd", "only digits"),
        ("1,5", "eur", "only digits"),
        ("1000000.00", "usd", "maximum amount of 999999.99 USD"),
        ("1", "xyz", "not a currency"),
        ("9" * 50, "usd", "50 characters"),
    ],
)
def test_to_minor_units_refuses_rather_than_rounds(
    price: str, currency: str, fragment: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        to_minor_units(price, currency)


def test_currency_facts() -> None:
    assert [currency_exponent(c) for c in ("JPY", "usd", "kwd", "xyz")] == [0, 2, 3, 2]
    assert {"usd", "eur", "gbp", "jpy", "krw", "chf", "bhd", "kwd", "jod", "omr", "tnd"} <= (
        SUPPORTED_CURRENCIES
    )
    assert len(SUPPORTED_CURRENCIES) >= 135
    assert format_minor_units(1234, "usd") == "12.34 USD"
    assert format_minor_units(1200, "jpy") == "1200 JPY"
    assert format_minor_units(1234, "bhd") == "1.234 BHD"
    assert format_minor_units(5, "eur") == "0.05 EUR"


# --- normalization and fingerprint --------------------------------------------


@pytest.mark.parametrize(
    ("currency", "price", "minor"),
    [("usd", "19.99", 1999), ("jpy", "1500", 1500), ("bhd", "2.500", 2500), ("kwd", "0.25", 250)],
)
def test_unit_price_resolves_to_unit_amount(currency: str, price: str, minor: int) -> None:
    request = parse_request(
        {**valid(), "currency": currency, "items": [item(unit_price=price, quantity=3)]}
    )
    assert request.items[0].unit_amount == minor
    assert request.total_amount() == 3 * minor
    assert "unit_price" not in request.model_dump()["items"][0]


def test_currency_is_case_insensitive_and_normalized() -> None:
    assert parse_request({**valid(), "currency": "UsD"}).currency == "usd"


def test_normalized_form_round_trips() -> None:
    request = parse_request(valid())
    assert BillingRequest.model_validate(request.model_dump()) == request


def test_fingerprint_is_the_same_for_equivalent_content() -> None:
    base = parse_request(valid())
    as_amount = with_("items.1", {"sku": "gadget", "name": "Gadget", "unit_amount": 500})
    spelled_out = {**as_amount, "currency": "USD", "days_until_due": 30}
    spelled_out["items"][1]["quantity"] = 1
    assert parse_request(spelled_out).fingerprint() == base.fingerprint()
    assert parse_request(with_("items.1.unit_price", "5.000")).fingerprint() == base.fingerprint()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("items.1.unit_price", "5.01"),
        ("items.0.quantity", 3),
        ("currency", "eur"),
        ("customer.email", "other@acme.example"),
        ("metadata.po", "4712"),
        ("days_until_due", 14),
        ("request_id", "acme:2024-07"),
        ("description", "June"),
    ],
)
def test_fingerprint_changes_with_content(path: str, value: Any) -> None:
    assert parse_request(with_(path, value)).fingerprint() != parse_request(valid()).fingerprint()


def test_fingerprint_depends_on_item_order() -> None:
    reordered = valid()
    reordered["items"].reverse()
    assert parse_request(reordered).fingerprint() != parse_request(valid()).fingerprint()


def test_same_sku_same_name_is_two_lines() -> None:
    data = with_("items.1", {"sku": "widget", "name": "Widget", "unit_amount": 99})
    assert [i.unit_amount for i in parse_request(data).items] == [1234, 99]


def test_item_with_unit_price_needs_the_request_currency() -> None:
    with pytest.raises(ValueError, match="needs a currency"):
        Item.model_validate(item(unit_price="1.00"))


def test_problem_renders_field_then_message() -> None:
    err = RequestError([Problem("items[3].unit_price", "bad"), Problem("", "file is empty")])
    assert str(err).splitlines() == ["items[3].unit_price: bad", "file is empty"]
    assert isinstance(err, ValueError)


def test_input_is_not_mutated() -> None:
    data = valid()
    before = copy.deepcopy(data)
    parse_request(data)
    assert data == before
