"""operator controls (issue 24): a payment pending, and a send a person checked by hand

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_request") as batch:
        # Stripe's clock when a payment of the invoice began processing (a bank
        # debit); NULL again once Stripe says it failed, or the invoice settled.
        batch.add_column(
            sa.Column("payment_pending_since", sa.DateTime(timezone=True), nullable=True)
        )
        # The invoice a person confirmed was never emailed (`invoiceflow resolve
        # --not-sent`), when Stripe's event log no longer tells.
        batch.add_column(
            sa.Column("unsent_confirmed_invoice", sa.String(length=255), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("billing_request") as batch:
        batch.drop_column("unsent_confirmed_invoice")
        batch.drop_column("payment_pending_since")
