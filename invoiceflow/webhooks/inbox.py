"""The webhook inbox: every verified Stripe event we accepted, kept once.

Trust model (as dj-stripe keeps Stripe's objects): **Stripe is the source of
truth.** An event is Stripe's signed statement that something happened; we store
it verbatim (`payload`) under Stripe's event id, which is UNIQUE, so a redelivery
is recognised and never applied twice. What the event did to our request
(`outcome`) is ours, written in the same transaction that applied it. The
request's recovery point remains a cache of Stripe's invoice status: an event
only ever moves it forward along Stripe's status machine, and when an event is
ambiguous we re-read the invoice from Stripe rather than trust the snapshot.

`settle_started_at` is the sweeper's to-do list: an event that settled a
request (`needs_settle`) and has no `settle_started_at` still needs its ending
told in the Prefect UI (`invoiceflow.endings`; the column's name is from when
that took a `settle` flow run). Prefect being down never loses that: the event
is already here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, update
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel, col, select

from invoiceflow.db.engine import reading, transaction
from invoiceflow.db.models import utcnow


class InboxEvent(SQLModel, table=True):
    """One Stripe event, as Stripe sent it (Stripe's), and what we did with it (ours)."""

    __tablename__ = "webhook_event"
    __table_args__ = (Index("ix_webhook_event_pending", "needs_settle", "settle_started_at"),)

    event_id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=128)
    # Stripe's clock (epoch seconds), not ours.
    created: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Set only when the event's invoice belongs to a request in our ledger.
    request_id: str | None = Field(default=None, max_length=128, index=True)
    invoice_id: str | None = Field(default=None, max_length=255, index=True)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    outcome: str = Field(default="received", max_length=2000)
    needs_settle: bool = False
    settle_started_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


def get(engine: Engine, event_id: str) -> InboxEvent | None:
    with reading(engine) as session:
        return session.get(InboxEvent, event_id)


def events_for(engine: Engine, request_id: str) -> list[InboxEvent]:
    with reading(engine) as session:
        statement = (
            select(InboxEvent)
            .where(InboxEvent.request_id == request_id)
            .order_by(col(InboxEvent.received_at))
        )
        return list(session.exec(statement).all())


def pending_settles(engine: Engine, limit: int = 500) -> list[InboxEvent]:
    """Events that settled a request and whose ending was not told yet, oldest first."""
    with reading(engine) as session:
        statement = (
            select(InboxEvent)
            .where(col(InboxEvent.needs_settle).is_(True))
            .where(col(InboxEvent.settle_started_at).is_(None))
            .order_by(col(InboxEvent.received_at))
            .limit(limit)
        )
        return list(session.exec(statement).all())


def mark_told(engine: Engine, event_ids: list[str]) -> int:
    """Mark events' endings told; how many this call marked (not already marked).

    A conditional UPDATE: two sweepers may both tell an ending (which changes
    nothing the second time) but each event is counted once.
    """
    if not event_ids:
        return 0
    with transaction(engine) as session:
        result = session.execute(
            update(InboxEvent)
            .where(col(InboxEvent.event_id).in_(event_ids))
            .where(col(InboxEvent.settle_started_at).is_(None))
            .values(settle_started_at=utcnow())
            .returning(col(InboxEvent.event_id))
        )
        return len(result.all())
