"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_point", sa.String(length=32), nullable=True),
        sa.Column("to_point", sa.String(length=32), nullable=True),
        sa.Column("message", sa.String(length=2000), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_request_id"), ["request_id"], unique=False)

    op.create_table(
        "billing_request",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("customer_key", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_amount", sa.BigInteger(), nullable=False),
        sa.Column("recovery_point", sa.String(length=32), nullable=False),
        sa.Column("progress_point", sa.String(length=32), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_invoice_id", sa.String(length=255), nullable=True),
        sa.Column("invoice_number", sa.String(length=255), nullable=True),
        sa.Column("invoice_status", sa.String(length=32), nullable=True),
        sa.Column("amount_due", sa.BigInteger(), nullable=True),
        sa.Column("hosted_invoice_url", sa.String(length=2048), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=2000), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("request_id"),
        sa.UniqueConstraint("stripe_invoice_id"),
    )
    with op.batch_alter_table("billing_request", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_request_customer_key"), ["customer_key"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_billing_request_recovery_point"), ["recovery_point"], unique=False
        )

    op.create_table(
        "stripe_customer",
        sa.Column("customer_key", sa.String(length=64), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_key"),
        sa.UniqueConstraint("stripe_customer_id"),
    )
    op.create_table(
        "stripe_price",
        sa.Column("lookup_key", sa.String(length=200), nullable=False),
        sa.Column("stripe_price_id", sa.String(length=255), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("unit_amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lookup_key"),
        sa.UniqueConstraint("stripe_price_id"),
    )
    op.create_table(
        "stripe_product",
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("stripe_product_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sku"),
        sa.UniqueConstraint("stripe_product_id"),
    )
    op.create_table(
        "stripe_write",
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("stripe_object_id", sa.String(length=255), nullable=True),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("intended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    with op.batch_alter_table("stripe_write", schema=None) as batch_op:
        batch_op.create_index("ix_stripe_write_request", ["request_id", "step"], unique=False)

    op.create_table(
        "request_line",
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("unit_amount", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("price_lookup_key", sa.String(length=200), nullable=False),
        sa.Column("stripe_price_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_line_id", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["billing_request.request_id"],
        ),
        sa.PrimaryKeyConstraint("request_id", "position"),
        sa.UniqueConstraint("stripe_line_id"),
    )


def downgrade() -> None:
    op.drop_table("request_line")
    with op.batch_alter_table("stripe_write", schema=None) as batch_op:
        batch_op.drop_index("ix_stripe_write_request")

    op.drop_table("stripe_write")
    op.drop_table("stripe_product")
    op.drop_table("stripe_price")
    op.drop_table("stripe_customer")
    with op.batch_alter_table("billing_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_request_recovery_point"))
        batch_op.drop_index(batch_op.f("ix_billing_request_customer_key"))

    op.drop_table("billing_request")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_request_id"))

    op.drop_table("audit_log")
