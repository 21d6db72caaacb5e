"""`invoiceflow resolve`: a person settles the send that Stripe's event log no longer can.

The invoice is finalized on a test clock 40 days behind Stripe's own time, so by the
rerun the events that would show whether it was emailed are past retention: the run
stops with exit 4 (`SendUnverifiable`). The run died at the send write, before it
(never emailed) or after it (emailed, unrecorded), as a SIGKILL would leave it
(`crash_at`). The person's answer goes in through the CLI, audited; the rerun on the
plain pipeline then awaits payment without sending, or sends it once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.invoicing import SendUnverifiable
from invoiceflow.outcomes import Exit, classify
from invoiceflow.request import BillingRequest
from invoiceflow.runtime import get_runtime
from tests.crashes import as_a_new_process, crash_at
from tests.helpers import assert_exactly_one_invoice, bill_plain, make_request, sent_events
from tests.inprocess_cli import Invoke, configured_cli

# The ledger matters: the answer and its audit row are one transaction on either backend.
pytestmark = pytest.mark.backend

PAST_RETENTION = timedelta(days=40)


@pytest.fixture
def cli(
    configured: dict[str, str],
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Invoke:
    """The CLI, with the customers we create from now on on a clock 40 days back."""
    frozen = int((datetime.now(UTC) - PAST_RETENTION).timestamp())
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": frozen})
    return configured_cli(
        monkeypatch, request, {**configured, "INVOICEFLOW_STRIPE_TEST_CLOCK": clock.id}
    )


def _stopped_for_a_check(sandbox: Any, when: str) -> BillingRequest:
    """A request whose run died at its send write, rerun in a new process: exit 4."""
    tag = uuid.uuid4().hex[:8]
    request = make_request(f"resolve-{tag}", customer=f"cust-{tag}")
    crash_at(sandbox, request, "/send$", when)
    as_a_new_process()
    with pytest.raises(SendUnverifiable) as stopped:
        bill_plain(request)
    assert classify(stopped.value) is Exit.REFUSED
    assert "invoiceflow resolve" in str(stopped.value)
    return request


def test_resolved_as_sent_the_rerun_awaits_payment_without_sending(
    cli: Invoke, sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    request = _stopped_for_a_check(sandbox, "stall_after_write")  # emailed, unrecorded
    request_id = request.request_id

    result = cli(
        "resolve", request_id, "--sent", "--note", "Dashboard shows it emailed", "--by", "ana"
    )

    assert result.exit_code == 0, result.stderr
    assert "recorded as sent by ana" in result.stdout
    row = ledger.require(get_runtime().engine, request_id)
    assert row.point is RecoveryPoint.SENT
    [audit] = [
        e for e in ledger.audit_trail(get_runtime().engine, request_id) if "resolved" in e.message
    ]
    assert audit.detail["by"] == "ana" and audit.detail["note"] == "Dashboard shows it emailed"
    assert audit.to_point == "sent"

    status = bill_plain(request)  # the rerun

    assert status.state is RecoveryPoint.SENT
    invoice = assert_exactly_one_invoice(stripe_client, request)  # still the one send
    assert invoice.status == "open"


def test_resolved_as_not_sent_the_rerun_sends_it_once(
    cli: Invoke, sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    request = _stopped_for_a_check(sandbox, "stall_before_write")  # never emailed
    request_id = request.request_id

    result = cli("resolve", request_id, "--not-sent", "--note", "customer never got it")

    assert result.exit_code == 0, result.stderr
    assert "recorded as not sent" in result.stdout
    assert ledger.require(get_runtime().engine, request_id).progress is RecoveryPoint.FINALIZED

    status = bill_plain(request)
    again = bill_plain(request)

    assert status.state is again.state is RecoveryPoint.SENT
    assert_exactly_one_invoice(stripe_client, request)  # sent once, not twice


def test_resolve_refuses_what_needs_no_answer(
    cli: Invoke, sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    request = make_request(f"fine-{uuid.uuid4().hex[:8]}")
    bill_plain(request)  # sent and recorded: nothing to answer

    sent_already = cli("resolve", request.request_id, "--sent", "--note", "x")
    unknown = cli("resolve", "no-such-request", "--not-sent", "--note", "x")
    no_note = cli("resolve", request.request_id, "--sent")
    no_answer = cli("resolve", request.request_id, "--note", "x")

    assert sent_already.exit_code == Exit.REFUSED
    assert "is at sent" in sent_already.stderr and len(sent_already.stderr.splitlines()) == 1
    assert unknown.exit_code == Exit.BAD_INPUT and "no request 'no-such-request'" in unknown.stderr
    assert no_note.exit_code == Exit.BAD_INPUT and "--note" in no_note.stderr
    assert no_answer.exit_code == Exit.BAD_INPUT and "--sent or --not-sent" in no_answer.stderr
    row = ledger.require(get_runtime().engine, request.request_id)
    assert row.point is RecoveryPoint.SENT and row.stripe_invoice_id is not None
    assert sent_events(stripe_client, row.stripe_invoice_id) == 1
