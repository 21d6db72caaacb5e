"""`invoiceflow demo`: the whole pipeline, offline, with no configuration.

Starts the Stripe sandbox in this process, uses a fresh SQLite file and
Prefect's local mode, and runs a handful of realistic requests through the
invoice flow: several customers and currencies (a zero- and a three-decimal
one), a transient Stripe failure that is retried, a customer paying, a
resubmitted request that creates nothing new, and a changed resubmission that
is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import stripe

from invoiceflow.money import format_minor_units
from invoiceflow.request import BillingRequest, parse_request

DEMO_DB = Path("invoiceflow-demo.db")
# The sandbox accepts any test-mode key; this one is only ever sent to it.
DEMO_KEY = "sk_test_invoiceflow_demo"

REQUESTS: list[dict[str, Any]] = [
    {
        "request_id": "2026-11-acme-consulting",
        "customer": {"id": "acme", "email": "billing@acme.example", "name": "Acme Corp"},
        "currency": "usd",
        "days_until_due": 14,
        "description": "November consulting",
        "items": [
            {
                "sku": "consulting-hour",
                "name": "Consulting hour",
                "unit_price": "150.00",
                "quantity": 12,
            },
            {"sku": "travel", "name": "Travel expenses", "unit_amount": 48_250, "quantity": 1},
        ],
    },
    {
        "request_id": "2026-11-kaiju-licences",
        "customer": {"id": "kaiju", "email": "keiri@kaiju.example", "name": "Kaiju KK"},
        "currency": "JPY",
        "items": [
            {"sku": "seat-licence", "name": "Seat licence", "unit_price": "4800", "quantity": 25}
        ],
    },
    {
        "request_id": "2026-11-initech-support",
        "customer": {"id": "initech", "email": "ap@initech.example", "name": "Initech GmbH"},
        "currency": "eur",
        "items": [
            {"sku": "support-plan", "name": "Support plan", "unit_price": "990.00", "quantity": 1},
            {
                "sku": "consulting-hour",
                "name": "Consulting hour",
                "unit_price": "140.00",
                "quantity": 3,
            },
        ],
    },
    {
        "request_id": "2026-11-gulf-hosting",
        "customer": {"id": "gulf", "email": "finance@gulf.example", "name": "Gulf Hosting WLL"},
        "currency": "kwd",
        "items": [
            {"sku": "hosting", "name": "Managed hosting", "unit_price": "35.750", "quantity": 2}
        ],
    },
]


def _say(text: str = "") -> None:
    print(text, flush=True)


def run_demo() -> int:
    from stripe_sandbox import start_sandbox

    DEMO_DB.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{DEMO_DB}{suffix}").unlink(missing_ok=True)
    with start_sandbox() as sandbox:
        os.environ.update(
            {
                "STRIPE_API_KEY": DEMO_KEY,
                "STRIPE_API_BASE": sandbox.url,
                "INVOICEFLOW_DATABASE_URL": f"sqlite:///{DEMO_DB}",
            }
        )
        from invoiceflow.prefect_env import configure_prefect
        from invoiceflow.runtime import reset_runtime

        configure_prefect(quiet_console=True)  # the demo prints its own story
        reset_runtime()
        _say(f"Stripe sandbox on {sandbox.url}; state in {DEMO_DB}")
        if not os.environ.get("PREFECT_API_URL"):
            _say("Starting Prefect's local server (takes ~10 s the first time)…")
        try:
            return _run(sandbox)
        finally:
            close_database()


def close_database() -> None:
    """Leave the demo's database as the one file it names: close every connection.

    SQLite folds the write-ahead log into the database and deletes the `-wal`
    and `-shm` files when the last connection closes; a pooled connection left
    open at exit left them beside it.
    """
    from invoiceflow.db.engine import dispose_engines
    from invoiceflow.runtime import reset_runtime

    reset_runtime()
    dispose_engines()


def _run(sandbox: Any) -> int:
    from invoiceflow.runtime import get_runtime

    client = get_runtime().stripe
    # Our webhook receiver, in this process, registered with the sandbox: the
    # payment below reaches us as Stripe's signed `invoice.paid` event.
    endpoint = client.v1.webhook_endpoints.create(
        {"url": "http://127.0.0.1:9/not-yet", "enabled_events": ["invoice.paid", "invoice.voided"]}
    )
    os.environ["STRIPE_WEBHOOK_SECRET"] = endpoint.secret or ""
    from invoiceflow.runtime import reset_runtime
    from invoiceflow.settings import get_settings
    from invoiceflow.webhooks.app import create_app
    from invoiceflow_testing.uvicorn_thread import running

    reset_runtime()
    with running(create_app(get_settings())) as receiver:
        get_runtime().stripe.v1.webhook_endpoints.update(
            endpoint.id, {"url": f"{receiver}/webhooks/stripe"}
        )
        _say(f"Webhook receiver on {receiver}/webhooks/stripe (signed events from the sandbox)")
        return _run_requests(sandbox)


def _run_requests(sandbox: Any) -> int:
    from flows.invoice import run_invoice
    from invoiceflow import awaiting, ledger
    from invoiceflow.runtime import get_runtime

    requests = [parse_request(data) for data in REQUESTS]
    client = get_runtime().stripe

    # A transient failure: Stripe answers 500 after it already created the
    # invoice; the retry under the same idempotency key gets the same invoice.
    sandbox.configure(
        faults=[{"method": "POST", "path": "^/v1/invoices$", "when": "after_write", "times": 1}]
    )
    for request in requests:
        _say(
            f"→ {request.request_id}: {len(request.items)} line(s), "
            f"{format_minor_units(request.total_amount(), request.currency)}"
        )
        run_invoice(request)

    acme = requests[0]
    engine = get_runtime().engine
    invoice_id = ledger.require(engine, acme.request_id).stripe_invoice_id
    assert invoice_id is not None
    _say(f"→ Acme pays {invoice_id} by card; the signed webhook records it")
    client.v1.invoices.pay(invoice_id, {"payment_method": "pm_card_visa"})
    paid = awaiting.until_settled(engine, acme.request_id, timeout_seconds=30)
    _say(f"  {acme.request_id}: {paid.recovery_point} (from Stripe's invoice.paid webhook)")

    writes_before = _writes(sandbox)
    _say(f"→ {acme.request_id} submitted again (same content): nothing left to do")
    run_invoice(acme)
    repeat_writes = _writes(sandbox) - writes_before

    changed = parse_request({**REQUESTS[0], "items": REQUESTS[0]["items"][:1]})
    _say(f"→ {changed.request_id} submitted with different lines: refused")
    try:
        ledger.submit(get_runtime().engine, changed)
        refused = False
    except ledger.RequestConflict as exc:
        refused = True
        _say(f"  {exc}")

    return _summary(sandbox, requests, client, repeat_writes, refused)


def _writes(sandbox: Any) -> int:
    return sum(1 for entry in sandbox.requests() if entry["method"] in ("POST", "DELETE"))


def _summary(
    sandbox: Any,
    requests: list[BillingRequest],
    client: stripe.StripeClient,
    repeat_writes: int,
    refused: bool,
) -> int:
    from invoiceflow import ledger
    from invoiceflow.runtime import get_runtime
    from invoiceflow.status import RequestStatus

    engine = get_runtime().engine
    _say()
    _say(f"{'request':28} {'state':8} {'invoice':>12} {'amount':>14}  hosted invoice")
    ok = True
    for request in requests:
        status = RequestStatus.from_row(ledger.require(engine, request.request_id))
        ok &= status.delivered
        amount = format_minor_units(status.total_amount, status.currency)
        _say(
            f"{status.request_id:28} {status.state.value:8} {status.invoice_number or '-':>12} "
            f"{amount:>14}  {status.hosted_invoice_url or ''}"
        )
    faults = sum(1 for entry in sandbox.requests() if entry["fault"])
    invoices_in_stripe = sum(1 for _ in client.v1.invoices.list({"limit": 100}).auto_paging_iter())
    _say()
    _say(f"Stripe failures injected and recovered from without a duplicate: {faults}")
    _say(
        f"Stripe invoices: {invoices_in_stripe} for {len(requests)} requests; "
        f"Stripe writes on resubmission: {repeat_writes}; changed resubmission refused: {refused}"
    )
    ok &= invoices_in_stripe == len(requests) and repeat_writes == 0 and refused and faults > 0
    _say("demo OK" if ok else "demo FAILED")
    return 0 if ok else 1
