"""Construction of the one Stripe client we use, from settings."""

from __future__ import annotations

from types import SimpleNamespace

import requests
import stripe

from invoiceflow.settings import Settings

STRIPE_API = "https://api.stripe.com"


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
        http_client=stripe.RequestsClient(
            timeout=settings.stripe_timeout_seconds, _lib=_requests_for(base or STRIPE_API)
        ),
    )


def _requests_for(api_base: str) -> SimpleNamespace:
    """`requests` as the SDK's client uses it (a session per thread, its exceptions),
    its sessions reading the environment once, here, instead of on every call.

    A `requests` session that trusts the environment looks up the proxy variables
    (every variable of the process, for no_proxy) and ~/.netrc on every call: a
    tenth of our CPU per invoice. Read once for the API's address: with no proxy
    configured for it, the sessions stop looking; with one, they keep trusting the
    environment exactly as before — a configured proxy is never dropped.
    """
    proxied = bool(requests.utils.get_environ_proxies(api_base))

    def session() -> requests.Session:
        made = requests.Session()
        made.trust_env = proxied
        return made

    return SimpleNamespace(Session=session, exceptions=requests.exceptions)
