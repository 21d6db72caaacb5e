"""The pipeline's stop point for a run held for approval: a filled draft, recorded `held`."""

from __future__ import annotations

from invoiceflow import ledger
from invoiceflow.attempt import Attempt
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.runtime import Runtime


def mark_held(rt: Runtime, request_id: str, attempt: Attempt) -> bool:
    """Record the request `held` once its draft has every line; False when it is past that.

    A request an earlier run finalized already cannot be held (a finalized
    invoice is immutable): it goes on to be sent, as that run would have.
    """
    with ledger.locked(rt.engine, request_id, attempt.owner) as (session, row):
        if row.point is RecoveryPoint.HELD:
            return True
        if row.progress.reached(RecoveryPoint.FINALIZED):
            return False
        if row.point is not RecoveryPoint.LINES_ADDED:
            raise RuntimeError(f"{request_id} is at {row.recovery_point}, not a filled draft")
        ledger.place(
            session,
            row,
            RecoveryPoint.HELD,
            "held for approval",
            invoice=row.stripe_invoice_id,
        )
    return True
