"""The rate limiter's store for a soak: a Redis server of the soak's own, which the monkey
takes down for a while (SIGKILL, as a lost Redis host) and brings back on the same port.

Its own server, never the machine's shared one: a soak must not take others' Redis down.
Nothing is persisted (`--save ""`): a Redis that comes back empty is the harder case, the
limiter's buckets start over.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from bench.soak.journal import Journal

READY_SECONDS = 30.0


class LimiterStore:
    def __init__(self, logs: Path, port: int, journal: Journal) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: install it or run with --without redis_down")
        self.binary = binary
        self.logs = logs
        self.port = port
        self.journal = journal
        self.outages = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # one outage at a time

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with (self.logs / "redis.log").open("ab") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    *("--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_SECONDS
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the soak's redis-server did not start; see logs/redis.log")
            time.sleep(0.1)

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True
        return False

    def outage(self, seconds: float) -> None:
        """Down for `seconds` (every client's connection refused), then up again, empty."""
        if not self._lock.acquire(blocking=False):
            return  # one outage at a time
        try:
            self._kill()
            self.outages += 1
            self.journal.note("limiter_store_down", seconds=round(seconds, 1))
            time.sleep(seconds)
            self.start()
            self.journal.note("limiter_store_up")
        finally:
            self._lock.release()

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def close(self) -> None:
        self._kill()
