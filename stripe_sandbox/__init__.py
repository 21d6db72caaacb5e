"""A stateful Stripe sandbox: the part of Stripe's API invoiceflow uses, over real HTTP.

Tests drive it through the official `stripe` SDK
(`stripe.StripeClient(key, base_addresses={"api": sandbox.url})`). Production code never
imports this package.

Control plane (no API key, never faulted or rate-limited), wrapped by `RunningSandbox`:

    GET/POST /_sandbox/config          knobs (see config.py), scripted `faults`
    GET      /_sandbox/requests        request log: method, path, idempotency_key, status,
                                       replayed, fault, time (status null when dropped)
    GET      /_sandbox/responses       API response bodies, while `record_responses` is on
    GET      /_sandbox/webhooks        webhook delivery attempts
    GET      /_sandbox/webhooks/in_flight   deliveries not yet ended (sent, retried or given up)
    POST     /_sandbox/idempotency/expire   forget saved keys (Stripe's 24 h passing)
    POST     /_sandbox/bank_debits/settle[?invoice=in_…]   processing bank debits get
                                       their outcome now (resources/bank_debits.py)
    DELETE   /_sandbox/data[?config=1] forget all state (and restore startup knobs)

Simulated time is Stripe's own: test clocks (`/v1/test_helpers/test_clocks`, see
`resources/test_clocks.py`) carry their customers' invoices past due dates on demand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stripe_sandbox.server import RunningSandbox, start_sandbox

__all__ = ["RunningSandbox", "start_sandbox"]


def __getattr__(name: str) -> object:
    # Imported on first use: `invoiceflow sandbox`'s CLI module lives in this
    # package, and the CLI's other commands must not pay for the server's imports.
    if name in __all__:
        from stripe_sandbox import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
