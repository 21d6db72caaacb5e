"""One overdue request's dunning, as a unit of work of its own.

For each candidate (a request at `sent` whose Stripe due date has passed):

1. take the request's lease briefly; another run holding it means "busy, next run";
2. read the invoice from Stripe once: not `open` any more (paid, voided or written
   off, even if the webhook never reached us) → record the settlement and stop;
3. settle any step an earlier run left half-done (its row recorded, the outcome
   unknown) by asking Stripe, never by writing again;
4. plan (`plan.py`): record the due step's row — and missed ones as skipped —
   *before* the Stripe call; then write under a key derived from our ids;
5. mark the step done and audit it in one transaction under the row lock.

Exactly once, even past Stripe's 24 h idempotency window: a reminder whose row
is pending counts the invoice's `invoice.sent` events (the first send, plus one
per reminder already done: anything beyond is the pending one); the final step
reads the invoice's status.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import stripe
from sqlalchemy.engine import Engine
from sqlmodel import col, or_, select

from invoiceflow import invoicing, lease, ledger, stripe_clock
from invoiceflow.db.engine import reading
from invoiceflow.db.models import BillingRequestRow, DunningStep, RecoveryPoint, utcnow
from invoiceflow.dunning.plan import Cadence, days_overdue, is_reminder, latest_due, plan
from invoiceflow.dunning.report import Outcome, StepLine
from invoiceflow.runtime import Runtime
from invoiceflow.settings import Settings
from invoiceflow.settlement import settled_point
from invoiceflow.stripe_keys import request_step_key
from invoiceflow.stripe_write import write_once

log = logging.getLogger(__name__)

# Dunning never waits long for a request another run is working on: the
# request is simply taken by the next scheduled run.
LEASE_PATIENCE_SECONDS = 2.0


class EventsExpired(RuntimeError):
    """Stripe no longer keeps the events that would tell whether a reminder went out."""


def cadence_of(settings: Settings) -> Cadence:
    return Cadence(tuple(settings.dunning_reminder_days), settings.dunning_final_days)


def candidates(engine: Engine, now: datetime) -> list[str]:
    """Requests whose sent invoice is past its due date (or whose due date we have
    not cached yet: the unit reads it from Stripe once and caches it)."""
    statement = (
        select(BillingRequestRow.request_id)
        .where(BillingRequestRow.recovery_point == RecoveryPoint.SENT.value)
        .where(col(BillingRequestRow.stripe_invoice_id).is_not(None))
        .where(
            or_(
                col(BillingRequestRow.due_date).is_(None),
                col(BillingRequestRow.due_date) < now.astimezone(UTC),
            )
        )
        .order_by(col(BillingRequestRow.due_date), col(BillingRequestRow.request_id))
    )
    with reading(engine) as session:
        return list(session.exec(statement).all())


def dun(rt: Runtime, request_id: str, as_of: datetime | None, owner: str) -> list[StepLine]:
    """Take whatever dunning step is due for one request, under its lease.

    Due as of `as_of`, or (None) as of the invoice's own time: its customer's test
    clock's, else the real one (`stripe_clock.invoice_now`)."""
    try:
        with lease.held(
            rt.engine, request_id, owner, rt.settings.lease_seconds, LEASE_PATIENCE_SECONDS
        ):
            return _Unit(rt, request_id, as_of, owner).run()
    except ledger.RequestBusy as exc:
        return [StepLine(request_id=request_id, outcome=Outcome.BUSY, reason=str(exc))]


class _Unit:
    """One request's dunning within one run; holds what the steps share."""

    def __init__(self, rt: Runtime, request_id: str, as_of: datetime | None, owner: str) -> None:
        self.rt = rt
        self.request_id = request_id
        self.as_of = as_of
        self.now = as_of or datetime.now(UTC)  # set from the invoice once it is read
        self.owner = owner
        self.cadence = cadence_of(rt.settings)
        self.lines: list[StepLine] = []
        self.invoice_id = ""
        self.overdue: int | None = None

    def line(self, step: str | None, outcome: Outcome, reason: str | None = None) -> None:
        self.lines.append(
            StepLine(
                request_id=self.request_id,
                invoice_id=self.invoice_id or None,
                step=step,
                outcome=outcome,
                days_overdue=self.overdue,
                reason=reason,
            )
        )

    def run(self) -> list[StepLine]:
        row = ledger.require(self.rt.engine, self.request_id)
        self.invoice_id = row.stripe_invoice_id or ""
        if row.point is not RecoveryPoint.SENT or not self.invoice_id:
            self.line(None, Outcome.SETTLED, f"request is {row.recovery_point}")
            return self.lines
        # The one read this run relies on.
        invoice = invoicing.retrieve_invoice(self.rt, self.invoice_id)
        self.now = self.as_of or stripe_clock.invoice_now(self.rt, invoice)
        due_date = _due_date(invoice)
        if due_date is not None:
            self.overdue = days_overdue(due_date, self.now)
        if row.due_date is None and due_date is not None:
            self._cache_due_date(due_date)
        if invoice.status != "open":
            return self._settled(invoice)
        if row.payment_pending_since is not None:  # the customer paid; the bank has yet to answer
            self.line(None, Outcome.PAYMENT_PENDING)
            return self.lines
        if due_date is None or due_date >= self.now:
            self.line(None, Outcome.NOT_DUE)
            return self.lines
        self._take_due_step(invoice, due_date)
        return self.lines

    # --- the sequence ------------------------------------------------------

    def _take_due_step(self, invoice: stripe.Invoice, due_date: datetime) -> None:
        latest = latest_due(due_date, self.cadence, self.now)
        current = latest[0] if latest else None
        # Half-done steps a later one superseded: settle them from Stripe first.
        for pending in self._pending():
            if pending.step != current:
                self._resolve(invoice, pending.step, not_sent=Outcome.SKIPPED)
        steps = self._steps()
        due = plan(due_date, self.cadence, self.now, recorded={s.step for s in steps})
        resuming = next((s for s in steps if s.step == current and s.done_at is None), None)
        if due.step is not None:
            self._record(due.step, due.step_due_at, due.skipped)
            step = due.step
        elif resuming is not None:
            step = resuming.step
        else:
            self.line(None, Outcome.NOTHING_DUE)
            return
        if is_reminder(step):
            self._remind(invoice, step, look_first=resuming is not None)
        else:
            self._write_off(invoice, step, look_first=resuming is not None)

    def _remind(self, invoice: stripe.Invoice, step: str, *, look_first: bool) -> None:
        invoice_id = self.invoice_id
        already = self._reminders_sent()
        try:
            _sent, key = write_once(
                self.rt,
                key=request_step_key(self.request_id, f"dunning.{step}.{invoice_id}"),
                step=f"dunning.{step}",
                request_id=self.request_id,
                write=lambda k: self.rt.stripe.v1.invoices.send_invoice(
                    invoice_id, options={"idempotency_key": k}
                ),
                find=lambda _intent: (
                    invoice if _reminder_went_out(self.rt, invoice, already) else None
                ),
                what=f"send {step} of {invoice_id}",
                look_first=look_first,
            )
        except EventsExpired as exc:
            self._finish(step, Outcome.UNVERIFIED, reason=str(exc))
            return
        except stripe.InvalidRequestError:
            if not self._stopped_by_settlement(step):
                raise
            return
        self._finish(step, Outcome.SENT, key=key)

    def _write_off(self, invoice: stripe.Invoice, step: str, *, look_first: bool) -> None:
        invoice_id = self.invoice_id
        action = self.rt.settings.dunning_final_action
        invoices = self.rt.stripe.v1.invoices

        def write(key: str) -> stripe.Invoice:
            options: stripe.RequestOptions = {"idempotency_key": key}
            if action == "void":
                return invoices.void_invoice(invoice_id, options=options)
            return invoices.mark_uncollectible(invoice_id, options=options)

        try:
            result, key = write_once(
                self.rt,
                key=request_step_key(self.request_id, f"dunning.{step}.{invoice_id}"),
                step=f"dunning.{step}",
                request_id=self.request_id,
                write=write,
                find=lambda _intent: _unless_open(invoicing.retrieve_invoice(self.rt, invoice_id)),
                what=f"{action} {invoice_id}",
                look_first=look_first,
            )
        except stripe.InvalidRequestError:
            if not self._stopped_by_settlement(step):
                raise
            return
        done = {"uncollectible": Outcome.UNCOLLECTIBLE, "void": Outcome.VOID}
        self._finish(step, done.get(result.status or "", Outcome.STOPPED), key=key)
        self._settle(result)

    # --- Stripe's word on what already happened ------------------------------

    def _settled(self, invoice: stripe.Invoice) -> list[StepLine]:
        """The invoice left `open` (paid, voided, written off): the sequence stops."""
        for pending in self._pending():
            self._resolve(invoice, pending.step, not_sent=Outcome.STOPPED)
        self._settle(invoice)
        self.line(None, Outcome.SETTLED, f"invoice {invoice.status}")
        return self.lines

    def _stopped_by_settlement(self, step: str) -> bool:
        """After Stripe refused a step: True if the invoice settled meanwhile (and
        that is recorded); False if it is still open and the refusal stands."""
        current = invoicing.retrieve_invoice(self.rt, self.invoice_id)
        if current.status == "open":
            return False
        self._finish(step, Outcome.STOPPED, reason=f"invoice {current.status}")
        self._settle(current)
        self.line(None, Outcome.SETTLED, f"invoice {current.status}")
        return True

    def _resolve(self, invoice: stripe.Invoice, step: str, *, not_sent: Outcome) -> None:
        """A step recorded by an earlier run that never heard Stripe's answer: decide
        from Stripe what happened, and record that without writing again."""
        if is_reminder(step):
            try:
                went_out = _reminder_went_out(self.rt, invoice, self._reminders_sent())
            except EventsExpired as exc:
                self._finish(step, Outcome.UNVERIFIED, reason=str(exc))
                return
            self._finish(step, Outcome.SENT if went_out else not_sent)
            return
        done = {"uncollectible": Outcome.UNCOLLECTIBLE, "void": Outcome.VOID}
        self._finish(step, done.get(invoice.status or "", not_sent))

    def _settle(self, invoice: stripe.Invoice) -> None:
        point = settled_point(invoice.status)
        if point is None:
            raise RuntimeError(f"invoice {invoice.id} is {invoice.status}; expected it settled")
        invoicing.record_settlement(self.rt, self.request_id, self.owner, invoice, point)

    # --- our records -----------------------------------------------------------

    def _steps(self) -> list[DunningStep]:
        with reading(self.rt.engine) as session:
            rows = session.exec(
                select(DunningStep).where(DunningStep.request_id == self.request_id)
            ).all()
        return sorted(rows, key=lambda s: self.cadence.order(s.step))

    def _pending(self) -> list[DunningStep]:
        return [s for s in self._steps() if s.done_at is None]

    def _reminders_sent(self) -> int:
        return sum(
            1 for s in self._steps() if is_reminder(s.step) and s.outcome == Outcome.SENT.value
        )

    def _cache_due_date(self, due_date: datetime) -> None:
        with ledger.locked(self.rt.engine, self.request_id, self.owner) as (session, row):
            row.due_date = due_date
            session.add(row)

    def _record(
        self, step: str, due_at: datetime | None, skipped: tuple[tuple[str, datetime], ...]
    ) -> None:
        """The step's row before its Stripe call; missed steps recorded as skipped.

        The row lock serialises every dunning write of the request, and the
        (request_id, step) primary key backs it: a step is recorded once.
        """
        with ledger.locked(self.rt.engine, self.request_id, self.owner) as (session, row):
            for name, at in skipped:
                if session.get(DunningStep, (self.request_id, name)) is None:
                    session.add(self._step_row(name, at, Outcome.SKIPPED.value, utcnow()))
                    ledger.note(
                        session,
                        row,
                        f"dunning {name} skipped: missed, superseded by {step}",
                        invoice=self.invoice_id,
                        days_overdue=self.overdue,
                    )
                    self.line(name, Outcome.SKIPPED, f"superseded by {step}")
            if session.get(DunningStep, (self.request_id, step)) is None:
                session.add(self._step_row(step, due_at or self.now, None, None))

    def _step_row(
        self, step: str, due_at: datetime, outcome: str | None, done_at: datetime | None
    ) -> DunningStep:
        return DunningStep(
            request_id=self.request_id,
            step=step,
            invoice_id=self.invoice_id,
            due_at=due_at,
            outcome=outcome,
            done_at=done_at,
        )

    def _finish(
        self, step: str, outcome: Outcome, *, key: str | None = None, reason: str | None = None
    ) -> None:
        """Mark the step done and audit it, in one transaction under the row lock."""
        with ledger.locked(self.rt.engine, self.request_id, self.owner) as (session, row):
            step_row = session.get(DunningStep, (self.request_id, step))
            assert step_row is not None, f"dunning step {step} was never recorded"
            if step_row.done_at is not None:
                return
            step_row.outcome = outcome.value
            step_row.done_at = utcnow()
            session.add(step_row)
            if key is not None:
                ledger.fulfil(session, key, self.invoice_id)
            detail: dict[str, object] = {"invoice": self.invoice_id, "days_overdue": self.overdue}
            if reason:
                detail["reason"] = reason
            ledger.note(session, row, f"dunning {step}: {outcome.value}", **detail)
        self.line(step, outcome, reason)
        log.info("Dunning %s of %s: %s", step, self.request_id, outcome)


def _reminder_went_out(rt: Runtime, invoice: stripe.Invoice, reminders_sent: int) -> bool:
    """Whether Stripe emailed the invoice once more than the first send plus the
    reminders we recorded as sent: then the pending reminder went out."""

    def expired(finalized: datetime) -> Exception:
        return EventsExpired(
            f"invoice {invoice.id} was finalized on {finalized:%Y-%m-%d}; Stripe no longer keeps "
            "the events that would show whether this reminder was emailed, so it is not resent"
        )

    return invoicing.times_emailed(rt, invoice, expired) > 1 + reminders_sent


def _unless_open(invoice: stripe.Invoice) -> stripe.Invoice | None:
    return None if invoice.status == "open" else invoice


def _due_date(invoice: stripe.Invoice) -> datetime | None:
    due = getattr(invoice, "due_date", None)
    return datetime.fromtimestamp(due, UTC) if due else None
