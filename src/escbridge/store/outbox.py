"""The notification outbox: rows written with their escalation, claimed and settled by notifiers.

A claim is one message: one row, or every due row of a digest target. It is committed as
``sending`` (attempts counted) before the message goes out, so a notifier that dies mid-send
leaves rows found ``sending`` after their lease: the claim is taken over as a *stale* one and the
notifier applies the unknown-outcome rules of its target (escbridge.notify.deliver). Every
settle is guarded by the claim's token: a notifier whose claim was taken over writes nothing.

One notifier claims a target at a time: SQLite's write transaction holds the whole database,
and on PostgreSQL a claim (or a postpone) takes the target's transaction-scoped advisory lock
first and then waits for, rather than skips, rows another transaction is writing. Skipping
them would let two notifiers split one digest, or one stale claim, into two messages.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from escbridge.store.records import NewNotification, Notification, NotificationClaim
from escbridge.store.schema import (
    NOTIFY_CLAIMABLE,
    NOTIFY_FAILED,
    NOTIFY_PENDING,
    NOTIFY_SENDING,
    NOTIFY_SENT,
    NOTIFY_STATES,
    NOTIFY_UNKNOWN,
    UtcDateTime,
    notifications,
)

_n = notifications


def _aware(value: Any, connection: sa.Connection) -> datetime | None:
    """An aggregate's time as the column type gives it (min() comes back raw from SQLite)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return UtcDateTime().process_result_value(value, connection.dialect)


def insert(connection: sa.Connection, rows: Sequence[NewNotification], now: datetime) -> int:
    """Write new rows (pending); a row already kept for its (escalation, target) is left as it
    is. How many were new."""
    if not rows:
        return 0
    dialect = connection.dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = [
        {
            "instance": row.instance,
            "ticket_id": row.ticket_id,
            "escalation_id": row.escalation_id,
            "target": row.target,
            "context": dict(row.context),
            "state": NOTIFY_PENDING,
            "attempts": 0,
            "not_before": row.not_before,
            "created_at": now,
        }
        for row in rows
    ]
    statement = insert_(_n).on_conflict_do_nothing(index_elements=["escalation_id", "target"])
    return int(connection.execute(statement, values).rowcount or 0)


def open_windows(
    connection: sa.Connection, targets: Iterable[str], now: datetime
) -> dict[str, datetime]:
    """Per target, when its open digest window began: the creation of the oldest row still
    waiting for its window to close — pending, never tried, not yet due (a target without one
    has no open window and is left out). A row being retried, or one due but not yet sent,
    belongs to a window that has closed: counting it would give every new escalation a window
    of its own while a service is down, one message each."""
    wanted = sorted(set(targets))
    if not wanted:
        return {}
    query = (
        sa.select(_n.c.target, sa.func.min(_n.c.created_at))
        .where(
            NOTIFY_CLAIMABLE,
            _n.c.state == NOTIFY_PENDING,
            _n.c.attempts == 0,
            _n.c.not_before > now,
            _n.c.target.in_(wanted),
        )
        .group_by(_n.c.target)
    )
    found: dict[str, datetime] = {}
    for target, opened in connection.execute(query):
        value = _aware(opened, connection)
        if value is not None:
            found[str(target)] = value
    return found


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        NOTIFY_CLAIMABLE,
        sa.or_(
            sa.and_(_n.c.state == NOTIFY_PENDING, _n.c.not_before <= now),
            sa.and_(_n.c.state == NOTIFY_SENDING, _n.c.lease_until <= now),
        ),
    )


def due_targets(connection: sa.Connection, now: datetime) -> list[str]:
    """The targets with a row to send (or a stale claim to settle) at ``now``."""
    query = sa.select(_n.c.target).where(_due(now)).distinct().order_by(_n.c.target)
    return [str(target) for target in connection.execute(query).scalars()]


def count_due(connection: sa.Connection, now: datetime) -> int:
    query = sa.select(sa.func.count()).select_from(_n).where(_due(now))
    return int(connection.execute(query).scalar() or 0)


def earliest_pending(connection: sa.Connection) -> datetime | None:
    """When the next pending row may go out (None: none pending)."""
    query = sa.select(sa.func.min(_n.c.not_before)).where(
        NOTIFY_CLAIMABLE, _n.c.state == NOTIFY_PENDING
    )
    return _aware(connection.execute(query).scalar(), connection)


def postpone(connection: sa.Connection, target: str, now: datetime, until: datetime) -> int:
    """Hold the due rows of ``target`` until ``until`` (its quiet hours began meanwhile): the
    pending ones' ``not_before``, and the lease of a stale claim (taking it over may mean
    sending it again); a draining worker does not wait for them. How many rows."""
    _lock_target(connection, target)
    pending = (
        sa.update(_n)
        .where(
            NOTIFY_CLAIMABLE,
            _n.c.target == target,
            _n.c.state == NOTIFY_PENDING,
            _n.c.not_before <= now,
        )
        .values(not_before=until)
    )
    stale = (
        sa.update(_n)
        .where(
            NOTIFY_CLAIMABLE,
            _n.c.target == target,
            _n.c.state == NOTIFY_SENDING,
            _n.c.lease_until <= now,
        )
        .values(lease_until=until)
    )
    return int(connection.execute(pending).rowcount) + int(connection.execute(stale).rowcount)


def _locked(query: sa.Select[Any], connection: sa.Connection) -> sa.Select[Any]:
    # PostgreSQL: wait for rows another transaction is settling (never skip them: a claim
    # would get part of a message); SQLite's write transaction holds the whole database.
    if connection.dialect.name == "postgresql":
        return query.with_for_update()
    return query


def _lock_target(connection: sa.Connection, target: str) -> None:
    """PostgreSQL: hold ``target``'s advisory lock until this transaction ends, so that its
    claims and postpones run one after another (SQLite's writes already do)."""
    if connection.dialect.name != "postgresql":
        return
    digest = hashlib.blake2b(f"escbridge.notify:{target}".encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def _held(connection: sa.Connection, held: NotificationClaim) -> bool:
    """Whether every row of ``held`` is still its claim's (locked until the transaction
    ends, in id order like a claim): a settle or renew writes all of them or none."""
    query = _locked(
        sa.select(_n.c.id)
        .where(
            _n.c.id.in_(list(held.ids)),
            _n.c.claimed_by == held.token,
            _n.c.state == NOTIFY_SENDING,
        )
        .order_by(_n.c.id),
        connection,
    )
    return len(list(connection.execute(query).scalars())) == len(held.ids)


def claim(
    connection: sa.Connection,
    target: str,
    worker: str,
    now: datetime,
    lease: timedelta,
    *,
    digest: bool,
    limit: int = 100,
) -> NotificationClaim | None:
    """The next message of ``target`` for ``worker`` until ``now + lease``: a stale claim's rows
    first (all of them: they were one message), else the oldest due row — or, for a ``digest``
    target, up to ``limit`` due rows. None when nothing of it is due."""
    token = f"{worker[:150]}#{uuid.uuid4().hex[:16]}"
    lease_until = now + lease
    _lock_target(connection, target)
    stale_owner = connection.execute(
        _locked(
            sa.select(_n.c.claimed_by)
            .where(
                NOTIFY_CLAIMABLE,
                _n.c.target == target,
                _n.c.state == NOTIFY_SENDING,
                _n.c.lease_until <= now,
            )
            .order_by(_n.c.id)
            .limit(1),
            connection,
        )
    ).scalar()
    if stale_owner is not None:
        ids = list(
            connection.execute(
                _locked(
                    sa.select(_n.c.id)
                    .where(
                        NOTIFY_CLAIMABLE,
                        _n.c.target == target,
                        _n.c.state == NOTIFY_SENDING,
                        _n.c.claimed_by == stale_owner,
                    )
                    .order_by(_n.c.id),
                    connection,
                )
            ).scalars()
        )
        values: dict[str, Any] = {}
        stale = True
    else:
        ids = list(
            connection.execute(
                _locked(
                    sa.select(_n.c.id)
                    .where(
                        NOTIFY_CLAIMABLE,
                        _n.c.target == target,
                        _n.c.state == NOTIFY_PENDING,
                        _n.c.not_before <= now,
                    )
                    .order_by(_n.c.not_before, _n.c.id)
                    .limit(limit if digest else 1),
                    connection,
                )
            ).scalars()
        )
        lead = min(ids) if ids else None
        values = {"digest_of": lead if digest and len(ids) > 1 else None}
        stale = False
    if not ids:
        return None
    statement = (
        sa.update(_n)
        .where(_n.c.id.in_(ids))
        .values(
            state=NOTIFY_SENDING,
            attempts=_n.c.attempts + 1,
            claimed_by=token,
            lease_until=lease_until,
            **values,
        )
        .returning(*_n.c)
    )
    rows = sorted(
        (Notification.from_row(row) for row in connection.execute(statement).mappings()),
        key=lambda row: row.id,
    )
    return NotificationClaim(target, token, tuple(rows), stale, lease_until)


def settle(
    connection: sa.Connection,
    held: NotificationClaim,
    state: str,
    now: datetime,
    *,
    error: str | None = None,
    retry_at: datetime | None = None,
) -> bool:
    """End a claim: ``sent``, ``failed``, ``unknown``, or ``pending`` again at ``retry_at``.
    False, writing nothing, when the claim was taken over (its lease ran out meanwhile)."""
    if state not in NOTIFY_STATES or state == NOTIFY_SENDING:
        raise ValueError(f"cannot settle a notification as {state!r}")
    values: dict[str, Any] = {"claimed_by": None, "lease_until": None, "state": state}
    if state == NOTIFY_SENT:
        values["sent_at"] = now
    if error is not None:
        values["last_error"] = error
    if state == NOTIFY_PENDING:
        if retry_at is None:
            raise ValueError("a retry needs its time")
        values["not_before"] = retry_at
    if not _held(connection, held):
        return False
    connection.execute(sa.update(_n).where(_n.c.id.in_(list(held.ids))).values(**values))
    return True


def renew(connection: sa.Connection, held: NotificationClaim, until: datetime) -> bool:
    """Hold a claim until ``until``; False, writing nothing, when it was taken over."""
    if not _held(connection, held):
        return False
    connection.execute(sa.update(_n).where(_n.c.id.in_(list(held.ids))).values(lease_until=until))
    return True


def listed(
    connection: sa.Connection,
    states: Iterable[str],
    *,
    instance: str | None = None,
    ticket_id: str | None = None,
    ids: Sequence[int] | None = None,
    limit: int | None = 100,
) -> list[Notification]:
    query = sa.select(_n).where(_n.c.state.in_(tuple(states)))
    if instance is not None:
        query = query.where(_n.c.instance == instance)
    if ticket_id is not None:
        query = query.where(_n.c.ticket_id == ticket_id)
    if ids is not None:
        query = query.where(_n.c.id.in_(list(ids)))
    query = query.order_by(_n.c.id).limit(limit)
    return [Notification.from_row(row) for row in connection.execute(query).mappings()]


def counts(connection: sa.Connection) -> dict[str, int]:
    found = dict.fromkeys(NOTIFY_STATES, 0)
    query = sa.select(_n.c.state, sa.func.count()).group_by(_n.c.state)
    for state, count in connection.execute(query):
        found[str(state)] = int(count)
    return found


def replay(connection: sa.Connection, ids: Sequence[int] | None, now: datetime) -> list[int]:
    """Send failed and unknown rows again (all failed ones when ``ids`` is None): pending now,
    attempts reset. An ``unknown`` row is replayed only when named: someone checked the
    channel and found it missing."""
    states: Mapping[bool, tuple[str, ...]] = {
        True: (NOTIFY_FAILED,),
        False: (NOTIFY_FAILED, NOTIFY_UNKNOWN),
    }
    statement = sa.update(_n).where(_n.c.state.in_(states[ids is None]))
    if ids is not None:
        statement = statement.where(_n.c.id.in_(list(ids)))
    statement = statement.values(
        state=NOTIFY_PENDING,
        attempts=0,
        not_before=now,
        claimed_by=None,
        lease_until=None,
        digest_of=None,
        sent_at=None,
    ).returning(_n.c.id)
    return sorted(int(i) for i in connection.execute(statement).scalars())
