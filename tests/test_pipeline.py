"""The DAG's business rules through the plain functions, in process, without Prefect.

`pipeline.bill` with `pipeline.in_sequence` is exactly what a billing run's unit
calls, and the invoice flow runs the same steps as tasks. Here every rule of the
promise is proven on it against the real sandbox over HTTP and a real database:
one request, one invoice with exactly its lines, sent once, whatever failed.

The crash matrix: the sandbox fails one Stripe write on every try, before
Stripe wrote it (`before_write`) or after (`after_write`: Stripe committed, the
500 is what the key replays, so the client must find the object another way).
The attempt ends with our ledger exactly where a SIGKILL at that write would
leave it: the intent recorded, the Stripe id unknown. The rerun is a new run
(a new lease owner) and must look Stripe up first. The SIGKILL version of the
same matrix, with real processes, is in the heavy tier (`test_crash_recovery.py`).
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import stripe

from invoiceflow import lease, ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.runtime import get_runtime
from tests.crashes import (
    ALWAYS,
    EXPECTED_EXECUTED_WRITES,
    HAPPY_PATH,
    WRITES,
    as_a_new_process,
    bill,
    crash_at,
    executed_writes,
)
from tests.helpers import assert_exactly_one_invoice, make_request, writes

pytestmark = pytest.mark.usefixtures("configured")


def test_one_request_becomes_one_sent_invoice_and_a_rerun_writes_nothing(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    request = make_request("req-plain")
    billed = bill(request)

    assert billed.error is None and billed.tells_story
    assert billed.row.point is RecoveryPoint.SENT
    invoice = assert_exactly_one_invoice(stripe_client, request)
    assert invoice.status == "open" and invoice.collection_method == "send_invoice"
    assert invoice.metadata.to_dict() == {"po": "PO-7", "invoiceflow_request_id": "req-plain"}
    assert billed.row.stripe_invoice_id == invoice.id
    engine = get_runtime().engine
    trail = [e.to_point for e in ledger.audit_trail(engine, request.request_id) if e.to_point]
    assert trail == HAPPY_PATH
    recorded = ledger.writes_for(engine, request.request_id)
    assert recorded and all(w.completed_at is not None for w in recorded)
    assert all(w.idempotency_key.startswith("invoiceflow:") for w in recorded)

    before = len(writes(sandbox))
    as_a_new_process()
    again = bill(request)
    assert again.error is None and again.row.point is RecoveryPoint.SENT
    assert len(writes(sandbox)) == before, "a rerun of a sent request wrote to Stripe"


SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CRASHES = [
    pytest.param(step, when, False, id=f"{when}-{step}")
    for step in WRITES
    for when in ("stall_before_write", "stall_after_write")
] + [
    # Stripe committed, we never heard, and its 24 h idempotency window passed.
    pytest.param(step, "stall_after_write", True, id=f"window-expired-{step}")
    for step in ("invoice", "add_lines", "send")
]


@SQLITE_ONLY  # the ledger's backend does not change the path; its races have their own tests
@pytest.mark.parametrize(("step", "when", "expire_keys"), CRASHES)
def test_a_crash_at_any_stripe_write_then_a_rerun_yields_exactly_one_invoice(
    step: str, when: str, expire_keys: bool, sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    request = make_request(f"crash-{step}")
    crashed = crash_at(sandbox, request, WRITES[step], when)

    assert isinstance(crashed.error, ledger.LeaseLost), crashed.error
    engine = get_runtime().engine
    assert ledger.require(engine, request.request_id).point is not RecoveryPoint.SENT
    if expire_keys:
        sandbox.expire_idempotency_keys()
    as_a_new_process()

    rerun = bill(request)

    assert rerun.error is None, rerun.row.last_error
    assert rerun.row.point is RecoveryPoint.SENT
    invoice = assert_exactly_one_invoice(stripe_client, request)
    assert rerun.row.stripe_invoice_id == invoice.id
    assert executed_writes(sandbox) == EXPECTED_EXECUTED_WRITES
    assert len(list(stripe_client.v1.customers.list({"limit": 100}).auto_paging_iter())) == 1


@SQLITE_ONLY
@pytest.mark.parametrize("step", list(WRITES))
@pytest.mark.parametrize("when", ["before_write", "after_write"])
def test_a_lost_answer_at_any_stripe_write_still_yields_exactly_one_invoice(
    step: str, when: str, sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    """Stripe answers 500 on every try, before or after it wrote: the attempt looks the
    object up (or fails, for a rerun to finish), and never makes a second one."""
    request = make_request(f"lost-{step}")
    sandbox.configure(
        faults=[{"method": "POST", "path": WRITES[step], "when": when, "times": ALWAYS}]
    )
    first = bill(request)
    sandbox.configure(faults=[])
    fired = [e for e in sandbox.requests() if e["fault"] == when]
    assert fired and re.search(WRITES[step], fired[0]["path"]), f"no {when} fault at {step}"
    if first.error is not None:
        assert first.row.point is RecoveryPoint.FAILED
        as_a_new_process()
        assert bill(request).error is None

    invoice = assert_exactly_one_invoice(stripe_client, request)
    assert ledger.require(get_runtime().engine, request.request_id).stripe_invoice_id == invoice.id
    assert executed_writes(sandbox) == EXPECTED_EXECUTED_WRITES


def test_a_run_that_died_holding_the_lease_is_taken_over_once_it_lapses(
    stripe_client: stripe.StripeClient,
) -> None:
    rt = get_runtime()
    request = make_request("req-orphaned")
    ledger.submit(rt.engine, request)
    dead = lease.new_owner("dead-run")
    assert ledger.acquire_lease(rt.engine, request.request_id, dead, ttl_seconds=1)
    lapsed_at = time.time() + 1

    billed = bill(request)  # waits for the dead run's lease, then takes it

    assert time.time() >= lapsed_at, "the lease was taken before it lapsed"
    assert billed.error is None and billed.row.point is RecoveryPoint.SENT
    assert_exactly_one_invoice(stripe_client, request)
    assert ledger.require(rt.engine, request.request_id).lease_owner is None
