"""One sandbox for the whole session, reset (data and config) before every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from stripe_sandbox import RunningSandbox, start_sandbox

API_KEY = "sk_test_sandbox_suite"
# Fast webhook retries so retry tests take a fraction of a second.
FAST_WEBHOOKS = {"webhook_retry_base_ms": 100, "webhook_retry_max_ms": 400}


@pytest.fixture(scope="session")
def sandbox() -> Iterator[RunningSandbox]:
    with start_sandbox(seed=1234, **FAST_WEBHOOKS) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_sandbox(sandbox: RunningSandbox) -> None:
    sandbox.reset(config=True)


@pytest.fixture
def client(sandbox: RunningSandbox) -> stripe.StripeClient:
    """An SDK client that does not retry, so each call is one request."""
    return stripe.StripeClient(API_KEY, base_addresses={"api": sandbox.url}, max_network_retries=0)


@pytest.fixture
def retrying_client(sandbox: RunningSandbox) -> stripe.StripeClient:
    """An SDK client with the SDK's default retry behaviour."""
    return stripe.StripeClient(API_KEY, base_addresses={"api": sandbox.url}, max_network_retries=2)
