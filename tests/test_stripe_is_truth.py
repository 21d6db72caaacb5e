"""Stripe is the source of truth; our database is a cache of it plus our intent.

A fresh, restored or another machine's ledger, Stripe's 24 h key window gone
by, a draft deleted or an invoice voided in the Dashboard, a customer deleted,
Stripe's clock behind ours: still one invoice, exactly its lines, sent once.

The rules run on the plain pipeline (`bill_plain`), in process: a run that "died"
at a Stripe write is `crash_at` from tests/crashes.py (the write stalled,
the lease taken away, then lapsed), and the rerun forgets what this process made,
as a new process would. The SIGKILL versions of those deaths are in the heavy
tier (tests/test_crash_recovery.py). One test runs the invoice flow on the
session's Prefect server: a Prefect task retry is what it is about.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.runtime import get_runtime, reset_runtime
from tests.crashes import as_a_new_process, crash_at
from tests.helpers import (
    assert_exactly_one_invoice,
    bill_plain,
    invoices_for,
    make_request,
    sent_events,
    writes,
)

pytestmark = pytest.mark.usefixtures("configured")


def _use_database(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("INVOICEFLOW_DATABASE_URL", url)
    reset_runtime()


def _another_machine(
    monkeypatch: pytest.MonkeyPatch, template: Path, tmp_path: Path, name: str
) -> None:
    """From here on this process is another machine: a ledger of its own (a fresh
    SQLite file at the newest schema) and nothing it made itself."""
    database = tmp_path / f"{name}.db"
    shutil.copyfile(template, database)
    _use_database(monkeypatch, f"sqlite:///{database}")
    as_a_new_process()


def test_a_fresh_ledger_after_the_key_window_finds_the_invoice_instead_of_a_second(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    _sqlite_template: Path,
) -> None:
    """Run, let Stripe forget the keys (24 h), run again from another machine
    (another process, another database)."""
    request = make_request(f"fresh-{uuid.uuid4().hex[:8]}")
    assert bill_plain(request).state is RecoveryPoint.SENT
    sandbox.expire_idempotency_keys()
    before = len(writes(sandbox))

    _another_machine(monkeypatch, _sqlite_template, tmp_path, "another-machine")
    status = bill_plain(request)

    assert status.state is RecoveryPoint.SENT, status.last_error
    assert "sent" in status.one_line()
    assert_exactly_one_invoice(stripe_client, request)
    assert len(writes(sandbox)) == before, "the second ledger wrote to Stripe"
    assert len(list(stripe_client.v1.customers.list({"limit": 100}).auto_paging_iter())) == 1


def test_a_fresh_ledger_resumes_a_run_that_died_after_stripe_made_the_invoice(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    _sqlite_template: Path,
) -> None:
    """The run dies right after Stripe created the draft; days later another
    worker, with its own database, runs the request: it adopts that draft."""
    request = make_request(f"adopt-{uuid.uuid4().hex[:8]}")
    crash_at(sandbox, request, "^/v1/invoices$", "stall_after_write")
    sandbox.expire_idempotency_keys()

    _another_machine(monkeypatch, _sqlite_template, tmp_path, "other-worker")
    status = bill_plain(request)

    assert status.state is RecoveryPoint.SENT, status.last_error
    assert_exactly_one_invoice(stripe_client, request)


def test_a_draft_deleted_before_we_recorded_it_is_made_anew_not_stuck(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    """Stripe made the draft, the run died before recording it, someone deleted
    the draft: the rerun's key replays the deleted draft — never commit that."""
    request = make_request(f"ghost-{uuid.uuid4().hex[:8]}")
    crash_at(sandbox, request, "^/v1/invoices$", "stall_after_write")
    [ghost] = invoices_for(stripe_client, request.request_id)
    stripe_client.v1.invoices.delete(ghost.id)
    as_a_new_process()

    status = bill_plain(request)

    assert status.state is RecoveryPoint.SENT, status.last_error
    invoice = assert_exactly_one_invoice(stripe_client, request)
    assert invoice.id != ghost.id
    again = bill_plain(request)
    assert again.state is RecoveryPoint.SENT and again.stripe_invoice_id == invoice.id


@pytest.mark.usefixtures("prefect_api")
def test_a_retried_create_whose_answer_is_lost_adopts_its_draft_not_a_second(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    """Found by the chaos soak. The invoice create fails until its task retries
    (nothing written); the retry looks Stripe up first (the intent was seen) and
    finds nothing; Stripe then makes the draft but the connection drops before the
    answer, and the same key replays it. That is this write's own draft, not a
    deleted one: adopt it. It was written under a new key instead, and as the
    customer was made by this process nothing looked first: a second invoice.

    On the invoice flow: the in-step retries run out (6 refusals), and Prefect's
    task retry is the attempt that meets the lost answer (the default tier's proof
    that a step's task retries rescue it)."""
    from flows.invoice import invoice_flow

    request = make_request(f"lost-{uuid.uuid4().hex[:8]}", customer=f"c-{uuid.uuid4().hex[:8]}")
    refused = {"method": "POST", "path": "^/v1/invoices$", "when": "before_write", "times": 6}
    lost = {"method": "POST", "path": "^/v1/invoices$", "when": "drop_after_write"}
    sandbox.configure(faults=[refused, lost])

    status = invoice_flow(request)

    assert status.state is RecoveryPoint.SENT, status.last_error
    assert [e for e in sandbox.requests() if e["fault"] == "drop_after_write"], "no fault"
    assert_exactly_one_invoice(stripe_client, request)


def test_a_recorded_draft_deleted_in_the_dashboard_is_replaced(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    request = make_request(f"deleted-{uuid.uuid4().hex[:8]}")
    crash_at(sandbox, request, "/finalize$", "stall_before_write")
    recorded = ledger.require(get_runtime().engine, request.request_id).stripe_invoice_id
    assert recorded is not None
    stripe_client.v1.invoices.delete(recorded)
    as_a_new_process()

    status = bill_plain(request)

    assert status.state is RecoveryPoint.SENT, status.last_error
    invoice = assert_exactly_one_invoice(stripe_client, request)
    assert invoice.id != recorded
    messages = [e.message for e in ledger.audit_trail(get_runtime().engine, request.request_id)]
    assert "draft deleted in Stripe; a new one will be made" in messages


def test_an_invoice_voided_before_it_was_sent_ends_void_and_is_never_sent(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    request = make_request(f"voided-{uuid.uuid4().hex[:8]}")
    crash_at(sandbox, request, "/send$", "stall_before_write")
    [invoice] = invoices_for(stripe_client, request.request_id)
    stripe_client.v1.invoices.void_invoice(invoice.id)
    as_a_new_process()

    status = bill_plain(request)

    assert status.state is RecoveryPoint.VOID, status.last_error
    assert sent_events(stripe_client, invoice.id) == 0
    assert len(invoices_for(stripe_client, request.request_id)) == 1


def test_a_customer_deleted_in_stripe_is_resolved_again(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    """Our customer map points at a deleted customer: the next request heals it."""
    first = make_request(f"cust-a-{uuid.uuid4().hex[:8]}", customer="globex")
    assert bill_plain(first).state is RecoveryPoint.SENT
    [gone] = stripe_client.v1.customers.list({"limit": 10}).data
    stripe_client.v1.customers.delete(gone.id)

    second = make_request(f"cust-b-{uuid.uuid4().hex[:8]}", customer="globex")
    status = bill_plain(second)

    assert status.state is RecoveryPoint.SENT, status.last_error
    invoice = assert_exactly_one_invoice(stripe_client, second)
    assert invoice.customer != gone.id


def test_stripe_clock_behind_ours_never_sends_twice(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    """Our clock runs 10 minutes ahead of Stripe's, and a send's outcome is
    unknown (500 after Stripe sent it): the lookup is bounded by Stripe's own
    timestamps, so it finds the send instead of emailing again."""
    sandbox.configure(
        clock_offset_s=-600,
        faults=[{"method": "POST", "path": "/send$", "when": "after_write"}],
    )
    request = make_request(f"skew-{uuid.uuid4().hex[:8]}")
    status = bill_plain(request)

    assert status.state is RecoveryPoint.SENT, status.last_error
    invoice = assert_exactly_one_invoice(stripe_client, request)  # one invoice.sent event
    assert sent_events(stripe_client, invoice.id) == 1


def test_maps_from_another_account_heal_themselves(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    """Everything our database maps is gone from Stripe (another account or
    mode, or deleted): customer, products and prices are found or made again."""
    first = make_request(f"old-account-{uuid.uuid4().hex[:8]}")
    assert bill_plain(first).state is RecoveryPoint.SENT
    sandbox.reset()  # a brand-new, empty Stripe account behind the same ledger

    second = make_request(f"new-account-{uuid.uuid4().hex[:8]}")
    status = bill_plain(second)

    assert status.state is RecoveryPoint.SENT, status.last_error
    assert_exactly_one_invoice(stripe_client, second)


def test_an_archived_price_is_refused_with_what_to_do(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    first = make_request(f"archived-a-{uuid.uuid4().hex[:8]}")
    assert bill_plain(first).state is RecoveryPoint.SENT
    [price] = stripe_client.v1.prices.list({"lookup_keys": ["invoiceflow:travel:usd:4825"]}).data
    stripe_client.v1.prices.update(price.id, {"active": False})

    second = make_request(f"archived-b-{uuid.uuid4().hex[:8]}")
    with pytest.raises(Exception, match="reactivate it in the Dashboard"):
        bill_plain(second)

    row = ledger.require(get_runtime().engine, second.request_id)
    assert row.point is RecoveryPoint.FAILED
    assert "archived" in (row.last_error or "")
    [draft] = invoices_for(stripe_client, second.request_id)
    assert draft.status == "draft"  # never finalized with a wrong or missing line
