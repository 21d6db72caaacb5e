"""Webhook delivery: signed like Stripe, asynchronous, retried with backoff until 2xx.

Runs on the server's event loop; API responses never wait for a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx

from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.context import matches
from stripe_sandbox.store import JSON, Store

log = logging.getLogger("stripe_sandbox")

# Delivery attempts kept for `GET /_sandbox/webhooks`; older ones are forgotten.
DELIVERY_LOG_LIMIT = 100_000
# The delivery log's `error` for a webhook the loopback-only rule kept from being sent.
REMOTE_REFUSED = "remote_webhooks_disabled"
# Stripe's webhook User-Agent, so receivers that check it behave the same.
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def is_loopback(url: str) -> bool:
    """True for http(s) URLs whose host is localhost or a loopback IP literal.

    Host names other than `localhost` are not resolved: DNS could point them anywhere.
    """
    host = urlparse(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header value `stripe.Webhook.construct_event` verifies."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass
class Dispatcher:
    config: SandboxConfig
    store: Store
    rng: random.Random
    # One entry per attempt.
    deliveries: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=DELIVERY_LOG_LIMIT)
    )
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _client: httpx.AsyncClient | None = None

    def on_event(self, event: JSON) -> None:
        """Store listener: schedule one delivery per matching endpoint (more if duplicating)."""
        for endpoint_id, endpoint in self.store.webhook_endpoints.items():
            if endpoint["status"] != "enabled" or not matches(
                endpoint["enabled_events"], event["type"]
            ):
                continue
            secret = self.store.webhook_secrets[endpoint_id]
            # Serialize now: the event is a snapshot, later changes must not leak into it.
            payload = json.dumps(event, indent=2).encode()
            copies = 2 if self.rng.random() < self.config.webhook_duplicate else 1
            for _ in range(copies):
                delay = self.config.webhook_delay_ms / 1000
                if self.config.webhook_reorder:
                    delay += self.rng.uniform(0, self.config.webhook_reorder_window_ms / 1000)
                self._spawn(event, endpoint_id, endpoint["url"], secret, payload, delay)

    def _spawn(
        self, event: JSON, endpoint_id: str, url: str, secret: str, payload: bytes, delay: float
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._deliver(event, endpoint_id, url, secret, payload, delay)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, event: JSON, endpoint_id: str, url: str, secret: str, payload: bytes, delay: float
    ) -> None:
        config = self.config
        if delay:
            await asyncio.sleep(delay)
        if not (config.allow_remote_webhooks or is_loopback(url)):
            log.warning("webhook to %s not sent: remote webhooks are disabled", url)
            self._record(event, endpoint_id, 1, None, REMOTE_REFUSED, time.time())
            return
        for attempt in range(1, config.webhook_max_attempts + 1):
            sent_at = time.time()
            status, error = await self._post(url, secret, payload)
            self._record(event, endpoint_id, attempt, status, error, sent_at)
            if status is not None and 200 <= status < 300:
                # Stripe counts endpoints still owed this event in `pending_webhooks`.
                event["pending_webhooks"] = max(0, event["pending_webhooks"] - 1)
                return
            log.info(
                "webhook %s to %s failed (%s), attempt %d",
                event["type"],
                url,
                status or error,
                attempt,
            )
            if attempt < config.webhook_max_attempts:
                backoff = config.webhook_retry_base_ms * 2 ** (attempt - 1)
                await asyncio.sleep(min(backoff, config.webhook_retry_max_ms) / 1000)

    def _record(
        self,
        event: JSON,
        endpoint_id: str,
        attempt: int,
        status: int | None,
        error: str | None,
        sent_at: float,
    ) -> None:
        # `sent_at`: when the POST started; `time`: when its answer came (epoch
        # seconds both), so a receiver's latency can be measured from the send.
        self.deliveries.append(
            {
                "event": event["id"],
                "type": event["type"],
                "endpoint": endpoint_id,
                "attempt": attempt,
                "status": status,
                "error": error,
                "sent_at": sent_at,
                "time": time.time(),
            }
        )

    async def _post(self, url: str, secret: str, payload: bytes) -> tuple[int | None, str | None]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.config.webhook_timeout_s)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": sign(payload, secret, int(time.time())),
        }
        try:
            response = await self._client.post(url, content=payload, headers=headers)
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        return response.status_code, None

    def in_flight(self) -> int:
        """Deliveries not yet ended: waiting, being sent, or between retries."""
        return len(self._tasks)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.deliveries.clear()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None
