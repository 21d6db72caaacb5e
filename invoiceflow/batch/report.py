"""What a billing run came to: counts by outcome, totals by currency, each failure and why.

Built from the manifest, so it covers every attempt of the run, not only the
last one: a resumed run reports the whole source.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel

from invoiceflow.batch.outcome import NOT_INVOICED, Outcome
from invoiceflow.db.models import BillingRun, BillingRunItem
from invoiceflow.money import format_minor_units
from invoiceflow.request import BillingRequest


class Failure(BaseModel):
    position: int
    request_id: str | None
    outcome: str
    reason: str


class BatchReport(BaseModel):
    run_id: str
    source: str
    attempts: int
    total: int
    counts: dict[str, int]  # outcome -> entries; "unfinished" for entries with none yet
    totals: dict[str, int]  # currency -> minor units invoiced (sent or settled since)
    failures: list[Failure]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.counts.get("unfinished")

    def failed_line(self) -> str:
        """What did not go well, in one line (the flow run's Failed state says it)."""
        failed = [f.request_id or f"entry {f.position}" for f in self.failures]
        line = f"{len(failed)} of {self.total} requests failed"
        if self.counts.get("unfinished"):
            line += f", {self.counts['unfinished']} did not finish"
        if failed:
            line += f" ({', '.join(failed[:10])}{', …' if len(failed) > 10 else ''})"
        return line

    def lines(self) -> list[str]:
        """The report as the CLI prints it."""
        counts = ", ".join(f"{count} {outcome}" for outcome, count in self.counts.items())
        out = [
            f"billing run {self.run_id} (attempt {self.attempts}): {self.total} requests: {counts}"
        ]
        for currency, amount in self.totals.items():
            out.append(f"invoiced {format_minor_units(amount, currency)}")
        for failure in self.failures:
            who = failure.request_id or f"entry {failure.position}"
            out.append(f"failed {who}: {failure.outcome}: {failure.reason}")
        return out

    def table(self) -> list[dict[str, str | int]]:
        """Rows for a Prefect table artifact: the counts, then one row per failure."""
        rows: list[dict[str, str | int]] = [
            {"request": "", "outcome": outcome, "count": count, "reason": ""}
            for outcome, count in self.counts.items()
        ]
        rows += [
            {
                "request": failure.request_id or f"entry {failure.position}",
                "outcome": failure.outcome,
                "count": 1,
                "reason": failure.reason,
            }
            for failure in self.failures
        ]
        return rows

    def markdown(self) -> str:
        out = [f"# Billing run `{self.run_id}`", "", f"**Source:** `{self.source}`"]
        out += [f"**Attempts:** {self.attempts} · **Requests:** {self.total}", ""]
        out += ["| outcome | requests |", "| --- | ---: |"]
        out += [f"| {outcome} | {count} |" for outcome, count in self.counts.items()]
        if self.totals:
            out += ["", "| currency | invoiced |", "| --- | ---: |"]
            out += [
                f"| {currency.upper()} | {format_minor_units(amount, currency)} |"
                for currency, amount in self.totals.items()
            ]
        if self.failures:
            out += ["", "## Failures", "", "| request | outcome | reason |", "| --- | --- | --- |"]
            out += [
                f"| `{f.request_id or f'entry {f.position}'}` | {f.outcome} | "
                f"{f.reason.replace('|', '/')} |"
                for f in self.failures
            ]
        return "\n".join(out) + "\n"


class RequestsFailed(Exception):
    """A billing run ended with failed or unfinished requests: what calling its flow
    raises (its state is Failed), with the run's report."""

    def __init__(self, report: BatchReport) -> None:
        super().__init__(f"billing run {report.run_id}: {report.failed_line()}")
        self.report = report

    def __reduce__(self) -> tuple[type[RequestsFailed], tuple[BatchReport]]:
        return type(self), (self.report,)  # pickles (Prefect may) with its report


def chunk_row(
    request: BillingRequest,
    outcome: str,
    invoice: str | None = None,
    link: str | None = None,
    reason: str | None = None,
) -> dict[str, str]:
    """One request's row in its chunk's table artifact. Business data only (the
    reason is `retry.describe`'s: no key, no secret)."""
    return {
        "request": request.request_id,
        "customer": request.customer.id,
        "amount": format_minor_units(request.total_amount(), request.currency),
        "invoice": invoice or "",
        "outcome": outcome,
        "link": link or "",
        "reason": reason or "",
    }


def build(run: BillingRun, items: Sequence[BillingRunItem]) -> BatchReport:
    counts: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    failures = []
    for item in items:
        if item.outcome is None:
            counts["unfinished"] += 1
            continue
        outcome = Outcome(item.outcome)
        counts[outcome.value] += 1
        if outcome.done:
            if item.currency and item.total_amount is not None and outcome not in NOT_INVOICED:
                totals[item.currency] += item.total_amount
        else:
            failures.append(
                Failure(
                    position=item.position,
                    request_id=item.request_id,
                    outcome=outcome.value,
                    reason=item.reason or "",
                )
            )
    order = {outcome.value: index for index, outcome in enumerate(Outcome)}
    return BatchReport(
        run_id=run.run_id,
        source=run.source,
        attempts=run.attempts,
        total=run.total,
        counts=dict(sorted(counts.items(), key=lambda kv: order.get(kv[0], len(order)))),
        totals=dict(sorted(totals.items())),
        failures=failures,
    )
