"""Run the sandbox: in a background thread for tests, or in the foreground for the CLI."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from stripe_sandbox.app import SandboxApp
from stripe_sandbox.config import SandboxConfig

log = logging.getLogger("stripe_sandbox")

# How long start_sandbox waits for the server to accept connections before giving up.
STARTUP_TIMEOUT_S = 10.0
# Idle keep-alive connections are closed at shutdown; give requests in flight this long.
SHUTDOWN_GRACE_S = 2
# How long an idle keep-alive connection stays open. uvicorn's default (5 s) is
# shorter than a test client often idles between calls (a CLI subprocess runs in
# between); when the server closes the connection just as the client reuses it,
# the client reads "connection reset by peer" for a call that never arrived.
# Clients of ours retry that, but a test's bare SDK client must not meet it.
KEEP_ALIVE_S = 600


def build_config(**config: Any) -> SandboxConfig:
    sandbox_config = SandboxConfig()
    sandbox_config.update(config)
    return sandbox_config


def _uvicorn_config(app: SandboxApp, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="h11",
        loop="asyncio",
        lifespan="on",
        access_log=False,  # the app logs one line per request itself
        log_level=log_level,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        timeout_keep_alive=KEEP_ALIVE_S,
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # uvicorn writes headers and body separately; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms a request). Accepted sockets inherit this on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class RunningSandbox:
    """A sandbox serving in a background thread; stop it with `.stop()` or `with`."""

    def __init__(self, app: SandboxApp, server: uvicorn.Server, sock: socket.socket) -> None:
        self.app = app
        self._server = server
        self._socket = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        self._control = httpx.Client(base_url=self.url, timeout=10)
        self._thread = threading.Thread(
            target=self._serve, name=f"stripe-sandbox-{port}", daemon=True
        )

    def _serve(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def _start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Stripe sandbox did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        self._control.close()
        self._server.should_exit = True
        self._thread.join(timeout=SHUTDOWN_GRACE_S + 3)
        self._socket.close()

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Control-plane helpers (HTTP, so they are safe from any thread).

    def reset(self, *, config: bool = False) -> None:
        """Forget all state; with `config=True` also restore the startup configuration."""
        self._control.delete("/_sandbox/data", params={"config": "1"} if config else None)

    def configure(self, **config: Any) -> dict[str, Any]:
        response = self._control.post("/_sandbox/config", json=config)
        if response.status_code != 200:
            raise ValueError(response.json()["error"]["message"])
        result: dict[str, Any] = response.json()
        return result

    def release_stalls(self) -> None:
        """End every stalled request now, as if its `stall_ms` had passed."""
        self._control.post("/_sandbox/stalls/release").raise_for_status()

    def config(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control.get("/_sandbox/config").json()
        return result

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._control.get("/_sandbox/requests").json()
        return result

    def responses(self) -> list[dict[str, Any]]:
        """Recorded API responses (method, path, status, body); needs `record_responses`."""
        result: list[dict[str, Any]] = self._control.get("/_sandbox/responses").json()
        return result

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._control.get("/_sandbox/webhooks").json()
        return result

    def webhooks_in_flight(self) -> int:
        """Deliveries not yet ended (a test waits for 0 instead of sleeping)."""
        in_flight: int = self._control.get("/_sandbox/webhooks/in_flight").json()["in_flight"]
        return in_flight

    def settle_bank_debits(self, invoice: str | None = None) -> list[str]:
        """Give processing bank debits (of `invoice`, or all) their outcome now."""
        params = {"invoice": invoice} if invoice else None
        response = self._control.post("/_sandbox/bank_debits/settle", params=params)
        settled: list[str] = response.json()["settled"]
        return settled

    def expire_idempotency_keys(self) -> int:
        """Simulate Stripe's 24 h key retention passing: every saved key is forgotten."""
        expired: int = self._control.post("/_sandbox/idempotency/expire").json()["expired"]
        return expired


def start_sandbox(host: str = "127.0.0.1", port: int = 0, **config: Any) -> RunningSandbox:
    """Start a sandbox in a background thread; returns once it accepts connections."""
    app = SandboxApp(build_config(**config))
    server = uvicorn.Server(_uvicorn_config(app, log_level="warning"))
    running = RunningSandbox(app, server, _bind(host, port))
    running._start()
    return running


def serve_forever(host: str, port: int, **config: Any) -> None:
    """Serve in the foreground until interrupted (the `invoiceflow sandbox` command)."""
    app = SandboxApp(build_config(**config))
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    log.info("Stripe sandbox listening on http://%s:%s (test keys only)", bound_host, bound_port)
    uvicorn.Server(_uvicorn_config(app, log_level="info")).run(sockets=[sock])
