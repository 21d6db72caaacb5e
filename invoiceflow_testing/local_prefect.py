"""A throwaway `prefect server start`, for the test suite and the benchmarks.

A process without PREFECT_API_URL starts its own temporary server each time
(and it has no scheduler); tests and benchmarks that run flows from several
processes share one real server instead. Production points PREFECT_API_URL at
its own long-lived server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from invoiceflow import progress

# A first start creates and migrates the server's database: ~10 s (SQLite) to
# ~60 s (PostgreSQL) on two idle cores, and several times that on a machine
# whose load is 15: 120 s was seen to be too short there. It says so while it waits.
START_TIMEOUT_SECONDS = 420
START_PROGRESS_EVERY_SECONDS = 15


@dataclass(frozen=True)
class LocalPrefectServer:
    api_url: str
    home: Path
    port: int
    log_path: Path
    started_in_seconds: float

    @property
    def ui_url(self) -> str:
        """Where the UI is served, when started with `ui=True`."""
        return self.api_url.removesuffix("/api")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_prefect_server(
    *, ui: bool = False, home: Path | None = None, port: int | None = None, **extra_env: str
) -> Iterator[LocalPrefectServer]:
    """Start a server in a temporary PREFECT_HOME, export PREFECT_API_URL, and
    stop and remove everything afterwards.

    `ui=True` also serves the web UI at the server's root (`ui_url`); off by
    default, as the tests and benchmarks only need the API. Given a `home` and
    `port` (a server restarted, as after an outage), the home and its database
    are kept."""
    keep_home = home is not None
    home = home or Path(tempfile.mkdtemp(prefix="invoiceflow-prefect-"))
    port = port or _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        # The UI asks the server (ui-settings) which API to call, and that
        # defaults to PREFECT_API_URL: inherited from a test session it would be
        # another server's.
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **extra_env,
    }
    log_path = home / "server.log"
    log = log_path.open("ab")  # a restarted server appends
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    server = subprocess.Popen(  # noqa: S603  (our own interpreter, fixed arguments)
        [*command, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    started = time.monotonic()
    # A second server inside a test session (the UI test's, the outage test's)
    # must hand the session's own server back to the rest of the session.
    previous_api_url = os.environ.get("PREFECT_API_URL")
    throttle = progress.Throttle(START_PROGRESS_EVERY_SECONDS)
    throttle.due()  # the first note after a full interval: a quick start says nothing
    try:
        while not _healthy(api_url):
            waited = time.monotonic() - started
            if server.poll() is not None or waited > START_TIMEOUT_SECONDS:
                raise RuntimeError(f"Prefect server did not start; see {log_path}")
            if throttle.due():
                progress.note("the Prefect server is still starting (%.0f s)", waited)
            time.sleep(0.25)
        os.environ["PREFECT_API_URL"] = api_url
        yield LocalPrefectServer(api_url, home, port, log_path, time.monotonic() - started)
    finally:
        if "prefect" in sys.modules:  # send buffered run logs while the server is still up
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)
        if previous_api_url is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous_api_url
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        if not keep_home:
            shutil.rmtree(home, ignore_errors=True)


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
