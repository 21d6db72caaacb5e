"""Prefect defaults for our processes, applied before Prefect is first imported.

Only defaults: anything the operator exported wins.
"""

from __future__ import annotations

import logging
import os
import sys

_DEFAULTS = {
    # Offline machines can't reach Prefect's analytics endpoint; trying logs errors.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # No "Run 'prefect cloud login'" style nags in a CLI that prints its own summary.
    "PREFECT_CLI_PROMPT": "false",
    # Our own business log lines ("Created draft invoice…", retries) go to the
    # Prefect API too, so a run's page in the UI tells the whole story.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "invoiceflow",
    # …but lines logged outside any run (the in-process sandbox, `status`) have
    # no run to belong to: keep them off the API without a warning each.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # Local mode's temporary server creates and migrates its database on first
    # start; on a fresh machine with two busy cores that outlasts Prefect's 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Prefect's 180 s default would let a dead run look Running for 9 minutes
    # before the crashed-runs automation (3 missed heartbeats) marks it; 30 s is
    # Prefect's minimum. The cost is one small event per run every 30 s.
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
}


def configure_prefect(*, quiet_console: bool = False) -> None:
    """Apply our defaults. `quiet_console`: print nothing of Prefect's own run
    logs (their tracebacks included) on the terminal; they still reach the API."""
    for name, value in _DEFAULTS.items():
        os.environ.setdefault(name, value)
    ours = logging.getLogger("invoiceflow")
    if ours.level == logging.NOTSET:  # business lines are INFO; the root default is WARNING
        ours.setLevel(logging.INFO)
    if not sys.stderr.isatty():
        # Colour is for a terminal. Elsewhere (a worker's log, CI, a pipe) it adds
        # nothing to read, yet Prefect's console handler still ran its highlighter's
        # regexes over every line: a measurable share of a billing run's CPU.
        os.environ.setdefault("PREFECT_LOGGING_COLORS", "false")
    if quiet_console:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
