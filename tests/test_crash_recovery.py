"""Kill the process at every recovery point, then rerun: still exactly one invoice.

A real `invoiceflow invoice` process runs against the sandbox; the sandbox holds
one chosen Stripe write open (a stall), either before it writes (our last
recovery point is committed, the next write never happened) or after it wrote
(Stripe committed, our database never heard). The test SIGKILLs the process
right then, lets the lease lapse, and runs the request again.

Heavy tier (a process killed per case). The default tier's crash matrix is the
same set of cases in process, on the plain pipeline (tests/test_pipeline.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow.db.models import RecoveryPoint
from tests.conftest import app_env
from tests.helpers import assert_exactly_one_invoice, crash_cli_at, make_request

pytestmark = [
    pytest.mark.slow,
    pytest.mark.heavy,
    pytest.mark.usefixtures("prefect_api", "configured"),
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
# What the request's writes must amount to in Stripe, however often it crashed.
EXPECTED_EXECUTED_WRITES = {
    "^/v1/customers$": 1,
    "^/v1/products$": 3,
    "^/v1/prices$": 3,
    "^/v1/invoices$": 1,
    "/add_lines$": 1,
    "/finalize$": 1,
    "/send$": 1,
}

CASES = [
    pytest.param(step, when, False, id=f"{when}-{step}")
    for step in WRITES
    for when in ("stall_before_write", "stall_after_write")
] + [
    # Stripe committed, we crashed, and its 24 h idempotency window passed.
    pytest.param("invoice", "stall_after_write", True, id="window-expired-invoice"),
    pytest.param("add_lines", "stall_after_write", True, id="window-expired-add_lines"),
    pytest.param("send", "stall_after_write", True, id="window-expired-send"),
]


def _executed_writes(sandbox: Any) -> dict[str, int]:
    counts = dict.fromkeys(EXPECTED_EXECUTED_WRITES, 0)
    for entry in sandbox.requests():
        if entry["method"] != "POST" or entry["replayed"] or entry["status"] != 200:
            continue
        for pattern in counts:
            if re.search(pattern, entry["path"]):
                counts[pattern] += 1
    return counts


@pytest.mark.parametrize(("step", "when", "expire_keys"), CASES)
def test_crash_then_rerun_yields_exactly_one_invoice(
    step: str,
    when: str,
    expire_keys: bool,
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    configured: dict[str, str],
    tmp_path: Path,
) -> None:
    from flows.invoice import invoice_flow

    request = make_request(f"crash-{step}")
    env = app_env(sandbox.url, configured["INVOICEFLOW_DATABASE_URL"])
    crash_cli_at(sandbox, request, WRITES[step], when, env, tmp_path)
    if expire_keys:
        sandbox.expire_idempotency_keys()

    status = invoice_flow(request)

    assert status.state is RecoveryPoint.SENT, status.last_error
    invoice = assert_exactly_one_invoice(stripe_client, request)
    assert status.stripe_invoice_id == invoice.id
    assert _executed_writes(sandbox) == EXPECTED_EXECUTED_WRITES
    assert len(list(stripe_client.v1.customers.list({"limit": 100}).auto_paging_iter())) == 1
