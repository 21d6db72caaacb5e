"""The Stripe resources the sandbox serves, one module per resource family."""

from __future__ import annotations

from stripe_sandbox.resources import (
    customers,
    events,
    invoiceitems,
    invoices,
    payments,
    prices,
    products,
    test_clocks,
    webhook_endpoints,
)
from stripe_sandbox.resources.common import Route

ROUTES: list[Route] = [
    *products.ROUTES,
    *prices.ROUTES,
    *customers.ROUTES,
    *invoices.ROUTES,
    *invoiceitems.ROUTES,
    *payments.ROUTES,
    *events.ROUTES,
    *webhook_endpoints.ROUTES,
    *test_clocks.ROUTES,
]

__all__ = ["ROUTES", "Route"]
