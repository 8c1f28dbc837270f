"""Per-ticket state: level, counters, the per-ticket lock and the in-flight intent.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def Time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ticket_state",
        sa.Column("instance", sa.String(100), nullable=False),
        sa.Column("ticket_id", sa.String(100), nullable=False),
        sa.Column("level", sa.String(100), nullable=True),
        sa.Column("last_escalated_at", Time(), nullable=True),
        sa.Column("cooldown_until", Time(), nullable=True),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("day_count", sa.Integer(), nullable=False),
        sa.Column("escalation_count", sa.Integer(), nullable=False),
        sa.Column("lock_token", sa.String(36), nullable=True),
        sa.Column("lock_owner", sa.String(200), nullable=True),
        sa.Column("lock_expires_at", Time(), nullable=True),
        sa.Column("intent", Json, nullable=True),
        sa.Column("intent_at", Time(), nullable=True),
        sa.Column("updated_at", Time(), nullable=False),
        sa.PrimaryKeyConstraint("instance", "ticket_id", name="pk_ticket_state"),
    )


def downgrade() -> None:
    op.drop_table("ticket_state")
