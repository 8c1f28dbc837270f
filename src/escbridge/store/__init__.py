"""Durable state: the inbox of received events, escalation history, per-ticket state, cursors.

SQLAlchemy Core over SQLite (the default, one machine) or PostgreSQL (several machines).
Only this package talks to the database. Schema versions are Alembic migrations shipped
with the package: `escbridge db upgrade` (:func:`upgrade`) creates and upgrades the tables.
"""

from escbridge.errors import LockLostError
from escbridge.store.database import DEFAULT_URL, create_engine, parse_url, safe_url
from escbridge.store.migrate import UpgradeResult, head_revision, upgrade
from escbridge.store.records import (
    Enqueued,
    Intent,
    Job,
    NewNotification,
    Notification,
    NotificationClaim,
    StoredEscalation,
    SyncCursor,
    TicketLock,
    TicketState,
    ToRecord,
)
from escbridge.store.schema import (
    DONE,
    FAILED,
    JOB_STATUSES,
    NOTIFY_FAILED,
    NOTIFY_PENDING,
    NOTIFY_SENDING,
    NOTIFY_SENT,
    NOTIFY_STATES,
    NOTIFY_UNKNOWN,
    PENDING,
    PROCESSING,
)
from escbridge.store.shadow import DUE_KIND, Shadow, ShadowWrite
from escbridge.store.store import APPLIED, RECOVERED, Store, TicketWrites

__all__ = [
    "APPLIED",
    "DEFAULT_URL",
    "DONE",
    "DUE_KIND",
    "FAILED",
    "JOB_STATUSES",
    "NOTIFY_FAILED",
    "NOTIFY_PENDING",
    "NOTIFY_SENDING",
    "NOTIFY_SENT",
    "NOTIFY_STATES",
    "NOTIFY_UNKNOWN",
    "PENDING",
    "PROCESSING",
    "RECOVERED",
    "Enqueued",
    "Intent",
    "Job",
    "LockLostError",
    "NewNotification",
    "Notification",
    "NotificationClaim",
    "Shadow",
    "ShadowWrite",
    "Store",
    "StoredEscalation",
    "SyncCursor",
    "TicketLock",
    "TicketState",
    "TicketWrites",
    "ToRecord",
    "UpgradeResult",
    "create_engine",
    "head_revision",
    "parse_url",
    "safe_url",
    "upgrade",
]

# Read-only queries for /metrics, and the inbox's size limits (escbridge.store.reports, the
# report's history, is imported by name: it brings in the report's figures).
from escbridge.store.limits import INBOX_LIMITS
from escbridge.store.reads import due_counts, escalation_counts

__all__ += ["INBOX_LIMITS", "due_counts", "escalation_counts"]

# Whether the next write would get in (the receiver's /readyz), and how long it may wait.
from escbridge.store.database import PROBE_TIMEOUT, probe_write  # noqa: E402

__all__ += ["PROBE_TIMEOUT", "probe_write"]
