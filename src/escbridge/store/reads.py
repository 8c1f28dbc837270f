"""Read-only queries off the event path: what ``/metrics`` and ``escbridge report`` read.

Each runs on a connection of its own, outside the queue the store's writers take turns in
(``SqliteWriterLock``); the caller checks the schema once (``check_schema``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

import sqlalchemy as sa

from escbridge.store.database import unavailable_as_typed
from escbridge.store.schema import escalations, ticket_shadow
from escbridge.store.store import Store


@contextlib.contextmanager
def reading(store: Store) -> Iterator[sa.Connection]:
    """A connection for read-only queries; database outages as StoreUnavailableError."""
    with unavailable_as_typed(store.url), store.engine.connect() as connection:
        yield connection


def escalation_counts(store: Store) -> dict[tuple[str, str], int]:
    """Recorded escalations by (instance, destination level or team): one GROUP BY."""
    query = sa.select(escalations.c.instance, escalations.c.to_level, sa.func.count()).group_by(
        escalations.c.instance, escalations.c.to_level
    )
    with reading(store) as connection:
        return {(str(i), str(level)): int(n) for i, level, n in connection.execute(query)}


def due_counts(store: Store, now: datetime) -> dict[tuple[str, str], int]:
    """Open tickets with a deadline, by (instance, ``overdue`` or ``ahead``) at ``now``: an
    overdue one means no worker is acting on the due-queue. One GROUP BY."""
    state = sa.case((ticket_shadow.c.due_at <= now, "overdue"), else_="ahead")
    query = (
        sa.select(ticket_shadow.c.instance, state, sa.func.count())
        .where(ticket_shadow.c.due_at.is_not(None))
        .group_by(ticket_shadow.c.instance, state)
    )
    with reading(store) as connection:
        return {(str(i), str(s)): int(n) for i, s, n in connection.execute(query)}


__all__ = ["due_counts", "escalation_counts", "reading"]
