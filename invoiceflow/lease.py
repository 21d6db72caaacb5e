"""A living run keeps its request's lease; a run that lost it stops writing.

The lease (`ledger.acquire_lease`) says which run may work on a request. A
`LeaseKeeper` renews it from a background thread every third of its TTL for
as long as the run is alive, so a run that is merely slow (a Stripe incident,
a 250-line invoice on a busy machine) never loses it, while a crashed run's
lease still lapses after one TTL.

Every Stripe write first calls `check()`: it raises `LeaseLost` once another
run took the request over, and it renews synchronously when the background
renewal is overdue — the case of a run that was paused (SIGSTOP, a VM freeze)
past its lease and has just woken up. Every commit is checked again under the
row lock (`ledger.locked`), so even a write that slips past this check can
never advance the request's state.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy.engine import Engine

from invoiceflow import ledger

log = logging.getLogger(__name__)

# The lease of the run this thread works for. Prefect copies context variables
# into the threads that run a flow's tasks, so every step of the run sees it.
_current: ContextVar[LeaseKeeper | None] = ContextVar("invoiceflow_lease", default=None)


class LeaseKeeper:
    def __init__(
        self, engine: Engine, request_id: str, owner: str, ttl_seconds: float, taken_at: float
    ) -> None:
        self.engine = engine
        self.request_id = request_id
        self.owner = owner
        self.ttl = ttl_seconds
        self.renew_every = ttl_seconds / 3
        # `taken_at` is the monotonic time just before the lease was taken:
        # never later than the real expiry.
        self._valid_until = taken_at + ttl_seconds
        self._lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"lease-{request_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.renew_every + 5)

    def _keep(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                if not self.renew():
                    log.warning("Lost the lease on %s to another run", self.request_id)
                    return
            except Exception as exc:  # the database is unreachable: try again next round
                log.warning("Could not renew the lease on %s: %s", self.request_id, exc)

    def renew(self) -> bool:
        with self._lock:
            if self._lost:
                return False
            started = time.monotonic()
            if ledger.renew_lease(self.engine, self.request_id, self.owner, self.ttl):
                self._valid_until = started + self.ttl
                return True
            self._lost = True
            return False

    def check(self) -> None:
        """Raise `LeaseLost` unless this run still holds the lease right now."""
        overdue = time.monotonic() >= self._valid_until - self.renew_every
        if self._lost or (overdue and not self.renew()):
            raise ledger.LeaseLost(
                f"request {self.request_id!r} was taken over by another run; "
                "this run stopped before writing to Stripe"
            )


@contextmanager
def held(
    engine: Engine,
    request_id: str,
    owner: str,
    ttl_seconds: float,
    patience_seconds: float,
    on_take: ledger.OnTake | None = None,
) -> Iterator[LeaseKeeper]:
    """Take the request's lease (waiting up to `patience_seconds` for another run),
    keep it renewed while the block runs, and release it afterwards.

    `on_take` runs in the transaction that takes the lease (`ledger.acquire_lease`)."""
    taken_at = ledger.wait_for_lease(
        engine, request_id, owner, ttl_seconds, patience_seconds, on_take
    )
    keeper = LeaseKeeper(engine, request_id, owner, ttl_seconds, taken_at)
    token = _current.set(keeper)
    keeper.start()
    try:
        yield keeper
    finally:
        keeper.stop()
        _current.reset(token)
        try:
            ledger.release_lease(engine, request_id, owner)
        except Exception:  # it expires on its own; never mask the run's outcome
            log.exception("Could not release the lease on %s", request_id)


def new_owner(run_id: str) -> str:
    """A lease owner name: this host and process, then the run."""
    return f"{_this_process()}{run_id}"


def held_by_this_process(owner: str | None) -> bool:
    """Whether a lease owner names a run of this very process."""
    return owner is not None and owner.startswith(_this_process())


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:"


def current_owner() -> str | None:
    """The owner of the lease this thread's run keeps, if any."""
    keeper = _current.get()
    return keeper.owner if keeper is not None else None


def check_current() -> None:
    """Before a Stripe write: stop if this run's lease is gone (no-op outside a kept lease)."""
    keeper = _current.get()
    if keeper is not None:
        keeper.check()
