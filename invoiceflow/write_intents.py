"""Write intents: each Stripe write we are about to make, recorded before we make it.

An intent is the write's idempotency key, stored (`StripeWrite`) before the
call to Stripe and closed with the object Stripe returned. An intent found
open means an earlier attempt may have reached Stripe without our database
hearing back: the step looks the object up before writing again
(`stripe_write.write_once`). Re-exported by `invoiceflow.ledger`, whose
transactions close them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from invoiceflow.db.engine import reading, table_of, transaction, upsert_into
from invoiceflow.db.models import StripeWrite, utcnow


@dataclass(frozen=True)
class Intent:
    """A Stripe write we are about to make. `seen_before` means an earlier
    attempt recorded the same intent and may have reached Stripe."""

    key: str
    seen_before: bool
    intended_at: datetime


def intend(engine: Engine, key: str, step: str, request_id: str | None) -> Intent:
    """Record, before calling Stripe, that we are about to write under `key`.

    One INSERT … ON CONFLICT DO UPDATE SET calls = calls + 1 RETURNING calls:
    two runs recording the same first intent at once both succeed, and exactly
    one of them sees it as new (calls = 1).
    """
    with transaction(engine) as session:
        return intend_in(session, key, step, request_id)


def intend_in(session: Session, key: str, step: str, request_id: str | None) -> Intent:
    """`intend` in the caller's transaction: a step records the next step's intent
    with its own commit (noted on the `Attempt`), saving a transaction per write.

    One statement: INSERT … ON CONFLICT DO UPDATE counts the call atomically
    (under the row lock on PostgreSQL, the write lock on SQLite), so of two runs
    recording the same first intent at once exactly one sees `calls` = 1.
    """
    # Plain Core on the transaction's connection: no ORM insert path, and no
    # autoflush of the row's pending changes (flushed once, at commit).
    table = table_of(StripeWrite)
    count = upsert_into(session, table).values(
        idempotency_key=key, step=step, request_id=request_id, calls=1, intended_at=utcnow()
    )
    count = count.on_conflict_do_update(
        index_elements=["idempotency_key"], set_={"calls": table.c.calls + 1}
    ).returning(table.c.calls, table.c.intended_at)
    calls, intended_at = session.connection().execute(count).one()
    return Intent(key, seen_before=calls > 1, intended_at=intended_at)


def fulfil(session: Session, key: str, stripe_object_id: str) -> None:
    """Close a write intent with the object Stripe returned, in the caller's transaction.

    An object found in Stripe without a write of ours has no intent: nothing to close.
    """
    table = table_of(StripeWrite)  # plain Core on the connection, as in `intend_in`
    session.connection().execute(
        table.update()
        .where(table.c.idempotency_key == key)
        .values(
            stripe_object_id=stripe_object_id,
            completed_at=func.coalesce(table.c.completed_at, utcnow()),
        )
    )


def writes_for(engine: Engine, request_id: str) -> list[StripeWrite]:
    with reading(engine) as session:
        statement = (
            select(StripeWrite)
            .where(StripeWrite.request_id == request_id)
            .order_by(col(StripeWrite.intended_at))
        )
        return list(session.exec(statement).all())
