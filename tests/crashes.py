"""A request stopped at a Stripe write, as a crash would leave it, and what a rerun must find.

Shared by the in-process crash matrix (`test_pipeline.py`, the default tier) and the
SIGKILL matrix (`test_crash_recovery.py`, the heavy tier), and by every rule that
needs a run to die at a write (`crash_at`) before a rerun in a new process.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from invoiceflow import fresh, lease, ledger, pipeline
from invoiceflow.db.engine import transaction
from invoiceflow.request import BillingRequest
from invoiceflow.runtime import get_runtime
from tests.helpers import stalled, wait_for

HAPPY_PATH = [
    "planned",
    "customer_ready",
    "catalog_ready",
    "draft_created",
    "lines_added",
    "finalized",
    "sent",
]
# Every Stripe write of the DAG, by the request path that makes it.
WRITES = {
    "customer": "^/v1/customers$",
    "product": "^/v1/products$",
    "price": "^/v1/prices$",
    "invoice": "^/v1/invoices$",
    "add_lines": "/add_lines$",
    "finalize": "/finalize$",
    "send": "/send$",
}
# What one request's writes amount to in Stripe, however often it failed.
EXPECTED_EXECUTED_WRITES = {
    "^/v1/customers$": 1,
    "^/v1/products$": 3,
    "^/v1/prices$": 3,
    "^/v1/invoices$": 1,
    "/add_lines$": 1,
    "/finalize$": 1,
    "/send$": 1,
}
# Every Stripe write of deciding a held run (`invoiceflow approve` / `reject`): method, path.
DECISION_WRITES = {
    "finalize": ("POST", "/finalize$"),
    "send": ("POST", "/send$"),
    "delete": ("DELETE", "^/v1/invoices/in_[^/]+$"),
}

# More tries than any retry policy makes: the write fails for the whole attempt.
ALWAYS = 1000


def bill(request: BillingRequest) -> pipeline.Billed:
    """One attempt, as a new run would make it: recorded, then billed under a new lease owner."""
    rt = get_runtime()
    ledger.submit(rt.engine, request)
    owner = lease.new_owner(uuid.uuid4().hex)
    return pipeline.bill(rt, request, owner, pipeline.in_sequence(rt))


def as_a_new_process() -> None:
    """Forget what this process made: a rerun after a crash runs in a new process, which
    cannot prove that anything it would hang on is fresh, and so looks Stripe up first."""
    fresh._made.clear()


def executed_writes(sandbox: Any) -> dict[str, int]:
    """Writes Stripe actually executed: answered 200, or written before the fault's 500,
    and not an idempotent replay."""
    counts = dict.fromkeys(EXPECTED_EXECUTED_WRITES, 0)
    for entry in sandbox.requests():
        executed = entry["status"] == 200 or entry["fault"] == "after_write"
        if entry["method"] != "POST" or entry["replayed"] or not executed:
            continue
        for pattern in counts:
            if re.search(pattern, entry["path"]):
                counts[pattern] += 1
    return counts


def crash_at(sandbox: Any, request: BillingRequest, path: str, when: str) -> pipeline.Billed:
    """Stop an attempt at the first write to `path` as a SIGKILL would, in process.

    The sandbox holds the write open before or after Stripe makes it; meanwhile
    the run's lease is taken from it (a dead run's lease lapsing, seen from the
    other side), so the attempt stops before it commits anything more: our
    ledger keeps the intent and not the answer. Then the lease lapses."""
    rt = get_runtime()
    ledger.submit(rt.engine, request)
    sandbox.configure(stall_ms=600, faults=[{"method": "POST", "path": path, "when": when}])
    outcome: list[pipeline.Billed] = []
    attempt = threading.Thread(target=lambda: outcome.append(bill(request)))
    attempt.start()
    wait_for(lambda: stalled(sandbox, when), f"the {path} write to stall")
    set_lease(request.request_id, "crashed-run", time.time() + 3600)
    attempt.join(timeout=120)
    wait_for(lambda: stalled(sandbox, when)["status"] is not None, "the stalled write to end")
    sandbox.configure(faults=[])
    set_lease(request.request_id, "crashed-run", time.time() - 1)  # it lapsed
    assert outcome, "the attempt never ended"
    return outcome[0]


def set_lease(request_id: str, owner: str, expires_at: float) -> None:
    with transaction(get_runtime().engine) as session:
        row = ledger.lock_row(session, request_id)
        assert row is not None
        row.lease_owner, row.lease_expires_at = owner, expires_at
        session.add(row)


def crash_during(
    sandbox: Any, request_id: str, method: str, path: str, when: str, act: Callable[[], object]
) -> None:
    """`crash_at` for any act (approving or rejecting a held run): stop it at the first
    `method` write to `path`, as a SIGKILL would, while it works on `request_id`."""
    sandbox.configure(stall_ms=600, faults=[{"method": method, "path": path, "when": when}])
    thread = threading.Thread(target=act)
    thread.start()
    wait_for(lambda: stalled(sandbox, when), f"the {method} {path} write to stall")
    set_lease(request_id, "crashed-run", time.time() + 3600)
    thread.join(timeout=120)
    wait_for(lambda: stalled(sandbox, when)["status"] is not None, "the stalled write to end")
    sandbox.configure(faults=[])
    set_lease(request_id, "crashed-run", time.time() - 1)  # it lapsed
    assert not thread.is_alive(), "the act never ended"
