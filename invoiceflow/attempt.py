"""One billing attempt of one request: what it knows that neither the ledger nor Stripe says.

A step skips a Stripe read, or an intent insert, only on proof, and the proof
is the attempt's own doing moments ago (rocket-rides' atomic phases, with the
"we just did it" shortcuts written down):

- `owner`: the lease it runs under; every commit checks the lease is still
  its own (`ledger.locked`), and every Stripe write that it was not taken over
  (`stripe_write.write_once`, through `lease.held`'s keeper);
- intents already recorded: a step records the next step's write intent in
  its own commit (`ledger.intend_in`), and the next step's `write_once` takes
  it from here instead of a transaction of its own;
- the row as its last commit left it (`last_commit`): every commit of the
  attempt goes through `ledger.locked`, which reads the row under its lock,
  checks the lease and, once committed, leaves the row here; the next step
  starts from it instead of reading the row again (see `last_commit` for why
  that is as safe as a read against the webhook receiver);
- the lines as its catalog_ready commit pinned them (`pinned`): add_items puts
  exactly those on the draft instead of reading them again;
- drafts verified: lines checked from Stripe's answer to this attempt's own
  add_lines, so its finalize need not read the draft again;
- ids made here: objects this *process* made moments ago (`invoiceflow.fresh`),
  which cannot carry anything of ours yet. Deliberately the process's, not the
  attempt's: a customer made for one request of a billing run is as new for
  the next request's invoice, and the proof is Stripe's 24 h key window, not
  the attempt;
- `quiet`: whether each step logs what it did (the invoice flow, a task run per
  step) or the caller sums up once per request (a billing run of thousands).

A retry, a rerun or another run starts a new attempt that knows nothing, and
so reads and records everything itself: the safe default.

Why a registry of live attempts (`running`, `attempt_of`): the invoice flow runs each
step as a Prefect task, whose parameters Prefect hashes and stores with the
task run. An attempt (intents, clocks) does not belong there, so a task gets
the lease owner and the request id — plain strings, as before — and finds the
attempt `pipeline.bill` opened for them in this process. The entry lives
exactly as long as the attempt: nothing outlives it, nothing needs pruning.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from invoiceflow import fresh
from invoiceflow.db.models import BillingRequestRow, RequestLine
from invoiceflow.write_intents import Intent

# Lines checked from the answer of the add_lines call this attempt made moments
# ago are as current as a read right before finalizing would be; older, re-read.
VERIFIED_SECONDS = 60.0


@dataclass(eq=False)
class Attempt:
    """What one attempt of one request did itself; see the module docstring."""

    owner: str
    request_id: str
    quiet: bool = False
    _recorded: dict[str, Intent] = field(default_factory=dict, repr=False)
    _verified: dict[str, float] = field(default_factory=dict, repr=False)
    _row: BillingRequestRow | None = field(default=None, repr=False)
    _pinned: list[RequestLine] | None = field(default=None, repr=False)

    def committed(self, row: BillingRequestRow) -> None:
        """The row as a commit of this attempt left it (`ledger.locked`, the lease taken)."""
        self._row = row

    def last_commit(self) -> BillingRequestRow | None:
        """The row as this attempt's last commit left it; None: read it (`ledger.require`).

        Safe in place of a read. Between our commit and the next step the row
        changes only (a) by this attempt, whose every commit replaces this row;
        (b) by a run that took the lease over, and then our next Stripe write
        (`lease.check`) and our next commit (`ledger.locked`, under the row lock)
        stop this run; or (c) by writers without the lease: the webhook receiver
        and a person's `resolve`/`approve`, which only move Stripe's facts and the
        settlement forward, under the row lock. A read at the step's start would
        not keep (c) out either: the receiver may write the moment after it. What
        keeps it out is Stripe's own state at our write (a key replays, a
        finalized invoice cannot be finalized again) and our commit, which reads
        the row again under its lock and moves facts forward only
        (`invoice_facts`, `ledger.advance`). The snapshot widens that same window
        by the milliseconds between two steps, nothing more.
        """
        return self._row

    def pinned(self, lines: list[RequestLine]) -> None:
        """The request's lines as this attempt's committed catalog_ready left them."""
        self._pinned = lines

    def take_pinned(self) -> list[RequestLine] | None:
        """The lines `pinned` noted, once; None: read them (`ledger.lines`).

        Safe in place of a read for the reason `last_commit` is: only a lease
        holder writes the lines (their prices, Stripe's line ids; an amendment
        replaces them), so a change after our commit is a takeover, which our
        next Stripe write and our next commit stop. Once: a retried step, a
        rerun or another process reads them.
        """
        lines, self._pinned = self._pinned, None
        return lines

    def recorded(self, intent: Intent) -> None:
        """Note an intent recorded (`ledger.intend_in`) in a transaction that has committed."""
        self._recorded[intent.key] = intent

    def take_recorded(self, key: str) -> Intent | None:
        """The intent a step before recorded for this write, once; None: record it now."""
        return self._recorded.pop(key, None)

    def verified(self, invoice_id: str) -> None:
        """Every line of the draft was checked from Stripe's answer to our own add_lines."""
        self._verified[invoice_id] = time.monotonic()

    def take_verified(self, invoice_id: str) -> bool:
        """Whether the draft was checked moments ago by this attempt (once: a retried
        finalize reads the draft again)."""
        at = self._verified.pop(invoice_id, None)
        return at is not None and time.monotonic() - at < VERIFIED_SECONDS

    @staticmethod
    def made_here(what: str | None) -> bool:
        """Whether this process made `what` moments ago (`invoiceflow.fresh`)."""
        return fresh.is_fresh(what)

    @staticmethod
    def note_made(what: str, stripe_object: object) -> None:
        fresh.note(what, stripe_object)

    def done(self, log: logging.Logger, message: str, *args: object) -> None:
        """A step says what it did: at INFO, or at DEBUG when the caller sums up."""
        log.log(logging.DEBUG if self.quiet else logging.INFO, message, *args)


_live: dict[tuple[str, str], Attempt] = {}
_live_lock = threading.Lock()


@contextmanager
def running(attempt: Attempt) -> Iterator[Attempt]:
    """Make `attempt` the one `attempt_of` finds for its owner and request while the block runs."""
    key = (attempt.owner, attempt.request_id)
    with _live_lock:
        _live[key] = attempt
    try:
        yield attempt
    finally:
        with _live_lock:
            if _live.get(key) is attempt:
                del _live[key]


def note_commit(owner: str, request_id: str, row: BillingRequestRow) -> None:
    """A commit under `owner`'s lease: the live attempt (if any) keeps the row it left."""
    with _live_lock:
        found = _live.get((owner, request_id))
    if found is not None:
        found.committed(row)


def attempt_of(owner: str, request_id: str) -> Attempt:
    """The live attempt of this owner and request; outside one (a step run on its
    own), a new attempt that knows nothing and so reads and records everything."""
    with _live_lock:
        found = _live.get((owner, request_id))
    return found if found is not None else Attempt(owner, request_id)
