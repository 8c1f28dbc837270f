"""The Store: every read and write escbridge makes to its database, on SQLite or PostgreSQL.

Each method is one short transaction and takes the time it acts at (``now``) from the caller,
so workers, tests and benchmarks decide what time it is. Database outages surface as
:class:`~escbridge.errors.StoreUnavailableError`; a schema at the wrong version as
:class:`~escbridge.errors.StoreSchemaError` (a subclass), on first use.

The statements on the event path are built once per store (:class:`_Sql`) with bound
parameters: building a SQLAlchemy statement costs more than running it on a local database.
The event path also takes as few transactions as it can: lock + history, intent, and
record + release + done are one transaction each. Sync does the same for a whole page of
tickets: :meth:`Store.lock_tickets` locks them in one statement, and :meth:`Store.batch` puts
the page's intents (then its records, releases and hand-offs) in one transaction each.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from escbridge.errors import LockLostError, StoreDataError, StoreUnavailableError
from escbridge.model import EscalationRecord, Ticket, TicketEvent
from escbridge.secrets import redact
from escbridge.store import migrate, outbox
from escbridge.store import shadow as shadows
from escbridge.store.database import (
    DEFAULT_URL,
    SqliteWriterLock,
    create_engine,
    safe_url,
    unavailable_as_typed,
)
from escbridge.store.enqueue import NOTIFY_CHANNEL, InboxWriter
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
    CLAIMABLE,
    DONE,
    FAILED,
    PENDING,
    PROCESSING,
    UtcDateTime,
    escalations,
    inbox,
    sync_cursors,
    ticket_state,
)
from escbridge.store.shadow import Shadow, ShadowWrite

_log = logging.getLogger("escbridge.store")

#: Outcomes written to the escalation history.
APPLIED, RECOVERED = "applied", "recovered"

#: Rows per multi-row statement: well inside both databases' limits on bound parameters.
_CHUNK = 500


def _param(name: str, type_: sa.types.TypeEngine[Any] | None = None) -> sa.BindParameter[Any]:
    # Prefixed: SQLAlchemy reserves column names for the binds of VALUES and SET clauses.
    return sa.bindparam(f"p_{name}", type_=type_)


def _p(**params: Any) -> dict[str, Any]:
    """Parameters for the statements of _Sql, by the names given to _param."""
    return {f"p_{name}": value for name, value in params.items()}


class _Sql:
    """The hot statements, compiled once per dialect, run with parameter dictionaries."""

    def __init__(self, dialect: str) -> None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        now = _param("now", UtcDateTime())
        self.insert = insert

        self.enqueue = (
            insert(inbox)
            .values(
                instance=_param("instance"),
                ticket_id=_param("ticket_id"),
                dedupe_key=_param("dedupe_key"),
                kind=_param("kind"),
                actor=_param("actor"),
                occurred_at=_param("occurred_at", UtcDateTime()),
                received_at=now,
                status=PENDING,
                attempts=0,
                next_attempt_at=now,
            )
            .on_conflict_do_nothing(index_elements=["instance", "dedupe_key"])
            .returning(inbox.c.id)
        )
        self.find_job_by_key = sa.select(inbox.c.id).where(
            inbox.c.instance == _param("instance"), inbox.c.dedupe_key == _param("dedupe_key")
        )

        # Claiming. For a `processing` row, next_attempt_at is the end of its lease.
        self.give_up_expired = (
            sa.update(inbox)
            .where(
                CLAIMABLE,
                inbox.c.status == sa.literal_column(f"'{PROCESSING}'"),
                inbox.c.next_attempt_at <= now,
                inbox.c.attempts >= _param("max_attempts"),
            )
            .values(
                status=FAILED,
                finished_at=now,
                lease_owner=None,
                claim_token=None,
                last_error=_param("message"),
            )
        )
        candidates = (
            sa.select(inbox.c.id)
            .where(CLAIMABLE, inbox.c.next_attempt_at <= now)
            .order_by(inbox.c.next_attempt_at, inbox.c.id)
            .limit(_param("limit"))
        )
        if dialect == "postgresql":
            # id = ANY(ARRAY(…)): the ids are picked first, then fetched by primary key;
            # "id IN (…)" lets the planner scan the whole table, done rows and all.
            chosen = candidates.with_for_update(skip_locked=True).scalar_subquery()
            target = inbox.c.id == sa.any_(sa.func.array(chosen))
        else:
            target = inbox.c.id.in_(candidates.scalar_subquery())
        self.claim = (
            sa.update(inbox)
            .where(target)
            .values(
                status=PROCESSING,
                attempts=inbox.c.attempts + 1,
                lease_owner=_param("worker"),
                claim_token=_param("token"),
                next_attempt_at=_param("lease_end", UtcDateTime()),
            )
            .returning(*inbox.c)
        )

        # Ending a claim: only by the worker that holds it (claim_token).
        held_job = sa.update(inbox).where(
            inbox.c.id == _param("job_id"),
            inbox.c.claim_token == _param("held_token"),
            inbox.c.status == PROCESSING,
        )
        released = {"lease_owner": None, "claim_token": None}
        self.complete = held_job.values(
            status=DONE, outcome=_param("outcome"), finished_at=now, **released
        )
        self.retry_later = held_job.values(
            status=PENDING,
            next_attempt_at=_param("at", UtcDateTime()),
            last_error=_param("error"),
            **released,
        )
        self.defer = held_job.values(
            status=PENDING,
            next_attempt_at=_param("at", UtcDateTime()),
            attempts=inbox.c.attempts - 1,
            **released,
        )
        self.dead_letter = held_job.values(
            status=FAILED, finished_at=now, last_error=_param("error"), **released
        )

        # The per-ticket lock.
        key = sa.and_(
            ticket_state.c.instance == _param("instance"),
            ticket_state.c.ticket_id == _param("ticket_id"),
        )
        lock_values = {
            "lock_token": _param("token"),
            "lock_owner": _param("owner"),
            "lock_expires_at": _param("expires", UtcDateTime()),
        }
        # One statement takes the lock, creating the ticket's row on first sight: the update
        # applies only when the lock is free (or expired), else nothing comes back.
        new_row = insert(ticket_state).values(
            instance=_param("instance"),
            ticket_id=_param("ticket_id"),
            day_count=0,
            escalation_count=0,
            updated_at=now,
            **lock_values,
        )
        self.lock = new_row.on_conflict_do_update(
            index_elements=["instance", "ticket_id"],
            set_={name: new_row.excluded[name] for name in lock_values},
            where=sa.or_(
                ticket_state.c.lock_token.is_(None), ticket_state.c.lock_expires_at <= now
            ),
        ).returning(*ticket_state.c)
        # The same for many tickets, run with one parameter set per ticket (SQLAlchemy sends
        # them as multi-row VALUES): the only bound values are the rows', so "expired" compares
        # with the row's own `now` (excluded.updated_at).
        self.lock_many = new_row.on_conflict_do_update(
            index_elements=["instance", "ticket_id"],
            set_={name: new_row.excluded[name] for name in lock_values},
            where=sa.or_(
                ticket_state.c.lock_token.is_(None),
                ticket_state.c.lock_expires_at <= new_row.excluded.updated_at,
            ),
        ).returning(*ticket_state.c)
        held = sa.update(ticket_state).where(key, ticket_state.c.lock_token == _param("token"))
        unlocked = {"lock_token": None, "lock_owner": None, "lock_expires_at": None}
        self.renew = held.values(lock_expires_at=_param("expires", UtcDateTime()))
        self.unlock = held.values(**unlocked)
        self.unlock_clear = held.values(
            intent=sa.null(), intent_at=None, updated_at=now, **unlocked
        )
        self.write_intent = held.values(
            intent=_param("intent"),
            intent_at=now,
            updated_at=now,
            lock_expires_at=sa.func.coalesce(
                _param("expires", UtcDateTime()), ticket_state.c.lock_expires_at
            ),
        )
        self.clear_intent = held.values(intent=sa.null(), intent_at=None, updated_at=now)
        self.set_resolved = held.values(
            resolved_at=_param("resolved_at", UtcDateTime()), updated_at=now
        )
        day = _param("day", sa.Date())
        self.record_state = held.values(
            level=_param("level"),
            last_escalated_at=_param("at", UtcDateTime()),
            cooldown_until=_param("cooldown_until", UtcDateTime()),
            day=day,
            day_count=sa.case((ticket_state.c.day == day, ticket_state.c.day_count + 1), else_=1),
            escalation_count=ticket_state.c.escalation_count + 1,
            intent=sa.null(),
            intent_at=None,
            updated_at=now,
            **unlocked,
        )
        self.insert_escalations = sa.insert(escalations).returning(
            escalations.c.id, sort_by_parameter_order=True
        )
        tokens = sa.select(ticket_state.c.ticket_id, ticket_state.c.lock_token).where(
            ticket_state.c.instance == _param("instance"),
            ticket_state.c.ticket_id.in_(sa.bindparam("p_ticket_ids", expanding=True)),
        )
        # PostgreSQL: the rows stay locked until the transaction ends (SQLite holds the whole
        # database for a write transaction already).
        self.lock_tokens = tokens.with_for_update() if dialect == "postgresql" else tokens
        self.history = (
            sa.select(
                escalations.c.decided_at,
                escalations.c.to_level,
                escalations.c.from_level,
                escalations.c.rule_id,
            )
            .where(
                escalations.c.instance == _param("instance"),
                escalations.c.ticket_id == _param("ticket_id"),
            )
            .order_by(escalations.c.decided_at, escalations.c.id)
        )
        self.histories = (
            sa.select(
                escalations.c.ticket_id,
                escalations.c.decided_at,
                escalations.c.to_level,
                escalations.c.from_level,
                escalations.c.rule_id,
            )
            .where(
                escalations.c.instance == _param("instance"),
                escalations.c.ticket_id.in_(sa.bindparam("p_ticket_ids", expanding=True)),
            )
            .order_by(escalations.c.ticket_id, escalations.c.decided_at, escalations.c.id)
        )


class TicketWrites:
    """The per-ticket writes of one transaction (see :meth:`Store.batch`).

    Each method acts only while its lock is held and says so: a lock another worker took over
    writes nothing, and the others in the same transaction are unaffected.
    """

    def __init__(self, connection: sa.Connection, sql: _Sql) -> None:
        self._connection = connection
        self._sql = sql

    def write_intent(
        self, lock: TicketLock, intent: Intent, now: datetime, *, lease: timedelta | None = None
    ) -> bool:
        """Note the decision about to be applied, extending the lock by ``lease``; False (and
        nothing written) when the lock was lost."""
        params = _lock_params(
            lock, intent=intent.to_json(), now=now, expires=None if lease is None else now + lease
        )
        return bool(self._connection.execute(self._sql.write_intent, params).rowcount == 1)

    def write_intents(
        self,
        intents: Sequence[tuple[TicketLock, Intent]],
        now: datetime,
        *,
        lease: timedelta | None = None,
    ) -> list[bool]:
        """:meth:`write_intent` for many tickets in a few statements: whether each was written
        (False: its lock was lost, and nothing was written for it)."""
        held = self._held([lock for lock, _ in intents])
        written = [(lock.instance, lock.ticket_id, lock.token) in held for lock, _ in intents]
        expires = None if lease is None else now + lease
        params = [
            _lock_params(lock, intent=intent.to_json(), now=now, expires=expires)
            for (lock, intent), ok in zip(intents, written, strict=True)
            if ok
        ]
        if params:
            self._connection.execute(self._sql.write_intent, params)
        return written

    def clear_intent(self, lock: TicketLock, now: datetime) -> None:
        self._connection.execute(self._sql.clear_intent, _lock_params(lock, now=now))

    def set_resolved(self, lock: TicketLock, resolved_at: datetime | None, now: datetime) -> None:
        self._connection.execute(
            self._sql.set_resolved, _lock_params(lock, resolved_at=resolved_at, now=now)
        )

    def release(
        self,
        lock: TicketLock,
        *,
        clear_intent: bool = False,
        job: Job | None = None,
        outcome: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Release a lock (a no-op when already released or lost), forgetting its intent with
        ``clear_intent``; with ``job``, mark it done with ``outcome``. False when the job's
        claim was lost."""
        if clear_intent:
            if now is None:
                raise ValueError("clearing an intent needs the time")
            self._connection.execute(self._sql.unlock_clear, _lock_params(lock, now=now))
        else:
            self._connection.execute(self._sql.unlock, _lock_params(lock))
        if job is None:
            return True
        if outcome is None or now is None:
            raise ValueError("completing a job needs its outcome and the time")
        return _end_claim(self._connection, self._sql.complete, job, now=now, outcome=outcome)

    def release_many(
        self,
        locks: Sequence[TicketLock],
        *,
        clear_intent: bool = False,
        now: datetime | None = None,
    ) -> None:
        """:meth:`release` for many locks without jobs, in one round of statements."""
        if not locks:
            return
        if clear_intent:
            if now is None:
                raise ValueError("clearing an intent needs the time")
            params = [_lock_params(lock, now=now) for lock in locks]
            self._connection.execute(self._sql.unlock_clear, params)
        else:
            self._connection.execute(self._sql.unlock, [_lock_params(lock) for lock in locks])

    def record_escalation(
        self,
        lock: TicketLock,
        intent: Intent,
        *,
        outcome: str,
        now: datetime,
        cooldown: timedelta | None = None,
        job: Job | None = None,
        job_outcome: str | None = None,
        helpdesk: str | None = None,
    ) -> StoredEscalation | None:
        """Write one escalation to the history and the ticket's state, clear its intent and
        release the lock; with ``job``, also mark it done. None, writing nothing, when the
        lock was lost."""
        entry = ToRecord(lock, intent, outcome, job, job_outcome)
        [stored] = self.record_escalations([entry], now=now, cooldown=cooldown, helpdesk=helpdesk)
        return stored

    def record_escalations(
        self,
        entries: Sequence[ToRecord],
        *,
        now: datetime,
        cooldown: timedelta | None = None,
        helpdesk: str | None = None,
    ) -> list[StoredEscalation | None]:
        """:meth:`record_escalation` for many tickets, one result each (None: its lock was
        lost and nothing of it was written), in a few statements whatever their number.

        Which locks are still held is read first, the rows locked (PostgreSQL) or the whole
        database held (SQLite's write transaction), so nobody can take one over before the
        writes that follow.
        """
        held = self._held([entry.lock for entry in entries])
        states: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        kept: list[ToRecord] = []
        for entry in entries:
            decision = entry.intent.decision
            if not decision.escalate or decision.destination is None or decision.actions is None:
                raise ValueError("only a decision to escalate can be recorded")
            if (entry.lock.instance, entry.lock.ticket_id, entry.lock.token) not in held:
                continue
            destination = decision.destination
            at = decision.at
            states.append(
                _lock_params(
                    entry.lock,
                    level=destination.id,
                    at=at,
                    cooldown_until=at + cooldown if cooldown is not None else None,
                    day=at.date(),
                    now=now,
                )
            )
            rows.append(
                {
                    "instance": entry.lock.instance,
                    "ticket_id": entry.lock.ticket_id,
                    "from_level": decision.from_level,
                    "to_level": destination.id,
                    "destination_kind": destination.kind,
                    "to_group": destination.group,
                    "rule_id": decision.rule_id,
                    "kind": decision.kind,
                    "actions": decision.actions.model_dump(mode="json"),
                    "reasons": list(decision.reasons),
                    "summary": decision.summary,
                    "ticket_created_at": entry.intent.ticket_created_at,
                    "decided_at": at,
                    "recorded_at": now,
                    "outcome": entry.outcome,
                    "job_id": entry.intent.job_id,
                    "channel": entry.intent.channel,
                    "helpdesk": helpdesk,
                    "from_group": entry.intent.from_group,
                }
            )
            kept.append(entry)
        stored: dict[int, StoredEscalation] = {}
        if kept:
            self._connection.execute(self._sql.record_state, states)
            ids = self._connection.execute(self._sql.insert_escalations, rows).scalars().all()
            for entry, row, new_id in zip(kept, rows, ids, strict=True):
                if entry.job is not None:
                    _end_claim(
                        self._connection,
                        self._sql.complete,
                        entry.job,
                        now=now,
                        outcome=entry.job_outcome or entry.outcome,
                    )
                # The Actions as decided (already validated), not their JSON form read back.
                actions = entry.intent.decision.actions
                stored[id(entry)] = StoredEscalation.from_row(
                    {**row, "id": int(new_id), "actions": actions}
                )
        return [stored.get(id(entry)) for entry in entries]

    def _held(self, locks: Sequence[TicketLock]) -> set[tuple[str, str, str]]:
        """(instance, ticket id, token) of the locks among ``locks`` still held."""
        found: set[tuple[str, str, str]] = set()
        by_instance: dict[str, list[str]] = {}
        for lock in locks:
            by_instance.setdefault(lock.instance, []).append(lock.ticket_id)
        for instance, ticket_ids in by_instance.items():
            for start in range(0, len(ticket_ids), _CHUNK):
                params = {
                    **_p(instance=instance),
                    "p_ticket_ids": ticket_ids[start : start + _CHUNK],
                }
                for ticket_id, token in self._connection.execute(self._sql.lock_tokens, params):
                    if token is not None:
                        found.add((instance, ticket_id, token))
        return found

    def enqueue(self, event: TicketEvent, now: datetime) -> Enqueued:
        """Keep ``event`` as a pending job, unless the same delivery was kept before."""
        params = _p(
            instance=event.instance,
            ticket_id=event.ticket_id,
            dedupe_key=event.dedupe_key,
            kind=event.kind,
            actor=event.actor,
            occurred_at=event.occurred_at,
            now=now,
        )
        new_id = self._connection.execute(self._sql.enqueue, params).scalar()
        if new_id is not None:
            return Enqueued(accepted=True, job_id=int(new_id))
        existing = self._connection.execute(self._sql.find_job_by_key, params).scalar()
        return Enqueued(accepted=False, job_id=None if existing is None else int(existing))

    def save_shadows(self, writes: Sequence[ShadowWrite], now: datetime) -> None:
        """Keep each open ticket's shadow and next due time; drop those no longer open."""
        shadows.save(self._connection, writes, now)

    def notify_windows(self, targets: Iterable[str], now: datetime) -> dict[str, datetime]:
        """Per target, when its digest window open at ``now`` began (targets without one left
        out)."""
        return outbox.open_windows(self._connection, targets, now)

    def add_notifications(self, rows: Sequence[NewNotification], now: datetime) -> int:
        """Keep notifications to send, in this transaction (with the escalations they tell
        of); a (escalation, target) pair kept before is not doubled. How many were new."""
        return outbox.insert(self._connection, rows, now)


def _lock_params(lock: TicketLock, **more: Any) -> dict[str, Any]:
    return _p(instance=lock.instance, ticket_id=lock.ticket_id, token=lock.token, **more)


def _end_claim(connection: sa.Connection, statement: sa.Update, job: Job, **params: Any) -> bool:
    if job.claim_token is None:
        raise ValueError(f"job {job.id} is not claimed")
    result = connection.execute(statement, _p(job_id=job.id, held_token=job.claim_token, **params))
    return bool(result.rowcount == 1)


class Store:
    """The database behind escbridge. Thread-safe; open one per process (after any fork)."""

    def __init__(
        self, url: str = DEFAULT_URL, *, busy_timeout: float = 30.0, check_schema: bool = True
    ) -> None:
        self.url = url
        self._engine = create_engine(url, busy_timeout=busy_timeout)
        self._sql = _Sql(self._engine.dialect.name)
        self._schema_checked = not check_schema
        self._schema_lock = threading.Lock()
        # SQLite has one writer at a time and every transaction here writes (BEGIN IMMEDIATE):
        # writers queue on a lock that wakes the next at once (see SqliteWriterLock).
        self._sqlite_lock = (
            SqliteWriterLock(self._engine.url.database) if self.dialect == "sqlite" else None
        )
        self._writer: contextlib.AbstractContextManager[Any] = (
            self._sqlite_lock or contextlib.nullcontext()
        )
        self._autocommit = (
            self._engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.dialect == "postgresql"
            else None
        )
        self._inbox = InboxWriter(self._engine, url, self._writer)

    def __repr__(self) -> str:
        return f"Store({safe_url(self.url)!r})"

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()
        if self._sqlite_lock is not None:
            self._sqlite_lock.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def check_schema(self) -> None:
        """Raise StoreSchemaError unless the database is at the version this code needs."""
        migrate.check_schema(self._engine, self.url)
        self._schema_checked = True

    def _ensure_schema(self) -> None:
        if not self._schema_checked:
            with self._schema_lock:
                if not self._schema_checked:
                    self.check_schema()

    @contextlib.contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """One transaction."""
        self._ensure_schema()
        with self._writer, unavailable_as_typed(self.url), self._engine.begin() as connection:
            yield connection

    @contextlib.contextmanager
    def _each(self) -> Iterator[sa.Connection]:
        """Statements that need no transaction around them: each is atomic on its own.

        On PostgreSQL each commits by itself (autocommit), one round trip instead of three
        (BEGIN, statement, COMMIT). On SQLite they share one transaction, which is cheaper there.
        """
        if self._autocommit is None:
            with self._begin() as connection:
                yield connection
            return
        self._ensure_schema()
        with unavailable_as_typed(self.url), self._autocommit.connect() as connection:
            yield connection

    # --- inbox ---------------------------------------------------------------------------

    def enqueue(self, event: TicketEvent, now: datetime) -> Enqueued:
        """Keep ``event`` as a pending job, unless the same delivery was kept before.

        Raises StoreDataError when the database cannot hold one of its values."""
        [answer] = self.enqueue_many([event], now)
        if answer.refused is not None:
            raise StoreDataError(f"the store cannot keep this event: {answer.refused}")
        return answer

    def writing(self) -> contextlib.AbstractContextManager[Any]:
        """Hold this store's writer lock across several calls (SQLite: this process's turn
        among all escbridge writers of the file; PostgreSQL: nothing). The receiver's group
        commit gathers the deliveries waiting once its turn has come: those that arrived
        while another process was committing share this commit instead of waiting for the
        next one."""
        return self._writer

    def enqueue_many(self, events: Sequence[TicketEvent], now: datetime) -> list[Enqueued]:
        """Keep each new event as a pending job, in one transaction and one commit (see
        :mod:`escbridge.store.enqueue`): accepted, duplicate or refused, in order.

        Durable when it returns: SQLite runs ``synchronous=FULL``, PostgreSQL commits
        synchronously (see database.py). StoreUnavailableError: none of them was kept.
        """
        self._ensure_schema()
        return self._inbox.enqueue_many(events, now)

    def listen(
        self,
        stop: threading.Event,
        on_event: Callable[[], None],
        *,
        ready: Callable[[], None] | None = None,
        interval: float = 1.0,
    ) -> bool:
        """Call ``on_event`` whenever another process commits new inbox events, until ``stop``
        is set (checked every ``interval`` seconds); ``ready`` once listening. PostgreSQL only
        (``LISTEN``/``NOTIFY``): on SQLite this returns False at once, and idle workers find
        other processes' events at their next poll. A lost connection is logged and opened
        again; events are never lost meanwhile, only heard at the next poll."""
        if self.dialect != "postgresql":
            return False
        pause = interval
        while not stop.is_set():
            try:
                with unavailable_as_typed(self.url), self._engine.connect() as connection:
                    connection = connection.execution_options(isolation_level="AUTOCOMMIT")
                    connection.exec_driver_sql(f"LISTEN {NOTIFY_CHANNEL}")
                    driver: Any = connection.connection.driver_connection
                    if ready is not None:
                        ready()
                        ready = None
                    pause = interval
                    while not stop.is_set():
                        if any(True for _ in driver.notifies(timeout=interval, stop_after=1)):
                            on_event()
            except Exception as error:  # an outage must not end the listener
                # A StoreUnavailableError is already masked; of anything else, only its type.
                why = str(error) if isinstance(error, StoreUnavailableError) else repr(type(error))
                _log.warning("inbox listener: %s; listening again in %.0fs", why, pause)
                stop.wait(pause)
                pause = min(pause * 2, 60.0)
        return True

    def claim(
        self,
        worker: str,
        now: datetime,
        *,
        limit: int = 10,
        lease: timedelta = timedelta(minutes=5),
        max_attempts: int = 8,
    ) -> list[Job]:
        """Take up to ``limit`` due jobs for ``worker`` until ``now + lease``.

        Due means pending and past its next attempt time, or held by a worker whose lease ran
        out (presumed dead). Each claim counts as an attempt, so a job that keeps killing its
        workers ends in the dead-letter list instead of looping. PostgreSQL skips rows other
        workers are claiming (``FOR UPDATE SKIP LOCKED``); SQLite runs the claim as one
        statement under its database-wide write lock, which is just as exclusive.
        """
        message = (
            f"gave up after {max_attempts} attempts: the worker processing it stopped "
            "before finishing (lease expired)"
        )
        with self._each() as connection:
            connection.execute(
                self._sql.give_up_expired,
                _p(now=now, max_attempts=max_attempts, message=message),
            )
            rows = connection.execute(
                self._sql.claim,
                _p(
                    now=now,
                    limit=limit,
                    worker=worker[:200],
                    token=str(uuid.uuid4()),
                    lease_end=now + lease,
                ),
            ).mappings()
            jobs = [Job.from_row(row) for row in rows]
        return sorted(jobs, key=lambda job: (job.received_at, job.id))

    def complete(self, job: Job, now: datetime, outcome: str) -> bool:
        """Mark a claimed job done; False when its claim was lost (another worker has it)."""
        with self._each() as connection:
            return _end_claim(connection, self._sql.complete, job, now=now, outcome=outcome[:50])

    def retry_later(self, job: Job, at: datetime, error: str) -> bool:
        """Give a failed attempt back to the queue, due again at ``at``."""
        with self._each() as connection:
            return _end_claim(connection, self._sql.retry_later, job, at=at, error=redact(error))

    def defer(self, job: Job, at: datetime) -> bool:
        """Put a job back untried (its ticket was busy): the claim does not count as an attempt."""
        with self._each() as connection:
            return _end_claim(connection, self._sql.defer, job, at=at)

    def dead_letter(self, job: Job, now: datetime, error: str) -> bool:
        """Stop retrying a job; it stays listed in `escbridge jobs --failed` with ``error``."""
        with self._each() as connection:
            return _end_claim(connection, self._sql.dead_letter, job, now=now, error=redact(error))

    def job(self, job_id: int) -> Job | None:
        with self._begin() as connection:
            row = connection.execute(sa.select(inbox).where(inbox.c.id == job_id)).mappings()
            found = row.first()
        return None if found is None else Job.from_row(found)

    def jobs(
        self,
        statuses: Iterable[str] = (PENDING, PROCESSING, FAILED),
        *,
        instance: str | None = None,
        ticket_id: str | None = None,
        limit: int | None = 100,
    ) -> list[Job]:
        """Jobs in ``statuses``, oldest first."""
        query = sa.select(inbox).where(inbox.c.status.in_(tuple(statuses)))
        if instance is not None:
            query = query.where(inbox.c.instance == instance)
        if ticket_id is not None:
            query = query.where(inbox.c.ticket_id == ticket_id)
        query = query.order_by(inbox.c.id).limit(limit)
        with self._begin() as connection:
            return [Job.from_row(row) for row in connection.execute(query).mappings()]

    def job_counts(self) -> dict[str, int]:
        """How many jobs are in each status (every status present, zero included)."""
        query = sa.select(inbox.c.status, sa.func.count()).group_by(inbox.c.status)
        counts = dict.fromkeys((PENDING, PROCESSING, DONE, FAILED), 0)
        with self._begin() as connection:
            for status, count in connection.execute(query):
                counts[status] = int(count)
        return counts

    def retry_jobs(self, job_ids: Sequence[int] | None, now: datetime) -> list[int]:
        """Replay dead-lettered jobs (all of them when ``job_ids`` is None) with fresh attempts.

        Pending jobs named explicitly are made due now. Returns the ids that were requeued;
        ids of jobs that are done, being processed or unknown are left out.
        """
        statuses = (FAILED,) if job_ids is None else (FAILED, PENDING)
        statement = sa.update(inbox).where(inbox.c.status.in_(statuses))
        if job_ids is not None:
            statement = statement.where(inbox.c.id.in_(list(job_ids)))
        statement = statement.values(
            status=PENDING, attempts=0, next_attempt_at=now, finished_at=None, outcome=None
        ).returning(inbox.c.id)
        with self._begin() as connection:
            return sorted(int(i) for i in connection.execute(statement).scalars())

    def prune_jobs(self, finished_before: datetime) -> int:
        """Delete done jobs finished before a time. Their dedupe keys are forgotten with them,
        so keep them longer than any helpdesk redelivers (days, not minutes)."""
        statement = sa.delete(inbox).where(
            inbox.c.status == DONE, inbox.c.finished_at < finished_before
        )
        with self._begin() as connection:
            return int(connection.execute(statement).rowcount)

    # --- per-ticket lock, intent and state ---------------------------------------------

    def lock_ticket(
        self, instance: str, ticket_id: str, owner: str, now: datetime, lease: timedelta
    ) -> TicketLock | None:
        """Hold one ticket until ``now + lease``, with its state and history; None when
        another worker holds it.

        Two workers deciding the same ticket from two events would both see it un-escalated
        and both apply; the lock makes them take turns. An expired lock (a dead worker) is
        taken over.
        """
        token = str(uuid.uuid4())
        expires = now + lease
        params = _p(
            instance=instance,
            ticket_id=ticket_id,
            token=token,
            owner=owner[:200],
            expires=expires,
            now=now,
        )
        with self._each() as connection:
            row = connection.execute(self._sql.lock, params).mappings().first()
            if row is None:
                return None
            state = TicketState.from_row(row)
            # Every recorded escalation counts in escalation_count (record_escalation keeps
            # both in one transaction): a ticket never escalated has no history to read.
            history: tuple[EscalationRecord, ...] = ()
            if state.escalation_count:
                history = tuple(self._history(connection, instance, ticket_id))
        return TicketLock(
            instance=instance,
            ticket_id=ticket_id,
            token=token,
            owner=owner,
            expires_at=expires,
            state=state,
            history=history,
        )

    def lock_tickets(
        self,
        instance: str,
        ticket_ids: Sequence[str],
        owner: str,
        now: datetime,
        lease: timedelta,
    ) -> dict[str, TicketLock]:
        """Hold every ticket of ``ticket_ids`` that is free until ``now + lease``, with its
        state and history: the locks taken, by ticket id (a ticket another worker holds is
        left out).

        :meth:`lock_ticket` for a page of tickets: one statement per 500 tickets and one read
        of their histories, all in one transaction.
        """
        token = str(uuid.uuid4())  # one holder: the locks share a token, each has its own row
        expires = now + lease
        ids = list(dict.fromkeys(ticket_ids))
        states: dict[str, TicketState] = {}
        with self._begin() as connection:
            for start in range(0, len(ids), _CHUNK):
                params = [
                    _p(
                        instance=instance,
                        ticket_id=ticket_id,
                        token=token,
                        owner=owner[:200],
                        expires=expires,
                        now=now,
                    )
                    for ticket_id in ids[start : start + _CHUNK]
                ]
                for row in connection.execute(self._sql.lock_many, params).mappings():
                    state = TicketState.from_row(row)
                    states[state.ticket_id] = state
            escalated = [t for t, state in states.items() if state.escalation_count]
            histories = self._histories(connection, instance, escalated)
        return {
            ticket_id: TicketLock(
                instance=instance,
                ticket_id=ticket_id,
                token=token,
                owner=owner,
                expires_at=expires,
                state=states[ticket_id],
                history=tuple(histories.get(ticket_id, ())),
            )
            for ticket_id in ids
            if ticket_id in states
        }

    @contextlib.contextmanager
    def batch(self) -> Iterator[TicketWrites]:
        """Several tickets' writes in one transaction: a page's intents, or its records,
        releases and hand-offs to workers. A lost lock writes nothing for its ticket and is
        reported by the method's result; an error rolls the whole transaction back."""
        with self._begin() as connection:
            yield TicketWrites(connection, self._sql)

    def renew_lock(self, lock: TicketLock, now: datetime, lease: timedelta) -> bool:
        """Extend a held lock; False when it was lost (expired and taken over)."""
        with self._each() as connection:
            result = connection.execute(self._sql.renew, _lock_params(lock, expires=now + lease))
        return bool(result.rowcount == 1)

    def release(
        self,
        lock: TicketLock,
        *,
        job: Job | None = None,
        outcome: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Release a lock (a no-op when already released or lost) and, in the same
        transaction, mark ``job`` done with ``outcome``. False when the job's claim was lost."""
        with self._each() as connection:
            return TicketWrites(connection, self._sql).release(
                lock, job=job, outcome=outcome, now=now
            )

    def unlock(self, lock: TicketLock) -> None:
        """Release a lock (a no-op when it was already released or lost)."""
        self.release(lock)

    def write_intent(
        self, lock: TicketLock, intent: Intent, now: datetime, *, lease: timedelta | None = None
    ) -> None:
        """Note the decision about to be applied, extending the lock by ``lease``.

        This is the fence before an apply: it raises LockLostError, writing nothing, when the
        lock expired and another worker took the ticket over.
        """
        with self._each() as connection:
            if not TicketWrites(connection, self._sql).write_intent(lock, intent, now, lease=lease):
                raise LockLostError(f"lost the lock on ticket {lock.instance}/{lock.ticket_id}")

    def clear_intent(self, lock: TicketLock, now: datetime) -> None:
        """Forget an intent that is known not to have been applied."""
        with self._each() as connection:
            TicketWrites(connection, self._sql).clear_intent(lock, now)

    def record_escalation(
        self,
        lock: TicketLock,
        intent: Intent,
        *,
        outcome: str,
        now: datetime,
        cooldown: timedelta | None = None,
        job: Job | None = None,
        job_outcome: str | None = None,
        helpdesk: str | None = None,
    ) -> StoredEscalation:
        """Write one escalation to the history and the ticket's state, clear its intent and
        release the lock; with ``job``, also mark it done (``job_outcome``, else ``outcome``).

        One transaction. Raises LockLostError, writing nothing, when the lock was taken over.
        A job whose claim was lost meanwhile is left to its new holder, which will find the
        escalation recorded.
        """
        with self._begin() as connection:
            stored = TicketWrites(connection, self._sql).record_escalation(
                lock,
                intent,
                outcome=outcome,
                now=now,
                cooldown=cooldown,
                job=job,
                job_outcome=job_outcome,
                helpdesk=helpdesk,
            )
        if stored is None:
            raise LockLostError(f"lost the lock on ticket {lock.instance}/{lock.ticket_id}")
        return stored

    def set_resolved(self, lock: TicketLock, resolved_at: datetime | None, now: datetime) -> None:
        """Note when the held ticket was seen solved or closed (None: it is open again)."""
        with self._each() as connection:
            TicketWrites(connection, self._sql).set_resolved(lock, resolved_at, now)

    def ticket_state(self, instance: str, ticket_id: str) -> TicketState | None:
        query = sa.select(ticket_state).where(
            ticket_state.c.instance == instance, ticket_state.c.ticket_id == ticket_id
        )
        with self._begin() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else TicketState.from_row(row)

    # --- escalation history ------------------------------------------------------------

    def _history(
        self, connection: sa.Connection, instance: str, ticket_id: str
    ) -> Iterator[EscalationRecord]:
        rows = connection.execute(self._sql.history, _p(instance=instance, ticket_id=ticket_id))
        for at, to, from_level, rule_id in rows:
            yield EscalationRecord(at=at, to=to, from_level=from_level, rule_id=rule_id)

    def _histories(
        self, connection: sa.Connection, instance: str, ticket_ids: Sequence[str]
    ) -> dict[str, list[EscalationRecord]]:
        found: dict[str, list[EscalationRecord]] = {}
        for start in range(0, len(ticket_ids), _CHUNK):
            chunk = list(ticket_ids[start : start + _CHUNK])
            params = {**_p(instance=instance), "p_ticket_ids": chunk}
            for ticket_id, at, to, from_level, rule_id in connection.execute(
                self._sql.histories, params
            ):
                found.setdefault(ticket_id, []).append(
                    EscalationRecord(at=at, to=to, from_level=from_level, rule_id=rule_id)
                )
        return found

    def history(self, instance: str, ticket_id: str) -> list[EscalationRecord]:
        """A ticket's past escalations, oldest first: what the engine's guards reason about."""
        with self._begin() as connection:
            return list(self._history(connection, instance, ticket_id))

    def histories(
        self, instance: str, ticket_ids: Sequence[str]
    ) -> dict[str, list[EscalationRecord]]:
        """The past escalations of several tickets in one read, by ticket id (a ticket never
        escalated is left out)."""
        if not ticket_ids:
            return {}
        with self._begin() as connection:
            return self._histories(connection, instance, list(dict.fromkeys(ticket_ids)))

    def escalations(
        self,
        *,
        instance: str | None = None,
        ticket_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[StoredEscalation]:
        """Recorded escalations, oldest first, filtered by instance, ticket and decision time."""
        query = sa.select(escalations)
        if instance is not None:
            query = query.where(escalations.c.instance == instance)
        if ticket_id is not None:
            query = query.where(escalations.c.ticket_id == ticket_id)
        if since is not None:
            query = query.where(escalations.c.decided_at >= since)
        if until is not None:
            query = query.where(escalations.c.decided_at < until)
        query = query.order_by(escalations.c.decided_at, escalations.c.id).limit(limit)
        with self._begin() as connection:
            return [StoredEscalation.from_row(r) for r in connection.execute(query).mappings()]

    # --- sync cursors ---------------------------------------------------------------------

    def get_cursor(self, instance: str, stream: str = "tickets") -> SyncCursor | None:
        query = sa.select(sync_cursors).where(
            sync_cursors.c.instance == instance, sync_cursors.c.stream == stream
        )
        with self._begin() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else SyncCursor(**dict(row))

    def save_cursor(
        self,
        instance: str,
        cursor: str | None,
        since: datetime | None,
        now: datetime,
        stream: str = "tickets",
    ) -> None:
        """Remember where the next scan of ``instance`` resumes."""
        values = {"cursor": cursor, "since": since, "updated_at": now}
        statement = (
            self._sql.insert(sync_cursors)
            .values(instance=instance, stream=stream, **values)
            .on_conflict_do_update(index_elements=["instance", "stream"], set_=values)
        )
        with self._begin() as connection:
            connection.execute(statement)

    # --- the shadow of open tickets and the due-queue ------------------------------------

    def save_shadows(self, writes: Sequence[ShadowWrite], now: datetime) -> None:
        """Keep each open ticket's shadow and next due time; drop those no longer open."""
        with self._begin() as connection:
            shadows.save(connection, writes, now)

    def promote_due(self, now: datetime, limit: int = 100) -> int:
        """Move up to ``limit`` shadows due at ``now`` into the inbox as ``due`` events (their
        due time cleared; processing sets the next one); how many new events that made."""
        with self._begin() as connection:
            events = shadows.take_due(connection, now, limit)
            writes = TicketWrites(connection, self._sql)  # the inbox's one insert
            return sum(writes.enqueue(event, now).accepted for event in events)

    def earliest_due(self, instance: str | None = None) -> datetime | None:
        """The soonest due instant in the shadow (None: nothing is due by time alone)."""
        with self._begin() as connection:
            return shadows.earliest(connection, instance)

    def due_tickets(self, instance: str | None = None, limit: int = 20) -> list[Shadow]:
        """The tickets due next, soonest first."""
        with self._begin() as connection:
            return shadows.due_soonest(connection, instance, limit)

    def shadow(self, instance: str, ticket_id: str) -> Shadow | None:
        """One ticket's shadow (None: not open, or never seen)."""
        with self._begin() as connection:
            return shadows.get(connection, instance, ticket_id)

    def unchanged_tickets(
        self,
        instance: str,
        tickets: Sequence[Ticket],
        matrix: str,
        now: datetime,
        *,
        mark_seen: bool = True,
    ) -> set[str]:
        """The ids of a scanned page's tickets decided as they are and not due at ``now``
        under ``matrix`` (see :func:`escbridge.store.shadow.unchanged`); ``mark_seen``: noted
        as seen open now. One transaction."""
        with self._begin() as connection:
            return shadows.unchanged(
                connection, instance, tickets, matrix, now, mark_seen=mark_seen
            )

    def stale_shadows(
        self, matrix: str, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[Shadow]:
        """Shadows whose due time was computed under another matrix (digest) than ``matrix``,
        in (instance, ticket id) order after ``after``."""
        with self._begin() as connection:
            return shadows.stale(connection, matrix, after, limit)

    def redate_shadows(self, updated: Sequence[Shadow], matrix: str) -> int:
        """Store new due times computed under ``matrix``; a shadow written since it was read
        keeps its newer one. How many were stored."""
        with self._begin() as connection:
            return shadows.redate(connection, updated, matrix)

    def shadow_counts(self) -> dict[str, tuple[int, int]]:
        """Per instance: (open tickets in the shadow, of which with a due time)."""
        with self._begin() as connection:
            return shadows.counts(connection)

    # --- the notification outbox --------------------------------------------------------

    def notification_targets_due(self, now: datetime) -> list[str]:
        """Targets with a notification to send (or a stale claim to settle) at ``now``."""
        with self._begin() as connection:
            return outbox.due_targets(connection, now)

    def notifications_due(self, now: datetime) -> int:
        """How many notifications are due at ``now`` (pending, or stale ``sending``)."""
        with self._begin() as connection:
            return outbox.count_due(connection, now)

    def earliest_notification(self) -> datetime | None:
        """When the next pending notification may go out (None: none pending)."""
        with self._begin() as connection:
            return outbox.earliest_pending(connection)

    def postpone_notifications(self, target: str, now: datetime, until: datetime) -> int:
        """Hold the due notifications of ``target`` until ``until`` (its quiet hours)."""
        with self._begin() as connection:
            return outbox.postpone(connection, target, now, until)

    def claim_notifications(
        self,
        target: str,
        worker: str,
        now: datetime,
        lease: timedelta,
        *,
        digest: bool = False,
        limit: int = 100,
    ) -> NotificationClaim | None:
        """The next message of ``target``, committed as ``sending`` before it is sent (see
        :mod:`escbridge.store.outbox`); None when nothing of it is due."""
        with self._begin() as connection:
            return outbox.claim(connection, target, worker, now, lease, digest=digest, limit=limit)

    def settle_notifications(
        self,
        held: NotificationClaim,
        state: str,
        now: datetime,
        *,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> bool:
        """End a claim as ``sent``, ``failed``, ``unknown`` or ``pending`` at ``retry_at``;
        False (nothing written) when it was taken over. ``error`` is redacted here."""
        reason = None if error is None else redact(error)
        with self._begin() as connection:
            return outbox.settle(connection, held, state, now, error=reason, retry_at=retry_at)

    def renew_notifications(self, held: NotificationClaim, until: datetime) -> bool:
        """Extend a claim (a slow send); False when it was taken over."""
        with self._begin() as connection:
            return outbox.renew(connection, held, until)

    def notifications(
        self,
        states: Iterable[str],
        *,
        instance: str | None = None,
        ticket_id: str | None = None,
        ids: Sequence[int] | None = None,
        limit: int | None = 100,
    ) -> list[Notification]:
        """Outbox rows in ``states``, oldest first."""
        with self._begin() as connection:
            return outbox.listed(
                connection, states, instance=instance, ticket_id=ticket_id, ids=ids, limit=limit
            )

    def notification_counts(self) -> dict[str, int]:
        """How many notifications are in each state (every state present, zero included)."""
        with self._begin() as connection:
            return outbox.counts(connection)

    def replay_notifications(self, ids: Sequence[int] | None, now: datetime) -> list[int]:
        """Send failed (and, named by id, unknown) notifications again; the ids requeued."""
        with self._begin() as connection:
            return outbox.replay(connection, ids, now)

    def drop_unseen_shadows(self, instance: str, before: datetime) -> int:
        """Drop the shadows of ``instance`` not seen since ``before``: at the end of a complete
        reconciliation, the tickets it did not find open (solved, closed or deleted)."""
        with self._begin() as connection:
            return shadows.drop_unseen(connection, instance, before)
