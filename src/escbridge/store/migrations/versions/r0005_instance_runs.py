"""The last sync (and check) of each instance and its result, for `escbridge status`.

Until now a sync run's summary went to its output only; an operator asking "did last night's
sync get through?" had to find the log. An existing store starts with no runs recorded: the
next `escbridge sync` writes the first.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# As they were written on this date (migrations never import the live schema).
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def Time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "instance_runs",
        sa.Column("instance", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("started_at", Time(), nullable=False),
        sa.Column("finished_at", Time(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("result", Json, nullable=True),
        sa.Column("last_ok_at", Time(), nullable=True),
        sa.PrimaryKeyConstraint("instance", "kind", name="pk_instance_runs"),
    )


def downgrade() -> None:
    op.drop_table("instance_runs")
