"""What a reconciliation changed, found and left alone: one line per change."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ReconcileReport(BaseModel):
    """The counts a scheduler graphs, and the lines a person reads.

    `changes` holds one line per thing this run changed in our ledger (an event
    applied, a settlement recorded, a request finished); `drift` what differs
    between Stripe and our ledger and was left alone for a human; `failures`
    requests a resume could not finish; `notes` what the person should know
    about the sweep itself (events past Stripe's retention). `settled_ids`: the
    requests the invoice sweep settled, with no event to tell their ending in
    the Prefect UI (the flow tells it, `invoiceflow.endings`).
    """

    events_applied: int = 0
    settled: int = 0
    resumed: int = 0
    unchanged: int = 0
    changes: list[str] = Field(default_factory=list)
    drift: list[str] = Field(default_factory=list)
    failures: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    settled_ids: list[str] = Field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def clean(self) -> bool:
        """Nothing changed, nothing to look at: Stripe and our ledger agree."""
        return not (self.changes or self.drift or self.failures)

    def summary(self) -> str:
        if self.clean:
            return f"nothing to change ({self.unchanged} unchanged)"
        parts = [
            f"{self.events_applied} event{'' if self.events_applied == 1 else 's'} applied",
            f"{self.settled} settled",
            f"{self.resumed} resumed",
            f"{len(self.drift)} drift",
        ]
        if self.failures:
            parts.append(f"{len(self.failures)} failed")
        parts.append(f"{self.unchanged} unchanged")
        return "reconciled: " + ", ".join(parts)

    def markdown(self) -> str:
        """The run's artifact: the summary, then every line under its heading."""
        out = ["# Reconciliation", "", self.summary()]
        for title, lines in (
            ("Changed", self.changes),
            ("Drift (left alone)", self.drift),
            ("Could not finish", self.failures),
            ("Notes", self.notes),
        ):
            if lines:
                out += ["", f"## {title}", "", *(f"- {line}" for line in lines)]
        return "\n".join(out) + "\n"
