"""The store's tables, as SQLAlchemy Core metadata: the one description both dialects share.

Migrations under ``migrations/versions`` create exactly these tables; a test compares the
two, so a change here without a migration fails the suite.

Times are stored in UTC. SQLite has no time zones, so :class:`UtcDateTime` strips the zone on
the way in and puts UTC back on the way out; code above the store only ever sees aware times.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

#: Lifecycle of an inbox row. ``failed`` is the dead-letter state: kept, listed, replayable.
PENDING, PROCESSING, DONE, FAILED = "pending", "processing", "done", "failed"
JOB_STATUSES = (PENDING, PROCESSING, DONE, FAILED)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out, on every dialect."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"the store keeps aware datetimes only, got naive {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Big integers on PostgreSQL; SQLite's ``INTEGER PRIMARY KEY`` is already 64-bit and is the
#: only form it auto-increments.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: JSON documents; Python None is SQL NULL (not the JSON text 'null').
Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Rows a worker may still claim. Written out (not bound) so the planner can match the
#: partial index below, which stays small however many done rows pile up.
CLAIMABLE = sa.text("status IN ('pending', 'processing')")

#: Received events. The unique (instance, dedupe_key) pair is the dedupe at the door. For a
#: ``processing`` row, ``next_attempt_at`` is the end of the worker's lease: when it passes, the
#: worker is presumed dead and the row can be claimed again.
inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("instance", sa.String(100), nullable=False),
    sa.Column("ticket_id", sa.String(100), nullable=False),
    sa.Column("dedupe_key", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("actor", sa.String(255), nullable=True),
    sa.Column("occurred_at", UtcDateTime(), nullable=True),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
    sa.Column("lease_owner", sa.String(200), nullable=True),
    sa.Column("claim_token", sa.String(36), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("outcome", sa.String(50), nullable=True),
    sa.Column("finished_at", UtcDateTime(), nullable=True),
    sa.UniqueConstraint("instance", "dedupe_key"),
    sa.CheckConstraint(
        "status IN ('pending', 'processing', 'done', 'failed')", name="status_known"
    ),
    sa.Index(
        "ix_inbox_claimable",
        "next_attempt_at",
        "id",
        postgresql_where=CLAIMABLE,
        sqlite_where=CLAIMABLE,
    ),
    sa.Index(None, "status"),
    sa.Index(None, "instance", "ticket_id"),
)

#: Every escalation escbridge made, with the decision that led to it: the audit trail, the
#: engine's history (cooldown, daily cap, time at level) and the source of reports.
escalations = sa.Table(
    "escalations",
    metadata,
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
    sa.Column("ticket_created_at", UtcDateTime(), nullable=True),
    sa.Column("decided_at", UtcDateTime(), nullable=False),
    sa.Column("recorded_at", UtcDateTime(), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("job_id", BigId, nullable=True),
    sa.Column("channel", sa.String(50), nullable=True),  # the ticket's, when escalated
    sa.Column("helpdesk", sa.String(100), nullable=True),  # the connector type
    sa.Column("from_group", sa.String(255), nullable=True),  # the ticket's group before it
    sa.Index(None, "instance", "ticket_id", "decided_at"),
    sa.Index(None, "decided_at"),
)

#: Where each scheduled scan resumes: the connector's opaque cursor and the time it covers.
sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    sa.Column("instance", sa.String(100), primary_key=True),
    sa.Column("stream", sa.String(50), primary_key=True),
    sa.Column("cursor", sa.Text(), nullable=True),
    sa.Column("since", UtcDateTime(), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

#: One row per ticket escbridge has touched: its level and counters, the per-ticket lock that
#: keeps two workers from deciding the same ticket at once, and the intent written just before
#: an apply, so a retry after a crash can tell "applied but not recorded" from "never applied".
ticket_state = sa.Table(
    "ticket_state",
    metadata,
    sa.Column("instance", sa.String(100), primary_key=True),
    sa.Column("ticket_id", sa.String(100), primary_key=True),
    sa.Column("level", sa.String(100), nullable=True),
    sa.Column("last_escalated_at", UtcDateTime(), nullable=True),
    sa.Column("cooldown_until", UtcDateTime(), nullable=True),
    sa.Column("day", sa.Date(), nullable=True),
    sa.Column("day_count", sa.Integer(), nullable=False),
    sa.Column("escalation_count", sa.Integer(), nullable=False),
    sa.Column("lock_token", sa.String(36), nullable=True),
    sa.Column("lock_owner", sa.String(200), nullable=True),
    sa.Column("lock_expires_at", UtcDateTime(), nullable=True),
    sa.Column("intent", Json, nullable=True),
    sa.Column("intent_at", UtcDateTime(), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # When processing first saw the ticket solved or closed; cleared when it is open again.
    sa.Column("resolved_at", UtcDateTime(), nullable=True),
)

#: The shadow of every open ticket escbridge has seen, and the due-queue on it: what the
#: matrix needs of the ticket (free text only where keyword rules read it), written with every
#: recorded decision, and ``due_at``, the next instant the decision can change by time alone
#: (``Engine.next_due``; NULL: never). Workers move due rows into the inbox (``kind='due'``),
#: so a time limit is acted on at its deadline through the one processing path. ``seen_at``:
#: when processing last saw the ticket open; a complete reconciliation drops the rows it did
#: not see (tickets solved, closed or deleted meanwhile) — a scan by instance once a day, so
#: ``seen_at`` has no index to keep up on every write.
ticket_shadow = sa.Table(
    "ticket_shadow",
    metadata,
    sa.Column("instance", sa.String(100), primary_key=True),
    sa.Column("ticket_id", sa.String(100), primary_key=True),
    sa.Column("ticket", Json, nullable=False),
    sa.Column("due_at", UtcDateTime(), nullable=True),
    sa.Column("seen_at", UtcDateTime(), nullable=False),
    sa.Column("shadowed_at", UtcDateTime(), nullable=False),
    sa.Column("matrix", sa.String(32), nullable=True),  # the digest due_at was computed under
    sa.Index(None, "due_at"),
)

#: The last run of each command that works on an instance as a whole (``sync``, ``check``):
#: when it ran, whether it got through, its one-line summary and its result, and when a run
#: last got through. What ``escbridge status`` shows without calling a helpdesk.
instance_runs = sa.Table(
    "instance_runs",
    metadata,
    sa.Column("instance", sa.String(100), primary_key=True),
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime(), nullable=False),
    sa.Column("ok", sa.Boolean(), nullable=False),
    sa.Column("summary", sa.Text(), nullable=False),
    sa.Column("result", Json, nullable=True),
    sa.Column("last_ok_at", UtcDateTime(), nullable=True),
)

#: Notification states. ``sending`` is committed before the send, so a row found ``sending``
#: after its lease ran out is one whose worker died mid-send: its outcome is unknown.
#: ``failed`` (dead letter) and ``unknown`` are listed by `escbridge jobs` and replayable.
NOTIFY_PENDING, NOTIFY_SENDING, NOTIFY_SENT = "pending", "sending", "sent"
NOTIFY_FAILED, NOTIFY_UNKNOWN = "failed", "unknown"
NOTIFY_STATES = (NOTIFY_PENDING, NOTIFY_SENDING, NOTIFY_SENT, NOTIFY_FAILED, NOTIFY_UNKNOWN)

#: Rows a notifier may still claim, written out for the partial index (as CLAIMABLE).
NOTIFY_CLAIMABLE = sa.text("state IN ('pending', 'sending')")

#: The outbox: one row per (escalation, notify target), written in the transaction that records
#: the escalation, so a recorded escalation always has its notifications and a rolled-back one
#: none. ``not_before``: the end of a digest window or of quiet hours; for a ``sending`` row,
#: ``lease_until`` is when its worker is presumed dead. ``digest_of``: the row whose message
#: carried this one (a digest), else NULL.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("instance", sa.String(100), nullable=False),
    sa.Column("ticket_id", sa.String(100), nullable=False),
    sa.Column("escalation_id", BigId, nullable=False),
    sa.Column("target", sa.String(100), nullable=False),
    sa.Column("context", Json, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("not_before", UtcDateTime(), nullable=False),
    sa.Column("claimed_by", sa.String(200), nullable=True),
    sa.Column("lease_until", UtcDateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("sent_at", UtcDateTime(), nullable=True),
    sa.Column("digest_of", BigId, nullable=True),
    sa.UniqueConstraint("escalation_id", "target"),
    sa.CheckConstraint(
        "state IN ('pending', 'sending', 'sent', 'failed', 'unknown')", name="state_known"
    ),
    sa.Index(
        "ix_notifications_claimable",
        "target",
        "not_before",
        postgresql_where=NOTIFY_CLAIMABLE,
        sqlite_where=NOTIFY_CLAIMABLE,
    ),
    sa.Index(None, "state"),
    sa.Index(None, "instance", "ticket_id"),
)
