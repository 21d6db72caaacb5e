"""One-line progress notes for waits a person would otherwise sit through in silence.

Waiting for another run's lease, backing off from Stripe, awaiting payment:
each says so here. The notes are ordinary log records on the
`invoiceflow.progress` logger, so they reach the Prefect UI with the rest of
a run's log, and the CLI prints them on stderr even when it is otherwise quiet.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("invoiceflow.progress")

_STDERR_HANDLER_NAME = "invoiceflow-progress-stderr"


def note(message: str, *args: object) -> None:
    log.info(message, *args)


class Throttle:
    """Say something about a long wait at most once per `every` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last = float("-inf")

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.every:
            return False
        self._last = now
        return True


def print_to_stderr() -> None:
    """Show progress notes on stderr as `… <message>` lines (idempotent)."""
    if any(h.get_name() == _STDERR_HANDLER_NAME for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_STDERR_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("… %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
