"""The Store: every read and write escbridge makes to its database, on SQLite or PostgreSQL.

Each method is one short transaction and takes the time it acts at (``now``) from the caller,
so workers, tests and benchmarks decide what time it is. Database outages surface as
:class:`~escbridge.errors.StoreUnavailableError`; a schema at the wrong version as
:class:`~escbridge.errors.StoreSchemaError` (a subclass), on first use.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from escbridge.errors import EscbridgeError
from escbridge.model import EscalationRecord, TicketEvent
from escbridge.store import migrate
from escbridge.store.database import DEFAULT_URL, create_engine, safe_url, unavailable_as_typed
from escbridge.store.records import (
    Enqueued,
    Intent,
    Job,
    StoredEscalation,
    SyncCursor,
    TicketLock,
    TicketState,
)
from escbridge.store.redact import redact
from escbridge.store.schema import (
    DONE,
    FAILED,
    PENDING,
    PROCESSING,
    escalations,
    inbox,
    sync_cursors,
    ticket_state,
)

#: Outcomes written to the escalation history.
APPLIED, RECOVERED = "applied", "recovered"


class LockLostError(EscbridgeError):
    """This worker's per-ticket lock expired and another worker took the ticket over."""


class Store:
    """The database behind escbridge. Thread-safe; open one per process (after any fork)."""

    def __init__(
        self, url: str = DEFAULT_URL, *, busy_timeout: float = 30.0, check_schema: bool = True
    ) -> None:
        self.url = url
        self._engine = create_engine(url, busy_timeout=busy_timeout)
        self._schema_checked = not check_schema
        self._schema_lock = threading.Lock()

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

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def check_schema(self) -> None:
        """Raise StoreSchemaError unless the database is at the version this code needs."""
        migrate.check_schema(self._engine, self.url)
        self._schema_checked = True

    @contextlib.contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        if not self._schema_checked:
            with self._schema_lock:
                if not self._schema_checked:
                    self.check_schema()
        with unavailable_as_typed(self.url), self._engine.begin() as connection:
            yield connection

    def _insert(self, table: sa.Table) -> Any:
        """INSERT with the dialect's ON CONFLICT support."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # --- inbox ---------------------------------------------------------------------------

    def enqueue(self, event: TicketEvent, now: datetime) -> Enqueued:
        """Keep ``event`` as a pending job, unless the same delivery was kept before."""
        statement = (
            self._insert(inbox)
            .values(
                instance=event.instance,
                ticket_id=event.ticket_id,
                dedupe_key=event.dedupe_key,
                kind=event.kind,
                actor=event.actor,
                occurred_at=event.occurred_at,
                received_at=now,
                status=PENDING,
                attempts=0,
                next_attempt_at=now,
            )
            .on_conflict_do_nothing(index_elements=["instance", "dedupe_key"])
            .returning(inbox.c.id)
        )
        with self._begin() as connection:
            new_id = connection.execute(statement).scalar()
            if new_id is not None:
                return Enqueued(accepted=True, job_id=int(new_id))
            existing = connection.execute(
                sa.select(inbox.c.id).where(
                    inbox.c.instance == event.instance, inbox.c.dedupe_key == event.dedupe_key
                )
            ).scalar()
        return Enqueued(accepted=False, job_id=None if existing is None else int(existing))

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
        due = sa.and_(inbox.c.status.in_((PENDING, PROCESSING)), inbox.c.next_attempt_at <= now)
        candidates = (
            sa.select(inbox.c.id).where(due).order_by(inbox.c.next_attempt_at, inbox.c.id)
        ).limit(limit)
        if self.dialect == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        token = str(uuid.uuid4())
        with self._begin() as connection:
            connection.execute(
                sa.update(inbox)
                .where(
                    inbox.c.status == PROCESSING,
                    inbox.c.next_attempt_at <= now,
                    inbox.c.attempts >= max_attempts,
                )
                .values(
                    status=FAILED,
                    finished_at=now,
                    lease_owner=None,
                    claim_token=None,
                    last_error=(
                        f"gave up after {max_attempts} attempts: the worker processing it "
                        "stopped before finishing (lease expired)"
                    ),
                )
            )
            rows = connection.execute(
                sa.update(inbox)
                .where(inbox.c.id.in_(candidates.scalar_subquery()))
                .values(
                    status=PROCESSING,
                    attempts=inbox.c.attempts + 1,
                    lease_owner=worker,
                    claim_token=token,
                    next_attempt_at=now + lease,
                )
                .returning(*inbox.c)
            ).mappings()
            jobs = [Job.from_row(row) for row in rows]
        return sorted(jobs, key=lambda job: (job.received_at, job.id))

    def _finish_claim(self, job: Job, **values: Any) -> bool:
        """Update a job this worker still holds; False when its claim was lost meanwhile."""
        if job.claim_token is None:
            raise ValueError(f"job {job.id} is not claimed")
        with self._begin() as connection:
            result = connection.execute(
                sa.update(inbox)
                .where(
                    inbox.c.id == job.id,
                    inbox.c.claim_token == job.claim_token,
                    inbox.c.status == PROCESSING,
                )
                .values(lease_owner=None, claim_token=None, **values)
            )
        return result.rowcount == 1

    def complete(self, job: Job, now: datetime, outcome: str) -> bool:
        """Mark a claimed job done with what came of it."""
        return self._finish_claim(job, status=DONE, outcome=outcome[:50], finished_at=now)

    def retry_later(self, job: Job, at: datetime, error: str) -> bool:
        """Give a failed attempt back to the queue, due again at ``at``."""
        return self._finish_claim(job, status=PENDING, next_attempt_at=at, last_error=redact(error))

    def defer(self, job: Job, at: datetime) -> bool:
        """Put a job back untried (its ticket was busy): the claim does not count as an attempt."""
        return self._finish_claim(
            job, status=PENDING, next_attempt_at=at, attempts=inbox.c.attempts - 1
        )

    def dead_letter(self, job: Job, now: datetime, error: str) -> bool:
        """Stop retrying a job; it stays listed in `escbridge jobs --failed` with ``error``."""
        return self._finish_claim(job, status=FAILED, finished_at=now, last_error=redact(error))

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
        """Hold one ticket until ``now + lease``, or None when another worker holds it.

        Two workers deciding the same ticket from two events would both see it un-escalated
        and both apply; the lock makes them take turns. An expired lock (a dead worker) is
        taken over.
        """
        token = str(uuid.uuid4())
        expires = now + lease
        held = {"lock_token": token, "lock_owner": owner[:200], "lock_expires_at": expires}
        key = sa.and_(ticket_state.c.instance == instance, ticket_state.c.ticket_id == ticket_id)
        free = sa.or_(ticket_state.c.lock_token.is_(None), ticket_state.c.lock_expires_at <= now)
        with self._begin() as connection:
            row = (
                connection.execute(
                    sa.update(ticket_state)
                    .where(key, free)
                    .values(**held)
                    .returning(*ticket_state.c)
                )
                .mappings()
                .first()
            )
            if row is None:
                row = (
                    connection.execute(
                        self._insert(ticket_state)
                        .values(
                            instance=instance,
                            ticket_id=ticket_id,
                            day_count=0,
                            escalation_count=0,
                            updated_at=now,
                            **held,
                        )
                        .on_conflict_do_nothing(index_elements=["instance", "ticket_id"])
                        .returning(*ticket_state.c)
                    )
                    .mappings()
                    .first()
                )
        if row is None:
            return None
        return TicketLock(
            instance=instance,
            ticket_id=ticket_id,
            token=token,
            owner=owner,
            expires_at=expires,
            state=TicketState.from_row(row),
        )

    def _held(self, lock: TicketLock) -> sa.ColumnElement[bool]:
        return sa.and_(
            ticket_state.c.instance == lock.instance,
            ticket_state.c.ticket_id == lock.ticket_id,
            ticket_state.c.lock_token == lock.token,
        )

    def renew_lock(self, lock: TicketLock, now: datetime, lease: timedelta) -> bool:
        """Extend a held lock; False when it was lost (expired and taken over)."""
        with self._begin() as connection:
            result = connection.execute(
                sa.update(ticket_state).where(self._held(lock)).values(lock_expires_at=now + lease)
            )
        return result.rowcount == 1

    def unlock(self, lock: TicketLock) -> None:
        """Release a lock (a no-op when it was already released or lost)."""
        with self._begin() as connection:
            connection.execute(
                sa.update(ticket_state)
                .where(self._held(lock))
                .values(lock_token=None, lock_owner=None, lock_expires_at=None)
            )

    def write_intent(
        self, lock: TicketLock, intent: Intent, now: datetime, *, lease: timedelta | None = None
    ) -> None:
        """Note the decision about to be applied, extending the lock by ``lease``.

        This is the fence before an apply: it raises LockLostError, writing nothing, when the
        lock expired and another worker took the ticket over.
        """
        values: dict[str, Any] = {"intent": intent.to_json(), "intent_at": now, "updated_at": now}
        if lease is not None:
            values["lock_expires_at"] = now + lease
        with self._begin() as connection:
            result = connection.execute(
                sa.update(ticket_state).where(self._held(lock)).values(**values)
            )
            if result.rowcount != 1:
                raise LockLostError(f"lost the lock on ticket {lock.instance}/{lock.ticket_id}")

    def clear_intent(self, lock: TicketLock, now: datetime) -> None:
        """Forget an intent that is known not to have been applied."""
        with self._begin() as connection:
            connection.execute(
                sa.update(ticket_state)
                .where(self._held(lock))
                .values(intent=None, intent_at=None, updated_at=now)
            )

    def record_escalation(
        self,
        lock: TicketLock,
        intent: Intent,
        *,
        outcome: str,
        now: datetime,
        cooldown: timedelta | None = None,
        release: bool = True,
    ) -> StoredEscalation:
        """Write one escalation to the history and the ticket's state, clearing its intent.

        One transaction: the history row, the new level and counters, and (``release``) the
        lock. Raises LockLostError, writing nothing, when the lock was taken over meanwhile.
        """
        decision = intent.decision
        if not decision.escalate or decision.destination is None or decision.actions is None:
            raise ValueError("only a decision to escalate can be recorded")
        destination = decision.destination
        at = decision.at
        today = at.date()
        state_values: dict[str, Any] = {
            "level": destination.id,
            "last_escalated_at": at,
            "cooldown_until": at + cooldown if cooldown is not None else None,
            "day": today,
            "day_count": sa.case(
                (ticket_state.c.day == today, ticket_state.c.day_count + 1), else_=1
            ),
            "escalation_count": ticket_state.c.escalation_count + 1,
            "intent": None,
            "intent_at": None,
            "updated_at": now,
        }
        if release:
            state_values.update(lock_token=None, lock_owner=None, lock_expires_at=None)
        row = {
            "instance": lock.instance,
            "ticket_id": lock.ticket_id,
            "from_level": decision.from_level,
            "to_level": destination.id,
            "destination_kind": destination.kind,
            "to_group": destination.group,
            "rule_id": decision.rule_id,
            "kind": decision.kind,
            "actions": decision.actions.model_dump(mode="json"),
            "reasons": list(decision.reasons),
            "summary": decision.summary,
            "ticket_created_at": intent.ticket_created_at,
            "decided_at": at,
            "recorded_at": now,
            "outcome": outcome,
            "job_id": intent.job_id,
        }
        with self._begin() as connection:
            result = connection.execute(
                sa.update(ticket_state).where(self._held(lock)).values(**state_values)
            )
            if result.rowcount != 1:
                raise LockLostError(f"lost the lock on ticket {lock.instance}/{lock.ticket_id}")
            new_id = connection.execute(
                sa.insert(escalations).values(**row).returning(escalations.c.id)
            ).scalar_one()
        return StoredEscalation.from_row({**row, "id": int(new_id)})

    def ticket_state(self, instance: str, ticket_id: str) -> TicketState | None:
        query = sa.select(ticket_state).where(
            ticket_state.c.instance == instance, ticket_state.c.ticket_id == ticket_id
        )
        with self._begin() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else TicketState.from_row(row)

    # --- escalation history ------------------------------------------------------------

    def history(self, instance: str, ticket_id: str) -> list[EscalationRecord]:
        """A ticket's past escalations, oldest first: what the engine's guards reason about."""
        return [e.as_history() for e in self.escalations(instance=instance, ticket_id=ticket_id)]

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
            self._insert(sync_cursors)
            .values(instance=instance, stream=stream, **values)
            .on_conflict_do_update(index_elements=["instance", "stream"], set_=values)
        )
        with self._begin() as connection:
            connection.execute(statement)
