"""An ASGI app served by uvicorn in a background thread: the tests', the benchmarks' and
the demo's one copy of starting it, waiting until it accepts, and stopping it.

The product's own `invoiceflow serve` (invoiceflow/service/run.py) runs uvicorn in the
foreground with its signal handling and shutdown order, and keeps its own code for it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready socket on `host:port` (0: a free port), reusable at once."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}"


class ServerThread:
    """`server` serving on `sock` in a daemon thread (uvicorn installs no signal
    handlers outside the main thread); `start` returns once it accepts connections."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket, name: str) -> None:
        self.server = server
        self.socket = sock
        self.name = name
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True
        )

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start on {base_url(self.socket)}")
            time.sleep(0.005)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=timeout)
        self.socket.close()


@contextmanager
def running(
    app: Any, host: str = "127.0.0.1", port: int = 0, name: str = "the ASGI app"
) -> Iterator[str]:
    """Serve `app` on `host:port` (0: a free port) and yield its base URL."""
    sock = bind(host, port)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    serving = ServerThread(uvicorn.Server(config), sock, name)
    serving.start()
    try:
        yield base_url(sock)
    finally:
        serving.stop()
