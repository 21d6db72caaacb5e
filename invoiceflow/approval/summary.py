"""What a person reads before approving a held run: how many, how much, who is new,
the largest invoices, and what failed (those are not part of the approval)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlmodel import col, select

from invoiceflow.batch import manifest
from invoiceflow.db.engine import reading
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.money import format_minor_units
from invoiceflow.runtime import Runtime

LARGEST = 5
# A customer is new to us when none of its requests outside this run was ever sent.
_BILLED = [
    p.value
    for p in (
        RecoveryPoint.SENT,
        RecoveryPoint.PAID,
        RecoveryPoint.VOID,
        RecoveryPoint.UNCOLLECTIBLE,
    )
]


@dataclass
class HeldSummary:
    run_id: str
    held: int = 0
    totals: dict[str, int] = field(default_factory=dict)  # currency -> minor units held
    new_customers: list[str] = field(default_factory=list)
    largest: list[tuple[str, str, str, str]] = field(
        default_factory=list
    )  # request, customer, amount, invoice
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # request, outcome, reason

    def lines(self) -> list[str]:
        out = [f"held {self.held} draft invoice(s) of billing run {self.run_id} for approval"]
        out += [f"held {format_minor_units(amount, ccy)}" for ccy, amount in self.totals.items()]
        if self.new_customers:
            out.append(f"new customers: {', '.join(self.new_customers)}")
        out += [f"largest: {r} ({c}) {a}, {i}" for r, c, a, i in self.largest]
        out += [f"not held {r}: {o}: {why}" for r, o, why in self.failures]
        return out

    def markdown(self) -> str:
        out = [f"# Billing run `{self.run_id}` held for approval", ""]
        out += [f"**Held drafts:** {self.held} · **Failed (not held):** {len(self.failures)}", ""]
        out += ["| currency | total held |", "| --- | ---: |"]
        out += [f"| {c.upper()} | {format_minor_units(a, c)} |" for c, a in self.totals.items()]
        out += ["", f"**New customers:** {', '.join(self.new_customers) or 'none'}", ""]
        out += [
            "## Largest invoices",
            "",
            "| request | customer | amount | draft |",
            "| --- | --- | ---: | --- |",
        ]
        out += [f"| `{r}` | {c} | {a} | {i} |" for r, c, a, i in self.largest]
        if self.failures:
            out += ["", "## Failures", "", "| request | outcome | reason |", "| --- | --- | --- |"]
            out += [f"| `{r}` | {o} | {why.replace('|', '/')} |" for r, o, why in self.failures]
        out += [
            "",
            "## Decide",
            "",
            f"- approve: `{approve_command(self.run_id)}`",
            f"- reject: `{reject_command(self.run_id)}`",
        ]
        return "\n".join(out) + "\n"


def approve_command(run_id: str) -> str:
    return f"invoiceflow approve {run_id}"


def reject_command(run_id: str) -> str:
    return f"invoiceflow reject {run_id} --reason TEXT"


def summarize(rt: Runtime, run_id: str) -> HeldSummary:
    """The held run as the manifest and the ledger have it now."""
    loaded = manifest.load(rt.engine, run_id)
    summary = HeldSummary(run_id)
    if loaded is None:
        return summary
    items = loaded[1]
    ids = [str(item.request_id) for item in items if item.request_id]
    with reading(rt.engine) as session:
        rows = (
            session.exec(
                select(BillingRequestRow).where(col(BillingRequestRow.request_id).in_(ids))
            ).all()
            if ids
            else []
        )
        held = [row for row in rows if row.point is RecoveryPoint.HELD]
        customers = {row.customer_key for row in held}
        billed_before = (
            set(
                session.exec(
                    select(BillingRequestRow.customer_key)
                    .where(col(BillingRequestRow.customer_key).in_(customers))
                    .where(col(BillingRequestRow.progress_point).in_(_BILLED))
                    .where(col(BillingRequestRow.request_id).not_in(ids))
                ).all()
            )
            if customers
            else set()
        )
    totals: Counter[str] = Counter()
    for row in held:
        totals[row.currency] += row.total_amount
    summary.held = len(held)
    summary.totals = dict(sorted(totals.items()))
    summary.new_customers = sorted(customers - billed_before)
    summary.largest = [
        (
            row.request_id,
            row.customer_key,
            format_minor_units(row.total_amount, row.currency),
            row.stripe_invoice_id or "",
        )
        for row in sorted(held, key=lambda r: (-r.total_amount, r.request_id))[:LARGEST]
    ]
    summary.failures = [
        (
            item.request_id or f"entry {item.position}",
            item.outcome or "unfinished",
            item.reason or "",
        )
        for item in items
        if item.outcome not in ("held", "invoiced", "paid", "void", "uncollectible", "rejected")
    ]
    return summary
