"""What a dunning run did: one line per step (or per request where nothing
happened), the table the run's artifact shows, and a summary."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


class Outcome(StrEnum):
    # A step was taken (or recorded) in this run.
    SENT = "sent"  # a reminder emailed (or found emailed after a crash: never twice)
    SKIPPED = "skipped"  # missed during an outage, superseded by a later step
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"
    UNVERIFIED = "unverified"  # a crashed reminder Stripe's events no longer show: not resent
    STOPPED = "stopped"  # the invoice settled before this step could happen
    # The request needed no step.
    SETTLED = "settled"  # the invoice is no longer open (paid…): the sequence stops
    NOT_DUE = "not due"
    NOTHING_DUE = "nothing due"
    PAYMENT_PENDING = "payment pending"  # a bank debit is processing: no reminder meanwhile
    # The unit did not get through.
    BUSY = "busy"  # another run holds the request; the next run takes it
    FAILED = "failed"


# Outcomes that changed something (or tried to): the CLI prints these one per line.
TAKEN = frozenset(
    {
        Outcome.SENT,
        Outcome.SKIPPED,
        Outcome.UNCOLLECTIBLE,
        Outcome.VOID,
        Outcome.UNVERIFIED,
        Outcome.STOPPED,
        Outcome.SETTLED,
        Outcome.PAYMENT_PENDING,
        Outcome.BUSY,
        Outcome.FAILED,
    }
)


class StepLine(BaseModel):
    request_id: str
    invoice_id: str | None = None
    step: str | None = None
    outcome: Outcome
    days_overdue: int | None = None
    reason: str | None = None
    # The CLI's exit code for a failed unit (`invoiceflow.outcomes.Exit`).
    exit_code: int | None = None

    def one_line(self) -> str:
        """E.g. `R1: reminder-2 sent for in_…, 8 days overdue`."""
        what = f"{self.step} {self.outcome.value}" if self.step else self.outcome.value
        text = f"{self.request_id}: {what}"
        if self.invoice_id:
            text += f" for {self.invoice_id}"
        if self.days_overdue is not None:
            unit = "day" if abs(self.days_overdue) == 1 else "days"
            text += f", {self.days_overdue} {unit} overdue"
        if self.reason:
            text += f" ({self.reason})"
        return text


class DunningReport(BaseModel):
    as_of: datetime
    candidates: int
    lines: list[StepLine]

    @property
    def failures(self) -> list[StepLine]:
        return [line for line in self.lines if line.outcome is Outcome.FAILED]

    def taken(self) -> list[StepLine]:
        return [line for line in self.lines if line.outcome in TAKEN]

    def summary(self) -> str:
        counts = Counter(line.outcome.value for line in self.lines)
        parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        return (
            f"dunning as of {self.as_of:%Y-%m-%d %H:%M} UTC: "
            f"{self.candidates} overdue candidate(s)" + (f"; {parts}" if parts else "")
        )

    def table(self) -> list[dict[str, str]]:
        """Rows of the run's table artifact (business data only, never a key)."""
        return [
            {
                "request": line.request_id,
                "invoice": line.invoice_id or "",
                "step": line.step or "",
                "outcome": line.outcome.value,
                "days overdue": "" if line.days_overdue is None else str(line.days_overdue),
                "reason": line.reason or "",
            }
            for line in self.lines
        ]

    def markdown(self) -> str:
        out = [f"# Dunning as of {self.as_of:%Y-%m-%d %H:%M} UTC", "", self.summary(), ""]
        taken = self.taken()
        if taken:
            out += [f"- {line.one_line()}" for line in taken]
        else:
            out.append("No step was due.")
        return "\n".join(out) + "\n"
