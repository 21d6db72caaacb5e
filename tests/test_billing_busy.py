"""A billing run skips a request another run holds and comes back to it after the others.

It used to wait a whole lease TTL (300 s by default) for the holder, blocking a
worker thread; dunning waits 2 s. Now a billing run's unit waits as briefly,
records the entry `busy`, and the run tries it once more when every other entry
is done: billed then if the holder let go, else left `busy` (retryable) for a
rerun. Whoever holds the lease bills the request, so it is never billed twice.

In process: the billing-run flow on the session's Prefect server, the Stripe
sandbox over HTTP, SQLite and PostgreSQL (the lease is a row lock).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import stripe
from sqlalchemy.engine import Engine

from flows.billing_run import run_billing
from invoiceflow import ledger
from invoiceflow.batch import manifest
from invoiceflow.batch.source import read_source
from invoiceflow.request import BillingRequest
from invoiceflow.runtime import get_runtime, reset_runtime
from tests.helpers import assert_exactly_one_invoice, make_request, wait_for

pytestmark = pytest.mark.usefixtures("prefect_api", "configured")

OTHER_RUN = "another-host:1:another-run"
ONE_LINE = [{"sku": "busy-seat", "name": "Seat", "unit_amount": 1500, "quantity": 1}]


def _source(tmp_path: Path, prefix: str) -> tuple[Path, list[BillingRequest]]:
    requests = [
        make_request(f"{prefix}-{n}", customer=f"{prefix}-cust{n}", items=ONE_LINE)
        for n in range(3)
    ]
    path = tmp_path / f"{prefix}.jsonl"
    path.write_text("".join(json.dumps(r.model_dump(mode="json")) + "\n" for r in requests))
    return path, requests


def _held_by_another_run(engine: Engine, request: BillingRequest) -> None:
    ledger.submit(engine, request)
    assert ledger.acquire_lease(engine, request.request_id, OTHER_RUN, ttl_seconds=600)


def _outcome(engine: Engine, run_id: str, position: int) -> str | None:
    loaded = manifest.load(engine, run_id)
    return loaded[1][position].outcome if loaded else None


def test_a_busy_request_is_skipped_then_billed_once_after_the_others(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("INVOICEFLOW_BATCH_WORKERS", "1")  # one thread: a wait stalls the run
    reset_runtime()
    engine = get_runtime().engine
    source, requests = _source(tmp_path, "busy")
    run_id = manifest.default_run_id(read_source(str(source)))
    _held_by_another_run(engine, requests[0])

    def let_go_once_skipped() -> None:
        """The other run finishes only after this run called its request busy."""
        try:
            wait_for(lambda: _outcome(engine, run_id, 0) == "busy", "busy-0 skipped", 90)
        finally:
            ledger.release_lease(engine, "busy-0", OTHER_RUN)

    holder = threading.Thread(target=let_go_once_skipped)
    holder.start()
    result = run_billing(str(source))
    holder.join()

    assert result.counts == {"invoiced": 3}, result.lines()
    assert result.ok
    assert result.attempts == 1  # in this run, not a rerun
    invoices = {r.request_id: assert_exactly_one_invoice(stripe_client, r).id for r in requests}
    # Billed after the others: its invoice was the last one sent (events are newest first).
    sent = stripe_client.v1.events.list({"type": "invoice.sent", "limit": 10}).data
    assert sent[0].data.object["id"] == invoices["busy-0"]


def test_a_request_still_busy_at_the_end_is_busy_for_a_rerun_never_billed_twice(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("INVOICEFLOW_BATCH_WORKERS", "2")
    reset_runtime()
    engine = get_runtime().engine
    source, requests = _source(tmp_path, "held")
    _held_by_another_run(engine, requests[1])

    first = run_billing(str(source))

    assert first.counts == {"invoiced": 2, "busy": 1}, first.lines()
    [busy] = first.failures
    assert busy.request_id == "held-1" and "another run" in busy.reason
    held = ledger.require(engine, "held-1")
    assert held.stripe_invoice_id is None and held.lease_owner == OTHER_RUN

    ledger.release_lease(engine, "held-1", OTHER_RUN)
    rerun = run_billing(str(source))

    assert rerun.ok and rerun.counts == {"invoiced": 3}, rerun.lines()
    for request in requests:
        assert_exactly_one_invoice(stripe_client, request)
