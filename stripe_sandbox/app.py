"""The ASGI application: Stripe's wire protocol around the resource handlers.

Per API request, in Stripe's order: authenticate, rate-limit, route, decode the form, take
the idempotency key (or replay), wait the configured latency while holding it, apply any
fault, run the handler, save the response under the key. `/_sandbox/*` is the control
plane for tests and is never subject to faults, limits or authentication.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import re
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from stripe_sandbox import errors, forms, listing, shapes
from stripe_sandbox.config import STALL_KINDS, ConfigError, SandboxConfig
from stripe_sandbox.context import Call
from stripe_sandbox.faults import FaultPlan, RateLimiter
from stripe_sandbox.idempotency import IdempotencyStore, Saved
from stripe_sandbox.resources import ROUTES, Route, bank_debits
from stripe_sandbox.store import Store, set_clock_offset
from stripe_sandbox.webhooks import Dispatcher

log = logging.getLogger("stripe_sandbox")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Test-mode secret and restricted keys; the sandbox refuses live keys like a test account
# would refuse them, so a live key can never be exercised here by mistake.
_API_KEY = re.compile(r"^(sk|rk)_test_[A-Za-z0-9_]+$")
_ID_SEGMENT = r"(?P<{name}>[^/]+)"
# The request log is for tests and debugging; a long-running CLI sandbox keeps only this many.
REQUEST_LOG_LIMIT = 100_000
# Stripe applies idempotency keys to POST only: GET and DELETE are idempotent by
# definition, so a key sent with them is ignored (neither saved nor replayed nor echoed).
_KEYED_METHODS = frozenset({"POST"})


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False  # close the connection instead of answering

    @classmethod
    def json(cls, status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(status, json.dumps(data, indent=2).encode(), list(headers or []))


@dataclass(frozen=True)
class _CompiledRoute:
    method: str
    regex: re.Pattern[str]
    route: Route


class SandboxApp:
    def __init__(self, config: SandboxConfig) -> None:
        self.initial_config = config.as_json()
        self.config = config
        self.rng = random.Random(config.seed)
        self.store = Store(self.rng)
        set_clock_offset(config.clock_offset_s)
        self.idempotency = IdempotencyStore()
        self.faults = FaultPlan(config, self.rng)
        self.limiter = RateLimiter(config)
        self.webhooks = Dispatcher(config, self.store, self.rng)
        # Ends every stall now (`POST /_sandbox/stalls/release`): a test that
        # stalls a write until it has seen what it waits for, not for a fixed time.
        self._stalls_released = asyncio.Event()
        self.store.listeners.append(self.webhooks.on_event)
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_LIMIT)
        # (method, path, status, body bytes), only while `record_responses` is on.
        self.responses: deque[tuple[str, str, int, bytes]] = deque(maxlen=REQUEST_LOG_LIMIT)
        self.routes = [
            _CompiledRoute(
                route.method,
                re.compile(
                    "^"
                    + re.sub(r"\{(\w+)\}", lambda m: _ID_SEGMENT.format(name=m[1]), route.pattern)
                    + "$"
                ),
                route,
            )
            for route in ROUTES
        ]

    # --- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if body is None:
            log.info("%s %s -> client gone before its body arrived", scope["method"], scope["path"])
            return
        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if path.startswith("/_sandbox/"):
            response = self._control(method, path, query, body)
        else:
            response = await self._api(method, path, query, headers, body)
        elapsed = (time.perf_counter() - started) * 1000
        log.info(
            "%s %s -> %s %.1fms",
            method,
            path,
            "dropped" if response.drop else response.status,
            elapsed,
        )
        if response.drop:
            await _drop_connection(send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    *((k.encode(), v.encode()) for k, v in response.headers),
                    (b"content-length", str(len(response.body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.webhooks.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- Stripe API -----------------------------------------------------------------------

    async def _api(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Response:
        request_id = "req_" + self.store.token(14)
        key = headers.get("idempotency-key") if method in _KEYED_METHODS else None
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "idempotency_key": key,
            "status": None,
            "replayed": False,
            "fault": None,
            "time": time.time(),
        }
        base_headers = [
            ("Content-Type", "application/json"),
            ("Request-Id", request_id),
            ("Stripe-Version", headers.get("stripe-version", shapes.API_VERSION)),
        ]
        if key is not None:
            base_headers.append(("Idempotency-Key", key))
        try:
            response = await self._run(
                method, path, query, headers, body, request_id, key, entry, base_headers
            )
        except errors.StripeError as error:
            response = _error_response(error, base_headers)
        entry["status"] = None if response.drop else response.status
        if self.config.record_responses and not response.drop:
            self.responses.append((method, path, response.status, response.body))
        if entry["fault"] not in STALL_KINDS:  # stalls were logged when they began
            self.request_log.append(entry)
        return response

    async def _run(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        request_id: str,
        key: str | None,
        entry: dict[str, Any],
        base_headers: list[tuple[str, str]],
    ) -> Response:
        account = _authenticate(headers.get("authorization"))
        if not self.limiter.allow(account):
            entry["fault"] = "rate_limit"
            raise errors.rate_limited()
        route, path_ids = self._route(method, path)
        raw = forms.decode(query) if method == "GET" else forms.decode(body)
        if method != "GET" and query:
            raw = {**forms.decode(query), **raw}

        replay = self.idempotency.begin(account, key, method, path, raw) if key else None
        held = key if key is not None and replay is None else None  # key this request holds
        try:
            # Faults model the network and Stripe's front door, so a replay can meet one too:
            # a scripted fault hits exactly the next `times` matching requests.
            fault = self.faults.pick(method, path)
            entry["fault"] = fault
            if fault == "status_429":
                raise errors.rate_limited()
            if fault == "status_409":
                raise errors.idempotency_in_flight()
            await self._latency()
            if fault == "stall_before_write":
                await self._stall(entry)
            if fault in ("before_write", "stall_before_write"):
                error = errors.api_error()
                error.headers["Stripe-Should-Retry"] = "true"
                raise error
            if replay is not None:
                entry["replayed"] = True
                response = _replayed(replay, request_id)
            else:
                response = self._execute(
                    route,
                    Call(self.store, raw, request_id, key, self.config),
                    path_ids,
                    base_headers,
                )
        except errors.StripeError as error:
            if held is not None and not error.executed:
                self.idempotency.release(account, held)
            raise
        except Exception:
            if held is not None:
                self.idempotency.release(account, held)
            log.error("sandbox handler crashed on %s %s:\n%s", method, path, traceback.format_exc())
            raise errors.api_error() from None

        if fault == "stall_after_write":
            await self._stall(entry)
        if fault == "after_write":
            failure = errors.api_error()
            failure.headers["Stripe-Should-Retry"] = "false"
            response = _error_response(failure, base_headers)
        if held is not None:
            saved = Saved(response.status, tuple(response.headers), response.body, request_id)
            self.idempotency.save(account, held, saved)
        if fault == "drop_after_write":
            response.drop = True
        return response

    def _execute(
        self,
        route: Route,
        call: Call,
        path_ids: dict[str, str],
        base_headers: list[tuple[str, str]],
    ) -> Response:
        try:
            result = route.handler(call, **path_ids)
        except errors.StripeError as error:
            if error.executed:
                return _error_response(error, base_headers)
            raise
        expand = call.params.get("expand")
        if isinstance(expand, list):
            paths = [p for p in expand if isinstance(p, str) and p != "total_count"]
            try:
                result = listing.expand(self.store, result, paths)
            except errors.StripeError as error:
                # The handler already ran: answer the error but keep it under the key.
                error.executed = True
                return _error_response(error, base_headers)
        return Response.json(200, result, base_headers)

    def _route(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        for compiled in self.routes:
            if compiled.method != method:
                continue
            match = compiled.regex.match(path)
            if match:
                return compiled.route, match.groupdict()
        raise errors.unrecognized_url(method, path)

    async def _stall(self, entry: dict[str, Any]) -> None:
        self.request_log.append(entry)  # visible (status null) while the request hangs
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stalls_released.wait(), self.config.stall_ms / 1000)

    async def _latency(self) -> None:
        delay = self.config.latency_ms
        if self.config.jitter_ms:
            delay += self.rng.uniform(0, self.config.jitter_ms)
        if delay > 0:
            await asyncio.sleep(delay / 1000)

    # --- control plane --------------------------------------------------------------------

    def _control(self, method: str, path: str, query: str, body: bytes) -> Response:
        if (method, path) == ("GET", "/_sandbox/config"):
            return Response.json(200, self.config.as_json())
        if (method, path) == ("POST", "/_sandbox/config"):
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ConfigError("the body must be a JSON object")
                self.config.update(changes)
            except (ConfigError, json.JSONDecodeError) as exc:
                return Response.json(400, {"error": {"message": str(exc)}})
            if "seed" in changes:
                self.rng.seed(self.config.seed)
            set_clock_offset(self.config.clock_offset_s)
            return Response.json(200, self.config.as_json())
        if (method, path) == ("GET", "/_sandbox/requests"):
            return Response.json(200, list(self.request_log))
        if (method, path) == ("GET", "/_sandbox/responses"):
            return Response.json(200, [_recorded(*item) for item in self.responses])
        if (method, path) == ("GET", "/_sandbox/webhooks"):
            return Response.json(200, list(self.webhooks.deliveries))
        if (method, path) == ("GET", "/_sandbox/webhooks/in_flight"):
            return Response.json(200, {"in_flight": self.webhooks.in_flight()})
        if (method, path) == ("POST", "/_sandbox/idempotency/expire"):
            return Response.json(200, {"expired": self.idempotency.expire()})
        if (method, path) == ("POST", "/_sandbox/stalls/release"):
            released, self._stalls_released = self._stalls_released, asyncio.Event()
            released.set()
            return Response.json(200, {"released": True})
        if (method, path) == ("POST", "/_sandbox/bank_debits/settle"):
            invoice = parse_qs(query).get("invoice", [None])[0]
            settled = bank_debits.settle_all(self.store, self.config, invoice)
            return Response.json(200, {"settled": settled})
        if (method, path) == ("DELETE", "/_sandbox/data"):
            reset_config = parse_qs(query).get("config", ["0"])[0] in ("1", "true")
            self.reset(reset_config)
            return Response.json(200, {"reset": True, "config": self.config.as_json()})
        return Response.json(404, {"error": {"message": f"no sandbox route {method} {path}"}})

    def reset(self, reset_config: bool = False) -> None:
        """Forget all objects, events, keys, endpoints and the request log."""
        self.webhooks.cancel_all()
        self.store.clear()
        self.idempotency.clear()
        self.limiter.clear()
        self.request_log.clear()
        self.responses.clear()
        if reset_config:
            fresh = SandboxConfig()
            fresh.update(self.initial_config)
            self.config.update(fresh.as_json())
        self.rng.seed(self.config.seed)
        set_clock_offset(self.config.clock_offset_s)


def _authenticate(authorization: str | None) -> str:
    """The API key, from `Bearer <key>` or HTTP basic with the key as user, like Stripe."""
    if not authorization:
        raise errors.authentication(
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details."
        )
    scheme, _, credentials = authorization.partition(" ")
    key = credentials.strip()
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(key).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            key = ""
    elif scheme.lower() != "bearer":
        key = ""
    if not _API_KEY.match(key):
        raise errors.authentication(f"Invalid API Key provided: {_redact(key)}")
    return key


def _redact(key: str) -> str:
    """Stripe's way of naming a bad key without echoing it: prefix and last four."""
    if len(key) <= 12:
        return "*" * len(key)
    return f"{key[:8]}{'*' * (len(key) - 12)}{key[-4:]}"


def _replayed(saved: Saved, request_id: str) -> Response:
    """The saved response, byte for byte, marked the way Stripe marks replays."""
    return Response(
        saved.status,
        saved.body,
        [
            *(header for header in saved.headers if header[0] != "Request-Id"),
            ("Request-Id", request_id),
            ("Idempotent-Replayed", "true"),
            ("Original-Request", saved.request_id),
        ],
    )


def _recorded(method: str, path: str, status: int, body: bytes) -> dict[str, Any]:
    return {"method": method, "path": path, "status": status, "body": json.loads(body)}


def _error_response(error: errors.StripeError, base_headers: list[tuple[str, str]]) -> Response:
    return Response.json(error.status, error.body(), [*base_headers, *error.headers.items()])


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client went away before sending all of it.

    A request Stripe never fully received is never executed: executing a truncated
    body would store its idempotency key with parameters the client never meant.
    """
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _drop_connection(send: Send) -> None:
    """Close the socket without a byte of response, as a network failure would.

    ASGI has no verb for this, so reach the transport behind uvicorn's `send` (a bound
    method of its per-request cycle object). Yielding once lets uvicorn see the
    disconnect, so it does not answer with its own 500 afterwards.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("cannot drop the connection: not running under uvicorn")
    transport.abort()
    await asyncio.sleep(0)
