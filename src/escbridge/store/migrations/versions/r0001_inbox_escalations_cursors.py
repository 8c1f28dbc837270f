"""Inbox, escalation history and sync cursors.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def Time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("instance", sa.String(100), nullable=False),
        sa.Column("ticket_id", sa.String(100), nullable=False),
        sa.Column("dedupe_key", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("occurred_at", Time(), nullable=True),
        sa.Column("received_at", Time(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Time(), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("claim_token", sa.String(36), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(50), nullable=True),
        sa.Column("finished_at", Time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_inbox"),
        sa.UniqueConstraint("instance", "dedupe_key", name="uq_inbox_instance_dedupe_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'done', 'failed')",
            name="ck_inbox_status_known",
        ),
    )
    claimable = sa.text("status IN ('pending', 'processing')")
    op.create_index(
        "ix_inbox_claimable",
        "inbox",
        ["next_attempt_at", "id"],
        postgresql_where=claimable,
        sqlite_where=claimable,
    )
    op.create_index("ix_inbox_status", "inbox", ["status"])
    op.create_index("ix_inbox_instance_ticket_id", "inbox", ["instance", "ticket_id"])

    op.create_table(
        "escalations",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("instance", sa.String(100), nullable=False),
        sa.Column("ticket_id", sa.String(100), nullable=False),
        sa.Column("from_level", sa.String(100), nullable=True),
        sa.Column("to_level", sa.String(100), nullable=False),
        sa.Column("destination_kind", sa.String(10), nullable=False),
        sa.Column("to_group", sa.String(255), nullable=True),
        sa.Column("rule_id", sa.String(100), nullable=True),
        sa.Column("kind", sa.String(20), nullable=True),
        sa.Column("actions", Json, nullable=False),
        sa.Column("reasons", Json, nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("ticket_created_at", Time(), nullable=True),
        sa.Column("decided_at", Time(), nullable=False),
        sa.Column("recorded_at", Time(), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("job_id", BigId, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_escalations"),
    )
    op.create_index(
        "ix_escalations_instance_ticket_id_decided_at",
        "escalations",
        ["instance", "ticket_id", "decided_at"],
    )
    op.create_index("ix_escalations_decided_at", "escalations", ["decided_at"])

    op.create_table(
        "sync_cursors",
        sa.Column("instance", sa.String(100), nullable=False),
        sa.Column("stream", sa.String(50), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("since", Time(), nullable=True),
        sa.Column("updated_at", Time(), nullable=False),
        sa.PrimaryKeyConstraint("instance", "stream", name="pk_sync_cursors"),
    )


def downgrade() -> None:
    op.drop_table("sync_cursors")
    op.drop_index("ix_escalations_decided_at", table_name="escalations")
    op.drop_index("ix_escalations_instance_ticket_id_decided_at", table_name="escalations")
    op.drop_table("escalations")
    op.drop_index("ix_inbox_instance_ticket_id", table_name="inbox")
    op.drop_index("ix_inbox_status", table_name="inbox")
    op.drop_index("ix_inbox_claimable", table_name="inbox")
    op.drop_table("inbox")
