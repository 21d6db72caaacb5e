"""webhook inbox (Stripe events kept once) and the paid amount Stripe reported

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_event",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("invoice_id", sa.String(length=255), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=2000), nullable=False),
        sa.Column("needs_settle", sa.Boolean(), nullable=False),
        sa.Column("settle_started_at", sa.DateTime(timezone=True), nullable=True),
        # Stripe's event id: a redelivered event meets its first copy here.
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("webhook_event") as batch:
        batch.create_index("ix_webhook_event_request_id", ["request_id"], unique=False)
        batch.create_index("ix_webhook_event_invoice_id", ["invoice_id"], unique=False)
        batch.create_index(
            "ix_webhook_event_pending", ["needs_settle", "settle_started_at"], unique=False
        )
    with op.batch_alter_table("billing_request") as batch:
        # NULL until Stripe reports a payment.
        batch.add_column(sa.Column("amount_paid", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_request") as batch:
        batch.drop_column("amount_paid")
    op.drop_table("webhook_event")
