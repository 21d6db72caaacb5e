"""The request ledger: what we asked for, how far it got, and who is working on it.

Every change of a request's recovery point happens here, in one transaction
that also stores the Stripe id the step produced, closes the step's recorded
write intent and appends to the audit log. A run may only change a request
while it holds the request's lease; the lease check happens under the row lock
in that same transaction, so a run whose lease was taken over cannot write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from invoiceflow import progress
from invoiceflow.attempt import note_commit
from invoiceflow.db.engine import reading, table_of, transaction, upsert_into
from invoiceflow.db.models import (
    AuditEvent,
    BillingRequestRow,
    BillingRun,
    BillingRunItem,
    RecoveryPoint,
    RequestLine,
    utcnow,
)
from invoiceflow.request import BillingRequest
from invoiceflow.stripe_keys import price_lookup_key

# Write intents have a module of their own; callers reach them here, as before.
from invoiceflow.write_intents import Intent as Intent
from invoiceflow.write_intents import fulfil as fulfil
from invoiceflow.write_intents import intend as intend
from invoiceflow.write_intents import intend_in as intend_in
from invoiceflow.write_intents import writes_for as writes_for


class RequestConflict(Exception):
    """The request id exists with different content. A new invoice needs a new id."""


class LeaseLost(Exception):
    """Another run took this request over; this run must stop writing."""


class RequestBusy(Exception):
    """Another run held the request for longer than we were willing to wait."""


class RequestNotFound(LookupError):
    pass


# How often a run waiting for another run's lease checks again, and how often
# it says that it is still waiting.
LEASE_POLL_SECONDS = 0.2
LEASE_WAIT_NOTE_SECONDS = 10.0


def submit(engine: Engine, request: BillingRequest) -> BillingRequestRow:
    """Store a request as received, or return the stored one if it is the same request.

    The UNIQUE primary key on request_id decides between two concurrent submits:
    the row is inserted first (ON CONFLICT DO NOTHING) and read only when it was
    there already, so a new request costs one transaction and no read.
    """
    fingerprint = request.fingerprint()
    row = _new_row(request, fingerprint)
    with transaction(engine) as session:
        if _insert_row_if_absent(session, row):
            _insert_lines(session, request)
            _audit_received(session, row)
            return row
        existing = session.get(BillingRequestRow, request.request_id)
    assert existing is not None  # the conflict was its primary key, and rows are never deleted
    if existing.fingerprint != fingerprint:
        raise RequestConflict(_conflict(existing))
    return existing


def _conflict(existing: BillingRequestRow) -> str:
    """What to do with changed content: a sent invoice is changed by a Stripe revision."""
    rid = existing.request_id
    if (
        existing.progress.reached(RecoveryPoint.SENT)
        and existing.point is not RecoveryPoint.REJECTED
    ):
        return (
            f"request_id {rid!r} was already sent with different content; to change its "
            "invoice run `invoiceflow amend FILE` (a Stripe revision), or use a new "
            "request_id for a new invoice"
        )
    return (
        f"request_id {rid!r} was already submitted with different content; "
        "resubmit the original content, or use a new request_id for a new invoice"
    )


def _insert_row_if_absent(session: Session, row: BillingRequestRow) -> bool:
    """INSERT … ON CONFLICT (request_id) DO NOTHING RETURNING request_id: True if inserted."""
    table = table_of(BillingRequestRow)
    values = {column.name: getattr(row, column.name) for column in table.columns}
    statement = (
        upsert_into(session, table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["request_id"])
        .returning(table.c.request_id)
    )
    return session.connection().execute(statement).first() is not None


def _insert_lines(session: Session, request: BillingRequest) -> None:
    table = table_of(RequestLine)
    rows = [
        {column.name: getattr(line, column.name) for column in table.columns}
        for line in _new_lines(request)
    ]
    session.connection().execute(table.insert(), rows)


def _audit_received(session: Session, row: BillingRequestRow) -> None:
    _audit(
        session,
        row.request_id,
        None,
        RecoveryPoint.PLANNED,
        "request received",
        {"fingerprint": row.fingerprint, "total_amount": row.total_amount},
    )


def record_in(
    session: Session, request: BillingRequest, fingerprint: str | None = None
) -> BillingRequestRow:
    """Store a new request in the caller's transaction (IntegrityError if its id exists)."""
    fingerprint = fingerprint or request.fingerprint()
    row = _new_row(request, fingerprint)
    session.add(row)
    session.flush()  # the request row first: lines reference it
    session.add_all(_new_lines(request))
    _audit_received(session, row)
    return row


def _new_row(request: BillingRequest, fingerprint: str) -> BillingRequestRow:
    return BillingRequestRow(
        request_id=request.request_id,
        fingerprint=fingerprint,
        payload=request.model_dump(mode="json"),
        customer_key=request.customer.id,
        currency=request.currency,
        total_amount=request.total_amount(),
    )


def _new_lines(request: BillingRequest) -> list[RequestLine]:
    return [
        RequestLine(
            request_id=request.request_id,
            position=position,
            sku=item.sku,
            name=item.name,
            unit_amount=item.unit_amount,
            quantity=item.quantity,
            description=item.description,
            price_lookup_key=price_lookup_key(item.sku, request.currency, item.unit_amount),
        )
        for position, item in enumerate(request.items)
    ]


def load(engine: Engine, request_id: str) -> BillingRequestRow | None:
    with reading(engine) as session:
        return session.get(BillingRequestRow, request_id)


def require(engine: Engine, request_id: str) -> BillingRequestRow:
    row = load(engine, request_id)
    if row is None:
        raise RequestNotFound(f"no request {request_id!r}; submit it first")
    return row


def list_requests(
    engine: Engine,
    *,
    states: Collection[RecoveryPoint] = (),
    customer: str | None = None,
    run_id: str | None = None,
) -> Sequence[BillingRequestRow]:
    """Requests in the order received; narrowed to some states, one customer, one billing run."""
    statement = select(BillingRequestRow)
    if states:
        statement = statement.where(
            col(BillingRequestRow.recovery_point).in_([state.value for state in states])
        )
    if customer is not None:
        statement = statement.where(BillingRequestRow.customer_key == customer)
    if run_id is not None:
        in_run = select(BillingRunItem.request_id).where(BillingRunItem.run_id == run_id)
        statement = statement.where(col(BillingRequestRow.request_id).in_(in_run))
    with reading(engine) as session:
        return session.exec(statement.order_by(col(BillingRequestRow.created_at))).all()


def billing_run_exists(engine: Engine, run_id: str) -> bool:
    with reading(engine) as session:
        return session.get(BillingRun, run_id) is not None


def lines(engine: Engine, request_id: str) -> list[RequestLine]:
    with reading(engine) as session:
        return lines_in(session, request_id)


def lines_in(session: Session, request_id: str) -> list[RequestLine]:
    """The request's lines within the caller's transaction, in order."""
    statement = (
        select(RequestLine)
        .where(RequestLine.request_id == request_id)
        .order_by(col(RequestLine.position))
    )
    return list(session.exec(statement).all())


def audit_trail(engine: Engine, request_id: str) -> list[AuditEvent]:
    with reading(engine) as session:
        statement = (
            select(AuditEvent)
            .where(AuditEvent.request_id == request_id)
            .order_by(col(AuditEvent.id))
        )
        return list(session.exec(statement).all())


# --- the lease -------------------------------------------------------------


def lock_row(session: Session, request_id: str) -> BillingRequestRow | None:
    """The request row, locked until the caller's transaction ends (FOR UPDATE
    on PostgreSQL; SQLite's write transaction already serialises writers)."""
    return session.exec(
        select(BillingRequestRow)
        .where(BillingRequestRow.request_id == request_id)
        .with_for_update()
    ).one_or_none()


# Work done in the transaction that takes a lease, on the row it locked (e.g. `count_attempt`).
OnTake = Callable[[Session, BillingRequestRow], None]


def acquire_lease(
    engine: Engine, request_id: str, owner: str, ttl_seconds: float, on_take: OnTake | None = None
) -> bool:
    """Take (or renew) the request's lease if it is free, expired or already ours.

    The row is locked first and "now" read only then: a run that waited for
    the lock (behind a slow or paused transaction) judges expiry, and gets a
    lease that runs, from the moment it actually holds the row. `on_take` runs
    in the same transaction once the lease is ours (one commit, not two).
    """
    with transaction(engine) as session:
        row = lock_row(session, request_id)
        if row is None:
            raise RequestNotFound(f"no request {request_id!r}")
        now = time.time()
        free = row.lease_owner is None or (row.lease_expires_at or 0) < now
        if not free and row.lease_owner != owner:
            return False
        row.lease_owner = owner
        row.lease_expires_at = now + ttl_seconds
        session.add(row)
        if on_take is not None:
            on_take(session, row)
        return True


def renew_lease(engine: Engine, request_id: str, owner: str, ttl_seconds: float) -> bool:
    """Extend a lease this run still holds; False once another run took it (or it was released).

    A lease that expired while nobody else took it is still ours to renew:
    no other run has acted on the request in between.
    """
    with transaction(engine) as session:
        row = lock_row(session, request_id)
        if row is None or row.lease_owner != owner:
            return False
        row.lease_expires_at = time.time() + ttl_seconds
        session.add(row)
        return True


def wait_for_lease(
    engine: Engine,
    request_id: str,
    owner: str,
    ttl_seconds: float,
    patience_seconds: float,
    on_take: OnTake | None = None,
) -> float:
    """Take the lease, waiting while another run holds it; returns the monotonic
    time just before the successful attempt (the lease runs from no earlier).

    A second run of the same request (a retry racing a schedule, a double click)
    waits for the first to finish and then finds the work done.
    """
    deadline = time.monotonic() + patience_seconds
    said = progress.Throttle(every=LEASE_WAIT_NOTE_SECONDS)
    while True:
        attempt_at = time.monotonic()
        if acquire_lease(engine, request_id, owner, ttl_seconds, on_take):
            return attempt_at
        holder = load(engine, request_id)
        holder_name = holder.lease_owner if holder else "unknown"
        if time.monotonic() >= deadline:
            raise RequestBusy(
                f"request {request_id!r} is being processed by another run "
                f"({holder_name}); try again later"
            )
        if said.due():
            progress.note(
                "waiting for another run (%s) that is processing %s; up to %.0fs more",
                holder_name,
                request_id,
                max(0.0, deadline - time.monotonic()),
            )
        time.sleep(LEASE_POLL_SECONDS)


def release_lease(engine: Engine, request_id: str, owner: str) -> None:
    with transaction(engine) as session:
        session.execute(
            update(BillingRequestRow)
            .where(col(BillingRequestRow.request_id) == request_id)
            .where(col(BillingRequestRow.lease_owner) == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )


def start_attempt(engine: Engine, request_id: str, owner: str) -> BillingRequestRow:
    """Count a run against the request (under the lease) and return its state.

    A failed request resumes from the last point it really reached.
    """
    with locked(engine, request_id, owner) as (session, row):
        count_attempt(session, row)
        return row


def count_attempt(session: Session, row: BillingRequestRow) -> None:
    """`start_attempt` inside the caller's transaction, which holds the row and the lease."""
    row.attempts += 1
    row.updated_at = utcnow()
    if row.point is RecoveryPoint.FAILED:
        row.recovery_point = row.progress_point
        _audit(session, row.request_id, RecoveryPoint.FAILED, row.progress, "retrying", {})
    session.add(row)


@contextmanager
def locked(
    engine: Engine, request_id: str, owner: str
) -> Iterator[tuple[Session, BillingRequestRow]]:
    """The request row, locked for this transaction, provided `owner` still holds the lease."""
    with transaction(engine) as session:
        row = lock_row(session, request_id)
        if row is None:
            raise RequestNotFound(f"no request {request_id!r}")
        # Ownership, not the clock, decides: a lease that lapsed (a starved
        # renewal thread on a busy machine) while nobody took it is still
        # ours, and nobody can take it while we hold the row.
        if row.lease_owner != owner:
            raise LeaseLost(
                f"request {request_id!r} was taken over by another run; this run stopped"
            )
        yield session, row
    # Committed (an error above rolled back and never gets here): the attempt's
    # next step starts from this row instead of reading it again.
    note_commit(owner, request_id, row)


def advance(
    session: Session,
    row: BillingRequestRow,
    to: RecoveryPoint,
    message: str,
    **detail: Any,
) -> None:
    """Move the recovery point forward (never back) and audit it, in the caller's transaction."""
    if row.progress.reached(to):
        return
    previous = row.point
    row.progress_point = row.recovery_point = to.value
    row.last_error = None
    row.updated_at = utcnow()
    session.add(row)
    _audit(session, row.request_id, previous, to, message, detail)


def rewind(
    session: Session,
    row: BillingRequestRow,
    to: RecoveryPoint,
    message: str,
    **detail: Any,
) -> None:
    """Move the recovery point back — only when Stripe lost what the later
    points stood for (a draft deleted in the Dashboard) — and audit why."""
    previous = row.point
    row.progress_point = row.recovery_point = to.value
    row.updated_at = utcnow()
    session.add(row)
    _audit(session, row.request_id, previous, to, message, detail)


def place(
    session: Session,
    row: BillingRequestRow,
    to: RecoveryPoint,
    message: str,
    **detail: Any,
) -> None:
    """Put the request at `to` by a person's decision rather than a step's progress
    (held for approval, approved, rejected; `invoiceflow.approval`), and audit who and why."""
    previous = row.point
    row.progress_point = row.recovery_point = to.value
    row.last_error = None
    row.updated_at = utcnow()
    session.add(row)
    _audit(session, row.request_id, previous, to, message, detail)


# Stripe's invoice status machine past `open`: paid and void are final, an
# uncollectible invoice may still be paid or voided.
_SETTLES_FROM_UNCOLLECTIBLE = (RecoveryPoint.PAID, RecoveryPoint.VOID)


def settle(
    session: Session,
    row: BillingRequestRow,
    to: RecoveryPoint,
    message: str,
    **detail: Any,
) -> bool:
    """Record a settlement Stripe reported (paid, void, uncollectible), in the caller's
    transaction, which holds the row lock; False when it would not move the request forward.

    No lease is needed: this records Stripe's fact, not a run's work, and the row
    lock serialises it with any run. A request at any earlier point (even failed,
    or never recorded as sent) is settled: the payment happened either way.
    """
    current = row.point
    if current in (RecoveryPoint.PAID, RecoveryPoint.VOID) or current is to:
        return False
    if current is RecoveryPoint.UNCOLLECTIBLE and to not in _SETTLES_FROM_UNCOLLECTIBLE:
        return False
    row.progress_point = row.recovery_point = to.value
    row.last_error = None
    row.updated_at = utcnow()
    session.add(row)
    _audit(session, row.request_id, current, to, message, detail)
    return True


def note(session: Session, row: BillingRequestRow, message: str, **detail: Any) -> None:
    """Audit something that happened to the request without moving it."""
    row.updated_at = utcnow()
    session.add(row)
    _audit(session, row.request_id, None, None, message, detail)


def record_failure(engine: Engine, request_id: str, owner: str, error: str) -> None:
    """Mark the request failed with the reason; its progress point is kept for a rerun."""
    with locked(engine, request_id, owner) as (session, row):
        previous = row.point
        row.recovery_point = RecoveryPoint.FAILED.value
        row.last_error = error[:2000]
        row.updated_at = utcnow()
        session.add(row)
        _audit(
            session, request_id, previous, RecoveryPoint.FAILED, "failed", {"error": error[:2000]}
        )


def _audit(
    session: Session,
    request_id: str,
    from_point: RecoveryPoint | None,
    to_point: RecoveryPoint | None,
    message: str,
    detail: dict[str, Any],
) -> None:
    # A plain Core INSERT on the transaction's connection, not an ORM add nor
    # `session.execute` (which autoflushes even a Core statement): the log is
    # append-only and never read back in the transaction, so it needs no identity
    # map, no id fetched back, and no flush of the row's pending changes — the
    # row's UPDATE is flushed once, at commit, not once per audit or intent.
    session.connection().execute(
        table_of(AuditEvent)
        .insert()
        .values(
            request_id=request_id,
            at=utcnow(),
            from_point=from_point.value if from_point else None,
            to_point=to_point.value if to_point else None,
            message=message,
            detail=detail,
        )
    )
