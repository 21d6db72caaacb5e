"""amend by revision (issue 24.2): the versions of a sent request and their invoices

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_version",
        sa.Column(
            "request_id",
            sa.String(length=128),
            sa.ForeignKey("billing_request.request_id"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("total_amount", sa.BigInteger(), nullable=False),
        sa.Column("revises_invoice", sa.String(length=255), nullable=True),
        # UNIQUE: one invoice is one version of one request, whatever runs twice.
        sa.Column("stripe_invoice_id", sa.String(length=255), nullable=True, unique=True),
        sa.Column("invoice_number", sa.String(length=255), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("request_version")
