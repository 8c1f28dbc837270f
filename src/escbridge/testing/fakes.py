"""An in-process helpdesk and a connector over it, with fault injection, for tests.

The helpdesk keeps its tickets in a SQLite file, so worker *processes* in a fault test can share
it: every write escbridge makes is logged, and "escalated exactly once" is counted there, on the
helpdesk's side, not taken from escbridge's own records. The connector is in-process (no
network); faults are injected with ``fail`` (raise on chosen calls), ``kill_at`` (SIGKILL this
very process at a chosen point, for real) and ``land_then_fail`` (the write lands, then the
answer is lost).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from escbridge.connector import (
    ApplyResult,
    BaseConnector,
    CheckReport,
    ConnectorInfo,
    TicketPage,
    WebhookRequest,
)
from escbridge.connector.kit import ConnectorSettings, Identity
from escbridge.errors import Conflict, NotFound, TicketChanged
from escbridge.model import Actions, Priority, Status, Ticket, TicketEvent
from escbridge.store.database import SqliteWriterLock

__all__ = ["CREATED", "OWN_ACTOR", "FakeConfig", "FakeConnector", "FakeHelpdesk", "Fault"]

CREATED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
"""When every fake ticket was opened."""

OWN_ACTOR = "escbridge"
"""The actor a FakeHelpdesk event names for escbridge's own change."""

Fault = Callable[[str, str], None]
"""Called with (operation, ticket id) before each helpdesk call; raises to fail it."""


class FakeHelpdesk:
    """Tickets in a SQLite file, shared by every process that opens the same path.

    Without a ``path`` the file lives in a temporary directory that goes with the object.
    With a ``clock``, every edit and write stamps the ticket's ``updated_at`` with its time, as
    a helpdesk does (without one, tickets keep the time they were added with).
    """

    def __init__(
        self, path: Path | str | None = None, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.clock = clock
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="escbridge-fake-helpdesk-")
            path = Path(self._tmp.name) / "helpdesk.db"
        self.path = str(path)
        self._local = threading.local()
        self._lock = SqliteWriterLock(self.path)
        with self._tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS tickets (id TEXT PRIMARY KEY, tags TEXT NOT NULL,"
                " level TEXT, grp TEXT, priority INTEGER NOT NULL, version INTEGER NOT NULL,"
                " subject TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'open',"
                " updated TEXT)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS applies (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " ticket_id TEXT NOT NULL, level TEXT, grp TEXT, pid INTEGER NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS notes (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " ticket_id TEXT NOT NULL, body TEXT NOT NULL)"
            )

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
        return db

    class _Tx:
        """A write transaction; writers of all processes queue on a file lock (as the store
        does) rather than in SQLite's busy handler, which sleeps up to 100 ms at a time."""

        def __init__(self, db: sqlite3.Connection, lock: SqliteWriterLock) -> None:
            self.db = db
            self.lock = lock

        def __enter__(self) -> sqlite3.Connection:
            self.lock.__enter__()
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: object, *_: object) -> None:
            try:
                self.db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.lock.__exit__()

    def _tx(self) -> FakeHelpdesk._Tx:
        return FakeHelpdesk._Tx(self._db(), self._lock)

    def add(
        self,
        ticket_id: str,
        *,
        tags: Collection[str] = (),
        subject: str = "",
        priority: Priority = Priority.NORMAL,
        level: str | None = None,
        updated_at: datetime | None = None,
    ) -> None:
        """A ticket as a customer opens it (``level``: escalated there before; ``updated_at``:
        its last change, else when it was opened)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO tickets (id, tags, level, grp, priority, version, subject, updated)"
                " VALUES (?, ?, ?, 'Frontline', ?, 1, ?, ?)",
                (
                    ticket_id,
                    json.dumps(sorted(tags)),
                    level,
                    int(priority),
                    subject,
                    None if updated_at is None else updated_at.isoformat(),
                ),
            )

    def add_many(self, ticket_ids: Sequence[str], *, tags: Collection[str] = ()) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO tickets (id, tags, level, grp, priority, version, subject)"
                " VALUES (?, ?, NULL, 'Frontline', ?, 1, '')",
                [(t, json.dumps(sorted(tags)), int(Priority.NORMAL)) for t in ticket_ids],
            )

    def edit(
        self,
        ticket_id: str,
        *,
        tags: Collection[str] | None = None,
        level: str | None = None,
        status: Status | None = None,
    ) -> None:
        """A human edits the ticket: its version changes (a concurrent edit for safe updates)."""
        with self._tx() as db:
            if status is not None:
                db.execute("UPDATE tickets SET status = ? WHERE id = ?", (status.value, ticket_id))
            self._touch(db, ticket_id)
            if tags is not None:
                db.execute(
                    "UPDATE tickets SET tags = ? WHERE id = ?",
                    (json.dumps(sorted(tags)), ticket_id),
                )
            if level is not None:
                db.execute("UPDATE tickets SET level = ? WHERE id = ?", (level, ticket_id))
            db.execute("UPDATE tickets SET version = version + 1 WHERE id = ?", (ticket_id,))

    def delete(self, ticket_id: str) -> None:
        """The ticket is deleted: reading it answers 404 from now on."""
        with self._tx() as db:
            db.execute("DELETE FROM tickets WHERE id = ?", (ticket_id,))

    def _touch(self, db: sqlite3.Connection, ticket_id: str) -> None:
        if self.clock is not None:
            stamp = self.clock().isoformat()
            db.execute("UPDATE tickets SET updated = ? WHERE id = ?", (stamp, ticket_id))

    def ticket(self, ticket_id: str, instance: str) -> Ticket:
        row = (
            self._db()
            .execute(
                "SELECT id, tags, level, grp, priority, version, subject, status, updated"
                " FROM tickets WHERE id = ?",
                (ticket_id,),
            )
            .fetchone()
        )
        if row is None:
            raise NotFound(f"ticket {ticket_id} not found", status=404)
        return _ticket(row, instance)

    def write(self, ticket: Ticket, actions: Actions) -> str | None:
        """Apply ``actions`` if the ticket is unchanged since it was read: the ticket's new
        version (as the answer to a helpdesk's PUT carries it), or None on a conflict.

        Tags are added and removed (never set wholesale), the priority only ever rises, and a
        note is kept with the ticket.
        """
        with self._tx() as db:
            row = db.execute(
                "SELECT tags, level, grp, priority, version FROM tickets WHERE id = ?", (ticket.id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"ticket {ticket.id} not found", status=404)
            tags, level, group, priority, version = row
            if str(version) != ticket.version:
                return None
            new_tags = (set(json.loads(tags)) | set(actions.tags_add)) - set(actions.tags_remove)
            db.execute(
                "UPDATE tickets SET tags = ?, level = ?, grp = ?, priority = ?,"
                " version = version + 1 WHERE id = ?",
                (
                    json.dumps(sorted(new_tags)),
                    actions.level or level,
                    actions.group or group,
                    max(priority, int(actions.priority or 0)),
                    ticket.id,
                ),
            )
            self._touch(db, ticket.id)
            db.execute(
                "INSERT INTO applies (ticket_id, level, grp, pid) VALUES (?, ?, ?, ?)",
                (ticket.id, actions.level, actions.group, os.getpid()),
            )
            if actions.note:
                db.execute(
                    "INSERT INTO notes (ticket_id, body) VALUES (?, ?)", (ticket.id, actions.note)
                )
        return str(version + 1)

    def applies(self) -> dict[str, int]:
        """How many times each ticket was written to by escbridge."""
        rows = self._db().execute("SELECT ticket_id, COUNT(*) FROM applies GROUP BY ticket_id")
        return {ticket_id: count for ticket_id, count in rows}

    def levels(self) -> dict[str, str | None]:
        return dict(self._db().execute("SELECT id, level FROM tickets").fetchall())

    def notes(self, ticket_id: str) -> list[str]:
        """The internal notes on one ticket, oldest first."""
        rows = self._db().execute(
            "SELECT body FROM notes WHERE ticket_id = ? ORDER BY seq", (ticket_id,)
        )
        return [body for (body,) in rows]


def _ticket(row: Sequence[Any], instance: str) -> Ticket:
    ticket_id, tags, level, group, priority, version, subject, status, updated = row
    return Ticket(
        id=ticket_id,
        instance=instance,
        subject=subject,
        tags=frozenset(json.loads(tags)),
        level=level,
        group=group,
        priority=Priority(priority),
        status=Status(status),
        created_at=CREATED,
        updated_at=CREATED if updated is None else datetime.fromisoformat(updated),
        version=str(version),
    )


class FakeConfig(ConnectorSettings):
    """The settings of a FakeConnector (it needs no credentials)."""


@dataclass(frozen=True)
class _Write:
    ticket: Ticket
    actions: Actions


class FakeConnector(BaseConnector[FakeConfig, _Write]):
    """An in-process connector over a FakeHelpdesk, with fault injection.

    ``calls`` counts each point passed (``fetch``, ``after_fetch``, ``apply``, ``after_apply``);
    ``kill_at=("after_apply", 3)`` kills the process the third time one is reached, ``fail`` is
    called before each fetch and write and may raise, and ``land_then_fail(ticket_id)`` may
    return an error to raise after a write has landed. Conflicts follow the contract
    (``BaseConnector``): the helpdesk's write is a compare-and-set on the ticket's version.
    """

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="fake", version="1", display_name="Fake", config_model=FakeConfig
    )

    def __init__(
        self,
        helpdesk: FakeHelpdesk,
        instance: str = "fake",
        *,
        fail: Fault | None = None,
        kill_at: tuple[str, int] | None = None,
        land_then_fail: Callable[[str], BaseException | None] | None = None,
        conflict_retries: int = 3,
    ) -> None:
        super().__init__(FakeConfig(conflict_retries=conflict_retries), instance=instance)
        self.helpdesk = helpdesk
        self.fail = fail
        self.kill_at = kill_at
        self.land_then_fail = land_then_fail
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _point(self, name: str, ticket_id: str) -> None:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            count = self.calls[name]
        if self.kill_at is not None and self.kill_at == (name, count):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fail is not None and name in ("fetch", "apply"):
            self.fail(name, ticket_id)

    def check(self, groups: Collection[str]) -> CheckReport:
        return CheckReport(ok=True, identity="fake")

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        self._point("fetch", ticket_id)
        ticket = self.helpdesk.ticket(ticket_id, self.instance)
        self._point("after_fetch", ticket_id)
        return ticket

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        raise NotImplementedError("the fake helpdesk has no sync scan")

    def _prepare(self, ticket: Ticket, actions: Actions) -> _Write | ApplyResult:
        self._point("apply", ticket.id)
        current = self.helpdesk.ticket(ticket.id, self.instance)
        if current.version != ticket.version:
            raise TicketChanged(f"ticket {ticket.id} changed since it was read", current=current)
        if actions.level and current.level == actions.level:
            # Landed before (a retry after a lost answer): nothing is missing.
            return ApplyResult(ticket.id, ok=True, actions=actions, version=current.version)
        return _Write(ticket, actions)

    def _write_one(self, prepared: _Write) -> ApplyResult:
        ticket, actions = prepared.ticket, prepared.actions
        version = self.helpdesk.write(ticket, actions)
        if version is None:
            raise Conflict(f"ticket {ticket.id} changed since it was read", status=409)
        self._point("after_apply", ticket.id)
        if self.land_then_fail is not None:
            error = self.land_then_fail(ticket.id)
            if error is not None:
                raise error
        return ApplyResult(ticket.id, ok=True, actions=actions, version=version)

    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket:
        raise NotImplementedError("the fake helpdesk has no wire format")

    def verify_request(self, request: WebhookRequest) -> None:
        """The fake helpdesk sends no webhooks; the processing tests enqueue events directly."""

    def parse_request(self, request: WebhookRequest) -> list[TicketEvent]:
        return []

    def _configured_identity(self) -> Identity:
        """The fake helpdesk's events name escbridge's own changes with the actor "escbridge"."""
        return Identity(OWN_ACTOR, label="escbridge (the fake helpdesk's API user)")
