"""Which dunning step is due for an invoice, given its due date and "now". Pure.

"Now" is the invoice's own: its customer's test clock's time, or the real time
(`stripe_clock.invoice_now`), unless the run was given an `as_of`; Stripe stamps
the due date in that same time. The cadence is days after Stripe's due date:
reminders on each of `dunning_reminder_days`, then the final write-off on
`dunning_final_days`. Only the latest due step is ever taken: after an outage,
reminders that were missed are recorded as skipped rather than sent late, so a
customer never gets several emails at once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

FINAL = "final"
REMINDER_PREFIX = "reminder-"
DAY = timedelta(days=1)


def reminder(number: int) -> str:
    """The step name of the `number`-th reminder (1-based)."""
    return f"{REMINDER_PREFIX}{number}"


def is_reminder(step: str) -> bool:
    return step.startswith(REMINDER_PREFIX)


@dataclass(frozen=True)
class Cadence:
    """Days after the due date: one per reminder, then the final step."""

    reminder_days: tuple[int, ...]
    final_days: int

    def steps(self) -> list[tuple[str, int]]:
        """Every step in order, with its day after the due date."""
        reminders = [(reminder(n), day) for n, day in enumerate(self.reminder_days, start=1)]
        return [*reminders, (FINAL, self.final_days)]

    def order(self, step: str) -> int:
        """Position of `step` in the sequence; unknown steps (an older cadence) sort first."""
        names = [name for name, _day in self.steps()]
        return names.index(step) if step in names else -1


@dataclass(frozen=True)
class Plan:
    """What to do now. `step` is None when nothing new is due."""

    step: str | None
    step_due_at: datetime | None
    # Due earlier, never recorded: missed (an outage) and superseded by `step`.
    skipped: tuple[tuple[str, datetime], ...]
    days_overdue: int


def days_overdue(due_date: datetime, now: datetime) -> int:
    """Whole days since the due date (0 on the due day itself; negative before it)."""
    return (now - due_date) // DAY


def latest_due(due_date: datetime, cadence: Cadence, now: datetime) -> tuple[str, datetime] | None:
    """The last step whose day has come, or None before the first one."""
    due = [(name, due_date + day * DAY) for name, day in cadence.steps()]
    reached = [(name, at) for name, at in due if at <= now]
    return reached[-1] if reached else None


def plan(due_date: datetime, cadence: Cadence, now: datetime, recorded: Collection[str]) -> Plan:
    """The step to take now, given the steps already recorded for this invoice."""
    overdue = days_overdue(due_date, now)
    latest = latest_due(due_date, cadence, now)
    if latest is None or latest[0] in recorded:
        return Plan(None, None, (), overdue)
    step, step_due_at = latest
    earlier: Sequence[tuple[str, int]] = cadence.steps()[: cadence.order(step)]
    skipped = tuple((name, due_date + day * DAY) for name, day in earlier if name not in recorded)
    return Plan(step, step_due_at, skipped, overdue)
