"""The operator's controls, each run as `python -m invoiceflow …` in a real process
against the served sandbox, on SQLite and PostgreSQL: the exit code and the lines it
prints, and what Stripe and the ledger hold afterwards.

    batch FILE --hold → approve RUN → approve RUN again (0 Stripe writes)
    batch FILE --hold → reject RUN --reason
    a served held run Suspended for its form → approve RUN ends it Cancelled
    resolve REQUEST --sent --note, for a request stopped by SendUnverifiable

The in-process tests of the same rules are tests/test_approval.py and
tests/test_resolve.py; this is the CLI as an operator or a scheduler runs it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.batch import manifest
from invoiceflow.batch.source import read_source
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.runtime import get_runtime, reset_runtime
from tests.conftest import run_cli
from tests.helpers import assert_exactly_one_invoice, bill_plain, invoices_for, sent_events
from tests.test_approval import _requests, _source, _stripe_writes
from tests.test_approval_served import _deployment_run, _read, _suspended
from tests.test_resolve import PAST_RETENTION, _stopped_for_a_check

pytestmark = [pytest.mark.heavy, pytest.mark.usefixtures("prefect_api")]


def _held(configured: dict[str, str], source: Path) -> str:
    """`batch FILE --hold` in a process: exit 0, naming the run and how to approve it."""
    run_id = manifest.default_run_id(read_source(str(source)))
    held = run_cli("batch", str(source), "--hold", env=configured, cwd=source.parent)
    assert held.returncode == 0, (held.stdout, held.stderr[-3000:])
    assert f"{run_id} (attempt 1): 2 requests: 2 held" in held.stdout, held.stdout
    assert f"`invoiceflow approve {run_id}`" in held.stdout, held.stdout
    assert "invoiced" not in held.stdout
    return run_id


def test_hold_then_approve_then_approve_again_in_real_processes(
    configured: dict[str, str], sandbox: Any, stripe_client: stripe.StripeClient, tmp_path: Path
) -> None:
    requests = _requests(f"p{uuid.uuid4().hex[:6]}")
    run_id = _held(configured, _source(tmp_path, requests))
    for billing_request in requests:
        [draft] = invoices_for(stripe_client, billing_request.request_id)
        assert draft.status == "draft"
    assert not any(w.endswith(("/finalize", "/send")) for w in _stripe_writes(sandbox))

    approved = run_cli("approve", run_id, "--by", "alice", env=configured, cwd=tmp_path)

    assert approved.returncode == 0, (approved.stdout, approved.stderr[-3000:])
    assert approved.stdout.splitlines() == [
        *(f"{r.request_id}: approved, sent" for r in requests),
        f"billing run {run_id}: 2 approved now",
    ]
    engine = get_runtime().engine
    for billing_request in requests:
        invoice = assert_exactly_one_invoice(stripe_client, billing_request)
        assert invoice.status == "open" and sent_events(stripe_client, str(invoice.id)) == 1
        assert ledger.require(engine, billing_request.request_id).point is RecoveryPoint.SENT

    writes_before = len(_stripe_writes(sandbox))
    again = run_cli("approve", run_id, env=configured, cwd=tmp_path)
    assert again.returncode == 0, (again.stdout, again.stderr[-3000:])
    assert again.stdout.splitlines() == [f"billing run {run_id}: 0 approved now, 2 approved before"]
    assert len(_stripe_writes(sandbox)) == writes_before  # a rerun writes nothing


def test_hold_then_reject_with_a_reason_in_real_processes(
    configured: dict[str, str], sandbox: Any, stripe_client: stripe.StripeClient, tmp_path: Path
) -> None:
    requests = _requests(f"q{uuid.uuid4().hex[:6]}")
    run_id = _held(configured, _source(tmp_path, requests))

    rejected = run_cli(
        "reject", run_id, "--reason", "wrong prices", "--by", "bob", env=configured, cwd=tmp_path
    )

    assert rejected.returncode == 0, (rejected.stdout, rejected.stderr[-3000:])
    assert rejected.stdout.splitlines() == [
        *(f"{r.request_id}: rejected, draft deleted" for r in requests),
        f"billing run {run_id}: 2 rejected now",
    ]
    engine = get_runtime().engine
    for billing_request in requests:
        assert invoices_for(stripe_client, billing_request.request_id) == []
        row = ledger.require(engine, billing_request.request_id)
        assert (row.point, row.stripe_invoice_id) == (RecoveryPoint.REJECTED, None)
        [decision] = [
            e for e in ledger.audit_trail(engine, row.request_id) if e.to_point == "rejected"
        ]
        assert (decision.detail["by"], decision.detail["reason"]) == ("bob", "wrong prices")

    refused = run_cli("approve", run_id, env=configured, cwd=tmp_path)
    assert refused.returncode == 3 and "was rejected" in refused.stderr, refused.stderr[-3000:]
    assert len(refused.stderr.strip().splitlines()) == 1


def test_approve_in_a_real_process_cancels_the_run_waiting_for_the_form(
    configured: dict[str, str], sandbox: Any, stripe_client: stripe.StripeClient, tmp_path: Path
) -> None:
    requests = _requests(f"c{uuid.uuid4().hex[:6]}")
    source = _source(tmp_path, requests)
    flow_run_id = asyncio.run(_deployment_run(source))
    waiting = _suspended(flow_run_id)  # as `serve` leaves it: Suspended, no process
    run_id = manifest.default_run_id(read_source(str(source)))

    approved = run_cli("approve", run_id, "--by", "alice", env=configured, cwd=tmp_path)

    assert approved.returncode == 0, (approved.stdout, approved.stderr[-3000:])
    assert approved.stdout.splitlines() == [
        *(f"{r.request_id}: approved, sent" for r in requests),
        f"billing run {run_id}: 2 approved now",
        f"flow run {waiting.name} waiting in Prefect for billing run {run_id}: "
        "cancelled (approved from the CLI by alice)",
    ]
    ended = _read(flow_run_id)
    assert ended.state is not None and ended.state.is_cancelled(), ended.state
    assert ended.state.message == "approved from the CLI by alice"
    for billing_request in requests:
        assert assert_exactly_one_invoice(stripe_client, billing_request).status == "open"


@pytest.fixture
def past_retention(
    configured: dict[str, str],
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """This process's customers, from now on, on a clock 40 days back (as test_resolve's)."""
    frozen = int((datetime.now(UTC) - PAST_RETENTION).timestamp())
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": frozen})
    monkeypatch.setenv("INVOICEFLOW_STRIPE_TEST_CLOCK", clock.id)
    reset_runtime()
    return {**configured, "INVOICEFLOW_STRIPE_TEST_CLOCK": clock.id}


def test_resolve_sent_in_a_real_process_then_the_rerun_sends_nothing(
    past_retention: dict[str, str],
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    tmp_path: Path,
) -> None:
    request = _stopped_for_a_check(sandbox, "stall_after_write")  # emailed, unrecorded: exit 4
    request_id = request.request_id
    invoice_id = ledger.require(get_runtime().engine, request_id).stripe_invoice_id
    assert invoice_id is not None

    resolved = run_cli(
        "resolve",
        request_id,
        "--sent",
        "--note",
        "Dashboard shows it emailed",
        "--by",
        "ana",
        env=past_retention,
        cwd=tmp_path,
    )

    assert resolved.returncode == 0, (resolved.stdout, resolved.stderr[-3000:])
    assert resolved.stdout.splitlines() == [
        f"{request_id}: invoice {invoice_id} recorded as sent by ana; "
        "a rerun awaits payment without sending"
    ]
    engine = get_runtime().engine
    assert ledger.require(engine, request_id).point is RecoveryPoint.SENT
    [audit] = [e for e in ledger.audit_trail(engine, request_id) if "resolved" in e.message]
    assert (audit.detail["by"], audit.detail["note"]) == ("ana", "Dashboard shows it emailed")

    again = run_cli(
        "resolve", request_id, "--sent", "--note", "again", env=past_retention, cwd=tmp_path
    )
    assert again.returncode == 4 and "is at sent" in again.stderr, again.stderr[-3000:]

    assert bill_plain(request).state is RecoveryPoint.SENT  # the rerun
    assert assert_exactly_one_invoice(stripe_client, request).id == invoice_id
    assert sent_events(stripe_client, invoice_id) == 1  # still the one send
