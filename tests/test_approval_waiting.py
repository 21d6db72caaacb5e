"""Deciding a held run with the CLI ends the flow run still waiting in Prefect for its form.

The held deployment run is made and suspended in this process against the session's
Prefect server, as tests/test_approval_served.py does; then `invoiceflow approve` /
`reject` decides it. The suspended run ends Cancelled, its message saying who decided
(no timeout, no reminder left to fire). With Prefect unreachable the decision still
stands, and one line says the waiting run could not be ended.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe
from prefect.settings import PREFECT_API_URL, temporary_settings

from invoiceflow import ledger
from invoiceflow.batch import manifest
from invoiceflow.batch.source import read_source
from invoiceflow.db.engine import get_engine
from invoiceflow.db.models import RecoveryPoint
from tests.conftest import app_env
from tests.helpers import assert_exactly_one_invoice, invoices_for
from tests.inprocess_cli import configured_cli
from tests.test_approval_served import _deployment_run, _read, _requests, _source, _suspended

pytestmark = pytest.mark.usefixtures("prefect_api", "configured")


def test_approving_from_the_cli_cancels_the_run_waiting_for_the_form(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    requests = _requests(f"w{uuid.uuid4().hex[:6]}")
    source = _source(tmp_path, requests)
    flow_run_id = asyncio.run(_deployment_run(source))
    waiting = _suspended(flow_run_id)
    billing_run = manifest.default_run_id(read_source(str(source)))
    cli = configured_cli(monkeypatch, request, app_env(sandbox.url, database_url))

    approved = cli("approve", billing_run, "--by", "alice")

    assert approved.exit_code == 0, (approved.stdout, approved.stderr[-3000:])
    assert approved.stdout.splitlines()[-1] == (
        f"flow run {waiting.name} waiting in Prefect for billing run {billing_run}: "
        "cancelled (approved from the CLI by alice)"
    )
    ended = _read(flow_run_id)
    assert ended.state is not None and ended.state.is_cancelled(), ended.state
    assert ended.state.message == "approved from the CLI by alice"
    for billing_request in requests:
        assert assert_exactly_one_invoice(stripe_client, billing_request).status == "open"

    again = cli("approve", billing_run)  # nothing waits any more: no line about Prefect
    assert again.exit_code == 0 and "waiting in Prefect" not in again.stdout


def test_rejecting_with_prefect_unreachable_stands_and_says_the_run_still_waits(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    requests = _requests(f"u{uuid.uuid4().hex[:6]}")
    source = _source(tmp_path, requests)
    flow_run_id = asyncio.run(_deployment_run(source))
    _suspended(flow_run_id)
    billing_run = manifest.default_run_id(read_source(str(source)))
    cli = configured_cli(monkeypatch, request, app_env(sandbox.url, database_url))

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # nothing listens
        rejected = cli("reject", billing_run, "--reason", "wrong prices", "--by", "bob")

    assert rejected.exit_code == 0, (rejected.stdout, rejected.stderr[-3000:])
    last = rejected.stdout.splitlines()[-1]
    assert last.startswith(
        f"the flow run waiting in Prefect for billing run {billing_run} could not be ended ("
    ), last
    assert last.endswith("cancel it in the Prefect UI")
    engine = get_engine(database_url)
    for billing_request in requests:
        assert invoices_for(stripe_client, billing_request.request_id) == []
        assert ledger.require(engine, billing_request.request_id).point is RecoveryPoint.REJECTED
    still = _read(flow_run_id)
    assert still.state is not None and still.state.name == "Suspended"

    # Prefect back: the same command again ends it, with no Stripe write.
    again = cli("reject", billing_run, "--reason", "wrong prices", "--by", "bob")
    assert again.exit_code == 0 and "cancelled (rejected from the CLI by bob)" in again.stdout
    ended = _read(flow_run_id)
    assert ended.state is not None and ended.state.is_cancelled(), ended.state
