"""Which Stripe failures are retried, and how long we wait: against real HTTP answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from invoiceflow.retry import RetryPolicy, call_with_retries, is_transient
from tests.conftest import TEST_KEY

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.02)


class _Recorder:
    """Stands in for time.sleep so the test can see the waits without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_429_is_retried_under_the_same_key(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    sandbox.configure(faults=[{"path": "^/v1/customers$", "when": "status_429", "times": 2}])
    sleep = _Recorder()
    customer = call_with_retries(
        lambda: stripe_client.v1.customers.create({"name": "x"}, {"idempotency_key": "k-429"}),
        "create customer",
        read=False,
        policy=FAST,
        sleep=sleep,
    )
    assert customer.name == "x"
    assert len(sleep.waits) == 2
    keys = [entry["idempotency_key"] for entry in sandbox.requests()]
    assert keys == ["k-429"] * 3


def test_409_in_flight_and_500_before_write_are_transient(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    sandbox.configure(
        faults=[
            {"path": "^/v1/products$", "when": "status_409"},
            {"path": "^/v1/products$", "when": "before_write"},
        ]
    )
    product = call_with_retries(
        lambda: stripe_client.v1.products.create({"name": "p"}, {"idempotency_key": "k-p"}),
        "create product",
        read=False,
        policy=FAST,
        sleep=_Recorder(),
    )
    assert product.name == "p"
    assert len(stripe_client.v1.products.list().data) == 1


def test_500_after_write_is_not_retried_for_a_write_but_is_for_a_read(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    sandbox.configure(faults=[{"path": "^/v1/products", "when": "after_write", "times": 2}])
    with pytest.raises(stripe.APIError) as failed:
        call_with_retries(
            lambda: stripe_client.v1.products.create({"name": "p"}, {"idempotency_key": "k-a"}),
            "create product",
            read=False,
            policy=FAST,
            sleep=_Recorder(),
        )
    assert not is_transient(failed.value)  # the key now replays the 500: outcome unknown
    listed = call_with_retries(
        lambda: stripe_client.v1.products.list(), "list products", policy=FAST, sleep=_Recorder()
    )
    assert len(listed.data) == 1


def test_card_decline_fails_at_once(sandbox: Any, stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create({"name": "c", "email": "c@example.com"})
    stripe_client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 500, "currency": "usd"}
    )
    invoice = stripe_client.v1.invoices.create(
        {"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    stripe_client.v1.invoices.finalize_invoice(invoice.id)
    before = len(sandbox.requests())
    sleep = _Recorder()
    with pytest.raises(stripe.CardError) as declined:
        call_with_retries(
            lambda: stripe_client.v1.invoices.pay(
                invoice.id, {"payment_method": "pm_card_chargeDeclined"}
            ),
            "pay",
            read=False,
            policy=FAST,
            sleep=sleep,
        )
    assert declined.value.code == "card_declined"
    assert sleep.waits == []
    assert len(sandbox.requests()) == before + 1


def test_validation_error_fails_at_once(sandbox: Any, stripe_client: stripe.StripeClient) -> None:
    sleep = _Recorder()
    with pytest.raises(stripe.InvalidRequestError):
        call_with_retries(
            lambda: stripe_client.v1.products.retrieve("prod_missing"),
            "get product",
            policy=FAST,
            sleep=sleep,
        )
    assert sleep.waits == []


@pytest.fixture
def retry_after_server() -> Iterator[tuple[str, list[int]]]:
    """A server that answers 429 with `Retry-After: 2` once, then 200: Stripe's shape."""
    hits: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(1)
            if len(hits) == 1:
                body = b'{"error": {"type": "invalid_request_error", "code": "rate_limit", '
                body += b'"message": "Too many requests"}}'
                self.send_response(429)
                self.send_header("Retry-After", "2")
            else:
                body = b'{"id": "prod_1", "object": "product", "name": "p"}'
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def test_retry_after_is_honoured(retry_after_server: tuple[str, list[int]]) -> None:
    url, hits = retry_after_server
    client = stripe.StripeClient(TEST_KEY, base_addresses={"api": url}, max_network_retries=0)
    sleep = _Recorder()
    product = call_with_retries(
        lambda: client.v1.products.retrieve("prod_1"), "get product", policy=FAST, sleep=sleep
    )
    assert product.id == "prod_1"
    assert sleep.waits == [2.0]
    assert len(hits) == 2
