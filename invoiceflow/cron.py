"""Cron expressions, checked by the parser that runs them: Prefect's.

A cycle's schedule is Prefect's `Cron` (`invoiceflow.service.deployments`), which
the Prefect server expands with its own croniter. Checked by another parser, the
settings disagreed with what runs: cronsim refused `@monthly`, which Prefect
runs, and the two differ on extensions (`L`, `#`). So a setting passes only
what Prefect's `CronSchedule` validator passes, and two things more are refused:

- an expression that never fires, such as `0 6 31 2 *` (the 31st of February):
  Prefect's validator accepts it, then its scheduler finds no next date, every
  loop, and the cycle silently never runs;
- six or seven fields: Prefect reads the sixth as *seconds*, so a Quartz-style
  `0 0 6 1 * *` would run every second of a day instead of once.

Importing Prefect costs seconds, which the processes that never import it (the
webhook receiver, `invoiceflow status`) should not pay for the defaults:
`CHECKED` holds those, and tests/test_cron.py checks them with Prefect's parser.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

# The settings' default schedules, checked against Prefect's parser by the tests.
CHECKED = frozenset({"0 6 1 * *", "0 7 * * *", "30 * * * *"})
FIELDS = 5


def problem(expression: str) -> str | None:
    """Why Prefect would not run `expression` as a schedule, or None if it would."""
    if expression in CHECKED:
        return None
    if len(expression.split()) > FIELDS:
        return (
            "has more than 5 fields (Prefect reads a 6th as seconds); use minute hour "
            "day month weekday"
        )
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=expression)  # Prefect's own validator
    except ValidationError:
        return "is not a cron expression Prefect can schedule"
    # The croniter Prefect's scheduler expands schedules with (an untyped module).
    vendored = importlib.import_module("prefect._vendor.croniter.croniter")
    try:
        vendored.croniter(expression, datetime.now(UTC)).get_next(datetime)
    except vendored.CroniterBadDateError:
        return "never fires (no such date)"
    return None
