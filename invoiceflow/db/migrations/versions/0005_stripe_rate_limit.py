"""the shared Stripe rate limit: one GCRA theoretical arrival time per limit

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Used by INVOICEFLOW_RATE_LIMIT_BACKEND=postgres (invoiceflow/ratelimit/postgres.py);
    # created on SQLite too, so both databases have one schema. Disposable: a
    # lost row only lets one burst through.
    op.create_table(
        "stripe_rate_limit",
        # "live:api", "test:search", "http://127.0.0.1:12111 test:api": where
        # Stripe is, the key's mode and the budget; never the key.
        sa.Column("name", sa.String(length=255), nullable=False),
        # Epoch seconds on the database's clock (clock_timestamp()).
        sa.Column("tat", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("stripe_rate_limit")
