"""Find secrets where they must never be: files (logs, outputs), databases (SQLite,
PostgreSQL) and everything a Prefect server keeps about runs.

A leak is rarely the whole secret. A log line may cut it short ("sk_test_AUDITKE…"),
mask its start ("…last twelve"), or encode it (HTTP basic auth is base64). So each
secret is searched as these fragments (`fragments`), case-insensitively:

- `whole`: the value itself;
- `marker`: the recognizable word the test put in it (`AUDITKEY`): it exists
  nowhere else, so finding it means a part of the secret got out;
- `window`: every run of WINDOW characters of its random part: any truncated or
  partly masked copy that still shows that much is caught. WINDOW is 10: 36^10
  combinations never occur by chance, while Stripe's own way of naming a key
  (`sk_test_****…` plus the LAST FOUR characters) shows less than that and is
  accepted, as Stripe's Dashboard and errors show it too;
- `base64`: the value as base64 (the aligned prefix any base64 of a string that
  starts with the secret has, as in `Authorization: Basic …`).

A finding names the place, the secret (by its label, never its value) and the
fragment, with an excerpt in which every fragment is masked, so that printing the
findings does not spread the secret further.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

WINDOW = 10
# Prefixes Stripe gives its secrets: alone they identify no secret.
_KNOWN_PREFIXES = ("sk_test_", "rk_test_", "sk_live_", "rk_live_", "whsec_")
# Prefect's collections with a POST …/filter (paged by offset); each object is
# scanned whole, so a new field is covered without naming it here.
_PREFECT_COLLECTIONS = (
    "flows",
    "flow_runs",
    "task_runs",
    "logs",
    "artifacts",
    "deployments",
    "variables",
    "work_pools",
    "work_queues",
    "automations",
    "concurrency_limits",
    "block_documents",
)
_PAGE = 200
_EXCERPT = 60


@dataclass(frozen=True)
class Secret:
    label: str  # what to call it in a report, e.g. STRIPE_API_KEY
    value: str
    marker: str | None = None  # its recognizable word, e.g. AUDITKEY

    def fragments(self) -> dict[str, str]:
        """fragment text → its kind (the longest kinds first, so they name a match)."""
        body = self.value
        for prefix in _KNOWN_PREFIXES:
            body = body.removeprefix(prefix)
        random_part = body.split(self.marker, 1)[-1] if self.marker else body
        found = {self.value: "whole"}
        if self.marker:
            found.setdefault(self.marker, "marker")
        for start in range(max(len(random_part) - WINDOW + 1, 0)):
            found.setdefault(random_part[start : start + WINDOW], "window")
        aligned = self.value[: len(self.value) // 3 * 3]
        if aligned:
            found.setdefault(base64.b64encode(aligned.encode()).decode(), "base64")
        return found


def recognizable(prefix: str, marker: str, separator: str = "_") -> Secret:
    """A fake secret no one could mistake: a real prefix, a marker word, 24 random hex."""
    return Secret(marker, f"{prefix}{marker}{separator}{secrets.token_hex(12)}", marker)


@dataclass(frozen=True)
class Finding:
    place: str  # where: a file and line, a table and column, a Prefect object
    secret: str  # the secret's label
    fragment: str  # whole | marker | window | base64
    excerpt: str  # the text around it, every fragment masked

    def __str__(self) -> str:
        return f"{self.place}: {self.secret} ({self.fragment}) in …{self.excerpt}…"


@dataclass
class Places:
    """Where a workload left its traces."""

    directories: list[Path] = field(default_factory=list)  # logs, outputs, files it wrote
    databases: list[str] = field(default_factory=list)  # sqlite:///… or postgresql…:// URLs
    prefect_api: str | None = None  # http://…/api, while the server still runs


class Scanner:
    def __init__(self, secrets: Iterable[Secret]) -> None:
        self._kinds: dict[str, tuple[str, str]] = {}  # fragment (lowercase) → (label, kind)
        for secret in secrets:
            for text, kind in secret.fragments().items():
                self._kinds.setdefault(text.lower(), (secret.label, kind))
        ordered = sorted(self._kinds, key=len, reverse=True)  # longest alternative wins
        self._text = re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE)
        self._bytes = re.compile(self._text.pattern.encode(), re.IGNORECASE)

    def text(self, place: str, text: str) -> list[Finding]:
        return self._findings(place, text, self._text.finditer(text))

    def data(self, place: str, data: bytes) -> list[Finding]:
        """Raw bytes (a database file, a binary log): searched as bytes, shown decoded."""
        matches = list(self._bytes.finditer(data))
        if not matches:
            return []
        return self.text(place, data.decode("utf-8", errors="replace"))

    def _findings(self, place: str, text: str, matches: Iterator[re.Match[str]]) -> list[Finding]:
        found: dict[tuple[str, str], Finding] = {}  # one per secret and fragment kind
        for match in matches:
            label, kind = self._kinds[match.group().lower()]
            start, end = max(match.start() - _EXCERPT, 0), match.end() + _EXCERPT
            excerpt = self._text.sub("<secret>", text[start:end]).replace("\n", "⏎")
            masked_place = self._text.sub("<secret>", place)  # a file or run may be named by it
            found.setdefault((label, kind), Finding(masked_place, label, kind, excerpt))
        return list(found.values())


def scan(secrets: Iterable[Secret], places: Places) -> list[Finding]:
    """Every occurrence of a fragment of a secret in `places`."""
    scanner = Scanner(secrets)
    findings: list[Finding] = []
    for directory in places.directories:
        findings += scan_files(scanner, directory)
    for url in places.databases:
        if url.startswith("sqlite"):
            findings += scan_sqlite(scanner, Path(url.split(":///", 1)[1]))
        else:
            findings += scan_postgres(scanner, url)
    if places.prefect_api:
        findings += scan_prefect(scanner, places.prefect_api)
    return findings


def report(findings: list[Finding]) -> str:
    return "\n".join(["secrets found:", *(f"  {finding}" for finding in findings)])


def scan_files(scanner: Scanner, directory: Path) -> list[Finding]:
    """Every file under `directory`, line by line where it is text, whole where not."""
    findings = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        name = str(path.relative_to(directory.parent))
        if b"\0" in data[:4096]:  # binary: a database file, a WAL
            findings += scanner.data(f"file {name}", data)
            continue
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            findings += scanner.text(f"file {name}:{number}", line)
    return findings


def scan_sqlite(scanner: Scanner, path: Path) -> list[Finding]:
    """Every column of every row of every table, as text; then the raw bytes of the
    file and its journals (deleted rows and free pages keep old text)."""
    findings = []
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            cursor = connection.execute(f'SELECT * FROM "{table}"')  # names from its schema
            columns = [d[0] for d in cursor.description]
            for number, row in enumerate(cursor, 1):
                for column, value in zip(columns, row, strict=True):
                    place = f"sqlite {path.name}: {table}.{column} row {number}"
                    if isinstance(value, bytes):
                        findings += scanner.data(place, value)
                    elif value is not None:
                        findings += scanner.text(place, str(value))
    finally:
        connection.close()
    for raw in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal")):
        if raw.exists():
            findings += scanner.data(f"sqlite file {raw.name}", raw.read_bytes())
    return findings


def scan_postgres(scanner: Scanner, url: str) -> list[Finding]:
    """Every column of every row of every table of every schema but the catalog's,
    as JSON text (bytea, which JSON shows as hex, is decoded first)."""
    import psycopg
    from psycopg import sql

    libpq_url = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
    findings = []
    with psycopg.connect(libpq_url) as connection:
        name = connection.info.dbname
        tables = connection.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT row_to_json(t)::text FROM {}.{} AS t").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            for number, (row,) in enumerate(connection.execute(query), 1):
                for column, value in json.loads(row).items():
                    place = f"postgresql {name}: {schema}.{table}.{column} row {number}"
                    if isinstance(value, str) and re.fullmatch(r"\\x(?:[0-9a-f]{2})*", value):
                        findings += scanner.data(place, bytes.fromhex(value[2:]))
                    elif value is not None:
                        findings += scanner.text(place, json.dumps(value, ensure_ascii=False))
    return findings


def scan_prefect(scanner: Scanner, api_url: str) -> list[Finding]:
    """Every object of Prefect's collections (runs with their parameters and job
    variables, logs, artifacts, deployments, variables, blocks with their secrets,
    work pools, automations), every state a flow or task run went through (their
    messages hold exception text), and the events."""
    findings = []
    with httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=60) as api:
        collected: dict[str, list[dict[str, Any]]] = {}
        for collection in _PREFECT_COLLECTIONS:
            collected[collection] = list(_paged(api, collection))
            for item in collected[collection]:
                findings += scanner.text(_prefect_place(collection, item), json.dumps(item))
        for kind in ("flow_run", "task_run"):
            for run in collected[f"{kind}s"]:
                states = api.get(f"{kind}_states/", params={f"{kind}_id": run["id"]})
                states.raise_for_status()
                place = f"prefect {kind}_states of {run.get('name')} ({run['id']})"
                findings += scanner.text(place, states.text)
        for event in _events(api):
            findings += scanner.text(
                f"prefect event {event.get('event')} {event.get('id')}", json.dumps(event)
            )
    return findings


def _paged(api: httpx.Client, collection: str) -> Iterator[dict[str, Any]]:
    body: dict[str, Any] = {"limit": _PAGE, "offset": 0}
    if collection == "block_documents":
        body["include_secrets"] = True  # what a block would hand to anyone who asks
    while True:
        page = api.post(f"{collection}/filter", json=body)
        if page.status_code == 404:  # not served by this Prefect (a server-side feature off)
            return
        page.raise_for_status()
        items: list[dict[str, Any]] = page.json()
        yield from items
        if len(items) < _PAGE:
            return
        body["offset"] += _PAGE


def _events(api: httpx.Client) -> Iterator[dict[str, Any]]:
    now = datetime.now(UTC)
    occurred = {
        "since": (now - timedelta(days=2)).isoformat(),
        "until": (now + timedelta(days=1)).isoformat(),
    }
    page = api.post("events/filter", json={"filter": {"occurred": occurred}, "limit": 50})
    while True:
        if page.status_code == 404:
            return
        page.raise_for_status()
        data = page.json()
        yield from data.get("events", [])
        if not data.get("next_page"):
            return
        page = api.get(data["next_page"])


def _prefect_place(collection: str, item: Mapping[str, Any]) -> str:
    return f"prefect {collection} {item.get('name') or item.get('key') or ''} ({item.get('id')})"
