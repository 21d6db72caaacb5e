"""Declarative parameter schemas: type the decoded form and reject what Stripe would reject.

Each endpoint declares the parameters it accepts. Anything else is answered the way Stripe
does ("Received unknown parameter: lines[0][foo]"), which is what keeps typos in our client
code from passing here and failing against Stripe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from stripe_sandbox.currencies import SUPPORTED
from stripe_sandbox.errors import invalid, missing_parameter, unknown_parameter

# Stripe's documented metadata limits.
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500


class Unset:
    """Marker for `param=` (empty string): Stripe's way of clearing a nullable field."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


@dataclass(frozen=True, kw_only=True)
class Kind:
    required: bool = False
    nullable: bool = True  # may be cleared with an empty string

    def parse(self, value: Any, name: str) -> Any:
        raise NotImplementedError

    def check(self, value: Any, name: str) -> Any:
        if value == "":
            if not self.nullable or self.required:
                raise invalid(
                    f"You passed an empty string for '{name}'. We assume empty values are an "
                    f"attempt to unset a parameter; however '{name}' cannot be unset. You should "
                    f"remove '{name}' from your request or supply a non-empty value.",
                    param=name,
                    code="parameter_invalid_empty",
                )
            return UNSET
        return self.parse(value, name)


@dataclass(frozen=True)
class Str(Kind):
    max_length: int = 5000

    def parse(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise invalid(f"Invalid string: {_show(value)}", param=name)
        if len(value) > self.max_length:
            raise invalid(
                f"Invalid string: {value[:20]}...; must be at most {self.max_length} characters",
                param=name,
            )
        return value


@dataclass(frozen=True)
class Currency(Str):
    """A three-letter code Stripe supports; stored lowercase as Stripe stores it."""

    def parse(self, value: Any, name: str) -> str:
        code = super().parse(value, name).lower()
        if code not in SUPPORTED:
            raise invalid(
                f"Invalid currency: {code}. Stripe currently supports these currencies: "
                f"{', '.join(sorted(SUPPORTED))}",
                param=name,
            )
        return code


# Stripe's check is loose too: one @, something on each side, a dot in the domain.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Email(Str):
    max_length: int = 512

    def parse(self, value: Any, name: str) -> str:
        address = super().parse(value, name)
        if not _EMAIL.match(address):
            raise invalid(f"Invalid email address: {address}", param=name, code="email_invalid")
        return address


@dataclass(frozen=True)
class Enum(Kind):
    values: tuple[str, ...] = ()

    def parse(self, value: Any, name: str) -> str:
        if value not in self.values:
            raise invalid(f"Invalid {name}: must be one of {', '.join(self.values)}", param=name)
        return str(value)


@dataclass(frozen=True)
class Int(Kind):
    minimum: int | None = None
    maximum: int | None = None

    def parse(self, value: Any, name: str) -> int:
        digits = value.removeprefix("-") if isinstance(value, str) else ""
        if not (digits.isascii() and digits.isdigit()):
            raise invalid(
                f"Invalid integer: {_show(value)}", param=name, code="parameter_invalid_integer"
            )
        number = int(value)
        if self.minimum is not None and number < self.minimum:
            raise invalid(
                f"This value must be greater than or equal to {self.minimum}.", param=name
            )
        if self.maximum is not None and number > self.maximum:
            raise invalid(f"This value must be less than or equal to {self.maximum}.", param=name)
        return number


@dataclass(frozen=True)
class Dec(Kind):
    """A decimal string such as `unit_amount_decimal=12.5`."""

    def parse(self, value: Any, name: str) -> Decimal:
        try:
            number = Decimal(value) if isinstance(value, str) else None
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            raise invalid(f"Invalid decimal: {_show(value)}", param=name)
        return number


@dataclass(frozen=True)
class Bool(Kind):
    def parse(self, value: Any, name: str) -> bool:
        if value in ("true", "false"):
            return bool(value == "true")
        raise invalid(f"Invalid boolean: {_show(value)}", param=name)


@dataclass(frozen=True)
class Metadata(Kind):
    """`metadata[k]=v`; on update an empty value deletes that key, `metadata=` clears all."""

    def parse(self, value: Any, name: str) -> dict[str, str]:
        if not isinstance(value, dict):
            raise invalid(f"Invalid object: {_show(value)}", param=name)
        if len(value) > METADATA_MAX_KEYS:
            raise invalid(
                f"Invalid {name}: metadata can have at most {METADATA_MAX_KEYS} keys", param=name
            )
        for key, item in value.items():
            if not isinstance(item, str):
                raise invalid(f"Invalid string: {_show(item)}", param=f"{name}[{key}]")
            if len(key) > METADATA_MAX_KEY_LENGTH:
                raise invalid(
                    f"Metadata keys can have up to {METADATA_MAX_KEY_LENGTH} characters",
                    param=f"{name}[{key}]",
                )
            if len(item) > METADATA_MAX_VALUE_LENGTH:
                raise invalid(
                    f"Metadata values can have up to {METADATA_MAX_VALUE_LENGTH} characters",
                    param=f"{name}[{key}]",
                )
        return dict(value)


@dataclass(frozen=True)
class Obj(Kind):
    fields: Mapping[str, Kind] = field(default_factory=dict)

    def parse(self, value: Any, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise invalid(f"Invalid object: {_show(value)}", param=name)
        return parse_fields(self.fields, value, prefix=name)


@dataclass(frozen=True)
class Arr(Kind):
    item: Kind = field(default_factory=Str)
    max_items: int | None = None

    def parse(self, value: Any, name: str) -> list[Any]:
        if not isinstance(value, list):
            raise invalid(f"Invalid array: {_show(value)}", param=name)
        if self.max_items is not None and len(value) > self.max_items:
            raise invalid(
                f"Invalid array: {name} can have at most {self.max_items} elements", param=name
            )
        return [self.item.check(item, f"{name}[{i}]") for i, item in enumerate(value)]


@dataclass(frozen=True)
class Keyed(Kind):
    """A hash whose keys are data (`currency_options[eur][unit_amount]=…`), not names."""

    key: Kind = field(default_factory=Str)
    value: Kind = field(default_factory=Str)

    def parse(self, value: Any, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise invalid(f"Invalid object: {_show(value)}", param=name)
        return {
            self.key.parse(key, f"{name}[{key}]"): self.value.check(item, f"{name}[{key}]")
            for key, item in value.items()
        }


@dataclass(frozen=True)
class UpTo(Kind):
    """A tier's upper bound: a positive integer, or `inf` for the last tier."""

    def parse(self, value: Any, name: str) -> int | None:
        if value == "inf":
            return None
        return int(Int(minimum=1).parse(value, name))


@dataclass(frozen=True)
class IntOrRange(Kind):
    """`created=123` or `created[gte]=123`: the timestamp filters of list endpoints."""

    def parse(self, value: Any, name: str) -> dict[str, int]:
        if isinstance(value, dict):
            bounds = parse_fields(RANGE_FIELDS, value, prefix=name)
            return {op: bound for op, bound in bounds.items() if isinstance(bound, int)}
        return {"eq": Int().parse(value, name)}


RANGE_FIELDS: Mapping[str, Kind] = {op: Int() for op in ("gt", "gte", "lt", "lte")}


def parse_fields(
    schema: Mapping[str, Kind], raw: Mapping[str, Any], *, prefix: str = ""
) -> dict[str, Any]:
    """Validate `raw` against `schema`; unknown and missing parameters fail like Stripe."""
    for key in raw:
        if key not in schema:
            raise unknown_parameter(f"{prefix}[{key}]" if prefix else key)
    parsed: dict[str, Any] = {}
    for key, kind in schema.items():
        name = f"{prefix}[{key}]" if prefix else key
        if key not in raw:
            if kind.required:
                raise missing_parameter(name)
            continue
        parsed[key] = kind.check(raw[key], name)
    return parsed


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, list):
        return "[...]"
    return str(value)


# Shared pieces of many schemas.
EXPAND = Arr(Str())
LIST_PAGING: Mapping[str, Kind] = {
    "limit": Int(minimum=1, maximum=100),
    "starting_after": Str(),
    "ending_before": Str(),
    "expand": EXPAND,
}
SEARCH: Mapping[str, Kind] = {
    "query": Str(required=True),
    "limit": Int(minimum=1, maximum=100),
    "page": Str(),
    "expand": EXPAND,
}
