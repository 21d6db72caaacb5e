"""What we tell users about a request: the flow's return value and `invoiceflow status`."""

from __future__ import annotations

from pydantic import BaseModel

from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.money import format_minor_units


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

    @classmethod
    def from_row(cls, row: BillingRequestRow) -> RequestStatus:
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
        )

    @property
    def delivered(self) -> bool:
        """Sent or further along the happy path: the user's job is done."""
        return self.state.reached(RecoveryPoint.SENT) and self.state is not RecoveryPoint.FAILED

    def one_line(self) -> str:
        amount = format_minor_units(self.total_amount, self.currency)
        invoice = self.stripe_invoice_id or "no invoice yet"
        number = f" {self.invoice_number}" if self.invoice_number else ""
        line = f"{self.request_id}: {self.state.value} — {invoice}{number}, {amount}"
        if self.hosted_invoice_url and self.delivered:
            line += f", {self.hosted_invoice_url}"
        if self.last_error and self.state is RecoveryPoint.FAILED:
            line += f" — {self.last_error}"
        return line
