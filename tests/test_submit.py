"""`invoiceflow submit` records a month's requests; the billing run on the 1st
(`batch pending`, what the schedule runs) invoices them. Recording is all or
nothing: a bad or conflicting source stores no request at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.db.engine import get_engine
from invoiceflow.db.models import RecoveryPoint
from tests.conftest import app_env, run_cli
from tests.helpers import make_request
from tests.test_billing_run import ONE_LINE, _as_json, _assert_invoiced_once, _jsonl

pytestmark = pytest.mark.slow


def _stored(database_url: str) -> dict[str, str]:
    return {
        row.request_id: row.recovery_point for row in ledger.list_requests(get_engine(database_url))
    }


def test_submitted_requests_wait_for_the_billing_run(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    sqlite_url: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    env = app_env(sandbox.url, sqlite_url)
    requests = [make_request(f"nov-{n}", customer=f"c{n}", items=ONE_LINE) for n in range(3)]
    month = _jsonl(tmp_path / "november.jsonl", [_as_json(r) for r in requests])

    first = run_cli("submit", str(month), env=env)
    again = run_cli("submit", str(month), env=env)

    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("recorded 3 request(s) for the next billing run;")
    assert again.stdout.startswith("recorded 0 request(s) for the next billing run (3 were")
    assert set(_stored(sqlite_url).values()) == {RecoveryPoint.PLANNED.value}
    assert stripe_client.v1.invoices.list().data == []  # nothing billed yet

    billed = run_cli("batch", "pending", env=env, timeout=600)

    assert billed.returncode == 0, billed.stderr
    _assert_invoiced_once(stripe_client, requests)
    assert set(_stored(sqlite_url).values()) == {RecoveryPoint.SENT.value}


def test_a_bad_or_conflicting_source_records_nothing(
    sandbox: Any, sqlite_url: str, tmp_path: Path
) -> None:
    env = app_env(sandbox.url, sqlite_url)
    good = make_request("dec-1", customer="c1", items=ONE_LINE)
    bad = {**json.loads(_as_json(make_request("dec-2", customer="c2"))), "currency": "zzz"}
    mixed = _jsonl(tmp_path / "mixed.jsonl", [_as_json(good), json.dumps(bad)])

    refused = run_cli("submit", str(mixed), env=env)

    assert refused.returncode == 2
    assert refused.stderr.startswith("error: nothing recorded: line 2: currency:")
    assert "Traceback" not in refused.stderr
    assert _stored(sqlite_url) == {}

    assert (
        run_cli("submit", str(_jsonl(tmp_path / "ok.jsonl", [_as_json(good)])), env=env).returncode
        == 0
    )
    changed = make_request("dec-1", customer="c1", items=[{**ONE_LINE[0], "quantity": 9}])
    other = make_request("dec-3", customer="c3", items=ONE_LINE)
    conflicting = _jsonl(tmp_path / "conflict.jsonl", [_as_json(other), _as_json(changed)])

    conflict = run_cli("submit", str(conflicting), env=env)

    assert conflict.returncode == 3
    assert "dec-1: already recorded with different content" in conflict.stderr
    assert _stored(sqlite_url) == {"dec-1": RecoveryPoint.PLANNED.value}
