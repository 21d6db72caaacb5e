"""One reconciliation, start to end: events, then invoices, then stuck requests.

The order matters. Events first: they say exactly what happened and when, and
the receiver's own code applies them. The invoice sweep then covers what no
event told us (events past retention, a status changed without one), and
finds drift. Stuck requests come last, minus any with drift: running the
flow over a hand-edited draft would only fail, or worse, finalize it. Only a
request that a run started can be stuck: one only submitted waits for its
billing run, and finishing it here would bill it early (`stuck.started`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import col, select

from invoiceflow import progress
from invoiceflow.db.engine import reading
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.reconcile.events import sweep_events
from invoiceflow.reconcile.invoices import sweep_invoices
from invoiceflow.reconcile.report import ReconcileReport
from invoiceflow.reconcile.stuck import Resume, resume_stuck, stuck_requests
from invoiceflow.reconcile.window import (
    event_start,
    oldest_request_start,
    past_retention,
    read_cursor,
)
from invoiceflow.runtime import Runtime

# Requests Stripe may still move: not yet settled, or uncollectible (which may yet
# be paid or voided).
_FINISHED = (RecoveryPoint.PAID.value, RecoveryPoint.VOID.value, RecoveryPoint.REJECTED.value)


def reconcile(
    rt: Runtime, *, since: datetime | None, stale_minutes: float, resume: Resume
) -> ReconcileReport:
    """Bring our ledger in line with Stripe; `since` widens the sweeps (default: the cursor)."""
    report = ReconcileReport()
    before = {row.request_id: _state(row) for row in _open_requests(rt)}
    cursor = read_cursor(rt.engine)
    start = event_start(since, cursor, _open_requests(rt))
    if start is not None:
        if past_retention(start):
            report.notes.append(
                f"sweeping events since {_day(start)}: Stripe keeps events for 30 days, so "
                "older ones may be gone; the invoice sweep reads those invoices directly"
            )
            progress.note("%s", report.notes[-1])
        sweep_events(rt, start, report, advance=cursor is None or start <= cursor)

    rows = _open_requests(rt)  # after the events moved some of them
    listing_start = min(
        (s for s in (start, oldest_request_start(rows)) if s is not None), default=None
    )
    sweep = sweep_invoices(rt, rows, listing_start, report)

    unfinished = [row for row in _open_requests(rt) if not row.point.is_terminal]
    stuck = [
        row
        for row in stuck_requests(unfinished, stale_minutes)
        if row.request_id not in sweep.drifted
    ]
    resume_stuck(stuck, resume, report)

    after = {row.request_id: _state(row) for row in _open_requests(rt)}
    report.unchanged = sum(
        1
        for request_id, state in before.items()
        if after.get(request_id) == state and request_id not in sweep.drifted
    )
    return report


def _state(row: BillingRequestRow) -> tuple[str, str, int]:
    return row.recovery_point, row.progress_point, row.attempts


def _open_requests(rt: Runtime) -> list[BillingRequestRow]:
    with reading(rt.engine) as session:
        statement = (
            select(BillingRequestRow)
            .where(col(BillingRequestRow.recovery_point).not_in(_FINISHED))
            .order_by(col(BillingRequestRow.created_at))
        )
        return list(session.exec(statement).all())


def _day(epoch: int) -> str:
    return f"{datetime.fromtimestamp(epoch, UTC):%Y-%m-%d}"
