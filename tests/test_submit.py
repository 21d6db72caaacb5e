"""`invoiceflow submit` records a month's requests; the billing run on the 1st
(`batch pending`, what the schedule runs) invoices them. Recording is all or
nothing: a bad or conflicting source stores no request at all.

`submit` runs in process (CliRunner); the billing run is what `batch pending` bills,
the pending source, each request through the plain pipeline (a `batch pending`
process bills it in tests/test_billing_run.py's heavy tier)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.batch.source import PENDING, read_source
from invoiceflow.db.engine import get_engine
from invoiceflow.db.models import RecoveryPoint
from tests.conftest import app_env
from tests.helpers import bill_plain, make_request
from tests.inprocess_cli import configured_cli
from tests.test_billing_run import ONE_LINE, _as_json, _assert_invoiced_once, _jsonl


def _stored(database_url: str) -> dict[str, str]:
    return {
        row.request_id: row.recovery_point for row in ledger.list_requests(get_engine(database_url))
    }


def test_submitted_requests_wait_for_the_billing_run(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    run_cli = configured_cli(monkeypatch, request, app_env(sandbox.url, sqlite_url))
    requests = [make_request(f"nov-{n}", customer=f"c{n}", items=ONE_LINE) for n in range(3)]
    month = _jsonl(tmp_path / "november.jsonl", [_as_json(r) for r in requests])

    first = run_cli("submit", str(month))
    again = run_cli("submit", str(month))

    assert first.exit_code == 0, first.stderr
    assert first.stdout.startswith("recorded 3 request(s) for the next billing run;")
    assert again.stdout.startswith("recorded 0 request(s) for the next billing run (3 were")
    assert set(_stored(sqlite_url).values()) == {RecoveryPoint.PLANNED.value}
    assert stripe_client.v1.invoices.list().data == []  # nothing billed yet

    # What `batch pending` bills: the pending source, each request a unit of its own.
    pending = read_source(PENDING, get_engine(sqlite_url)).entries
    assert [entry.request for entry in pending] == requests
    for billing_request in requests:
        bill_plain(billing_request)

    _assert_invoiced_once(stripe_client, requests)
    assert set(_stored(sqlite_url).values()) == {RecoveryPoint.SENT.value}


def test_a_bad_or_conflicting_source_records_nothing(
    sandbox: Any,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    run_cli = configured_cli(monkeypatch, request, app_env(sandbox.url, sqlite_url))
    good = make_request("dec-1", customer="c1", items=ONE_LINE)
    bad = {**json.loads(_as_json(make_request("dec-2", customer="c2"))), "currency": "zzz"}
    mixed = _jsonl(tmp_path / "mixed.jsonl", [_as_json(good), json.dumps(bad)])

    refused = run_cli("submit", str(mixed))

    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: nothing recorded: line 2: currency:")
    assert "Traceback" not in refused.stderr
    assert _stored(sqlite_url) == {}

    assert run_cli("submit", str(_jsonl(tmp_path / "ok.jsonl", [_as_json(good)]))).exit_code == 0
    changed = make_request("dec-1", customer="c1", items=[{**ONE_LINE[0], "quantity": 9}])
    other = make_request("dec-3", customer="c3", items=ONE_LINE)
    conflicting = _jsonl(tmp_path / "conflict.jsonl", [_as_json(other), _as_json(changed)])

    conflict = run_cli("submit", str(conflicting))

    assert conflict.exit_code == 3
    assert "dec-1: already recorded with different content" in conflict.stderr
    assert _stored(sqlite_url) == {"dec-1": RecoveryPoint.PLANNED.value}
