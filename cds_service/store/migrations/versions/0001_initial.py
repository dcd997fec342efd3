"""Audit trail and feedback: hook_calls, cards, suggestions, feedback.

Revision ID: 0001
Revises:
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
        "hook_calls",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("called_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("hook_instance", sa.String(200)),
        sa.Column("patient_ref", sa.String(128)),
        sa.Column("user_ref", sa.String(200)),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(300), nullable=False),
        sa.Column("card_count", sa.Integer, nullable=False),
        sa.Column("prefetch_keys", sa.Text),
        sa.Column("gather_ms", sa.Integer),
        sa.Column("rules_ms", sa.Integer),
        sa.Column("total_ms", sa.Integer, nullable=False),
    )
    op.create_index("ix_hook_calls_called_at", "hook_calls", ["called_at"])
    op.create_table(
        "cards",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("hook_call_id", sa.String(36), sa.ForeignKey("hook_calls.id", ondelete="CASCADE"), nullable=False),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("topic", sa.String(40), nullable=False),
        sa.Column("indicator", sa.String(10), nullable=False),
        sa.Column("summary", sa.String(200), nullable=False),
    )
    op.create_index("ix_cards_issued_at", "cards", ["issued_at"])
    op.create_index("ix_cards_hook_call_id", "cards", ["hook_call_id"])
    op.create_table(
        "suggestions",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("card_uuid", sa.String(36), sa.ForeignKey("cards.uuid", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(300), nullable=False),
    )
    op.create_index("ix_suggestions_card_uuid", "suggestions", ["card_uuid"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dedupe_key", sa.String(64), nullable=False, unique=True),
        sa.Column("card_uuid", sa.String(36), sa.ForeignKey("cards.uuid", ondelete="CASCADE"), nullable=False),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("accepted_suggestions", sa.Text),
        sa.Column("override_system", sa.String(300)),
        sa.Column("override_code", sa.String(100)),
        sa.Column("override_display", sa.String(300)),
        sa.Column("override_comment", sa.Text),
        sa.Column("outcome_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_feedback_card_uuid", "feedback", ["card_uuid"])
    op.create_index("ix_feedback_outcome_at", "feedback", ["outcome_at"])


def downgrade() -> None:
    for table in ("feedback", "suggestions", "cards", "hook_calls"):
        op.drop_table(table)
