"""billing cycles: run manifests, dunning steps, the reconcile cursor, Stripe's due date

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_request") as batch:
        # Stripe's due date of the invoice (a cache, set when it is finalized).
        batch.add_column(sa.Column("due_date", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "billing_run",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=1000), nullable=False),
        # Digest of the source's content: a rerun under the same id must bill the same requests.
        sa.Column("source_digest", sa.String(length=64), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_table(
        "billing_run_item",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        # NULL when the entry was too broken to name a request.
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("total_amount", sa.BigInteger(), nullable=True),
        # NULL until the unit finished; then an outcome (invoiced, invalid, refused, …).
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=2000), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["billing_run.run_id"]),
        sa.PrimaryKeyConstraint("run_id", "position"),
    )
    with op.batch_alter_table("billing_run_item") as batch:
        batch.create_index("ix_billing_run_item_request_id", ["request_id"], unique=False)
    op.create_table(
        "dunning_step",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        # reminder-1, reminder-2, …, or final (mark uncollectible / void).
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("intended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["billing_request.request_id"]),
        # One row per step of a request's sequence: each reminder is sent once.
        sa.PrimaryKeyConstraint("request_id", "step"),
    )
    op.create_table(
        "sync_cursor",
        sa.Column("name", sa.String(length=64), nullable=False),
        # Stripe's clock (epoch seconds) of the newest event applied.
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("sync_cursor")
    op.drop_table("dunning_step")
    with op.batch_alter_table("billing_run_item") as batch:
        batch.drop_index("ix_billing_run_item_request_id")
    op.drop_table("billing_run_item")
    op.drop_table("billing_run")
    with op.batch_alter_table("billing_request") as batch:
        batch.drop_column("due_date")
