"""Requests stuck mid-way: a run crashed, or failed on something temporary, and
nobody ran it again.

Only a request that a run started can be stuck. One that was only submitted
(`invoiceflow submit`, for the next billing run) is waiting, not stuck: its
`attempts` is 0, because every run counts its attempt in the same transaction
that takes the request's lease, before its first Stripe call.

Finishing one is just running the invoice flow again: every step resumes
where the request stands and looks in Stripe before writing, so an invoice
sent by a run that died before recording it is found, not sent twice.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from invoiceflow import progress
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint, utcnow
from invoiceflow.db.utc import as_utc
from invoiceflow.reconcile.report import ReconcileReport
from invoiceflow.request import BillingRequest
from invoiceflow.retry import describe
from invoiceflow.status import RequestStatus

# Runs the invoice flow for one request (the flow is passed in: imports go one way).
Resume = Callable[[BillingRequest], RequestStatus]

# A failure worth another run, as `retry.describe` wrote it into `last_error`:
# the connection, Stripe's 5xx/409/429, the database, the rate limit's store.
# Anything else (a refused card, a mismatched invoice) would only fail the same way again.
_TEMPORARY = re.compile(
    r"\b(APIConnectionError|RateLimitError|RateLimitStoreDown|OperationalError|TimeoutError"
    r"|ConnectionError)\b"
    r"|\bHTTP (5\d\d|409|429)\b"
)


def is_temporary(last_error: str | None) -> bool:
    return bool(last_error and _TEMPORARY.search(last_error))


def started(row: BillingRequestRow) -> bool:
    """A run took the request at least once; False while it only waits for one."""
    return row.attempts > 0


def stuck_requests(
    rows: Sequence[BillingRequestRow], stale_minutes: float, now: datetime | None = None
) -> list[BillingRequestRow]:
    """Of `rows`, those a run started, below `sent`, that no run holds and nobody
    touched for `stale_minutes`."""
    cutoff = (now or utcnow()) - timedelta(minutes=stale_minutes)
    return [
        row
        for row in rows
        if started(row)
        and not row.progress.reached(RecoveryPoint.SENT)
        and row.point is not RecoveryPoint.HELD  # waits for a person, not stuck
        and (row.point is not RecoveryPoint.FAILED or is_temporary(row.last_error))
        and not _leased(row)
        and as_utc(row.updated_at) <= cutoff
    ]


def _leased(row: BillingRequestRow) -> bool:
    return row.lease_owner is not None and (row.lease_expires_at or 0) >= time.time()


def resume_stuck(
    rows: Sequence[BillingRequestRow], resume: Resume, report: ReconcileReport
) -> None:
    """Run the invoice flow for each of `rows`; a failure is reported, the others go on."""
    for row in rows:
        progress.note("finishing %s (stuck at %s)", row.request_id, row.recovery_point)
        try:
            status = resume(BillingRequest.model_validate(row.payload))
        except Exception as exc:
            report.failures.append(
                f"{row.request_id}: stuck at {row.progress_point}, still: {describe(exc)}"
            )
            continue
        report.resumed += 1
        invoice = status.stripe_invoice_id or "no invoice"
        report.changes.append(
            f"resumed {row.request_id}: {row.progress_point} → {status.state.value} ({invoice})"
        )
