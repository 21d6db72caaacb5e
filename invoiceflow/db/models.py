"""Tables. Each docstring states who is the source of truth for the row.

The schema is owned by Alembic (`invoiceflow/db/migrations`); these models are
what the code reads and writes. Money is integer minor units everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, ForeignKey, Index
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class RecoveryPoint(StrEnum):
    """Where a request stands. Forward-only; each point is committed together
    with the Stripe id that reaching it produced, so a rerun starts right after it."""

    PLANNED = "planned"
    CUSTOMER_READY = "customer_ready"
    CATALOG_READY = "catalog_ready"
    DRAFT_CREATED = "draft_created"
    LINES_ADDED = "lines_added"
    FINALIZED = "finalized"
    SENT = "sent"
    PAID = "paid"
    # Terminal states off the happy path.
    FAILED = "failed"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"
    # A person's decisions on a billing run held for approval (`invoiceflow.approval`):
    # a filled draft waiting for `approve` (it ranks with lines_added), and a
    # draft deleted by `reject`, final like void.
    HELD = "held"
    REJECTED = "rejected"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def is_terminal(self) -> bool:
        return self in (
            RecoveryPoint.PAID,
            RecoveryPoint.VOID,
            RecoveryPoint.UNCOLLECTIBLE,
            RecoveryPoint.REJECTED,
        )

    def reached(self, other: RecoveryPoint) -> bool:
        """True when this point is at or past `other` on the happy path."""
        return self.rank >= other.rank


# Off-path states rank by how far the invoice got: void/uncollectible come after
# `sent` (Stripe only allows them on finalized invoices); FAILED ranks lowest so a
# rerun of a failed request resumes from its last real point (kept separately).
_RANK = {
    RecoveryPoint.FAILED: -1,
    RecoveryPoint.PLANNED: 0,
    RecoveryPoint.CUSTOMER_READY: 1,
    RecoveryPoint.CATALOG_READY: 2,
    RecoveryPoint.DRAFT_CREATED: 3,
    RecoveryPoint.LINES_ADDED: 4,
    RecoveryPoint.HELD: 4,
    RecoveryPoint.FINALIZED: 5,
    RecoveryPoint.SENT: 6,
    RecoveryPoint.PAID: 7,
    RecoveryPoint.VOID: 7,
    RecoveryPoint.UNCOLLECTIBLE: 7,
    RecoveryPoint.REJECTED: 7,
}


class BillingRequestRow(SQLModel, table=True):
    """One billing request and its recovery point.

    Trust: the request content (`payload`, `fingerprint`) is ours and immutable once
    stored. The Stripe ids are Stripe's, copied here in the same transaction that
    advanced `recovery_point`; the invoice's status/amount fields are a cache of
    Stripe, refreshed on every step that reads the invoice.
    """

    __tablename__ = "billing_request"

    request_id: str = Field(primary_key=True, max_length=128)
    fingerprint: str = Field(max_length=64)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    customer_key: str = Field(max_length=64, index=True)
    currency: str = Field(max_length=3)
    total_amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    recovery_point: str = Field(default=RecoveryPoint.PLANNED.value, max_length=32, index=True)
    # The last happy-path point reached; equals recovery_point except when FAILED.
    progress_point: str = Field(default=RecoveryPoint.PLANNED.value, max_length=32)
    stripe_customer_id: str | None = Field(default=None, max_length=255)
    stripe_invoice_id: str | None = Field(default=None, max_length=255, unique=True)
    invoice_number: str | None = Field(default=None, max_length=255)
    invoice_status: str | None = Field(default=None, max_length=32)
    amount_due: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # What Stripe reports as paid (webhook `invoice.paid`); a cache, like amount_due.
    amount_paid: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    hosted_invoice_url: str | None = Field(default=None, max_length=2048)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=2000)
    lease_owner: str | None = Field(default=None, max_length=128)
    # Epoch seconds: compared in SQL on both backends without timezone surprises.
    lease_expires_at: float | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    finalized_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    paid_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # Stripe's due date of the invoice: a cache, like invoice_status.
    due_date: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # Stripe's: a payment of the invoice is processing (a bank debit) since then;
    # None once it failed or the invoice settled (`payment_intent.processing`).
    payment_pending_since: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # Ours: the invoice a person confirmed was never emailed (`invoiceflow resolve
    # --not-sent`), which its send step may then send past Stripe's event retention.
    unsent_confirmed_invoice: str | None = Field(default=None, max_length=255)

    @property
    def point(self) -> RecoveryPoint:
        return RecoveryPoint(self.recovery_point)

    @property
    def progress(self) -> RecoveryPoint:
        return RecoveryPoint(self.progress_point)


class RequestLine(SQLModel, table=True):
    """A line of a request as received (ours), plus the Stripe price and invoice
    line it became (Stripe's ids, written when the matching step commits)."""

    __tablename__ = "request_line"

    request_id: str = Field(foreign_key="billing_request.request_id", primary_key=True)
    position: int = Field(primary_key=True)
    sku: str = Field(max_length=64)
    name: str = Field(max_length=250)
    unit_amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    quantity: int
    description: str | None = Field(default=None, max_length=500)
    price_lookup_key: str = Field(max_length=200)
    stripe_price_id: str | None = Field(default=None, max_length=255)
    stripe_line_id: str | None = Field(default=None, max_length=255, unique=True)


class ProductMap(SQLModel, table=True):
    """sku → Stripe product. Stripe owns the product; we own the id we gave it."""

    __tablename__ = "stripe_product"

    sku: str = Field(primary_key=True, max_length=64)
    stripe_product_id: str = Field(max_length=255, unique=True)
    name: str = Field(max_length=250)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class PriceMap(SQLModel, table=True):
    """Price lookup key (sku + currency + amount) → Stripe price. Prices are
    immutable in Stripe, so a row never changes once written."""

    __tablename__ = "stripe_price"

    lookup_key: str = Field(primary_key=True, max_length=200)
    stripe_price_id: str = Field(max_length=255, unique=True)
    sku: str = Field(max_length=64)
    currency: str = Field(max_length=3)
    unit_amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class CustomerMap(SQLModel, table=True):
    """Our customer id → Stripe customer: exactly one Stripe customer per id.

    Trust: the key and the mapping are ours (the UNIQUE primary key decides
    between concurrent requests; the first mapping stands). `email` and `name`
    are the details we last set on the Stripe customer: a request with other
    details updates Stripe first, then these. A Dashboard edit since is not
    seen here; the next request's details win.
    """

    __tablename__ = "stripe_customer"

    customer_key: str = Field(primary_key=True, max_length=64)
    stripe_customer_id: str = Field(max_length=255, unique=True)
    email: str = Field(max_length=512)
    name: str | None = Field(default=None, max_length=256)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class StripeWrite(SQLModel, table=True):
    """Every Stripe write we intend, recorded *before* the call.

    Trust: ours. A row whose `completed_at` is null means we may or may not have
    reached Stripe: the next attempt reconciles with Stripe before writing again.
    The idempotency key is derived from our ids and the step, never the attempt.
    """

    __tablename__ = "stripe_write"
    __table_args__ = (Index("ix_stripe_write_request", "request_id", "step"),)

    idempotency_key: str = Field(primary_key=True, max_length=255)
    request_id: str | None = Field(default=None, max_length=128)
    step: str = Field(max_length=64)
    stripe_object_id: str | None = Field(default=None, max_length=255)
    calls: int = 0
    intended_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    completed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class AuditEvent(SQLModel, table=True):
    """Append-only history, written in the same transaction as the change it
    describes. Never updated or deleted."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(max_length=128, index=True)
    at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    from_point: str | None = Field(default=None, max_length=32)
    to_point: str | None = Field(default=None, max_length=32)
    message: str = Field(max_length=2000)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class BillingRun(SQLModel, table=True):
    """A billing run's manifest: which source it bills, and how often it ran.

    Trust: ours. `source_digest` pins the content the run id stands for, so a
    rerun under the same id resumes the same requests and refuses other ones.
    """

    __tablename__ = "billing_run"

    run_id: str = Field(primary_key=True, max_length=128)
    source: str = Field(max_length=1000)
    source_digest: str = Field(max_length=64)
    total: int
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class BillingRunItem(SQLModel, table=True):
    """One entry of a billing run and how its unit of work ended.

    Trust: ours. `outcome` is NULL until the unit finished; a rerun of the run
    processes exactly the entries whose outcome says they may still succeed.
    The request's own state stays in `billing_request`, the single truth.
    """

    __tablename__ = "billing_run_item"

    run_id: str = Field(
        sa_column=Column(
            "run_id", ForeignKey("billing_run.run_id"), primary_key=True, nullable=False
        ),
        max_length=128,
    )
    position: int = Field(primary_key=True)
    request_id: str | None = Field(default=None, max_length=128, index=True)
    currency: str | None = Field(default=None, max_length=3)
    total_amount: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    outcome: str | None = Field(default=None, max_length=32)
    reason: str | None = Field(default=None, max_length=2000)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class DunningStep(SQLModel, table=True):
    """One step of an overdue invoice's dunning sequence (a reminder, or the final write-off).

    Trust: ours, recorded *before* the Stripe call (like `stripe_write`); the
    UNIQUE (request_id, step) makes each reminder happen once whatever runs
    twice. Stripe's invoice status decides whether the sequence goes on.
    """

    __tablename__ = "dunning_step"

    request_id: str = Field(foreign_key="billing_request.request_id", primary_key=True)
    step: str = Field(primary_key=True, max_length=32)
    invoice_id: str = Field(max_length=255)
    due_at: datetime = Field(sa_type=DateTime(timezone=True))
    outcome: str | None = Field(default=None, max_length=32)
    intended_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    done_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class SyncCursor(SQLModel, table=True):
    """How far a sweep through Stripe's event log got (Stripe's clock, epoch seconds).

    Trust: ours, a hint only: sweeps overlap it, and the inbox's UNIQUE event
    id makes applying an event twice impossible.
    """

    __tablename__ = "sync_cursor"

    name: str = Field(primary_key=True, max_length=64)
    position: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class RequestVersion(SQLModel, table=True):
    """One version of a sent request and the invoice it became (`invoiceflow amend`).

    Trust: the content (`payload`, `fingerprint`, `total_amount`) is ours and
    immutable once stored; the invoice ids are Stripe's, written in the commit
    that reached `state`. Version 1 is the request as first sent, recorded at its
    first amendment; version N+1 is a Stripe revision of version N's invoice,
    made under a key of (request id, N+1). The request's row always carries the
    latest version, so the latest version's live state is the row's; an older
    version's `state` is `void` once Stripe voided it for its revision.
    """

    __tablename__ = "request_version"

    request_id: str = Field(foreign_key="billing_request.request_id", primary_key=True)
    version: int = Field(primary_key=True)
    fingerprint: str = Field(max_length=64)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    total_amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    # The invoice this version revises (version N's), None for version 1.
    revises_invoice: str | None = Field(default=None, max_length=255)
    stripe_invoice_id: str | None = Field(default=None, max_length=255, unique=True)
    invoice_number: str | None = Field(default=None, max_length=255)
    # planned → revision_created → copies_removed → sent; `void` when superseded.
    state: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
