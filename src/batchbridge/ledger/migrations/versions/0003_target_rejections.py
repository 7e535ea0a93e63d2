"""Rows rejected by a target, and rows a full snapshot marked inactive.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 19:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("loads") as batch:
        batch.add_column(
            sa.Column("rows_inactivated", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "target_rejections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("load_id", sa.String(length=36), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("target", sa.String(length=63), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["load_id"], ["loads.id"]),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("load_id", "row_number", name="uq_rejection_load_row"),
    )
    op.create_index("ix_target_rejections_load_id", "target_rejections", ["load_id"])
    op.create_index("ix_target_rejections_file_id", "target_rejections", ["file_id"])


def downgrade() -> None:
    op.drop_index("ix_target_rejections_file_id", table_name="target_rejections")
    op.drop_index("ix_target_rejections_load_id", table_name="target_rejections")
    op.drop_table("target_rejections")
    with op.batch_alter_table("loads") as batch:
        batch.drop_column("rows_inactivated")
