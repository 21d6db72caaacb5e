"""Hold a billing run for approval, then approve or reject it — as an operator would.

`invoiceflow batch SOURCE --hold` leaves every request a filled draft in Stripe
(nothing finalized, nothing emailed) and says how to decide; `approve RUN`
finalizes and sends each draft once, `reject RUN --reason` deletes them, with
who and why in the audit log. A crash at any Stripe write of either, then the
command again, leaves one invoice per request, sent once (or none, rejected).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.batch import manifest
from invoiceflow.batch.source import read_source
from invoiceflow.db.engine import get_engine
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.request import BillingRequest
from tests.conftest import app_env
from tests.crashes import DECISION_WRITES, as_a_new_process, crash_during
from tests.helpers import assert_exactly_one_invoice, invoices_for, make_request, sent_events
from tests.inprocess_cli import Invoke, configured_cli

ONE_LINE = [{"sku": "held-seat", "name": "Seat", "unit_amount": 1200, "quantity": 2}]


def _source(tmp_path: Path, requests: list[BillingRequest]) -> Path:
    path = tmp_path / "december.jsonl"
    path.write_text("".join(json.dumps(r.model_dump(mode="json")) + "\n" for r in requests))
    return path


def _requests(prefix: str) -> list[BillingRequest]:
    return [
        make_request(f"{prefix}-a", customer=f"{prefix}-acme", items=ONE_LINE),
        make_request(
            f"{prefix}-b",
            customer=f"{prefix}-initech",
            currency="eur",
            items=[{"sku": "held-support", "name": "Support", "unit_amount": 9900}],
        ),
    ]


def _cli(sandbox: Any, database_url: str, monkeypatch: pytest.MonkeyPatch, request: Any) -> Invoke:
    return configured_cli(monkeypatch, request, app_env(sandbox.url, database_url))


def _stripe_writes(sandbox: Any) -> list[str]:
    return [f"{e['method']} {e['path']}" for e in sandbox.requests() if e["method"] != "GET"]


def _hold(cli: Invoke, source: Path) -> str:
    result = cli("batch", str(source), "--hold")
    assert result.exit_code == 0, (result.stdout, result.stderr[-3000:])
    return manifest.default_run_id(read_source(str(source)))


@pytest.mark.backend  # the decision's row locks and audit rows, on both databases
@pytest.mark.usefixtures("prefect_api")
def test_a_held_run_is_drafts_only_until_approved_then_each_is_sent_once(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    requests = _requests(f"h{uuid.uuid4().hex[:6]}")
    cli = _cli(sandbox, database_url, monkeypatch, request)

    held = cli("batch", str(_source(tmp_path, requests)), "--hold")

    assert held.exit_code == 0, (held.stdout, held.stderr[-3000:])
    run_id = manifest.default_run_id(read_source(str(tmp_path / "december.jsonl")))
    assert f"{run_id} (attempt 1): 2 requests: 2 held" in held.stdout
    assert "held 24.00 USD" in held.stdout and "held 99.00 EUR" in held.stdout
    assert f"new customers: {requests[0].customer.id}, {requests[1].customer.id}" in held.stdout
    assert f"`invoiceflow approve {run_id}`" in held.stdout
    assert "invoiced" not in held.stdout
    engine = get_engine(database_url)
    for billing_request in requests:
        [draft] = invoices_for(stripe_client, billing_request.request_id)
        assert (draft.status, draft.total) == ("draft", billing_request.total_amount())
        assert ledger.require(engine, billing_request.request_id).point is RecoveryPoint.HELD
    assert not any(w.endswith(("/finalize", "/send")) for w in _stripe_writes(sandbox))

    # Reconcile finishes stuck requests; a held one waits for a person, not for it.
    assert cli("reconcile", "--stale-minutes", "0").exit_code == 0
    assert not any(w.endswith("/finalize") for w in _stripe_writes(sandbox))

    approved = cli("approve", run_id, "--by", "alice")

    assert approved.exit_code == 0, (approved.stdout, approved.stderr[-3000:])
    assert f"billing run {run_id}: 2 approved now" in approved.stdout
    for billing_request in requests:
        invoice = assert_exactly_one_invoice(stripe_client, billing_request)
        assert invoice.status == "open"
        row = ledger.require(engine, billing_request.request_id)
        assert row.point is RecoveryPoint.SENT
        trail = ledger.audit_trail(engine, billing_request.request_id)
        [decision] = [e for e in trail if e.message == "approved"]
        assert (decision.from_point, decision.detail["by"]) == ("held", "alice")

    writes_before = len(_stripe_writes(sandbox))
    again = cli("approve", run_id)
    assert again.exit_code == 0 and "0 approved now, 2 approved before" in again.stdout
    assert len(_stripe_writes(sandbox)) == writes_before  # a rerun writes nothing
    assert cli("reject", run_id, "--reason", "too late").exit_code == 3


@pytest.mark.backend
@pytest.mark.usefixtures("prefect_api")
def test_a_rejected_run_deletes_its_drafts_and_says_who_and_why(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    requests = _requests(f"r{uuid.uuid4().hex[:6]}")
    cli = _cli(sandbox, database_url, monkeypatch, request)
    run_id = _hold(cli, _source(tmp_path, requests))

    rejected = cli("reject", run_id, "--reason", "wrong prices", "--by", "bob")

    assert rejected.exit_code == 0, (rejected.stdout, rejected.stderr[-3000:])
    assert f"billing run {run_id}: 2 rejected now" in rejected.stdout
    engine = get_engine(database_url)
    for billing_request in requests:
        assert invoices_for(stripe_client, billing_request.request_id) == []
        row = ledger.require(engine, billing_request.request_id)
        assert (row.point, row.stripe_invoice_id) == (RecoveryPoint.REJECTED, None)
        [decision] = [
            e for e in ledger.audit_trail(engine, row.request_id) if e.to_point == "rejected"
        ]
        assert (decision.detail["by"], decision.detail["reason"]) == ("bob", "wrong prices")
    status = cli("status", requests[0].request_id)
    assert "rejected" in status.stdout

    writes_before = len(_stripe_writes(sandbox))
    assert cli("reject", run_id, "--reason", "wrong prices").exit_code == 0
    assert len(_stripe_writes(sandbox)) == writes_before
    refused = cli("approve", run_id)
    assert refused.exit_code == 3 and "was rejected" in refused.stderr
    # A batch of the same source again is the same run: nothing is billed behind the decision.
    assert cli("batch", str(tmp_path / "december.jsonl")).exit_code == 0
    assert len(_stripe_writes(sandbox)) == writes_before


def test_approving_a_run_that_holds_nothing_is_a_one_line_error(
    sandbox: Any, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    from invoiceflow.db.engine import make_engine
    from invoiceflow.db.migrate import upgrade

    upgrade(make_engine(sqlite_url))
    cli = _cli(sandbox, sqlite_url, monkeypatch, request)

    result = cli("approve", "no-such-run")

    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: no billing run 'no-such-run'; `invoiceflow status --run` lists runs' requests"
    )


# --- the crash matrix: a fault at each Stripe write of a decision, then the command again


def _hold_in_process(database_url: str, tmp_path: Path, requests: list[BillingRequest]) -> str:
    """The held run as `batch --hold` leaves it, without Prefect (the unit it runs)."""
    from invoiceflow import lease
    from invoiceflow.batch import unit
    from invoiceflow.runtime import get_runtime

    read = read_source(str(_source(tmp_path, requests)))
    run_id = manifest.default_run_id(read)
    rt = get_runtime()
    started = manifest.start(rt.engine, run_id, read)
    for position in started.todo:
        entry = read.entries[position].request
        assert entry is not None
        owner = lease.new_owner(uuid.uuid4().hex)
        result = unit.bill_entry(rt, run_id, position, entry, owner, hold=True)
        assert result.outcome.value == "held", result
    return run_id


def _executed(sandbox: Any, method: str, pattern: str) -> int:
    import re

    return sum(
        1
        for e in sandbox.requests()
        if e["method"] == method
        and re.search(pattern, e["path"])
        and not e["replayed"]
        and (e["status"] == 200 or e["fault"] == "after_write")
    )


@pytest.mark.backend
@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("when", ["stall_before_write", "stall_after_write"])
@pytest.mark.parametrize("step", ["finalize", "send"])
def test_a_crash_at_any_write_of_approve_then_approve_again_sends_each_invoice_once(
    step: str,
    when: str,
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    from invoiceflow.approval import decide
    from invoiceflow.runtime import get_runtime

    requests = _requests(f"ca{uuid.uuid4().hex[:6]}")
    run_id = _hold_in_process(database_url, tmp_path, requests)
    method, path = DECISION_WRITES[step]

    crash_during(
        sandbox,
        requests[0].request_id,
        method,
        path,
        when,
        lambda: decide.approve(get_runtime(), run_id, "alice"),
    )
    as_a_new_process()
    again = _cli(sandbox, database_url, monkeypatch, request)("approve", run_id, "--by", "alice")

    assert again.exit_code == 0, (again.stdout, again.stderr[-3000:])
    for billing_request in requests:
        invoice = assert_exactly_one_invoice(stripe_client, billing_request)
        assert sent_events(stripe_client, invoice.id) == 1
    assert _executed(sandbox, "POST", "/finalize$") == len(requests)
    assert _executed(sandbox, "POST", "/send$") == len(requests)


@pytest.mark.backend
@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("when", ["stall_before_write", "stall_after_write"])
def test_a_crash_at_the_delete_of_reject_then_reject_again_deletes_each_draft_once(
    when: str,
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    from invoiceflow.approval import decide
    from invoiceflow.runtime import get_runtime

    requests = _requests(f"cr{uuid.uuid4().hex[:6]}")
    run_id = _hold_in_process(database_url, tmp_path, requests)
    method, path = DECISION_WRITES["delete"]

    crash_during(
        sandbox,
        requests[0].request_id,
        method,
        path,
        when,
        lambda: decide.reject(get_runtime(), run_id, "bob", "wrong prices"),
    )
    as_a_new_process()
    cli = _cli(sandbox, database_url, monkeypatch, request)
    again = cli("reject", run_id, "--reason", "wrong prices", "--by", "bob")

    assert again.exit_code == 0, (again.stdout, again.stderr[-3000:])
    engine = get_engine(database_url)
    for billing_request in requests:
        assert invoices_for(stripe_client, billing_request.request_id) == []
        assert ledger.require(engine, billing_request.request_id).point is RecoveryPoint.REJECTED
    assert _executed(sandbox, "DELETE", path) == len(requests)
    assert not any(e["path"].endswith(("/finalize", "/send")) for e in sandbox.requests())
