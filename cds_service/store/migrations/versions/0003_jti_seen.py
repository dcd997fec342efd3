"""jti_seen: the replay cache of client tokens when no Redis is configured, shared by every worker
(SQLite) and replica (PostgreSQL); hook_calls.issuer: the authenticated client (token ``iss``) whose
call produced the cards, null with authentication off; feedback is taken only from that client.

Revision ID: 0003
Revises: 0002
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
        "jti_seen",
        sa.Column("jti_hash", sa.String(64), primary_key=True),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_jti_seen_expires_at", "jti_seen", ["expires_at"])
    # nullable, no default: ALTER TABLE ADD COLUMN without a table rewrite; rows already stored read
    # as calls made with authentication off
    op.add_column("hook_calls", sa.Column("issuer", sa.String(500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hook_calls") as batch:
        batch.drop_column("issuer")
    op.drop_index("ix_jti_seen_expires_at", table_name="jti_seen")
    op.drop_table("jti_seen")
