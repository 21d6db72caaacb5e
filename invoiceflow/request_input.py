"""A request's raw text into plain data: one JSON parser for every way a request
arrives (a request file, a JSONL line, the HTTP trigger's body), and YAML.

Read strictly, so that nothing is silently lost before validation: each key
once, fractions as Decimal, no NaN, bounded depth and number length. Also how
messages name a place in that data (`items[0].sku`) and the problems they
report, shared with the request's validation (`invoiceflow.request`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where (`items[3].unit_price`) and how to fix it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class RequestError(ValueError):
    """A request cannot be billed. `problems` lists every violation, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# A request is four levels deep (request → items → item → …); far deeper is not a
# request, and Python's recursion limit must never be what decides.
MAX_JSON_DEPTH = 32
# No field takes a number this long (MAX_AMOUNT has 8 digits): refused by name,
# before Python's 4300-digit limit of int() or a 500 KB number in a message.
MAX_NUMBER_CHARS = 40
_TOO_DEEP = f"nested more than {MAX_JSON_DEPTH} levels deep"


class InvalidJson(ValueError):
    """Not one JSON document as requests are read: why, and where when known."""

    def __init__(self, reason: str, line: int | None = None, column: int | None = None) -> None:
        self.reason = reason
        self.line = line
        self.column = column
        super().__init__(reason if line is None else f"{reason} at line {line} column {column}")


def read_json(raw: bytes | str) -> Any:
    """Parse one JSON document exactly as every request source does: a request
    file, a JSONL line, the HTTP trigger's body.

    UTF-8 (a leading BOM allowed); each key once per object (a repeated key
    would silently drop a value); fractions as Decimal, never float; no NaN or
    Infinity; numbers of at most MAX_NUMBER_CHARS characters; at most
    MAX_JSON_DEPTH levels. Anything else raises InvalidJson naming the field.
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise InvalidJson(
                f"not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}); send UTF-8"
            ) from None
    else:
        text = raw.removeprefix("\ufeff")
    try:
        data = json.loads(
            text,
            object_pairs_hook=_json_object,
            parse_int=_json_number,
            parse_float=_json_number,
            parse_constant=_json_constant,
        )
    except json.JSONDecodeError as err:
        raise InvalidJson(err.msg, err.lineno, err.colno) from None
    except RecursionError:
        raise InvalidJson(_TOO_DEEP) from None
    _check_tree(data)
    return data


def read_yaml(text: str) -> Any:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except RecursionError:
        raise InvalidJson(_TOO_DEEP) from None
    _check_tree(data)
    return data


class _Repeated(dict[str, Any]):
    """A JSON object that named a key twice; never returned (`_check_tree` refuses it)."""

    repeated: tuple[str, ...] = ()


@dataclass(frozen=True)
class _LongNumber:
    """A number too long for any field; never returned (`_check_tree` refuses it)."""

    length: int


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    seen: set[str] = set()
    twice: list[str] = []
    for key, _ in pairs:
        (twice.append if key in seen else seen.add)(key)
    repeated = _Repeated(result)
    repeated.repeated = tuple(twice)
    return repeated


def _json_number(text: str) -> int | Decimal | _LongNumber:
    if len(text) > MAX_NUMBER_CHARS:
        return _LongNumber(len(text))
    return Decimal(text) if any(c in text for c in ".eE") else int(text)


def _json_constant(name: str) -> object:
    raise InvalidJson(f"{name} is not a JSON number; give a number or a quoted string")


def _number_length(value: object) -> int | None:
    if isinstance(value, _LongNumber):
        return value.length
    if isinstance(value, int) and value.bit_length() > 3 * MAX_NUMBER_CHARS:  # YAML's ints
        return len(str(value))
    return None


def _check_tree(data: object) -> None:
    """Refuse what the parsers only marked: a repeated key, a number too long, too deep."""
    stack: list[tuple[object, tuple[int | str, ...]]] = [(data, ())]
    while stack:
        value, loc = stack.pop()
        at = f" in {field_path(loc)}" if loc else ""
        if len(loc) > MAX_JSON_DEPTH:
            raise InvalidJson(f"{_TOO_DEEP} in {field_path(loc[:2])}…")
        if isinstance(value, _Repeated):
            raise InvalidJson(f"duplicate key {value.repeated[0]!r}{at}; give each key once")
        length = _number_length(value)
        if length is not None and length > MAX_NUMBER_CHARS:
            raise InvalidJson(
                f"the number at {field_path(loc) or 'the top level'} is {length} characters long; "
                f"no field takes one longer than {MAX_NUMBER_CHARS}"
            )
        if isinstance(value, Mapping):
            stack.extend((v, (*loc, k)) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((v, (*loc, i)) for i, v in reversed(list(enumerate(value))))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses repeated mapping keys instead of keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# --- naming places and values in messages ----------------------------------


def path_part(part: object) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    if isinstance(part, str) and part.isidentifier():
        return f".{part}"
    return f"[{part!r}]"


def field_path(loc: tuple[int | str, ...]) -> str:
    return "".join(path_part(p) for p in loc if p != "[key]").lstrip(".")


def describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "null"
    if isinstance(value, int | float | Decimal):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return {"dict": "a mapping", "list": "a list"}.get(type(value).__name__, type(value).__name__)


def read_request_file(path: str | Path) -> Mapping[str, Any]:
    """The fields a .json, .yaml or .yml file holds, not yet validated; every failure
    is a RequestError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise RequestError(
            [
                Problem(
                    "",
                    f"{path}: unknown file type {suffix or '(none)'!r}; use .json, .yaml or .yml",
                )
            ]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise RequestError([Problem("", f"{path}: cannot read: {reason}")]) from None
    try:
        data = read_json(text) if suffix == ".json" else read_yaml(text)
    except InvalidJson as err:
        where = f"{path}, line {err.line} column {err.column}" if err.line else str(path)
        kind = "JSON" if suffix == ".json" else "YAML"
        raise RequestError([Problem("", f"{where}: invalid {kind}: {err.reason}")]) from None
    except (yaml.YAMLError, ValueError) as err:  # ValueError: e.g. a YAML date like 2024-13-01
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        detail = getattr(err, "problem", None) or str(err)
        raise RequestError([Problem("", f"{where}: invalid YAML: {detail}")]) from None
    if not isinstance(data, Mapping):
        raise RequestError(
            [
                Problem(
                    "",
                    f"{path}: the top level must be a mapping of fields "
                    f"(request_id, customer, ...), got {describe(data)}",
                )
            ]
        )
    return data
