"""A person's decision on a held billing run: approve (finalize, send) or reject (delete).

The decision is per request, recorded before any Stripe call, under the row
lock: `held` → `lines_added` ("approved by …") or the draft deleted, then
`rejected` ("rejected by … because …"). A request gets one decision; a run
one of them (approving a run with a rejected request, or rejecting one with an
approved request, is refused before anything is done).

Approving hands each request to the pipeline (`pipeline.bill`): the same
finalize and send steps, under the same idempotency keys, looking in Stripe
before writing again; a crash anywhere resumes with `approve` again, and a
rerun of a finished approval makes no Stripe call at all (the manifest says
`invoiced`). Rejecting deletes each draft through `write_once` too, looking
first (Stripe ignores idempotency keys on DELETE), so a rerun finds it gone.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import stripe
from sqlmodel import Session

from invoiceflow import lease, ledger, pipeline
from invoiceflow.attempt import Attempt
from invoiceflow.batch import manifest
from invoiceflow.batch.outcome import Outcome, of_point
from invoiceflow.db.engine import transaction
from invoiceflow.db.models import BillingRequestRow, BillingRunItem, RecoveryPoint
from invoiceflow.invoicing import retrieve_invoice
from invoiceflow.request import BillingRequest
from invoiceflow.retry import describe
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_keys import request_step_key
from invoiceflow.stripe_write import write_once

_log = logging.getLogger(__name__)

# How long a decision waits for a run still holding one of the requests.
LEASE_PATIENCE_SECONDS = 30.0


class DecisionRefused(Exception):
    """The run cannot take this decision: no such run, or nothing held in it."""


class DecidedOtherwise(DecisionRefused):
    """The run (or a request of it) was already decided the other way."""


@dataclass
class Decision:
    """What approving or rejecting a run came to, request by request."""

    run_id: str
    decided: list[str] = field(default_factory=list)  # by this command
    already: list[str] = field(default_factory=list)  # by an earlier one
    failures: list[str] = field(default_factory=list)  # "request: reason"


def held_items(rt: Runtime, run_id: str) -> list[BillingRunItem]:
    """The run's entries that were held for approval (their outcome says what became of them)."""
    loaded = manifest.load(rt.engine, run_id)
    if loaded is None:
        raise DecisionRefused(
            f"no billing run {run_id!r}; `invoiceflow status --run` lists runs' requests"
        )
    decided = {Outcome.HELD.value, Outcome.REJECTED.value}
    items = [
        item
        for item in loaded[1]
        if item.request_id and (item.outcome in decided or _was_held(rt, item.request_id))
    ]
    if not items:
        raise DecisionRefused(
            f"billing run {run_id!r} holds nothing for approval (run it with --hold)"
        )
    return items


def _was_held(rt: Runtime, request_id: str) -> bool:
    """An entry approved earlier, whose manifest row now says how it ended."""
    return any(
        event.to_point == RecoveryPoint.HELD.value
        for event in ledger.audit_trail(rt.engine, request_id)
    )


def approve(rt: Runtime, run_id: str, by: str, log: pipeline.Log | None = None) -> Decision:
    """Finalize and send every held draft of the run, once."""
    items = held_items(rt, run_id)
    rows = {item.request_id: ledger.require(rt.engine, str(item.request_id)) for item in items}
    rejected = [rid for rid, row in rows.items() if row.point is RecoveryPoint.REJECTED]
    if rejected:
        raise DecidedOtherwise(
            f"billing run {run_id!r} was rejected ({rejected[0]}); it cannot be approved"
        )
    decision = Decision(run_id)
    for item in items:
        request_id = str(item.request_id)
        row = rows[request_id]
        done = _sent(row)
        if done is not None:  # sent (or settled since) by an earlier approve
            if item.outcome != done.value:
                manifest.record(rt.engine, run_id, item.position, done, None)
            decision.already.append(request_id)
            continue
        try:
            _release(rt, request_id, by)
            owner = lease.new_owner(f"approve-{uuid.uuid4().hex[:12]}")
            request = BillingRequest.model_validate(row.payload)
            attempt = Attempt(owner, request_id, quiet=True)
            billed = pipeline.bill(
                rt,
                request,
                owner,
                pipeline.in_sequence(rt),
                log or _log,
                LEASE_PATIENCE_SECONDS,
                attempt,
            )
        except Exception as exc:
            decision.failures.append(f"{request_id}: {describe(exc)}")
            continue
        outcome = _sent(billed.row)
        if billed.error is not None or outcome is None:
            reason = (
                describe(billed.error) if billed.error else f"ended at {billed.row.recovery_point}"
            )
            decision.failures.append(f"{request_id}: {reason}")
            continue
        manifest.record(rt.engine, run_id, item.position, outcome, None)
        decision.decided.append(request_id)
    return decision


def _sent(row: BillingRequestRow) -> Outcome | None:
    """The run outcome of a request sent (or settled since); None before that."""
    return of_point(row.point) if row.progress.reached(RecoveryPoint.SENT) else None


def _release(rt: Runtime, request_id: str, by: str) -> None:
    """`held` → `lines_added`, audited with who approved; nothing if decided already."""
    with transaction(rt.engine) as session:
        row = ledger.lock_row(session, request_id)
        if row is not None and row.point is RecoveryPoint.HELD:
            ledger.place(session, row, RecoveryPoint.LINES_ADDED, "approved", by=by)


def reject(rt: Runtime, run_id: str, by: str, reason: str) -> Decision:
    """Delete every held draft of the run and mark its requests rejected, with who and why."""
    items = held_items(rt, run_id)
    rows = {item.request_id: ledger.require(rt.engine, str(item.request_id)) for item in items}
    approved = [
        rid
        for rid, row in rows.items()
        if row.point not in (RecoveryPoint.HELD, RecoveryPoint.REJECTED)
    ]
    if approved:
        raise DecidedOtherwise(
            f"billing run {run_id!r} was approved ({approved[0]} is "
            f"{rows[approved[0]].recovery_point}); void sent invoices in Stripe instead"
        )
    decision = Decision(run_id)
    for item in items:
        request_id = str(item.request_id)
        if rows[request_id].point is RecoveryPoint.REJECTED:
            if item.outcome != Outcome.REJECTED.value:
                manifest.record(rt.engine, run_id, item.position, Outcome.REJECTED, reason)
            decision.already.append(request_id)
            continue
        owner = lease.new_owner(f"reject-{uuid.uuid4().hex[:12]}")
        try:
            ttl = rt.settings.lease_seconds
            with lease.held(rt.engine, request_id, owner, ttl, LEASE_PATIENCE_SECONDS):
                delete_draft(rt, request_id, Attempt(owner, request_id), by, reason)
        except Exception as exc:
            decision.failures.append(f"{request_id}: {describe(exc)}")
            continue
        manifest.record(rt.engine, run_id, item.position, Outcome.REJECTED, reason)
        decision.decided.append(request_id)
    return decision


def delete_draft(rt: Runtime, request_id: str, attempt: Attempt, by: str, reason: str) -> None:
    """Delete the request's held draft in Stripe, once, and record it rejected."""
    row = ledger.require(rt.engine, request_id)
    if row.point is RecoveryPoint.REJECTED:
        return
    if row.point is not RecoveryPoint.HELD:
        raise DecidedOtherwise(f"{request_id} is {row.recovery_point}, not held")
    invoice_id = row.stripe_invoice_id
    key = None
    if invoice_id is not None:
        _, key = write_once(
            rt,
            key=request_step_key(request_id, f"invoice.delete.{invoice_id}"),
            step="invoice.delete",
            request_id=request_id,
            write=_deleter(rt, invoice_id),
            find=lambda _intent: _gone(rt, invoice_id),
            what=f"delete draft {invoice_id}",
            look_first=True,  # Stripe ignores idempotency keys on DELETE: only a read tells
            attempt=attempt,
        )
    with ledger.locked(rt.engine, request_id, attempt.owner) as (session, row):
        _forget_invoice(session, row)
        if key is not None and invoice_id is not None:
            ledger.fulfil(session, key, invoice_id)
        ledger.place(
            session,
            row,
            RecoveryPoint.REJECTED,
            "rejected",
            by=by,
            reason=reason,
            invoice=invoice_id,
        )


def _deleter(rt: Runtime, invoice_id: str) -> Callable[[str], str]:
    def delete(key: str) -> str:
        try:
            return str(
                rt.stripe.v1.invoices.delete(invoice_id, options={"idempotency_key": key}).id
            )
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:  # deleted meanwhile (a retry whose first answer was lost)
                return invoice_id
            raise

    return delete


def _gone(rt: Runtime, invoice_id: str) -> str | None:
    """The draft's id if Stripe no longer has it; None while it is still a draft."""
    try:
        invoice = retrieve_invoice(rt, invoice_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return invoice_id
        raise
    if invoice.status == "draft":
        return None
    raise DecidedOtherwise(
        f"invoice {invoice_id} is {invoice.status} in Stripe, no longer a draft (finalized in the "
        "Dashboard?); void it there if it must not stand"
    )


def _forget_invoice(session: Session, row: BillingRequestRow) -> None:
    """The deleted draft is no longer the request's (the audit row keeps its id)."""
    row.stripe_invoice_id = None
    row.invoice_status = row.invoice_number = row.hosted_invoice_url = None
    for line in ledger.lines_in(session, row.request_id):
        line.stripe_line_id = None
        session.add(line)
