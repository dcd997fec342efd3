"""hook_calls.origin: "console" for the card console's calls, null for an EHR's.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a nullable column without a default: ALTER TABLE ADD COLUMN on SQLite and PostgreSQL alike,
    # no table rewrite; the rows already stored read as EHR calls (null)
    op.add_column("hook_calls", sa.Column("origin", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hook_calls") as batch:
        batch.drop_column("origin")
