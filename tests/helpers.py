"""What the invoice tests check again and again: what Stripe (the sandbox) holds."""

from __future__ import annotations

from typing import Any

import stripe

from invoiceflow.request import BillingRequest, parse_request


def make_request(
    request_id: str = "req-1", customer: str = "acme", **overrides: Any
) -> BillingRequest:
    data: dict[str, Any] = {
        "request_id": request_id,
        "customer": {
            "id": customer,
            "email": f"billing@{customer}.example",
            "name": customer.title(),
        },
        "currency": "usd",
        "days_until_due": 14,
        "description": "Services",
        "metadata": {"po": "PO-7"},
        "items": [
            {
                "sku": "consulting-hour",
                "name": "Consulting hour",
                "unit_price": "150.00",
                "quantity": 3,
            },
            {"sku": "travel", "name": "Travel", "unit_amount": 4825, "quantity": 1},
            {
                "sku": "licence",
                "name": "Licence",
                "unit_amount": 999,
                "quantity": 7,
                "description": "Seats for November",
            },
        ],
    }
    data.update(overrides)
    return parse_request(data)


def invoices_for(client: stripe.StripeClient, request_id: str) -> list[stripe.Invoice]:
    """Every Stripe invoice stamped with our request id (listing, not Search)."""
    found = []
    for invoice in client.v1.invoices.list({"limit": 100}).auto_paging_iter():
        if (
            invoice.metadata
            and invoice.metadata.to_dict().get("invoiceflow_request_id") == request_id
        ):
            found.append(invoice)
    return found


def assert_exactly_one_invoice(
    client: stripe.StripeClient, request: BillingRequest
) -> stripe.Invoice:
    """One invoice for the request, holding exactly its lines, sent exactly once."""
    invoices = invoices_for(client, request.request_id)
    assert len(invoices) == 1, f"{len(invoices)} invoices for {request.request_id}"
    invoice = invoices[0]
    lines = list(client.v1.invoices.line_items.list(invoice.id, {"limit": 100}).auto_paging_iter())
    got = sorted(
        (int(line.metadata.to_dict()["invoiceflow_line"]), line.quantity, line.amount)
        for line in lines
    )
    want = [
        (i, item.quantity, item.unit_amount * item.quantity) for i, item in enumerate(request.items)
    ]
    assert got == want
    assert invoice.total == request.total_amount()
    assert invoice.currency == request.currency
    assert sent_events(client, invoice.id) == 1
    return invoice


def sent_events(client: stripe.StripeClient, invoice_id: str) -> int:
    events = client.v1.events.list({"type": "invoice.sent", "limit": 100}).auto_paging_iter()
    return sum(1 for event in events if event.data.object["id"] == invoice_id)


def writes(sandbox: Any) -> list[dict[str, Any]]:
    """The sandbox's log of POST/DELETE requests (reads excluded)."""
    return [entry for entry in sandbox.requests() if entry["method"] in ("POST", "DELETE")]
