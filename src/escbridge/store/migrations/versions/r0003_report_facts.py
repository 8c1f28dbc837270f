"""Facts reports need: an escalation's channel, helpdesk type and source group; resolution time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("escalations", sa.Column("channel", sa.String(50), nullable=True))
    op.add_column("escalations", sa.Column("helpdesk", sa.String(100), nullable=True))
    op.add_column("escalations", sa.Column("from_group", sa.String(255), nullable=True))
    op.add_column(
        "ticket_state", sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("ticket_state") as batch:
        batch.drop_column("resolved_at")
    with op.batch_alter_table("escalations") as batch:
        batch.drop_column("from_group")
        batch.drop_column("helpdesk")
        batch.drop_column("channel")
