"""The shadow of open tickets and the due-queue on it: the statements, on one connection.

Why a shadow: a time limit ("idle over 20 days", "the level's resolution time ran out")
passes while nothing happens to the ticket, so no webhook says so. Instead of sweeping the
helpdesk for such tickets, processing keeps what the matrix needs of each open ticket here,
with the next instant its decision can change by time alone (``due_at``). A worker moves the
rows whose instant has come into the inbox as ``due`` events (:func:`take_due`), where they
take the one processing path: the ticket is read once, decided, applied and recorded, and
its next due time computed again.

The ``matrix`` column says what the shadow is good for. The digest of a matrix: its due time
was computed under that matrix and it holds every free-text field that matrix reads, so a scan
may pass the ticket over (:func:`unchanged`). That digest's :func:`partial_stamp`: the due
time was computed under the matrix, but a text field it reads was not kept (the shadow was
written under an earlier matrix), so the ticket is decided again when a scan meets it. Which
text fields a shadow holds is recorded in its ticket document (``_text``).

:class:`~escbridge.store.Store` wraps these for callers; the record phase writes shadows in
its own transaction through :class:`~escbridge.store.TicketWrites`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from escbridge.model import Ticket, TicketEvent
from escbridge.store.schema import FAILED, PENDING, PROCESSING, inbox, ticket_shadow, ticket_state

#: The inbox kind of a due ticket: not a webhook, so never taken for escbridge's own change.
DUE_KIND = "due"

_CHUNK = 500

#: The key of the shadow's ticket document listing the free-text fields it holds (the others
#: were blanked); not a Ticket field. Absent from shadows written before it was recorded.
_TEXT = "_text"


@dataclass(frozen=True)
class ShadowWrite:
    """The shadow a recorded decision leaves: the ticket as the matrix needs it and its next
    due instant, or ``ticket=None`` when the ticket is no longer open (its row is dropped)."""

    instance: str
    ticket_id: str
    ticket: Ticket | None
    due_at: datetime | None = None
    matrix: str | None = None  # the digest of the matrix due_at was computed under
    text: frozenset[str] = frozenset()  # the free-text fields ``ticket`` holds, even if empty


@dataclass(frozen=True)
class Shadow:
    """One open ticket's shadow, as stored."""

    instance: str
    ticket_id: str
    ticket: Ticket
    due_at: datetime | None
    seen_at: datetime
    shadowed_at: datetime
    matrix: str | None = None
    text: frozenset[str] | None = None  # the free-text fields it holds; None: not recorded

    @classmethod
    def from_row(cls, row: Any) -> Shadow:
        document = dict(row["ticket"])
        text = document.pop(_TEXT, None)
        return cls(
            instance=row["instance"],
            ticket_id=row["ticket_id"],
            ticket=Ticket.model_validate(document),
            due_at=row["due_at"],
            seen_at=row["seen_at"],
            shadowed_at=row["shadowed_at"],
            matrix=row["matrix"],
            text=None if text is None else frozenset(text),
        )


def partial_stamp(digest: str) -> str:
    """The ``matrix`` stamp of a shadow whose due time was computed under the matrix
    ``digest`` but which lacks a free-text field that matrix reads. As long as a digest (the
    column's width) and never equal to one: a digest is hexadecimal."""
    return "~" + digest[1:]


def due_key(ticket_id: str, due_at: datetime) -> str:
    """The inbox dedupe key of one due instant: promoted twice (two workers, a retry after a
    crash), it is still one job."""
    return f"{DUE_KIND}:{ticket_id}:{due_at.isoformat()}"


_UPSERTS: dict[str, Any] = {}

#: Deletes one shadow; executed with one parameter set per ticket.
_DROP = sa.delete(ticket_shadow).where(
    ticket_shadow.c.instance == sa.bindparam("p_instance"),
    ticket_shadow.c.ticket_id == sa.bindparam("p_ticket_id"),
)


def _upsert(dialect: str) -> Any:
    """The shadow upsert of a dialect, built once: building it costs more than running it."""
    statement = _UPSERTS.get(dialect)
    if statement is None:
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(ticket_shadow)
        columns = ("ticket", "due_at", "seen_at", "shadowed_at", "matrix")
        statement = insert.on_conflict_do_update(
            index_elements=["instance", "ticket_id"],
            set_={name: insert.excluded[name] for name in columns},
        )
        _UPSERTS[dialect] = statement
    return statement


def save(connection: sa.Connection, writes: Sequence[ShadowWrite], now: datetime) -> None:
    """Upsert the shadows of open tickets and drop those of tickets no longer open."""
    if not writes:
        return
    latest = {(w.instance, w.ticket_id): w for w in writes}  # the last write of a ticket wins
    rows = [
        {
            "instance": w.instance,
            "ticket_id": w.ticket_id,
            # Defaults left out: a smaller row to write on every recorded decision.
            "ticket": {
                **w.ticket.model_dump(mode="json", exclude_defaults=True),
                _TEXT: sorted(w.text),
            },
            "due_at": w.due_at,
            "seen_at": now,
            "shadowed_at": now,
            "matrix": w.matrix,
        }
        for w in latest.values()
        if w.ticket is not None
    ]
    drop = [
        {"p_instance": w.instance, "p_ticket_id": w.ticket_id}
        for w in latest.values()
        if w.ticket is None
    ]
    upsert = _upsert(connection.dialect.name)
    for start in range(0, len(rows), _CHUNK):
        connection.execute(upsert, rows[start : start + _CHUNK])
    if drop:
        connection.execute(_DROP, drop)


def take_due(connection: sa.Connection, now: datetime, limit: int) -> list[TicketEvent]:
    """Up to ``limit`` shadows due at ``now``, soonest first, as the ``due`` events to keep in
    the inbox; their due time cleared (processing sets the next one).

    PostgreSQL skips rows another worker is taking (``FOR UPDATE SKIP LOCKED``); SQLite runs
    the transaction under its database-wide write lock, which is just as exclusive. A shadow
    written again meanwhile (a webhook's ticket recorded) keeps the newer due time.
    """
    query = (
        sa.select(ticket_shadow.c.instance, ticket_shadow.c.ticket_id, ticket_shadow.c.due_at)
        .where(ticket_shadow.c.due_at <= now)
        .order_by(ticket_shadow.c.due_at)
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = connection.execute(query).all()
    if not rows:
        return []
    connection.execute(
        sa.update(ticket_shadow)
        .where(
            ticket_shadow.c.instance == sa.bindparam("p_instance"),
            ticket_shadow.c.ticket_id == sa.bindparam("p_ticket_id"),
            ticket_shadow.c.due_at == sa.bindparam("p_due_at"),
        )
        .values(due_at=None),
        [{"p_instance": i, "p_ticket_id": t, "p_due_at": d} for i, t, d in rows],
    )
    return [
        TicketEvent(
            instance=instance,
            ticket_id=ticket_id,
            dedupe_key=due_key(ticket_id, due_at),
            kind=DUE_KIND,
            occurred_at=due_at,
        )
        for instance, ticket_id, due_at in rows
    ]


def earliest(connection: sa.Connection, instance: str | None) -> datetime | None:
    """The soonest due instant (of one instance, or of all)."""
    query = sa.select(sa.func.min(ticket_shadow.c.due_at))
    if instance is not None:
        query = query.where(ticket_shadow.c.instance == instance)
    value: datetime | None = connection.execute(query).scalar()  # min() keeps the type
    return value


def due_soonest(connection: sa.Connection, instance: str | None, limit: int) -> list[Shadow]:
    """The shadows with a due time, soonest first."""
    query = sa.select(ticket_shadow).where(ticket_shadow.c.due_at.is_not(None))
    if instance is not None:
        query = query.where(ticket_shadow.c.instance == instance)
    query = query.order_by(ticket_shadow.c.due_at, ticket_shadow.c.ticket_id).limit(limit)
    return [Shadow.from_row(row) for row in connection.execute(query).mappings()]


def stale(
    connection: sa.Connection, matrix: str, after: tuple[str, str] | None, limit: int
) -> list[Shadow]:
    """Shadows whose due time was computed under another matrix than ``matrix``, in key
    order from after ``after`` (instance, ticket id): one pass, whatever others write. Also
    those stamped ``matrix`` that do not say which text fields they hold (written before
    shadows recorded it): the refresh stamps them partial, so a scan decides them once more."""
    column = ticket_shadow.c.matrix
    query = sa.select(ticket_shadow).where(
        sa.or_(
            column.is_(None),
            column.not_in((matrix, partial_stamp(matrix))),
            sa.and_(column == matrix, ticket_shadow.c.ticket[_TEXT].as_string().is_(None)),
        )
    )
    if after is not None:
        query = query.where(
            sa.tuple_(ticket_shadow.c.instance, ticket_shadow.c.ticket_id) > sa.tuple_(*after)
        )
    query = query.order_by(ticket_shadow.c.instance, ticket_shadow.c.ticket_id).limit(limit)
    return [Shadow.from_row(row) for row in connection.execute(query).mappings()]


def redate(connection: sa.Connection, shadows: Sequence[Shadow], matrix: str) -> int:
    """Store each shadow's new due time, computed under ``matrix``, and its stamp: ``matrix``,
    or the partial one when the shadow is so stamped (it lacks a text field the matrix reads) —
    unless the shadow was written since it was read (its writer computed a newer one); how
    many were stored."""
    if not shadows:
        return 0
    partial = partial_stamp(matrix)
    statement = (
        sa.update(ticket_shadow)
        .where(
            ticket_shadow.c.instance == sa.bindparam("p_instance"),
            ticket_shadow.c.ticket_id == sa.bindparam("p_ticket_id"),
            ticket_shadow.c.shadowed_at == sa.bindparam("p_shadowed_at"),
        )
        .values(due_at=sa.bindparam("p_due_at"), matrix=sa.bindparam("p_matrix"))
    )
    params = [
        {
            "p_instance": s.instance,
            "p_ticket_id": s.ticket_id,
            "p_shadowed_at": s.shadowed_at,
            "p_due_at": s.due_at,
            "p_matrix": partial if s.matrix == partial else matrix,
        }
        for s in shadows
    ]
    return int(connection.execute(statement, params).rowcount)


def get(connection: sa.Connection, instance: str, ticket_id: str) -> Shadow | None:
    query = sa.select(ticket_shadow).where(
        ticket_shadow.c.instance == instance, ticket_shadow.c.ticket_id == ticket_id
    )
    row = connection.execute(query).mappings().first()
    return None if row is None else Shadow.from_row(row)


def unchanged(
    connection: sa.Connection,
    instance: str,
    tickets: Sequence[Ticket],
    matrix: str,
    now: datetime,
    *,
    mark_seen: bool,
) -> set[str]:
    """The ids of ``tickets`` (a scanned page) escbridge decided as they are: whose shadow has
    their version (``version`` and ``updated_at``), was computed under ``matrix`` and is not due
    at ``now``. Deciding them again would decide what is already decided: ``next_due`` is
    exact, so until their due time only a change to the ticket, its history or the matrix can
    change their decision, and each of those is excluded here — a changed ticket has a new
    version, an escalation writes the ticket, a changed matrix another digest (and a shadow
    refreshed for it without a text field it reads only the :func:`partial_stamp`). Tickets with
    work in flight (a write intent, an unfinished or dead-lettered inbox job; a due ticket
    moved into the inbox has its due time cleared) are left to be decided as ever.

    ``mark_seen`` stores ``now`` as when they were last seen open, as deciding them would
    have: a complete reconciliation drops the shadows it did not see. One read and at most one
    update, the page's ids passed as one parameter.
    """
    if not tickets:
        return set()
    dialect = connection.dialect.name
    stamps = {t.id: (t.updated_at, t.version) for t in tickets}
    shadow = ticket_shadow.c
    in_flight = sa.or_(
        sa.exists().where(
            inbox.c.instance == shadow.instance,
            inbox.c.ticket_id == shadow.ticket_id,
            inbox.c.status.in_((PENDING, PROCESSING, FAILED)),
        ),
        sa.exists().where(
            ticket_state.c.instance == shadow.instance,
            ticket_state.c.ticket_id == shadow.ticket_id,
            ticket_state.c.intent.is_not(None),
        ),
    )
    query = sa.select(
        shadow.ticket_id,
        shadow.ticket["updated_at"].as_string(),
        shadow.ticket["version"].as_string(),
    ).where(
        shadow.instance == instance,
        _among(shadow.ticket_id, list(stamps), dialect),
        shadow.matrix == matrix,
        sa.or_(shadow.due_at.is_(None), shadow.due_at > now),
        sa.not_(in_flight),
    )
    found = {
        ticket_id
        for ticket_id, updated_at, version in connection.execute(query)
        if updated_at is not None
        and stamps[ticket_id] == (datetime.fromisoformat(updated_at), version)
    }
    if mark_seen and found:
        connection.execute(
            sa.update(ticket_shadow)
            .where(shadow.instance == instance, _among(shadow.ticket_id, sorted(found), dialect))
            .values(seen_at=now)
        )
    return found


def _among(column: sa.ColumnElement[str], values: list[str], dialect: str) -> Any:
    """``column IN values`` with the values as one parameter (a PostgreSQL array, a JSON list
    SQLite's ``json_each`` reads): a page's thousand ids would otherwise be a thousand
    parameters, which costs more to expand than the query takes to run."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(None, values, type_=postgresql.ARRAY(sa.String)))
    each = sa.func.json_each(sa.bindparam(None, json.dumps(values))).table_valued("value")
    return column.in_(sa.select(each.c.value))


def counts(connection: sa.Connection) -> dict[str, tuple[int, int]]:
    """Per instance: (open tickets shadowed, of which with a due time)."""
    query = sa.select(
        ticket_shadow.c.instance,
        sa.func.count(),
        sa.func.count(ticket_shadow.c.due_at),
    ).group_by(ticket_shadow.c.instance)
    return {instance: (int(n), int(d)) for instance, n, d in connection.execute(query)}


def drop_unseen(connection: sa.Connection, instance: str, before: datetime) -> int:
    """Drop the shadows of ``instance`` not seen since ``before``."""
    statement = sa.delete(ticket_shadow).where(
        ticket_shadow.c.instance == instance, ticket_shadow.c.seen_at < before
    )
    return int(connection.execute(statement).rowcount)
