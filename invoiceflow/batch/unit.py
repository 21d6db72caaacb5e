"""Bill one entry of a billing run, and record in its manifest how that ended.

A unit never raises for its request's sake: whatever goes wrong with one
request (invalid, conflicting, refused by Stripe, a Stripe outage that outlasts
the retries, another run holding it) becomes that entry's outcome and reason,
and the run goes on with the others.

A request another run holds is `busy` after a short wait, as in dunning, not
after a lease TTL: the run comes back to it once the others are done
(`flows.billing_run.bill_entries`) instead of holding a worker thread for
minutes. The lease makes either attempt safe: whoever holds it bills the
request once; the other then only reads where it stands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from invoiceflow import ledger, pipeline
from invoiceflow.attempt import Attempt
from invoiceflow.batch import manifest
from invoiceflow.batch.outcome import Outcome, of_exit, of_point
from invoiceflow.db.models import BillingRequestRow
from invoiceflow.outcomes import classify
from invoiceflow.request import BillingRequest
from invoiceflow.retry import describe
from invoiceflow.runtime import Runtime

_log = logging.getLogger(__name__)

# How long a unit waits for a request another run holds before calling it busy.
LEASE_PATIENCE_SECONDS = 2.0


@dataclass(frozen=True)
class UnitResult:
    outcome: Outcome
    reason: str | None = None
    invoice: str | None = None  # the Stripe invoice, as "in_… (number)", once there is one
    row: BillingRequestRow | None = None  # where the attempt left the request, to tell its story


def bill_entry(
    rt: Runtime,
    run_id: str,
    position: int,
    request: BillingRequest,
    owner: str,
    log: pipeline.Log = _log,
    hold: bool = False,
) -> UnitResult:
    """Submit the request, take it as far as sent (`hold`: a filled draft, held for
    approval), and record the outcome in the manifest."""
    result = _bill(rt, request, owner, log, hold)
    manifest.record(rt.engine, run_id, position, result.outcome, result.reason)
    if result.reason is None:
        log.info("Request %s: %s, invoice %s", request.request_id, result.outcome, result.invoice)
    else:
        log.warning("Request %s: %s: %s", request.request_id, result.outcome, result.reason)
    return result


def _bill(
    rt: Runtime, request: BillingRequest, owner: str, log: pipeline.Log, hold: bool = False
) -> UnitResult:
    try:
        ledger.submit(rt.engine, request)
        # Quiet steps: one line per request (below), not one per step.
        attempt = Attempt(owner, request.request_id, quiet=True)
        billed = pipeline.bill(
            rt, request, owner, pipeline.in_sequence(rt), log, LEASE_PATIENCE_SECONDS, attempt, hold
        )
    except Exception as exc:  # never got to work on it: conflict, busy, database down
        return failed(exc)
    told = billed.row if billed.tells_story else None
    if billed.error is not None:
        return replace(failed(billed.error), row=told)
    outcome = of_point(billed.row.point)
    if outcome is None:  # cannot happen after a clean attempt; say so rather than guess
        return UnitResult(Outcome.UNEXPECTED, f"ended at {billed.row.recovery_point}", row=told)
    row = billed.row
    return UnitResult(outcome, invoice=f"{row.stripe_invoice_id} ({row.invoice_number})", row=told)


def failed(exc: BaseException) -> UnitResult:
    """The outcome and one-line reason for a failure (no secrets: `retry.describe`)."""
    if isinstance(exc, ledger.LeaseLost):
        return UnitResult(Outcome.TAKEN_OVER, describe(exc))
    return UnitResult(of_exit(classify(exc)), describe(exc))
