"""A draft edited by hand while no run was watching is never finalized.

The run dies just before finalizing; someone adds lines in the Dashboard that
keep the total unchanged (a 0.00 line, a +10/-10 pair). The rerun compares
every line — ours, by position, amount, quantity, price and text — right
before finalizing, and refuses (exit 4) instead of sending it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe

from tests.conftest import app_env, run_cli
from tests.helpers import crash_cli_at, invoices_for, make_request, sent_events

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api", "configured")]

EDITS = {
    "zero-line": [0],
    "plus-minus-pair": [1000, -1000],
}


@pytest.mark.parametrize("amounts", EDITS.values(), ids=EDITS.keys())
def test_a_line_added_by_hand_while_the_run_was_down_is_never_finalized(
    amounts: list[int],
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    configured: dict[str, str],
    tmp_path: Path,
) -> None:
    request = make_request(f"edited-{uuid.uuid4().hex[:8]}")
    env = app_env(sandbox.url, configured["INVOICEFLOW_DATABASE_URL"])
    crash_cli_at(sandbox, request, "/finalize$", "stall_before_write", env, tmp_path)
    [draft] = invoices_for(stripe_client, request.request_id)
    assert draft.status == "draft"
    for amount in amounts:
        stripe_client.v1.invoice_items.create(
            {
                "customer": str(draft.customer),
                "invoice": draft.id,
                "amount": amount,
                "currency": "usd",
                "description": "added by hand",
            }
        )

    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request.model_dump(mode="json")))
    result = run_cli("invoice", str(request_file), "--no-wait", env=env)

    assert result.returncode == 4, result.stderr
    assert "did not add" in result.stderr
    assert "Traceback" not in result.stderr
    invoice = stripe_client.v1.invoices.retrieve(draft.id)
    assert invoice.status == "draft"
    assert sent_events(stripe_client, draft.id) == 0
