"""customer map keeps the name we last set, and when

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stripe_customer") as batch:
        # NULL for rows made before: the next request for that customer sets
        # its details on Stripe once, then records them.
        batch.add_column(sa.Column("name", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stripe_customer") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("name")
