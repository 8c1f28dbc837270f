"""The door's write: webhook events into the inbox, many per transaction, on the driver itself.

Every webhook answered 2xx costs one of these, so it skips what SQLAlchemy adds per statement
(compilation cache lookups, events, result wrapping: more than the insert itself on a local
database) and talks to the pooled DB-API connection directly: one multi-row
``INSERT … ON CONFLICT DO NOTHING RETURNING``, then one look-up of the rows that were already
there (redeliveries), then one COMMIT for the whole batch. The receiver gathers concurrent
deliveries into one batch (group commit), so one disk flush pays for all of them.

What SQLAlchemy would do on an error is done here by hand: a connection that met database
trouble is discarded (the whole pool when the file or server is the trouble, see
``database._trouble``), an outage becomes :class:`~escbridge.errors.StoreUnavailableError`. A
batch refused for a *value* (a NUL in PostgreSQL text, a lone surrogate, a value too long for
its column) is split and written one event at a time, so one bad event cannot fail the
others; the bad one comes back refused (``Enqueued.refused``), its field named, never its value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from escbridge.errors import StoreUnavailableError
from escbridge.model import TicketEvent
from escbridge.secrets import redact
from escbridge.store.database import _trouble, safe_url, unavailable_as_typed
from escbridge.store.limits import INBOX_LIMITS
from escbridge.store.records import Enqueued
from escbridge.store.schema import PENDING, UtcDateTime

#: The PostgreSQL channel a commit of new events notifies (``Store.listen`` waits on it).
NOTIFY_CHANNEL = "escbridge_inbox"

#: Events per INSERT statement: 8 bound values each, well inside both databases' limits.
CHUNK = 500

_FIELDS = ("instance", "ticket_id", "dedupe_key", "kind", "actor")
_COLUMNS = (*_FIELDS, "occurred_at", "received_at", "next_attempt_at", "status", "attempts")


class _Refused(Exception):
    """The batch was refused for a value in it (not an outage, not a bug)."""


class InboxWriter:
    """Writes batches of events into the inbox of one engine (built once per Store)."""

    def __init__(
        self,
        engine: sa.Engine,
        url: str,
        writer: contextlib.AbstractContextManager[Any],
    ) -> None:
        self._engine = engine
        self._url = url
        self._writer = writer
        dialect = engine.dialect
        self._sqlite = dialect.name == "sqlite"
        self._mark = "?" if dialect.paramstyle == "qmark" else "%s"
        # The same conversion SQLAlchemy applies to these columns (on SQLite: its text form).
        convert = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
        self._time: Callable[[datetime | None], Any] = convert or (lambda value: value)
        self._dbapi: Any = dialect.loaded_dbapi
        self._inserts: dict[int, str] = {}
        self._lookups: dict[int, str] = {}

    # --- statements (text built once per batch size, then prepared by the driver) ----------

    def _insert(self, rows: int) -> str:
        sql = self._inserts.get(rows)
        if sql is None:
            m = self._mark
            row = f"({m}, {m}, {m}, {m}, {m}, {m}, {m}, {m}, '{PENDING}', 0)"
            sql = (
                f"INSERT INTO inbox ({', '.join(_COLUMNS)}) VALUES "
                + ", ".join([row] * rows)
                + " ON CONFLICT (instance, dedupe_key) DO NOTHING"
                " RETURNING id, instance, dedupe_key"
            )
            self._inserts[rows] = sql
        return sql

    def _lookup(self, keys: int) -> str:
        sql = self._lookups.get(keys)
        if sql is None:
            m = self._mark
            sql = (
                f"SELECT id, instance, dedupe_key FROM inbox WHERE instance = {m}"
                f" AND dedupe_key IN ({', '.join([m] * keys)})"
            )
            self._lookups[keys] = sql
        return sql

    # --- the write ---------------------------------------------------------------------

    def enqueue_many(self, events: Sequence[TicketEvent], now: datetime) -> list[Enqueued]:
        """Keep each new event as a pending job at ``now``; one transaction for all of them.

        Answers in the order of ``events``: accepted (a new job id), a duplicate of an earlier
        delivery (its job id; also the second of two equal events in one batch), or refused
        for a value the database cannot hold. Raises StoreUnavailableError when the database
        cannot take writes now: then none of them is kept (unless a refused value had split
        the batch into one transaction per event: those written before are kept, and come
        back as duplicates when delivered again).
        """
        if not events:
            return []
        received = self._time(now)
        rows = [self._row(event, received) for event in events]
        try:
            return self._write(events, rows)
        except _Refused:
            pass
        answers: list[Enqueued] = []
        for event, row in zip(events, rows, strict=True):
            try:
                answers.extend(self._write([event], [row]))
            except _Refused as error:
                answers.append(Enqueued(accepted=False, job_id=None, refused=_why(event, error)))
        return answers

    def _row(self, event: TicketEvent, received: Any) -> tuple[Any, ...]:
        return (
            event.instance,
            event.ticket_id,
            event.dedupe_key,
            event.kind,
            event.actor,
            self._time(event.occurred_at),
            received,
            received,
        )

    def _write(
        self, events: Sequence[TicketEvent], rows: Sequence[tuple[Any, ...]]
    ) -> list[Enqueued]:
        new: dict[tuple[str, str], int] = {}
        with self._transaction() as cursor:
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                flat = [value for row in chunk for value in row]
                cursor.execute(self._insert(len(chunk)), flat)
                for job_id, instance, key in cursor.fetchall():
                    new[(instance, key)] = int(job_id)
            if new and not self._sqlite:  # idle workers elsewhere hear of it at the commit
                cursor.execute(f"NOTIFY {NOTIFY_CHANNEL}")
            missing: dict[str, list[str]] = {}
            for event in events:
                if (event.instance, event.dedupe_key) not in new:
                    missing.setdefault(event.instance, []).append(event.dedupe_key)
            found: dict[tuple[str, str], int] = {}
            for instance, keys in missing.items():
                unique = list(dict.fromkeys(keys))
                for start in range(0, len(unique), CHUNK):
                    part = unique[start : start + CHUNK]
                    cursor.execute(self._lookup(len(part)), [instance, *part])
                    for job_id, found_instance, key in cursor.fetchall():
                        found[(found_instance, key)] = int(job_id)
        answers: list[Enqueued] = []
        for event in events:
            key = (event.instance, event.dedupe_key)
            job_id = new.pop(key, None)  # the first of equal events in the batch is the new one
            if job_id is not None:
                found[key] = job_id
                answers.append(Enqueued(accepted=True, job_id=job_id))
            else:
                answers.append(Enqueued(accepted=False, job_id=found.get(key)))
        return answers

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A DB-API cursor in one transaction, committed at the end; errors sorted out here."""
        with self._writer:
            try:
                with unavailable_as_typed(self._url):  # the pool's own errors (a timeout)
                    pooled = self._engine.raw_connection()
            except self._dbapi.Error as error:  # the driver's, raised as they are
                raise self._unavailable(error) from error
            try:
                driver: Any = pooled.driver_connection
                cursor = driver.cursor()
                try:
                    if self._sqlite:  # the write lock now, not at the first write (database.py)
                        cursor.execute("BEGIN IMMEDIATE")
                    yield cursor
                    driver.commit()
                except BaseException as error:
                    with contextlib.suppress(Exception):
                        driver.rollback()
                    self._sort_out(pooled, error)
                    raise
                finally:
                    with contextlib.suppress(Exception):
                        cursor.close()
            finally:
                pooled.close()

    def _sort_out(self, pooled: Any, error: BaseException) -> None:
        """Raise what ``error`` means for the caller, discarding a connection that met trouble;
        return (so the original is raised) for anything else: a bug is not an outage."""
        dbapi = self._dbapi
        if isinstance(error, UnicodeError):
            raise _Refused(type(error).__name__) from error
        if not isinstance(error, dbapi.Error):
            return
        trouble = _trouble(error, dbapi)
        if trouble == "store":  # as SQLAlchemy does for a disconnect: every older one too
            self._engine.pool._invalidate(pooled, error)
        elif trouble == "connection":
            pooled.invalidate(error)
        if trouble is not None or isinstance(error, dbapi.OperationalError | dbapi.InterfaceError):
            raise self._unavailable(error) from error
        if isinstance(error, dbapi.DataError | dbapi.IntegrityError):
            raise _Refused(type(error).__name__) from error

    def _unavailable(self, error: BaseException) -> StoreUnavailableError:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        password = sa.make_url(self._url).password
        secrets = (str(password),) if password else ()
        return StoreUnavailableError(
            f"store unavailable ({safe_url(self._url)}): {redact(first, secrets)}"
        )


def _why(event: TicketEvent, error: _Refused) -> str:
    """Which field the database refused, and why, without its value."""
    for name in _FIELDS:
        value = getattr(event, name)
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            return f"{name} contains a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} contains a lone surrogate"
        limit = INBOX_LIMITS.get(name)
        if limit is not None and len(value) > limit:
            return f"{name} is longer than {limit} characters"
    return f"the database refused the event ({error})"
