"""Ctrl-C during `invoiceflow invoice`: stop within seconds and say where the request stands.

Why KeyboardInterrupt can't just unwind: at a terminal, Ctrl-C signals the whole
foreground process group. In Prefect's local mode that group holds the
temporary API server (`SubprocessASGIServer`, a uvicorn child started without a
session of its own), and it shuts down at once. Prefect's engine then reports
the crashed task and flow runs, its log lines (APILogWorker) and its events
(EventsWorker) to a server that is gone, each with retries and backoff: minutes
of errors, then exit 1 with ConnectError. Interpreter shutdown would also join
the task-runner threads, which may sit in a Stripe call until its timeout.

So on the first SIGINT the flow is stopped (KeyboardInterrupt in the main
thread: no new step starts) and Prefect gets a short grace to record the run as
crashed where its server is still up. Then we read the request's recovery point
from our database, release the lease if this process holds it, print one line
and leave with os._exit(130). A second Ctrl-C skips the grace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any, NoReturn

from sqlalchemy.engine import Engine

from invoiceflow import lease, ledger

EXIT_CODE = 130
# For Prefect to mark the runs crashed, when its API still answers (a real server).
GRACE_SECONDS = 3.0
# For sending the run's last log lines and events to that server.
DRAIN_SECONDS = 2.0
# Reading our database and releasing the lease; past this we leave regardless.
CLEANUP_SECONDS = 5.0


class InterruptGuard:
    """Installed around one request's flow run by the `invoice` command."""

    def __init__(self, engine: Engine, request_id: str, known_point: str) -> None:
        self._engine = engine
        self._request_id = request_id
        self._point = known_point  # until the database tells us better
        self._interrupted = threading.Event()
        self._unwound = threading.Event()
        self._exiting = threading.Lock()
        self._previous: Any = None
        # Our one line goes here; fd 2 itself is silenced once interrupted.
        self._stderr = os.dup(2)

    def __enter__(self) -> InterruptGuard:
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc_info: object) -> None:
        """The flow returned or raised (whatever Prefect made of a KeyboardInterrupt)."""
        if self._interrupted.is_set():
            self._unwound.set()
            while True:  # the finishing thread ends the process
                time.sleep(1)
        # Back to the previous handling: nothing of ours is left to stop.
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
        os.close(self._stderr)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._interrupted.is_set():  # a second Ctrl-C: no more grace
            self._unwound.set()
            return
        self._interrupted.set()
        _silence_console()
        threading.Thread(target=self._finish, name="invoiceflow-interrupt", daemon=True).start()
        raise KeyboardInterrupt

    def _finish(self) -> None:
        prefect_answered = self._unwound.wait(GRACE_SECONDS)
        deadline = threading.Timer(CLEANUP_SECONDS, self._exit)
        deadline.daemon = True
        deadline.start()
        with contextlib.suppress(Exception):  # the database may be down too; say what we know
            self._release_our_lease()
        if prefect_answered:
            _drain_prefect()
        stop_temporary_server()
        self._exit()

    def _release_our_lease(self) -> None:
        row = ledger.load(self._engine, self._request_id)
        if row is None:
            return
        self._point = row.recovery_point
        # If the flow unwound, it released the lease already; otherwise a lease
        # of this process's would block the request until
        # INVOICEFLOW_LEASE_SECONDS pass.
        if row.lease_owner is not None and lease.held_by_this_process(row.lease_owner):
            ledger.release_lease(self._engine, self._request_id, row.lease_owner)

    def _exit(self) -> NoReturn:
        self._exiting.acquire()  # once, whichever of the finisher and its deadline comes first
        line = f"interrupted at {self._point}; rerun to resume\n"
        os.write(self._stderr, line.encode())
        os._exit(EXIT_CODE)


def _silence_console() -> None:
    """Nothing of Prefect's unwinding (tracebacks, 'Error logging to API') reaches the user."""
    logging.disable(logging.CRITICAL)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _drain_prefect() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(Exception):
        APILogWorker.drain_all(timeout=DRAIN_SECONDS)
        EventsWorker.drain_all(timeout=DRAIN_SECONDS)


def stop_temporary_server() -> None:
    """os._exit skips Prefect's atexit hook that stops the local-mode server;
    stop it here, or it would outlive us when only this process got the signal."""
    import sys

    module = sys.modules.get("prefect.server.api.server")
    if module is None:  # never started in this process
        return
    server = module.SubprocessASGIServer()
    if server.server_process is not None:
        with contextlib.suppress(Exception):
            server.server_process.terminate()
