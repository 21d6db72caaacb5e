"""The billing request: the pipeline's one input, validated completely up front.

A request becomes exactly one Stripe invoice. Everything Stripe or our database
would refuse later is refused here, before any side effect, and *all* problems
are reported at once with a field path and a fix, so a user corrects a file in
one pass instead of one error per run.

Field paths index lists from 0 (`items[0]` is the first item), as in jq.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from invoiceflow.money import (
    SUPPORTED_CURRENCIES,
    THREE_DECIMAL_CURRENCIES,
    format_minor_units,
    parse_decimal,
    to_minor_units,
)
from invoiceflow.request_input import (
    MAX_JSON_DEPTH,
    MAX_NUMBER_CHARS,
    InvalidJson,
    Problem,
    RequestError,
    describe,
    field_path,
    path_part,
    read_json,
    read_request_file,
)
from invoiceflow.stripe_limits import (
    MAX_AMOUNT,
    MAX_ITEMS_PER_INVOICE,
    METADATA_MAX_KEY_LENGTH,
    METADATA_MAX_KEYS,
    METADATA_MAX_VALUE_LENGTH,
)

# What callers import from here; reading raw text lives in `request_input`.
__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_NUMBER_CHARS",
    "MAX_QUANTITY",
    "BillingRequest",
    "Customer",
    "InvalidJson",
    "Item",
    "Problem",
    "RequestError",
    "load_request",
    "parse_request",
    "read_json",
]

# No real order has a million of one thing; a bigger number is nearly always an
# amount typed into the quantity field. (The line cap, MAX_AMOUNT, is the hard limit.)
MAX_QUANTITY = 1_000_000
# We write our own keys (invoiceflow_request_id, invoiceflow_fingerprint, …) into
# the invoice's metadata; these are kept free for them under Stripe's 50-key cap.
RESERVED_METADATA_PREFIX = "invoiceflow_"
RESERVED_METADATA_KEYS = 5
USER_METADATA_MAX_KEYS = METADATA_MAX_KEYS - RESERVED_METADATA_KEYS
# Bumped whenever the normalized form changes meaning, so old fingerprints never
# match new ones by accident.
_FINGERPRINT_VERSION = 1

# Pragmatic address check (email_validator is not a dependency): ASCII local part,
# dotted domain with a letter TLD, SMTP's 254-character limit.
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_EMAIL_MAX_LENGTH = 254

# The request's currency, for validators of nested items that cannot see it:
# None outside a BillingRequest, "" inside one whose currency is invalid.
# Set and reset around one validation (`_currency_for_items`): it lives as long
# as that call and decides no read or write. Pydantic's validation context is
# the alternative, but then every `BillingRequest.model_validate(payload)` (the
# ledger's stored payloads, Prefect decoding a flow parameter) would have to
# pass the currency in that the payload already holds.
_CURRENCY: ContextVar[str | None] = ContextVar("invoiceflow_request_currency", default=None)


class _Nested(ValueError):
    """Several problems from one validator, with paths relative to where it ran."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


def _charset(pattern: str, allowed: str) -> Callable[[str], str]:
    """A validator naming the characters that are wrong, not a regex."""
    ok = re.compile(f"[{pattern}]")

    def check(value: str) -> str:
        bad = sorted({c for c in value if not ok.fullmatch(c)})
        if bad:
            shown = ", ".join(repr(c) for c in bad)
            raise ValueError(f"{value!r} may only contain {allowed}; remove {shown}")
        return value

    return check


def _email(value: str) -> str:
    if len(value) > _EMAIL_MAX_LENGTH or _EMAIL_RE.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a valid email address, e.g. 'billing@example.com'")
    return value


_SAFE = "letters, digits, '.', '_' and '-'"
# Our ids end up inside Stripe ids and idempotency keys, so they stay plain ASCII.
OurId = Annotated[
    str, Field(min_length=1, max_length=64), AfterValidator(_charset(r"A-Za-z0-9._-", _SAFE))
]
# 128 characters leaves room for our prefixes within Stripe's 255-character
# idempotency keys; ':' is allowed so callers can namespace ids ('acme:2024-06').
RequestId = Annotated[
    str,
    Field(min_length=1, max_length=128),
    AfterValidator(_charset(r"A-Za-z0-9._:-", "letters, digits, '.', '_', ':' and '-'")),
]


class _Model(BaseModel):
    # strict: no silent coercion ("12" -> 12, 12.0 -> 12, YAML dates -> strings);
    # forbid: a misspelt field is an error, not an ignored line on an invoice.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Customer(_Model):
    id: OurId
    email: Annotated[str, AfterValidator(_email)]
    name: str = Field(min_length=1, max_length=256)


class Item(_Model):
    """One invoice line. After validation `unit_amount` is always set, in minor units."""

    # The sku becomes part of a Stripe product id, hence the plain characters.
    sku: OurId
    name: str = Field(min_length=1, max_length=250)
    unit_amount: StrictInt = Field(default=0, gt=0, le=MAX_AMOUNT)
    # Input-only alternative to unit_amount; resolved and dropped during validation.
    unit_price: str | None = Field(default=None, exclude=True)
    quantity: StrictInt = Field(default=1, ge=1, le=MAX_QUANTITY)
    description: str | None = Field(default=None, max_length=500)

    @property
    def line_amount(self) -> int:
        return self.unit_amount * self.quantity

    @field_validator("unit_price", mode="before")
    @classmethod
    def _price_is_text(cls, value: object) -> object:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            raise ValueError(
                f"must be a quoted decimal string like '{value}', not a number: numbers "
                "pass through binary floats and lose cents; quote it"
            )
        return value  # wrong type altogether: pydantic's string check reports it

    @field_validator("unit_price")
    @classmethod
    def _price_fits_currency(cls, value: str | None) -> str | None:
        currency = _CURRENCY.get()
        if value is not None and currency:
            to_minor_units(value, currency)
        elif value is not None:
            parse_decimal(value)  # no valid currency: at least check the spelling
        return value

    @model_validator(mode="after")
    def _resolve_amount(self) -> Self:
        has_amount, has_price = "unit_amount" in self.model_fields_set, self.unit_price is not None
        if has_amount == has_price:
            raise ValueError(
                "give exactly one of unit_amount (integer minor units, e.g. 1234) or "
                f"unit_price (decimal string, e.g. '12.34'); {'both' if has_amount else 'neither'}"
                " given"
            )
        currency = _CURRENCY.get()
        item = self
        if self.unit_price is not None:
            if currency is None:
                raise ValueError("unit_price needs a currency; validate the whole BillingRequest")
            if not currency:
                return self  # the currency field's own error explains why nothing resolved
            amount = to_minor_units(self.unit_price, currency)
            item = self.model_copy(update={"unit_amount": amount, "unit_price": None})
        field = "unit_price" if has_price else "unit_amount"
        problems = []
        if currency in THREE_DECIMAL_CURRENCIES and item.unit_amount % 10:
            # Stripe requires the last digit of three-decimal amounts to be 0
            # (docs.stripe.com/currencies#three-decimal).
            problems.append(
                (
                    f".{field}",
                    f"{currency.upper()} amounts must end in 0 at Stripe "
                    f"({format_minor_units(item.unit_amount, currency)} does not)",
                )
            )
        if item.line_amount > MAX_AMOUNT:
            shown = (lambda a: format_minor_units(a, currency)) if currency else str
            problems.append(
                (
                    ".quantity",
                    f"line amount {shown(item.unit_amount)} x {item.quantity} = "
                    f"{shown(item.line_amount)} exceeds Stripe's maximum of {shown(MAX_AMOUNT)}; "
                    "split it over several lines or requests",
                )
            )
        if problems:
            raise _Nested(problems)
        return item


class BillingRequest(_Model):
    """A validated, normalized billing request (currency lowercase, amounts resolved)."""

    request_id: RequestId
    customer: Customer
    currency: str
    days_until_due: StrictInt = Field(default=30, ge=1, le=365)
    description: str | None = Field(default=None, max_length=500)
    metadata: dict[str, str] = Field(default_factory=dict)
    items: list[Item] = Field(min_length=1, max_length=MAX_ITEMS_PER_INVOICE)

    @model_validator(mode="wrap")
    @classmethod
    def _share_currency(cls, data: Any, handler: Callable[[Any], Self]) -> Self:
        with _currency_for_items(data):
            return handler(data)

    @field_validator("currency", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("currency")
    @classmethod
    def _supported(cls, value: str) -> str:
        if value not in SUPPORTED_CURRENCIES:
            close = difflib.get_close_matches(value, sorted(SUPPORTED_CURRENCIES), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"{value!r} is not a currency Stripe supports; {hint}"
                "use a three-letter ISO 4217 code such as 'usd' or 'eur'"
            )
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_limits(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value  # pydantic reports the wrong type
        problems: list[tuple[str, str]] = []
        if len(value) > USER_METADATA_MAX_KEYS:
            problems.append(
                (
                    "",
                    f"has {len(value)} keys; at most {USER_METADATA_MAX_KEYS} "
                    f"(Stripe allows {METADATA_MAX_KEYS}, {RESERVED_METADATA_KEYS} "
                    "are reserved for invoiceflow)",
                )
            )
        for key, val in value.items():
            where = path_part(key)
            if not isinstance(key, str) or not key:
                problems.append((where, "keys must be non-empty strings"))
                continue
            if len(key) > METADATA_MAX_KEY_LENGTH:
                problems.append(
                    (
                        where,
                        f"key is {len(key)} characters; Stripe allows "
                        f"at most {METADATA_MAX_KEY_LENGTH}",
                    )
                )
            if "[" in key or "]" in key:
                problems.append((where, "key must not contain '[' or ']' (Stripe refuses them)"))
            if key.startswith(RESERVED_METADATA_PREFIX):
                problems.append(
                    (
                        where,
                        f"keys starting with {RESERVED_METADATA_PREFIX!r} are "
                        "reserved for invoiceflow; rename it",
                    )
                )
            if not isinstance(val, str):
                problems.append((where, f"value must be a string, got {describe(val)}; quote it"))
            elif not val:
                problems.append(
                    (where, "value is empty; Stripe drops empty values, so omit the key instead")
                )
            elif len(val) > METADATA_MAX_VALUE_LENGTH:
                problems.append(
                    (
                        where,
                        f"value is {len(val)} characters; Stripe allows at "
                        f"most {METADATA_MAX_VALUE_LENGTH}",
                    )
                )
        if problems:
            raise _Nested(problems)
        return value

    @field_validator("items", mode="wrap")
    @classmethod
    def _items_agree(
        cls, value: object, handler: Callable[[object], list[Item]], info: ValidationInfo
    ) -> list[Item]:
        # Wrapped so that sku clashes (checked on the raw input) are reported
        # together with the items' own errors, not only once those are fixed.
        problems = _sku_name_clashes(value)
        try:
            items = handler(value)
        except ValidationError as err:
            inner = [p for e in err.errors() for p in _problems(e, within=("items",))]
            own = [(p.field.removeprefix("items"), p.message) for p in inner]
            raise _Nested(own + problems) from None
        total = sum(item.line_amount for item in items)
        if total > MAX_AMOUNT:
            currency = info.data.get("currency")
            shown = (lambda a: format_minor_units(a, currency)) if currency else str
            problems.append(
                (
                    "",
                    f"invoice total {shown(total)} exceeds Stripe's maximum of "
                    f"{shown(MAX_AMOUNT)}; split it into several requests",
                )
            )
        if problems:
            raise _Nested(problems)
        return items

    def total_amount(self) -> int:
        """The invoice total in minor units."""
        return sum(item.line_amount for item in self.items)

    def fingerprint(self) -> str:
        """sha256 of the normalized content: same bill, same fingerprint, however written.

        Used to tell an idempotent resubmission of a request_id from a changed one.
        """
        payload = {"v": _FINGERPRINT_VERSION, "request": self.model_dump(mode="json")}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _sku_name_clashes(items: object) -> list[tuple[str, str]]:
    """One sku is one Stripe product with one name; a second name for it is an error."""
    problems: list[tuple[str, str]] = []
    first: dict[str, tuple[int, str]] = {}
    for index, item in enumerate(items if isinstance(items, list) else []):
        sku, name = (item.get("sku"), item.get("name")) if isinstance(item, Mapping) else ("", "")
        if sku and name and isinstance(sku, str) and isinstance(name, str):
            seen_at, seen_name = first.setdefault(sku, (index, name))
            if seen_name != name:
                problems.append(
                    (
                        f"[{index}].name",
                        f"sku {sku!r} already named {seen_name!r} "
                        f"in items[{seen_at}]; one sku, one name",
                    )
                )
    return problems


@contextmanager
def _currency_for_items(data: object) -> Iterator[None]:
    currency = data.get("currency") if isinstance(data, Mapping) else None
    if isinstance(currency, str) and currency.lower() in SUPPORTED_CURRENCIES:
        token = _CURRENCY.set(currency.lower())
    else:
        token = _CURRENCY.set("")
    try:
        yield
    finally:
        _CURRENCY.reset(token)


def parse_request(data: object) -> BillingRequest:
    """Validate raw data (e.g. parsed JSON) into a BillingRequest, or raise RequestError."""
    if not isinstance(data, Mapping):
        raise RequestError(
            [
                Problem(
                    "",
                    "a billing request must be a mapping of fields "
                    f"(request_id, customer, currency, items, ...), "
                    f"got {describe(data)}",
                )
            ]
        )
    try:
        return BillingRequest.model_validate(data)
    except ValidationError as err:
        raise RequestError([p for e in err.errors() for p in _problems(e)]) from None


def load_request(path: str | Path) -> BillingRequest:
    """Read a .json, .yaml or .yml file and parse it; every failure is a RequestError."""
    return parse_request(read_request_file(path))


# --- pydantic errors -> Problems ---------------------------------------------

_MODELS: dict[str, type[BaseModel]] = {"customer": Customer, "items": Item}


def _problems(error: ErrorDetails, within: tuple[int | str, ...] = ()) -> list[Problem]:
    """Problems for one pydantic error; `within` is where a nested validation ran."""
    loc = (*within, *error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _Nested):
        return [Problem((field_path(loc) + sub).lstrip("."), msg) for sub, msg in cause.problems]
    return [Problem(field_path(loc), _message(error, loc))]


def _message(error: ErrorDetails, loc: tuple[int | str, ...]) -> str:
    kind, value = error["type"], error["input"]
    ctx: dict[str, Any] = error.get("ctx", {})
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        model = BillingRequest
        for part in loc[:-1]:
            model = _MODELS.get(str(part), model)  # type: ignore[assignment]
        fields = list(model.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown field; {hint}allowed here: {', '.join(fields)}"
    if kind == "int_type":
        message = f"must be a whole number, got {describe(value)}"
        if loc[-1] == "unit_amount":
            message += "; it is in minor units (1234 = 12.34 USD); or give unit_price: '12.34'"
        elif isinstance(value, str):
            message += "; remove the quotes"
        return message
    if kind == "string_type":
        return f"must be a string, got {describe(value)}; put it in quotes"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of fields, got {describe(value)}"
    if kind == "list_type":
        return f"must be a list, got {describe(value)}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"is {len(value)} characters; at most {ctx['max_length']} allowed"
    if kind == "too_short":
        return f"has {ctx['actual_length']}; at least {ctx['min_length']} needed"
    if kind == "too_long":
        limit = " (Stripe's per-invoice limit)" if loc == ("items",) else ""
        return f"has {ctx['actual_length']}; at most {ctx['max_length']} allowed{limit}"
    bounds = {
        "greater_than": "greater than",
        "greater_than_equal": "at least",
        "less_than": "less than",
        "less_than_equal": "at most",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit}, got {value}"
    return str(error["msg"])
