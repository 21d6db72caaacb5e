"""What the invoice tests check again and again: what Stripe (the sandbox) holds."""

from __future__ import annotations

from typing import Any

import stripe

from invoiceflow.request import BillingRequest, parse_request


def make_request(
    request_id: str = "req-1", customer: str | dict[str, str] = "acme", **overrides: Any
) -> BillingRequest:
    """A valid request; `customer` is an id (details derived from it) or the whole object."""
    data: dict[str, Any] = {
        "request_id": request_id,
        "customer": customer
        if isinstance(customer, dict)
        else {
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


def wait_for(predicate: Any, what: str, timeout: float = 120) -> Any:
    """Poll until `predicate()` is truthy; generous, since CI machines are busy."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def stalled(sandbox: Any, when: str) -> dict[str, Any] | None:
    return next((e for e in sandbox.requests() if e["fault"] == when), None)


def crash_cli_at(
    sandbox: Any, request: BillingRequest, path: str, when: str, env: dict[str, str], workdir: Any
) -> str:
    """Run `invoiceflow invoice` in a real process and SIGKILL it while the sandbox
    holds the first write to `path` open: before Stripe wrote it
    (`stall_before_write`) or after (`stall_after_write`). What it printed."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    request_file = Path(workdir) / f"{request.request_id}.json"
    request_file.write_text(json.dumps(request.model_dump(mode="json")))
    sandbox.configure(stall_ms=1500, faults=[{"method": "POST", "path": path, "when": when}])
    process = subprocess.Popen(
        [sys.executable, "-m", "invoiceflow", "invoice", str(request_file), "--no-wait"],
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: stalled(sandbox, when), f"the {path} write to stall")
        process.send_signal(signal.SIGKILL)
    finally:
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, output
    # Let the abandoned request finish inside the sandbox before anyone goes on.
    wait_for(lambda: stalled(sandbox, when)["status"] is not None, "the stalled write to end")
    sandbox.configure(faults=[])
    return output


def bill_plain(request: BillingRequest) -> Any:
    """One run of the request through the plain pipeline, as a billing run's unit makes it:
    recorded, then taken as far as it goes under a new lease owner, without Prefect. Its
    `RequestStatus`; a failure raises, as calling the invoice flow does."""
    import uuid

    from invoiceflow import lease, ledger, pipeline
    from invoiceflow.runtime import get_runtime
    from invoiceflow.status import RequestStatus

    rt = get_runtime()
    ledger.submit(rt.engine, request)
    owner = lease.new_owner(uuid.uuid4().hex)
    billed = pipeline.bill(rt, request, owner, pipeline.in_sequence(rt))
    if billed.error is not None:
        raise billed.error
    return RequestStatus.from_row(billed.row)
