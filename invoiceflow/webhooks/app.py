"""The receiver: `POST /webhooks/stripe` and `GET /healthz`, a small Starlette app.

2xx only once the event is committed; 400 for anything that is not a fresh,
correctly signed, readable event (Stripe stops retrying those, and nothing
changed); 503 when storing failed, so Stripe redelivers later. Errors answer
`{"errors": [reason]}`, as POST /invoices does, and each refusal is logged in
one line with its reason (a wrong STRIPE_WEBHOOK_SECRET shows up in `serve`'s
log). Reasons are short and never contain a secret, a signature or the body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from invoiceflow.db.engine import get_engine
from invoiceflow.http_body import read_capped
from invoiceflow.retry import RetryPolicy, call_with_retries
from invoiceflow.settings import Settings
from invoiceflow.stripe_api import make_client
from invoiceflow.webhooks.apply import MalformedEvent, ReadInvoice, parse_event, receive
from invoiceflow.webhooks.payments import invoice_of_payment_reader
from invoiceflow.webhooks.signature import SignatureError, verify

log = logging.getLogger(__name__)

# Stripe's events are a few KiB; anything this large is not one of them.
MAX_BODY_BYTES = 256 * 1024
_READ_ONCE = RetryPolicy(attempts=1)


def create_app(settings: Settings, engine: Engine | None = None) -> Starlette:
    """The receiver for `settings`: STRIPE_WEBHOOK_SECRET and STRIPE_API_KEY required.

    The key tells our events from others (its mode: an event of the other mode
    is not ours) and, read under it, Stripe confirms which invoices are ours.
    """
    secrets = settings.require_webhook_secrets()
    settings.require_stripe_key()
    livemode = settings.stripe_mode() == "live"
    db = engine if engine is not None else get_engine(settings.database_url)
    read_invoice = _invoice_reader(settings)
    invoice_of_payment = invoice_of_payment_reader(make_client(settings), _READ_ONCE)

    async def stripe_webhook(request: Request) -> JSONResponse:
        body = await read_capped(request, MAX_BODY_BYTES)
        if body is None:
            return _refuse(request, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            verify(body, request.headers.get("stripe-signature"), secrets)
            event = json.loads(body)
            event_id, type_, _created, _obj = parse_event(event)
        except (SignatureError, MalformedEvent) as exc:
            return _refuse(request, str(exc))
        except (ValueError, RecursionError):  # JSON, UTF-8, a 4300+ digit number, deep nesting
            return _refuse(request, "body is not valid JSON")
        try:
            outcome = await run_in_threadpool(
                partial(
                    receive,
                    db,
                    event,
                    read_invoice,
                    livemode=livemode,
                    invoice_of_payment=invoice_of_payment,
                )
            )
        except Exception as exc:
            # Not committed: a non-2xx makes Stripe deliver it again later.
            log.error(
                "could not store Stripe event %s (%s): %s", event_id, type_, type(exc).__name__
            )
            return JSONResponse({"errors": ["could not store the event; retry later"]}, 503)
        log.info("Stripe event %s (%s): %s", event_id, type_, outcome.text)
        return JSONResponse({"id": event_id, "outcome": outcome.kind})

    async def healthz(_request: Request) -> JSONResponse:
        try:
            await run_in_threadpool(_ping, db)
        except Exception as exc:
            return JSONResponse({"ok": False, "database": type(exc).__name__}, 503)
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def _refuse(request: Request, reason: str) -> JSONResponse:
    # The reason is ours (SignatureError, MalformedEvent, a size): no secret, no body.
    sender = request.client.host if request.client else "unknown"
    log.warning("refused a Stripe webhook from %s (400): %s", sender, reason)
    return JSONResponse({"errors": [reason]}, 400)


def _ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _invoice_reader(settings: Settings) -> ReadInvoice:
    client = make_client(settings)

    def read(invoice_id: str) -> Mapping[str, Any]:
        # Through the shared rate limit like every Stripe call, but tried once:
        # a failure answers 503 and Stripe delivers the event again later.
        invoice = call_with_retries(
            lambda: client.v1.invoices.retrieve(invoice_id),
            f"get {invoice_id}",
            policy=_READ_ONCE,
        )
        return invoice.to_dict()

    return read
