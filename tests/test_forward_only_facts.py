"""A late answer never overwrites a recorded payment (issue 19, hole 7).

The race: a run's Stripe call (`send`, or dunning's write-off) is answered
with the invoice as it stood then; before the run commits that answer, the
customer pays and the receiver records the payment. The run's commit must not
copy its older answer over the payment.

The interleaving is made deterministic with the Stripe SDK's own extension
point, its HTTP client: ours is the SDK's `RequestsClient`, which, right after
Stripe answered the one call in question and before our code sees the answer,
lets the customer pay (in the sandbox) and delivers Stripe's signed
`invoice.paid` to our receiver over HTTP. Then the run goes on and commits.
Everything else is real: the plain step functions, the sandbox, the database.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe

from invoiceflow import ledger, pipeline
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.db.utc import as_utc
from invoiceflow.dunning.act import dun
from invoiceflow.dunning.report import Outcome
from invoiceflow.runtime import Runtime, get_runtime
from tests.helpers import make_request
from tests.webhooks import Receiver, event_of, serve_receiver

SECRET = "whsec_" + secrets.token_hex(16)


class _PaysRightAfter(stripe.RequestsClient):
    """The SDK's HTTP client; once Stripe answered a POST to a path ending in
    `suffix`, it runs `then(invoice_id)` before handing the answer back."""

    def __init__(self, suffix: str, then: Callable[[str], None]) -> None:
        super().__init__(timeout=30)
        self.suffix, self.then, self.fired = suffix, then, 0

    def request_with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        post_data: Any = None,
        max_network_retries: int | None = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        answer = super().request_with_retries(
            method, url, headers, post_data, max_network_retries, _usage=_usage
        )
        path = urlsplit(url).path
        if method.lower() == "post" and path.endswith(self.suffix) and answer[1] == 200:
            self.fired += 1
            self.then(path.split("/")[3])  # /v1/invoices/<id>/<action>
        return answer


@pytest.fixture
def receiver(
    configured: dict[str, str], monkeypatch: pytest.MonkeyPatch, database_url: str
) -> Iterator[Receiver]:
    with serve_receiver(monkeypatch, database_url, [SECRET]) as running:
        yield running


def _customer_pays(client: stripe.StripeClient, receiver: Receiver) -> Callable[[str], None]:
    def pay(invoice_id: str) -> None:
        client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
        answer = receiver.post_signed(event_of(client, "invoice.paid", invoice_id))
        assert answer.json()["outcome"] == "applied", answer.text  # committed before 200

    return pay


def _with_http(rt: Runtime, http: stripe.RequestsClient) -> Runtime:
    """The process's runtime, its Stripe client speaking through `http`."""
    client = stripe.StripeClient(
        rt.settings.require_stripe_key(),
        base_addresses={"api": rt.settings.stripe_api_base},
        max_network_retries=0,
        http_client=http,
    )
    return Runtime(rt.settings, rt.engine, client)


def _bill(rt: Runtime, request_id: str) -> BillingRequestRow:
    request = make_request(request_id, customer=f"cust-{request_id.lower()}")
    ledger.submit(rt.engine, request)
    billed = pipeline.bill(rt, request, f"run-{request_id}", pipeline.in_sequence(rt))
    assert billed.error is None, billed.error
    return billed.row


def _assert_paid_as_stripe_says(
    client: stripe.StripeClient, row: BillingRequestRow, request_id: str
) -> None:
    invoice = client.v1.invoices.retrieve(str(row.stripe_invoice_id))
    assert invoice.status == "paid" and invoice.status_transitions.paid_at is not None
    assert row.point is RecoveryPoint.PAID
    assert (row.invoice_status, row.amount_paid) == ("paid", invoice.amount_paid)
    assert row.amount_paid == row.total_amount
    assert as_utc(row.paid_at) == datetime.fromtimestamp(invoice.status_transitions.paid_at, UTC)
    moves = [e.to_point for e in ledger.audit_trail(get_runtime().engine, request_id)]
    assert moves.count("paid") == 1


@pytest.mark.backend  # two transactions racing for the row: both databases
def test_a_payment_recorded_while_send_is_in_flight_is_kept(
    stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    request_id = f"REQ-SEND-{uuid.uuid4().hex[:6]}"
    http = _PaysRightAfter("/send", _customer_pays(stripe_client, receiver))
    row = _bill(_with_http(get_runtime(), http), request_id)

    assert http.fired == 1  # the payment landed between send's answer and its commit
    assert row.sent_at is not None
    _assert_paid_as_stripe_says(stripe_client, row, request_id)


@pytest.mark.backend  # two transactions racing for the row: both databases
def test_a_payment_recorded_while_dunning_writes_off_is_kept(
    stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    request_id = f"REQ-DUN-{uuid.uuid4().hex[:6]}"
    rt = get_runtime()
    sent = _bill(rt, request_id)
    assert sent.point is RecoveryPoint.SENT and sent.due_date is not None
    http = _PaysRightAfter("/mark_uncollectible", _customer_pays(stripe_client, receiver))

    lines = dun(_with_http(rt, http), request_id, as_utc(sent.due_date) + timedelta(days=45), "d1")

    assert http.fired == 1  # the payment landed between the write-off's answer and its commit
    assert [(line.step, line.outcome) for line in lines if line.step == "final"] == [
        ("final", Outcome.UNCOLLECTIBLE)  # it did happen in Stripe, before the payment
    ]
    _assert_paid_as_stripe_says(stripe_client, ledger.require(rt.engine, request_id), request_id)


def test_the_other_order_ends_the_same(
    stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    """Paid after the run committed `sent`: the same row, by the ordinary path."""
    request_id = f"REQ-LATE-{uuid.uuid4().hex[:6]}"
    rt = get_runtime()
    row = _bill(rt, request_id)
    assert (row.point, row.invoice_status, row.amount_paid) == (RecoveryPoint.SENT, "open", 0)
    _customer_pays(stripe_client, receiver)(str(row.stripe_invoice_id))
    _assert_paid_as_stripe_says(stripe_client, ledger.require(rt.engine, request_id), request_id)


# --- the merge itself: Stripe's status machine, not arrival order ---------------------
# (imported in the tests: the race tests above also run against code without it)


@pytest.mark.parametrize(
    ("cached", "status", "forward"),
    [
        (None, "draft", True),
        ("draft", "open", True),
        ("open", "draft", False),
        ("open", "open", True),
        ("open", "paid", True),
        ("paid", "open", False),
        ("paid", "uncollectible", False),
        ("uncollectible", "paid", True),  # Stripe lets an uncollectible invoice be paid
        ("uncollectible", "void", True),
        ("paid", "void", False),  # final: paid and void exclude each other
        ("void", "paid", False),
        ("paid", "paid", True),
        ("open", None, False),
        ("open", "deleted", False),
    ],
)
def test_status_moves_only_forward(cached: str | None, status: str | None, forward: bool) -> None:
    from invoiceflow.invoice_facts import moves_forward

    assert moves_forward(cached, status) is forward


def test_an_older_snapshot_changes_nothing_and_paid_at_is_stripes() -> None:
    from invoiceflow.invoice_facts import merge_invoice

    row = BillingRequestRow(
        request_id="r", fingerprint="f", payload={}, customer_key="c", currency="usd",
        total_amount=500, stripe_invoice_id="in_1",
    )  # fmt: skip
    paid = {"id": "in_1", "status": "paid", "amount_due": 500, "amount_paid": 500,
            "number": "N-1", "status_transitions": {"paid_at": 1_700_000_000}}  # fmt: skip
    assert merge_invoice(row, paid)
    open_answer = {**paid, "status": "open", "amount_paid": 0, "status_transitions": {}}
    assert not merge_invoice(row, open_answer)
    assert not merge_invoice(row, {**paid, "id": "in_other"})  # another invoice's facts
    assert (row.invoice_status, row.amount_paid) == ("paid", 500)
    assert row.paid_at == datetime.fromtimestamp(1_700_000_000, UTC)
