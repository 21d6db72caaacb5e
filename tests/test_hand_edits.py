"""A draft edited by hand while no run was watching is never finalized.

The run dies just before finalizing; someone adds lines in the Dashboard that
keep the total unchanged (a 0.00 line, a +10/-10 pair). The rerun compares
every line — ours, by position, amount, quantity, price and text — right
before finalizing, and refuses (exit 4) instead of sending it.

On the plain pipeline (`bill_plain`), in process: the death is `crash_at`
(tests/test_pipeline.py), and the refusal's exit code and line are what
`invoiceflow invoice` makes of the failure (`classify`, `describe`).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import stripe

from invoiceflow.invoicing import InvoiceMismatch
from invoiceflow.outcomes import Exit, classify
from invoiceflow.retry import describe
from tests.crashes import as_a_new_process, crash_at
from tests.helpers import bill_plain, invoices_for, make_request, sent_events

pytestmark = pytest.mark.usefixtures("configured")

EDITS = {
    "zero-line": [0],
    "plus-minus-pair": [1000, -1000],
}


@pytest.mark.parametrize("amounts", EDITS.values(), ids=EDITS.keys())
def test_a_line_added_by_hand_while_the_run_was_down_is_never_finalized(
    amounts: list[int], sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    request = make_request(f"edited-{uuid.uuid4().hex[:8]}")
    crash_at(sandbox, request, "/finalize$", "stall_before_write")
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
    as_a_new_process()

    with pytest.raises(InvoiceMismatch) as refused:
        bill_plain(request)

    assert classify(refused.value) is Exit.REFUSED  # exit 4
    assert "did not add" in describe(refused.value)
    invoice = stripe_client.v1.invoices.retrieve(draft.id)
    assert invoice.status == "draft"
    assert sent_events(stripe_client, draft.id) == 0
