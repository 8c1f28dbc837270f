"""The notification outbox (issue 19: tell the people who now own the ticket).

Each escalation to a rung with ``notify:`` targets writes one row per target in the same
transaction that records it; workers deliver them. An existing store starts with an empty
outbox: escalations recorded before the upgrade notify nobody.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# As they were written on this date (migrations never import the live schema).
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def Time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("instance", sa.String(100), nullable=False),
        sa.Column("ticket_id", sa.String(100), nullable=False),
        sa.Column("escalation_id", BigId, nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("context", Json, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", Time(), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("lease_until", Time(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", Time(), nullable=False),
        sa.Column("sent_at", Time(), nullable=True),
        sa.Column("digest_of", BigId, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.UniqueConstraint(
            "escalation_id", "target", name="uq_notifications_escalation_id_target"
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'sending', 'sent', 'failed', 'unknown')",
            name="ck_notifications_state_known",
        ),
    )
    claimable = sa.text("state IN ('pending', 'sending')")
    op.create_index(
        "ix_notifications_claimable",
        "notifications",
        ["target", "not_before"],
        postgresql_where=claimable,
        sqlite_where=claimable,
    )
    op.create_index("ix_notifications_state", "notifications", ["state"])
    op.create_index(
        "ix_notifications_instance_ticket_id", "notifications", ["instance", "ticket_id"]
    )


def downgrade() -> None:
    op.drop_table("notifications")
