"""Tables of the audit trail and feedback (SQLAlchemy Core). Migrations in migrations/ create them."""
from __future__ import annotations

from sqlalchemy import (Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table, Text)

metadata = MetaData()

hook_calls = Table(
    "hook_calls", metadata,
    Column("id", String(36), primary_key=True),
    Column("called_at", DateTime(timezone=True), nullable=False),
    Column("service_id", String(100), nullable=False),
    Column("hook_instance", String(200)),
    Column("patient_ref", String(128)),
    Column("user_ref", String(200)),
    Column("status", Integer, nullable=False),
    Column("outcome", String(300), nullable=False),
    Column("card_count", Integer, nullable=False),
    Column("prefetch_keys", Text),  # JSON: key → how it was obtained (prefetch, null, fetched, failed)
    Column("gather_ms", Integer),
    Column("rules_ms", Integer),
    Column("total_ms", Integer, nullable=False),
    # who called: "console" for the card console's calls (X-CDS-Console with CDS_CONSOLE on), else
    # null (an EHR); the report leaves console calls out unless asked (migration 0002)
    Column("origin", String(20)),
    # the authenticated client (token iss) whose call this was, null with authentication off;
    # feedback on its cards is taken from that client only (migration 0003)
    Column("issuer", String(500)),
    Index("ix_hook_calls_called_at", "called_at"),
)

cards = Table(
    "cards", metadata,
    Column("uuid", String(36), primary_key=True),
    Column("hook_call_id", String(36), ForeignKey("hook_calls.id", ondelete="CASCADE"), nullable=False),
    Column("service_id", String(100), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("topic", String(40), nullable=False),
    Column("indicator", String(10), nullable=False),
    Column("summary", String(200), nullable=False),
    Index("ix_cards_issued_at", "issued_at"),
    Index("ix_cards_hook_call_id", "hook_call_id"),
)

suggestions = Table(
    "suggestions", metadata,
    Column("uuid", String(36), primary_key=True),
    Column("card_uuid", String(36), ForeignKey("cards.uuid", ondelete="CASCADE"), nullable=False),
    Column("label", String(300), nullable=False),
    Index("ix_suggestions_card_uuid", "card_uuid"),
)

feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(64), nullable=False, unique=True),
    Column("card_uuid", String(36), ForeignKey("cards.uuid", ondelete="CASCADE"), nullable=False),
    Column("service_id", String(100), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("accepted_suggestions", Text),  # JSON list of suggestion uuids
    Column("override_system", String(300)),
    Column("override_code", String(100)),
    Column("override_display", String(300)),
    Column("override_comment", Text),
    Column("outcome_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("ix_feedback_card_uuid", "card_uuid"),
    Index("ix_feedback_outcome_at", "outcome_at"),
)

# the jti replay cache when CDS_REDIS_URL is empty (migration 0003): one row per token seen, kept
# until the token could no longer be accepted; a second INSERT of the same key is a replay
jti_seen = Table(
    "jti_seen", metadata,
    Column("jti_hash", String(64), primary_key=True),  # sha256 of issuer and jti
    Column("issuer", String(500), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_jti_seen_expires_at", "expires_at"),
)
