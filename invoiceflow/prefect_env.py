"""Prefect defaults for our processes, applied before Prefect is first imported.

Only defaults: anything the operator exported wins.
"""

from __future__ import annotations

import os

_DEFAULTS = {
    # Offline machines can't reach Prefect's analytics endpoint; trying logs errors.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # No "Run 'prefect cloud login'" style nags in a CLI that prints its own summary.
    "PREFECT_CLI_PROMPT": "false",
    # Local mode's temporary server creates and migrates its database on first
    # start; on a fresh machine with two busy cores that outlasts Prefect's 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def configure_prefect() -> None:
    for name, value in _DEFAULTS.items():
        os.environ.setdefault(name, value)
