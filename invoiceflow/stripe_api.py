"""Construction of the one Stripe client we use, from settings."""

from __future__ import annotations

import stripe

from invoiceflow.settings import Settings


def make_client(settings: Settings) -> stripe.StripeClient:
    """A `StripeClient` for Stripe itself or, with STRIPE_API_BASE, the sandbox.

    The SDK's own network retries are off: it does not retry 429 and cannot
    honour our backoff policy, so `invoiceflow.retry` owns every retry.
    """
    base = settings.stripe_api_base
    return stripe.StripeClient(
        settings.require_stripe_key(),
        base_addresses={"api": base} if base else None,
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=settings.stripe_timeout_seconds),
    )
