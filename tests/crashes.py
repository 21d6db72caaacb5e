"""A request stopped at a Stripe write, as a crash would leave it, and what a rerun must find.

Shared by the in-process crash matrix (`test_pipeline.py`, the default tier) and the
SIGKILL matrix (`test_crash_recovery.py`, the heavy tier), and by every rule that
needs a run to die at a write (`crash_at`) before a rerun in a new process.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    other side) and the write is let go only once the attempt's lease keeper has
    seen that, so the attempt stops before it writes or commits anything more:
    our ledger keeps the intent and not the answer. Then the lease lapses."""
    rt = get_runtime()
    ledger.submit(rt.engine, request)
    outcome: list[pipeline.Billed] = []
    _stop_at(
        sandbox, request.request_id, "POST", path, when, lambda: outcome.append(bill(request))
    )
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
    _stop_at(sandbox, request_id, method, path, when, act)


# Long enough never to end on its own: the test lets the write go (`release_stalls`).
_HOLD_MS = 120_000


def _stop_at(
    sandbox: Any, request_id: str, method: str, path: str, when: str, act: Callable[[], object]
) -> None:
    sandbox.configure(stall_ms=_HOLD_MS, faults=[{"method": method, "path": path, "when": when}])
    with _lease_losses() as lost:
        thread = threading.Thread(target=act)
        thread.start()
        wait_for(lambda: stalled(sandbox, when), f"the {method} {path} write to stall")
        set_lease(request_id, "crashed-run", time.time() + 3600)
        # Not a fixed wait: the keeper notices at its next renewal, whenever a busy
        # machine schedules it. Until then a let-go write would be retried in time.
        wait_for(lambda: request_id in lost, f"the attempt on {request_id} to see its lease go")
        sandbox.release_stalls()
        thread.join(timeout=120)
    wait_for(lambda: stalled(sandbox, when)["status"] is not None, "the stalled write to end")
    sandbox.configure(faults=[])
    set_lease(request_id, "crashed-run", time.time() - 1)  # it lapsed
    assert not thread.is_alive(), "the act never ended"


@contextmanager
def _lease_losses() -> Iterator[set[str]]:
    """The requests whose lease keepers logged, while this block ran, that another run took
    the lease (`invoiceflow.lease`'s warning)."""
    lost: set[str] = set()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Lost the lease on "):
                lost.add(str(record.args[0]) if isinstance(record.args, tuple) else "")

    handler, logger = Seen(level=logging.WARNING), logging.getLogger(lease.__name__)
    logger.addHandler(handler)
    try:
        yield lost
    finally:
        logger.removeHandler(handler)
