"""One business customer id → exactly one Stripe customer; each line reads as requested.

Concurrent first requests for a new customer with different details, a later
request with a new email, a new item name for a known sku, skus whose
sanitised forms would collide.

The rules run on the plain pipeline (`bill_plain`), in process; the race runs as
threads here (on SQLite and PostgreSQL: the customer map's race is between
transactions) and as six real processes in the heavy tier.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.request import BillingRequest
from invoiceflow.runtime import get_runtime
from invoiceflow.stripe_keys import product_id
from tests.conftest import REPO, app_env
from tests.helpers import assert_exactly_one_invoice, bill_plain, invoices_for, make_request

pytestmark = pytest.mark.usefixtures("configured")

RACERS = 6


def _racing_requests() -> list[BillingRequest]:
    """One new customer with three different emails, shared new skus."""
    return [
        make_request(
            f"race-{n}-{uuid.uuid4().hex[:6]}",
            customer={"id": "newco", "email": f"ap{n % 3}@newco.example", "name": f"NewCo {n % 3}"},
        )
        for n in range(RACERS)
    ]


def _one_customer_for_all(
    stripe_client: stripe.StripeClient, requests: list[BillingRequest]
) -> None:
    customers = list(stripe_client.v1.customers.list({"limit": 100}).auto_paging_iter())
    assert len(customers) == 1, [c.id for c in customers]
    for request in requests:
        invoice = assert_exactly_one_invoice(stripe_client, request)
        assert invoice.customer == customers[0].id
    engine = get_runtime().engine
    assert {ledger.require(engine, r.request_id).stripe_customer_id for r in requests} == {
        customers[0].id
    }


@pytest.mark.backend
def test_concurrent_first_requests_in_threads_make_one_stripe_customer(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    """Six runs at once in one process, released together: one Stripe customer,
    six invoices on it, no failure."""
    sandbox.configure(latency_ms=20, jitter_ms=20)
    requests = _racing_requests()
    barrier = threading.Barrier(RACERS)
    errors: list[BaseException] = []

    def run(request: BillingRequest) -> None:
        try:
            barrier.wait()
            bill_plain(request)
        except BaseException as exc:
            errors.append(exc)

    racers = [threading.Thread(target=run, args=(request,)) for request in requests]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=300)

    assert errors == []
    _one_customer_for_all(stripe_client, requests)


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.usefixtures("prefect_api")
def test_concurrent_first_requests_for_a_new_customer_make_one_stripe_customer(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    configured: dict[str, str],
    tmp_path: Path,
) -> None:
    """Six processes at once, one new customer with three different emails,
    shared new skus: one Stripe customer, six invoices on it, no crash."""
    sandbox.configure(latency_ms=20, jitter_ms=20)
    env = {
        **os.environ,
        **app_env(sandbox.url, configured["INVOICEFLOW_DATABASE_URL"]),
        "INVOICEFLOW_LEASE_SECONDS": "60",
    }
    requests = _racing_requests()
    for n, request in enumerate(requests):
        (tmp_path / f"{n}.json").write_text(json.dumps(request.model_dump(mode="json")))
    command = [sys.executable, "-m", "invoiceflow", "invoice", "--no-wait"]
    runs = [
        subprocess.Popen(
            [*command, str(tmp_path / f"{n}.json")],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(RACERS)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]

    for run, (_out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
    _one_customer_for_all(stripe_client, requests)


def test_a_later_request_with_a_new_email_updates_the_stripe_customer_first(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    first = make_request(f"moved-a-{uuid.uuid4().hex[:8]}", customer="initech")
    assert bill_plain(first).state is RecoveryPoint.SENT
    moved = {"id": "initech", "email": "ap@initech-new.example", "name": "Initech AG"}
    second = make_request(f"moved-b-{uuid.uuid4().hex[:8]}", customer=moved)

    status = bill_plain(second)

    assert status.state is RecoveryPoint.SENT, status.last_error
    [customer] = stripe_client.v1.customers.list({"limit": 10}).data
    assert (customer.email, customer.name) == ("ap@initech-new.example", "Initech AG")
    invoice = assert_exactly_one_invoice(stripe_client, second)
    assert invoice.customer == customer.id
    assert invoice.customer_email == "ap@initech-new.example"
    trail = ledger.audit_trail(get_runtime().engine, second.request_id)
    [ready] = [e for e in trail if e.to_point == RecoveryPoint.CUSTOMER_READY.value]
    assert ready.detail["details_updated"] == {
        "from": ["billing@initech.example", "Initech"],
        "to": ["ap@initech-new.example", "Initech AG"],
    }


def test_each_line_reads_as_the_request_says_even_for_a_known_sku(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    first = make_request(f"named-a-{uuid.uuid4().hex[:8]}")
    assert bill_plain(first).state is RecoveryPoint.SENT
    items = [item.model_dump(mode="json") for item in first.items]
    items[0]["name"] = "Senior consulting hour"
    second = make_request(f"named-b-{uuid.uuid4().hex[:8]}", items=items)

    assert bill_plain(second).state is RecoveryPoint.SENT

    [invoice] = invoices_for(stripe_client, second.request_id)
    lines = stripe_client.v1.invoices.line_items.list(invoice.id, {"limit": 10}).data
    texts = {int(line.metadata.to_dict()["invoiceflow_line"]): line.description for line in lines}
    assert texts == {0: "Senior consulting hour", 1: "Travel", 2: "Licence — Seats for November"}


def test_two_skus_never_share_a_stripe_product(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    # "a_b_68a4364b" is what "a.b" became under the old, colliding scheme.
    skus = ["a.b", "a_b", "a_b_68a4364b", "a-b"]
    assert len({product_id(sku) for sku in skus}) == len(skus)
    items = [
        {"sku": sku, "name": f"Item {sku}", "unit_amount": 100 + n} for n, sku in enumerate(skus)
    ]
    request = make_request(f"skus-{uuid.uuid4().hex[:8]}", items=items)

    assert bill_plain(request).state is RecoveryPoint.SENT

    [invoice] = invoices_for(stripe_client, request.request_id)
    lines = stripe_client.v1.invoices.line_items.list(invoice.id, {"limit": 10}).data
    products = {
        line.metadata.to_dict()["invoiceflow_line"]: line.pricing.price_details.product
        for line in lines
    }
    assert len(set(products.values())) == len(skus)
