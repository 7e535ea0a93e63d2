"""A keyed hash of each quarantined row's record id, for exact search by stewards.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows quarantined before this revision keep NULL: a search decrypts those instead.
    with op.batch_alter_table("quarantined_rows") as batch:
        batch.add_column(sa.Column("record_hash", sa.String(length=64), nullable=True))
    op.create_index("ix_quarantined_rows_record_hash", "quarantined_rows", ["record_hash"])


def downgrade() -> None:
    op.drop_index("ix_quarantined_rows_record_hash", table_name="quarantined_rows")
    with op.batch_alter_table("quarantined_rows") as batch:
        batch.drop_column("record_hash")
