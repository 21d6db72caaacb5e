"""A held billing run started from its deployment waits in Prefect for the approve/reject form.

A run of the `billing-run` deployment with `hold` takes every request to a filled draft,
then suspends (no process holds it: `run_flow` raises Prefect's `Pause` and returns). The
form's answer is given as the UI gives it, `resume_flow_run(run_id, run_input=...)`, and
the rescheduled run executes again from the top, as a worker would: it decides and bills
nothing again. Here the run executes in this process, against the session's Prefect
server (the served stack, a browser and the form are tests/test_approval_ui.py's).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import stripe
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import Pause
from prefect.flow_engine import run_flow
from prefect.flow_runs import resume_flow_run

from flows.approval import UI_REJECT_REASON
from flows.billing_run import billing_run_flow
from invoiceflow import ledger
from invoiceflow.batch import manifest
from invoiceflow.batch.source import read_source
from invoiceflow.db.engine import get_engine
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.request import BillingRequest
from tests.helpers import assert_exactly_one_invoice, invoices_for, make_request, wait_for

pytestmark = pytest.mark.usefixtures("prefect_api", "configured")

ONE_LINE = [{"sku": "served-seat", "name": "Seat", "unit_amount": 1500, "quantity": 2}]


def _requests(prefix: str) -> list[BillingRequest]:
    return [
        make_request(f"{prefix}-a", customer=f"{prefix}-acme", items=ONE_LINE),
        make_request(f"{prefix}-b", customer=f"{prefix}-globex", items=ONE_LINE),
    ]


def _source(tmp_path: Path, requests: list[BillingRequest]) -> Path:
    path = tmp_path / "monthly.jsonl"
    path.write_text("".join(json.dumps(r.model_dump(mode="json")) + "\n" for r in requests))
    return path


def _writes(sandbox: Any) -> list[str]:
    return [f"{e['method']} {e['path']}" for e in sandbox.requests() if e["method"] != "GET"]


async def _deployment_run(source: Path) -> UUID:
    """A run of a billing-run deployment with hold, as a schedule or the UI starts one."""
    deployment = await billing_run_flow.ato_deployment(
        name=f"held-{uuid.uuid4().hex[:8]}", parameters={"source": str(source), "hold": True}
    )
    deployment_id = await deployment.aapply()
    async with get_client() as client:
        run = await client.create_flow_run_from_deployment(deployment_id)
    return run.id


def _read(run_id: UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _execute(run_id: UUID) -> Any:
    """The run executed here, as a worker's process executes it."""
    return run_flow(billing_run_flow, flow_run=_read(run_id), return_type="state")


def _suspended(run_id: UUID) -> FlowRun:
    with pytest.raises(Pause):  # the process's end: nothing waits for the person
        _execute(run_id)
    run = _read(run_id)
    assert run.state is not None and run.state.name == "Suspended", run.state
    assert run.state.state_details.pause_timeout is not None
    return run


def test_a_held_deployment_run_waits_for_the_form_and_approving_sends_each_draft_once(
    sandbox: Any, stripe_client: stripe.StripeClient, database_url: str, tmp_path: Path
) -> None:
    requests = _requests(f"s{uuid.uuid4().hex[:6]}")
    run_id = asyncio.run(_deployment_run(_source(tmp_path, requests)))

    _suspended(run_id)

    engine = get_engine(database_url)
    for billing_request in requests:
        [draft] = invoices_for(stripe_client, billing_request.request_id)
        assert draft.status == "draft"
        assert ledger.require(engine, billing_request.request_id).point is RecoveryPoint.HELD
    writes_held = len(_writes(sandbox))

    resume_flow_run(run_id, run_input={"decision": "approve", "by": "alice"})
    state = _execute(run_id)

    assert state.is_completed(), state
    new_writes = _writes(sandbox)[writes_held:]
    # The rerun from the top bills nothing again: only each draft's finalize and send.
    assert sorted(w.rsplit("/", 1)[-1] for w in new_writes) == ["finalize"] * 2 + ["send"] * 2
    for billing_request in requests:
        invoice = assert_exactly_one_invoice(stripe_client, billing_request)
        assert invoice.status == "open"
        trail = ledger.audit_trail(engine, billing_request.request_id)
        [approved] = [e for e in trail if e.message == "approved"]
        assert approved.detail["by"] == "alice"
    assert "2 invoiced" in (state.message or ""), state.message


def test_rejecting_in_the_form_deletes_the_drafts_and_a_blank_reason_is_said_so(
    sandbox: Any, stripe_client: stripe.StripeClient, database_url: str, tmp_path: Path
) -> None:
    requests = _requests(f"x{uuid.uuid4().hex[:6]}")
    run_id = asyncio.run(_deployment_run(_source(tmp_path, requests)))
    _suspended(run_id)

    resume_flow_run(run_id, run_input={"decision": "reject", "by": "bob", "reason": ""})
    state = _execute(run_id)

    assert state.is_completed(), state
    engine = get_engine(database_url)
    for billing_request in requests:
        assert invoices_for(stripe_client, billing_request.request_id) == []
        row = ledger.require(engine, billing_request.request_id)
        assert row.point is RecoveryPoint.REJECTED
        [rejected] = [
            e for e in ledger.audit_trail(engine, row.request_id) if e.to_point == "rejected"
        ]
        assert (rejected.detail["by"], rejected.detail["reason"]) == ("bob", UI_REJECT_REASON)


def test_a_form_answer_after_the_cli_decided_the_other_way_fails_the_run_and_changes_nothing(
    sandbox: Any, stripe_client: stripe.StripeClient, database_url: str, tmp_path: Path
) -> None:
    from invoiceflow.approval import decide
    from invoiceflow.runtime import get_runtime

    requests = _requests(f"o{uuid.uuid4().hex[:6]}")
    source = _source(tmp_path, requests)
    run_id = asyncio.run(_deployment_run(source))
    _suspended(run_id)
    billing_run = manifest.default_run_id(read_source(str(source)))
    decide.reject(get_runtime(), billing_run, "carol", "duplicate run")
    writes_before = len(_writes(sandbox))

    resume_flow_run(run_id, run_input={"decision": "approve", "by": "alice"})
    state = _execute(run_id)

    assert state.is_failed() and "was rejected" in (state.message or ""), state
    assert len(_writes(sandbox)) == writes_before
    for billing_request in requests:
        assert invoices_for(stripe_client, billing_request.request_id) == []


def test_an_unanswered_form_times_out_failed_and_the_drafts_stay_held_for_the_cli(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from invoiceflow.approval import decide
    from invoiceflow.runtime import get_runtime, reset_runtime

    monkeypatch.setenv("INVOICEFLOW_APPROVAL_TIMEOUT_DAYS", str(2 / 86400))  # two seconds
    reset_runtime()
    requests = _requests(f"t{uuid.uuid4().hex[:6]}")
    source = _source(tmp_path, requests)
    run_id = asyncio.run(_deployment_run(source))
    _suspended(run_id)

    # Prefect's pause-expirations service ends it; nothing of ours runs.
    ended = wait_for(
        lambda: (run := _read(run_id)).state is not None and run.state.is_failed() and run,
        "the suspended run to time out",
        120,
    )
    assert "never resumed" in (ended.state.message or ""), ended.state
    engine = get_engine(database_url)
    for billing_request in requests:
        assert ledger.require(engine, billing_request.request_id).point is RecoveryPoint.HELD
        [draft] = invoices_for(stripe_client, billing_request.request_id)
        assert draft.status == "draft"

    billing_run = manifest.default_run_id(read_source(str(source)))
    approved = decide.approve(get_runtime(), billing_run, "alice")  # `invoiceflow approve RUN`
    assert sorted(approved.decided) == sorted(r.request_id for r in requests)
    for billing_request in requests:
        assert assert_exactly_one_invoice(stripe_client, billing_request).status == "open"
