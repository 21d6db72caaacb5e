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

from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow.db.models import RecoveryPoint
from tests.conftest import app_env
from tests.crashes import EXPECTED_EXECUTED_WRITES, WRITES, executed_writes
from tests.helpers import assert_exactly_one_invoice, crash_cli_at, make_request

pytestmark = [
    pytest.mark.slow,
    pytest.mark.heavy,
    pytest.mark.usefixtures("prefect_api", "configured"),
]

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
    assert executed_writes(sandbox) == EXPECTED_EXECUTED_WRITES
    assert len(list(stripe_client.v1.customers.list({"limit": 100}).auto_paging_iter())) == 1
