"""What we tell users about a request: the flow's return value and `invoiceflow status`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import BaseModel

from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.db.utc import as_utc
from invoiceflow.money import format_minor_units

SECONDS_PER_DAY = 86_400


class RequestStatus(BaseModel):
    request_id: str
    state: RecoveryPoint
    stripe_invoice_id: str | None
    invoice_number: str | None
    invoice_status: str | None
    currency: str
    total_amount: int
    amount_due: int | None
    hosted_invoice_url: str | None
    attempts: int
    last_error: str | None
    customer: str | None = None
    # Stripe's due date of the sent invoice; days past it while still open.
    due_date: datetime | None = None
    days_overdue: int | None = None
    # Stripe's time a payment of the open invoice began processing (a bank debit).
    payment_pending_since: datetime | None = None

    @classmethod
    def from_row(cls, row: BillingRequestRow, now: datetime | None = None) -> RequestStatus:
        return cls(
            request_id=row.request_id,
            state=row.point,
            stripe_invoice_id=row.stripe_invoice_id,
            invoice_number=row.invoice_number,
            invoice_status=row.invoice_status,
            currency=row.currency,
            total_amount=row.total_amount,
            amount_due=row.amount_due,
            hosted_invoice_url=row.hosted_invoice_url,
            attempts=row.attempts,
            last_error=row.last_error,
            customer=row.customer_key,
            due_date=as_utc(row.due_date),
            days_overdue=_days_overdue(row, now or datetime.now(UTC)),
            payment_pending_since=as_utc(row.payment_pending_since),
        )

    @property
    def payment_pending(self) -> bool:
        """A payment is processing: neither paid nor failed yet (a bank debit takes days)."""
        return self.payment_pending_since is not None and self.state is RecoveryPoint.SENT

    @property
    def delivered(self) -> bool:
        """Sent or further along the happy path: the user's job is done."""
        return self.state.reached(RecoveryPoint.SENT) and self.state not in (
            RecoveryPoint.FAILED,
            RecoveryPoint.REJECTED,  # a held draft deleted: never billed
        )

    def one_line(self) -> str:
        amount = format_minor_units(self.total_amount, self.currency)
        invoice = self.stripe_invoice_id or "no invoice yet"
        number = f" {self.invoice_number}" if self.invoice_number else ""
        state = "payment pending" if self.payment_pending else self.state.value
        line = f"{self.request_id}: {state} — {invoice}{number}, {amount}"
        if self.hosted_invoice_url and self.delivered:
            line += f", {self.hosted_invoice_url}"
        if self.days_overdue is not None:
            line += f" — {_plural(self.days_overdue, 'day')} overdue"
        elif self.state is RecoveryPoint.SENT and self.due_date is not None:
            line += f" — due {self.due_date:%Y-%m-%d}"
        # A failed run's reason; on a sent invoice, why its last payment failed.
        if self.last_error and self.state in (RecoveryPoint.FAILED, RecoveryPoint.SENT):
            line += f" — {self.last_error}"
        return line


class CurrencyTotals(BaseModel):
    """One currency's figures over the requests shown (minor units)."""

    currency: str
    requests: int = 0
    # Only what was invoiced: sent, then paid, void or uncollectible. A request
    # still planned, on its way or failed has no invoice and bills nothing yet.
    billed: int = 0
    not_billed: int = 0  # how many of `requests` have no sent invoice
    paid: int = 0
    outstanding: int = 0  # sent and still open: what customers owe
    overdue: int = 0  # the part of `outstanding` past its due date

    def one_line(self) -> str:
        money = {
            name: format_minor_units(getattr(self, name), self.currency)
            for name in ("billed", "paid", "outstanding", "overdue")
        }
        count = _plural(self.requests, "request")
        if self.not_billed:
            count += f" ({self.not_billed} not billed)"
        return f"{self.currency.upper()}: {count}, " + ", ".join(
            f"{name} {value}" for name, value in money.items()
        )


def totals_by_currency(statuses: Iterable[RequestStatus]) -> list[CurrencyTotals]:
    totals: dict[str, CurrencyTotals] = {}
    for status in statuses:
        sums = totals.setdefault(status.currency, CurrencyTotals(currency=status.currency))
        sums.requests += 1
        if status.delivered:
            sums.billed += status.total_amount
        else:
            sums.not_billed += 1
        if status.state is RecoveryPoint.PAID:
            sums.paid += status.total_amount
        elif status.state is RecoveryPoint.SENT:
            owed = status.total_amount if status.amount_due is None else status.amount_due
            sums.outstanding += owed
            if status.days_overdue is not None:
                sums.overdue += owed
    return [totals[currency] for currency in sorted(totals)]


def _days_overdue(row: BillingRequestRow, now: datetime) -> int | None:
    """Whole days past Stripe's due date, for an invoice still open; else None."""
    due = as_utc(row.due_date)
    if row.point is not RecoveryPoint.SENT or due is None or due >= now:
        return None
    return math.floor((now - due).total_seconds() / SECONDS_PER_DAY)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
