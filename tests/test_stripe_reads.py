"""Stripe reads are cut only where the answer just received says the same.

A run that added the lines itself checks them from Stripe's answer and
finalizes without reading the draft again; a run that resumes a draft it did
not fill this very attempt reads it and refuses one edited in the meantime.

On the plain pipeline (`bill_plain`), in process: the invoice flow runs the same
steps. A run that died after a write is `crash_at` (tests/test_pipeline.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.runtime import get_runtime
from invoiceflow.stripe_keys import META_CUSTOMER_ID
from tests.crashes import as_a_new_process, crash_at
from tests.helpers import assert_exactly_one_invoice, bill_plain, make_request

pytestmark = pytest.mark.usefixtures("configured")


def test_a_warm_request_makes_four_writes_and_no_read(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    bill_plain(make_request("warm-1"))  # makes the customer, products and prices
    before = len(sandbox.requests())

    status = bill_plain(make_request("warm-2"))

    calls = [(e["method"], e["path"]) for e in sandbox.requests()[before:]]
    assert status.state is RecoveryPoint.SENT, status.last_error
    assert [path.rsplit("/", 1)[-1] for method, path in calls if method == "POST"] == [
        "invoices",
        "add_lines",
        "finalize",
        "send",
    ]
    assert [call for call in calls if call[0] == "GET"] == []
    assert_exactly_one_invoice(stripe_client, make_request("warm-2"))


def test_a_monthly_request_reads_as_much_for_a_customer_with_a_long_history(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    """A customer this process did not create (an earlier month's) is looked at
    before its invoice is created; that look must not page through every invoice
    the customer ever had, request after request."""
    # Made in Stripe earlier (another process, last year), with our id on it.
    customer = stripe_client.v1.customers.create(
        {"email": "billing@loyal.example", "name": "Loyal", "metadata": {META_CUSTOMER_ID: "loyal"}}
    )
    bill_plain(make_request("month-1", customer="loyal"))  # maps it, makes the catalog

    def reads_of(request_id: str) -> list[str]:
        before = len(sandbox.requests())
        status = bill_plain(make_request(request_id, customer="loyal"))
        assert status.state is RecoveryPoint.SENT, status.last_error
        return [e["path"] for e in sandbox.requests()[before:] if e["method"] == "GET"]

    short_history = reads_of("month-2")
    for month in range(250):  # years of invoices: three pages of a list
        stripe_client.v1.invoices.create(
            {"customer": customer.id, "metadata": {"month": str(month)}}
        )
    long_history = reads_of("month-3")

    assert long_history == short_history == ["/v1/invoices/search"]
    assert_exactly_one_invoice(stripe_client, make_request("month-3", customer="loyal"))


def test_a_run_resumed_after_add_lines_reads_the_draft_and_refuses_an_edit(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    from invoiceflow.invoicing import InvoiceMismatch

    request = make_request("resumed-edit")
    # The first run dies right after Stripe added the lines, before we recorded it...
    crash_at(sandbox, request, "/add_lines$", "stall_after_write")
    invoice = stripe_client.v1.invoices.list({"limit": 1}).data[0]
    # ...and someone adds a line in the Dashboard before the rerun.
    price = stripe_client.v1.prices.list({"limit": 1}).data[0]
    stripe_client.v1.invoices.add_lines(
        invoice.id, {"lines": [{"pricing": {"price": price.id}, "quantity": 1}]}
    )

    as_a_new_process()

    with pytest.raises(InvoiceMismatch):
        bill_plain(request)

    assert stripe_client.v1.invoices.retrieve(invoice.id).status == "draft"
    assert ledger.require(get_runtime().engine, request.request_id).point is RecoveryPoint.FAILED


def test_a_run_resumed_after_add_lines_finishes_the_invoice_once(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    request = make_request("resumed-clean")
    crash_at(sandbox, request, "/add_lines$", "stall_after_write")
    as_a_new_process()
    before = len(sandbox.requests())

    status = bill_plain(request)

    assert status.state is RecoveryPoint.SENT, status.last_error
    assert_exactly_one_invoice(stripe_client, request)
    resumed = [(e["method"], e["path"]) for e in sandbox.requests()[before:]]
    # Resumed: the draft's lines are read (not trusted) before it is finalized.
    assert any(m == "GET" and p.endswith("/lines") for m, p in resumed), resumed
    assert not any(p.endswith("/add_lines") for _, p in resumed), resumed
