"""The shadow of open tickets and the due-queue on it (issue 16: the time path without sweeps).

An existing store starts with an empty shadow; the first `escbridge sync` after the upgrade
runs a reconciliation over every open ticket, which fills it. The sweep's cursor rows are
dropped: that pass is gone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# As they were written on this date (migrations never import the live schema).
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def Time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ticket_shadow",
        sa.Column("instance", sa.String(100), nullable=False),
        sa.Column("ticket_id", sa.String(100), nullable=False),
        sa.Column("ticket", Json, nullable=False),
        sa.Column("due_at", Time(), nullable=True),
        sa.Column("seen_at", Time(), nullable=False),
        sa.Column("shadowed_at", Time(), nullable=False),
        sa.Column("matrix", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("instance", "ticket_id", name="pk_ticket_shadow"),
    )
    op.create_index("ix_ticket_shadow_due_at", "ticket_shadow", ["due_at"])
    op.execute(sa.text("DELETE FROM sync_cursors WHERE stream = 'sweep'"))


def downgrade() -> None:
    op.drop_index("ix_ticket_shadow_due_at", table_name="ticket_shadow")
    op.drop_table("ticket_shadow")
