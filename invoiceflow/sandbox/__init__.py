"""A stateful Stripe sandbox: the part of Stripe's API invoiceflow uses, over real HTTP.

Tests drive it through the official `stripe` SDK
(`stripe.StripeClient(key, base_addresses={"api": sandbox.url})`). Production code never
imports this package.
"""

from __future__ import annotations

from invoiceflow.sandbox.server import RunningSandbox, start_sandbox

__all__ = ["RunningSandbox", "start_sandbox"]
