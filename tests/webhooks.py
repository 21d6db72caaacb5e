"""Helpers for the webhook tests: our receiver served over real HTTP, signing, reading rows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy.engine import Engine
from sqlmodel import select

from invoiceflow import ledger
from invoiceflow.db.engine import get_engine, reading
from invoiceflow.settings import load_settings
from invoiceflow.webhooks.app import create_app
from invoiceflow.webhooks.inbox import InboxEvent
from invoiceflow_testing.uvicorn_thread import running
from stripe_sandbox.webhooks import sign

PATH = "/webhooks/stripe"


@dataclass
class Receiver:
    base: str  # http://127.0.0.1:<port>
    engine: Engine
    secret: str  # the one the sandbox signs with, when registered there

    @property
    def url(self) -> str:
        return self.base + PATH

    def post(self, body: bytes, signature: str | None) -> httpx.Response:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if signature is not None:
            headers["Stripe-Signature"] = signature
        return httpx.post(self.url, content=body, headers=headers, timeout=30)

    def post_signed(self, event: dict[str, Any], secret: str | None = None) -> httpx.Response:
        body = json.dumps(event).encode()
        return self.post(body, sign(body, secret or self.secret, int(time.time())))


@contextmanager
def serve_receiver(
    monkeypatch: pytest.MonkeyPatch, database_url: str, secrets: list[str]
) -> Iterator[Receiver]:
    """Our receiver app, configured from the environment as production would be."""
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", ",".join(secrets))
    app = create_app(load_settings())
    with running(app) as base:
        yield Receiver(base, get_engine(database_url), secrets[-1])


@contextmanager
def registered_receiver(
    client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> Iterator[Receiver]:
    """Our receiver, registered in the sandbox for every event, with the secret it got."""
    endpoint = client.v1.webhook_endpoints.create(
        # Its real URL is known once it listens; nothing is emitted in between.
        {"url": "http://127.0.0.1:9/not-yet", "enabled_events": ["*"]}
    )
    with serve_receiver(monkeypatch, database_url, [endpoint.secret]) as receiver:
        client.v1.webhook_endpoints.update(endpoint.id, {"url": receiver.url})
        yield receiver


def inbox_rows(engine: Engine, type_: str | None = None) -> list[InboxEvent]:
    with reading(engine) as session:
        statement = select(InboxEvent)
        if type_ is not None:
            statement = statement.where(InboxEvent.type == type_)
        return list(session.exec(statement).all())


def moves_to(engine: Engine, request_id: str, point: str) -> int:
    """How many audit rows moved the request to `point`."""
    return sum(1 for e in ledger.audit_trail(engine, request_id) if e.to_point == point)


def event_of(client: stripe.StripeClient, type_: str, invoice_id: str) -> dict[str, Any]:
    """The sandbox's own event of this type for the invoice, as a plain dict."""
    for event in client.v1.events.list({"type": type_, "limit": 100}).auto_paging_iter():
        if event.data.object["id"] == invoice_id:
            # The wire JSON as Stripe sent it (the SDK's objects hold Decimals).
            raw = client.v1.events.retrieve(event.id).last_response
            assert raw is not None
            found: dict[str, Any] = json.loads(raw.body)
            return found
    raise AssertionError(f"no {type_} event for {invoice_id}")


def delivered_ok(sandbox: Any, event_type: str) -> int:
    return sum(
        1
        for d in sandbox.webhook_deliveries()
        if d["type"] == event_type and d["status"] is not None and 200 <= d["status"] < 300
    )
