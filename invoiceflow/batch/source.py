"""Read a billing run's source into entries: each a request, or what is wrong with it.

Sources:
- "pending": requests recorded in our database that are not sent yet
  (including failed ones; they resume where they stopped);
- a `.jsonl` file: one request as JSON per line (blank lines skipped);
- a `.csv` file: one line item per row, rows grouped into requests by
  `request_id` (columns in `CSV_COLUMNS`, see docs/billing-cycles.md);
- a directory: its `*.json`, `*.yaml` and `*.yml` request files, by name.

A bad entry never stops the others: it becomes an entry with a problem
(`line 7: items[0].quantity: must be at least 1, got 0`). Only a source that
cannot be read at all raises `SourceError`. The digest is the sha256 of the
content, so a run id can pin exactly what it bills.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from invoiceflow import ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.request import (
    MAX_NUMBER_CHARS,
    BillingRequest,
    InvalidJson,
    RequestError,
    load_request,
    parse_request,
    read_json,
)

PENDING = "pending"
REQUEST_FILE_SUFFIXES = (".json", ".yaml", ".yml")
CSV_COLUMNS = (
    "request_id",
    "customer_id",
    "customer_email",
    "customer_name",
    "currency",
    "sku",
    "name",
    "unit_amount",
    "unit_price",
    "quantity",
    "description",
    "days_until_due",
)
# Per request, not per line: every row of a request must agree on these.
_CSV_REQUEST_COLUMNS = (
    "customer_id",
    "customer_email",
    "customer_name",
    "currency",
    "days_until_due",
)
_SOURCES_HINT = "give a .jsonl or .csv file, a directory of .json/.yaml request files, or 'pending'"


class SourceError(Exception):
    """The source as a whole cannot be read; one line naming it and the fix."""


@dataclass(frozen=True)
class Entry:
    """One unit of work: a request, or the problem that keeps it from being one."""

    position: int
    where: str  # "line 7", "acme.yaml", "request acme-1": how a person finds it
    request: BillingRequest | None = None
    problem: str | None = None
    request_id: str | None = None  # known even for most broken entries

    def __post_init__(self) -> None:
        if self.request is not None and self.request_id is None:
            object.__setattr__(self, "request_id", self.request.request_id)


@dataclass(frozen=True)
class Source:
    name: str  # "pending", or the absolute path
    digest: str
    entries: list[Entry]

    @property
    def label(self) -> str:
        """A short name for run ids: the file or directory name, or "pending"."""
        return self.name if self.name == PENDING else Path(self.name).name


def read_source(source: str, engine: Engine | None = None) -> Source:
    """Read `source` ("pending" needs `engine`); raises SourceError if it cannot be read."""
    if source == PENDING:
        if engine is None:
            raise SourceError("source 'pending' needs the database")
        return _pending(engine)
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(f"source {source!r} does not exist; {_SOURCES_HINT}")
    path = path.resolve()
    if path.is_dir():
        return _directory(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise SourceError(
            f"source {source!r}: unknown file type {suffix or '(none)'!r}; {_SOURCES_HINT}"
        )
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except OSError as exc:
        raise SourceError(f"source {source!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SourceError(f"source {source!r} is not UTF-8 text; save it as UTF-8") from None
    digest = hashlib.sha256(raw).hexdigest()
    entries = _jsonl(text) if suffix == ".jsonl" else _csv(text, source)
    return Source(str(path), digest, _without_repeats(entries))


def _entry(position: int, where: str, data: object) -> Entry:
    request_id = data.get("request_id") if isinstance(data, dict) else None
    known_id = request_id if isinstance(request_id, str) else None
    try:
        return Entry(position, where, request=parse_request(data))
    except RequestError as exc:
        problems = _problems_text(exc)
        return Entry(position, where, problem=f"{where}: {problems}", request_id=known_id)


def _problems_text(exc: RequestError) -> str:
    return "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in exc.problems)


# --- pending ------------------------------------------------------------------


def _pending(engine: Engine) -> Source:
    entries: list[Entry] = []
    fingerprints = hashlib.sha256()
    for row in ledger.list_requests(engine):
        if row.progress.reached(RecoveryPoint.SENT):
            continue
        entries.append(_entry(len(entries), f"request {row.request_id}", row.payload))
        fingerprints.update(f"{row.request_id}:{row.fingerprint}\n".encode())
    return Source(PENDING, fingerprints.hexdigest(), entries)


# --- JSONL ---------------------------------------------------------------------


def _jsonl(text: str) -> list[Entry]:
    entries: list[Entry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            # The file loader's and the HTTP trigger's own parser: a repeated key,
            # a price written as a number (Decimal, refused with why) alike.
            data: Any = read_json(line)
        except InvalidJson as exc:
            at = f" at column {exc.column}" if exc.column else ""
            problem = f"{where}: invalid JSON{at}: {exc.reason}"
            entries.append(Entry(len(entries), where, problem=problem))
            continue
        entries.append(_entry(len(entries), where, data))
    return entries


# --- CSV -----------------------------------------------------------------------


def _csv(text: str, source: str) -> list[Entry]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if unknown:
        raise SourceError(
            f"source {source!r}: unknown column {unknown[0]!r}; columns are "
            f"{', '.join(CSV_COLUMNS)}"
        )
    if "request_id" not in header:
        raise SourceError(f"source {source!r}: no request_id column; one row per line item")
    reader.fieldnames = header
    groups: dict[str, _Rows] = {}
    entries: list[Entry] = []
    previous: str | None = None  # the request of the row above
    for row in reader:
        number = reader.line_num
        cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
        request_id = cells.get("request_id", "")
        if not request_id:
            entries.append(_bad_row(number, "request_id: is required"))
        else:
            rows = groups.setdefault(request_id, _Rows())
            rows.add(number, cells, continues=previous == request_id)
            if None in row:  # the row is the request's: billing it without this line is wrong
                rows.problems.append(f"line {number}: has more cells than the header has columns")
        previous = request_id or None
    for request_id, rows in groups.items():
        entries.append(_csv_request(request_id, rows))
    entries.sort(key=lambda entry: int(entry.where.split()[1]))
    return [Entry(i, e.where, e.request, e.problem, e.request_id) for i, e in enumerate(entries)]


class _Rows:
    """The rows of one CSV request, and what is wrong with them as a whole.

    A request's rows are consecutive lines. One that comes back after other
    rows, or a row given twice, is what a file appended to itself or two
    exports concatenated look like: billed, every line would be charged twice.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, str]]] = []
        self.problems: list[str] = []
        self._seen: dict[tuple[tuple[str, str], ...], int] = {}
        self._resumes: list[int] = []
        self._repeats: list[tuple[int, int]] = []

    def add(self, number: int, cells: dict[str, str], continues: bool) -> None:
        if self.rows and not continues:
            self._resumes.append(number)
        key = tuple(sorted(cells.items()))
        if key in self._seen:
            self._repeats.append((number, self._seen[key]))
        else:
            self._seen[key] = number
        self.rows.append((number, cells))

    def refusals(self, request_id: str) -> list[str]:
        found: list[str] = []
        if self._resumes:
            found.append(
                f"line {self._resumes[0]}: request_id {request_id!r} comes back after other "
                f"rows (its rows are at lines {_spans([n for n, _ in self.rows])}); a "
                "request's rows must be consecutive lines (is a file or an export in it twice?)"
            )
        if self._repeats:
            number, original = self._repeats[0]
            more = len(self._repeats) - 1
            found.append(
                f"line {number}: repeats line {original} of request {request_id!r}"
                + (f" (and {more} more rows repeat earlier ones)" if more else "")
                + "; give each line once (for two of a thing, quantity 2)"
            )
        return found + self.problems


def _spans(numbers: list[int]) -> str:
    """[2, 3, 4, 8] -> "2-4, 8"."""
    spans: list[list[int]] = []
    for number in numbers:
        if spans and number == spans[-1][-1] + 1:
            spans[-1][1:] = [number]
        else:
            spans.append([number])
    return ", ".join("-".join(str(n) for n in span) for span in spans)


def _bad_row(number: int, problem: str) -> Entry:
    return Entry(0, f"line {number}", problem=f"line {number}: {problem}")


def _csv_request(request_id: str, group: _Rows) -> Entry:
    rows = group.rows
    first_line, first = rows[0]
    where = f"line {first_line}"
    refusals = group.refusals(request_id)
    if refusals:
        # Refused whole, never its first rows billed: the file is not what its author meant.
        return Entry(0, where, problem="; ".join(refusals), request_id=request_id)
    for number, cells in rows[1:]:
        for column in _CSV_REQUEST_COLUMNS:
            if cells.get(column, "") != first.get(column, ""):
                problem = (
                    f"line {number}: {column}: differs from line {first_line} of request "
                    f"{request_id!r}; every row of a request must agree on it"
                )
                return Entry(0, where, problem=problem, request_id=request_id)
    data: dict[str, Any] = {
        "request_id": request_id,
        "customer": {
            "id": first.get("customer_id", ""),
            "email": first.get("customer_email", ""),
            "name": first.get("customer_name", ""),
        },
        "currency": first.get("currency", ""),
        "items": [],
    }
    problems: list[str] = []
    if first.get("days_until_due"):
        data["days_until_due"] = _whole(first["days_until_due"], "days_until_due", problems)
    for index, (number, cells) in enumerate(rows):
        item: dict[str, Any] = {"sku": cells.get("sku", ""), "name": cells.get("name", "")}
        at = f"items[{index}] (line {number})"
        if cells.get("unit_amount"):
            item["unit_amount"] = _whole(cells["unit_amount"], f"{at}.unit_amount", problems)
        if cells.get("unit_price"):
            item["unit_price"] = cells["unit_price"]
        if cells.get("quantity"):
            item["quantity"] = _whole(cells["quantity"], f"{at}.quantity", problems)
        if cells.get("description"):
            item["description"] = cells["description"]
        data["items"].append(item)
    if problems:
        return Entry(0, where, problem=f"{where}: {'; '.join(problems)}", request_id=request_id)
    entry = _entry(0, where, data)
    if entry.problem is None:
        return entry
    # Name the CSV line of an item's problem: items[2] is the request's third row.
    problem = entry.problem
    for index, (number, _cells) in reversed(list(enumerate(rows))):
        problem = problem.replace(f"items[{index}]", f"items[{index}] (line {number})")
    return Entry(0, where, problem=problem, request_id=request_id)


def _whole(text: str, name: str, problems: list[str]) -> int | str:
    """A CSV cell that must be a whole number; the text as is when it is not (reported)."""
    if text.isascii() and text.isdigit() and len(text) <= MAX_NUMBER_CHARS:
        return int(text)
    if len(text) > MAX_NUMBER_CHARS:
        problems.append(f"{name}: {len(text)} characters long; no field takes that many")
        return text[:MAX_NUMBER_CHARS] + "…"
    problems.append(f"{name}: must be a whole number, got {text!r}")
    return text


# --- directory -----------------------------------------------------------------


def _directory(path: Path) -> Source:
    files = sorted(
        child
        for child in path.iterdir()
        if child.is_file() and child.suffix.lower() in REQUEST_FILE_SUFFIXES
    )
    digest = hashlib.sha256()
    entries: list[Entry] = []
    for file in files:
        try:
            digest.update(f"{file.name}\n".encode() + file.read_bytes() + b"\n")
        except OSError as exc:
            raise SourceError(f"source {str(file)!r} cannot be read: {exc.strerror}") from None
        try:
            entries.append(Entry(len(entries), file.name, request=load_request(file)))
        except RequestError as exc:
            problems = _problems_text(exc)
            entries.append(Entry(len(entries), file.name, problem=f"{file.name}: {problems}"))
    return Source(str(path), digest.hexdigest(), _without_repeats(entries))


def _without_repeats(entries: list[Entry]) -> list[Entry]:
    """A request id twice in one source is a mistake either way: the second is refused."""
    first: dict[str, str] = {}
    checked = []
    for entry in entries:
        request_id = entry.request_id
        if entry.request is not None and request_id is not None and request_id in first:
            problem = (
                f"{entry.where}: request_id {request_id!r} is also at {first[request_id]}; "
                "bill each request once per source (give this one a new request_id)"
            )
            entry = Entry(entry.position, entry.where, problem=problem, request_id=request_id)
        elif entry.request is not None and request_id is not None:
            first[request_id] = entry.where
        checked.append(entry)
    return checked
