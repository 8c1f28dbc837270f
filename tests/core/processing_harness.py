"""A fake helpdesk and connector for the processing tests, and a worker process to run them.

The helpdesk keeps its tickets in a SQLite file, so the worker *processes* of the fault tests
share it: every apply is logged, and "escalated exactly once" is counted there, on the
helpdesk's side, not taken from escbridge's own records. The connector is in-process (no
network); faults are injected with ``fail`` (raise on chosen calls) and ``kill_at`` (SIGKILL
this very process at a chosen point, for real).

Run as a script, this file is one worker, which stops when the inbox is empty:
``python processing_harness.py --store URL --helpdesk PATH [--kill-at after_apply:3]
[--clock-offset SECONDS]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from escbridge.connector import ApplyResult, CheckReport, ConflictHandler, ConnectorInfo
from escbridge.errors import Conflict, NotFound, TransientError
from escbridge.matrix import parse_matrix
from escbridge.model import Actions, Priority, Ticket, TicketEvent
from escbridge.policy import Engine
from escbridge.processing import ProcessingConfig, Processor, RunReport
from escbridge.store import Store
from escbridge.store.database import SqliteWriterLock
from escbridge.testing import FakeClock

CREATED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

#: Two levels and a team; tickets tagged ``vip`` go to l2, ``billing`` ones to the team.
MATRIX = """\
version: 1
name: processing tests
levels:
  - id: l1
    name: Frontline
    groups: {"*": Frontline}
  - id: l2
    name: Senior support
    groups: {"*": Senior}
  - id: l3
    name: Management
    groups: {"*": Managers}
teams:
  billing:
    name: Billing
    groups: {"*": Billing}
    level: l2
limits:
  cooldown: 30m
  daily_cap: 3
rules:
  - id: vip
    name: VIP customer
    kind: hierarchical
    when: {tags: [vip]}
    to: l2
    actions: {priority: high}
  - id: legal
    name: Legal threat
    kind: hierarchical
    when: {keywords: [lawyer]}
    to: l3
    actions: {priority: urgent}
"""


def engine() -> Engine:
    return Engine(parse_matrix(MATRIX, "processing-tests.yaml"))


class FakeHelpdesk:
    """Tickets in a SQLite file, shared by every process that opens the same path."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._lock = SqliteWriterLock(self.path)
        with self._tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS tickets (id TEXT PRIMARY KEY, tags TEXT NOT NULL,"
                " level TEXT, grp TEXT, priority INTEGER NOT NULL, version INTEGER NOT NULL,"
                " subject TEXT NOT NULL DEFAULT '')"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS applies (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " ticket_id TEXT NOT NULL, level TEXT, grp TEXT, pid INTEGER NOT NULL)"
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

    def add(self, ticket_id: str, *, tags: Collection[str] = (), subject: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO tickets (id, tags, level, grp, priority, version, subject)"
                " VALUES (?, ?, NULL, 'Frontline', ?, 1, ?)",
                (ticket_id, json.dumps(sorted(tags)), int(Priority.NORMAL), subject),
            )

    def add_many(self, ticket_ids: Sequence[str], *, tags: Collection[str] = ()) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO tickets (id, tags, level, grp, priority, version, subject)"
                " VALUES (?, ?, NULL, 'Frontline', ?, 1, '')",
                [(t, json.dumps(sorted(tags)), int(Priority.NORMAL)) for t in ticket_ids],
            )

    def edit(
        self, ticket_id: str, *, tags: Collection[str] | None = None, level: str | None = None
    ) -> None:
        """A human edits the ticket: its version changes (a concurrent edit for safe updates)."""
        with self._tx() as db:
            if tags is not None:
                db.execute(
                    "UPDATE tickets SET tags = ? WHERE id = ?",
                    (json.dumps(sorted(tags)), ticket_id),
                )
            if level is not None:
                db.execute("UPDATE tickets SET level = ? WHERE id = ?", (level, ticket_id))
            db.execute("UPDATE tickets SET version = version + 1 WHERE id = ?", (ticket_id,))

    def ticket(self, ticket_id: str, instance: str) -> Ticket:
        row = (
            self._db()
            .execute(
                "SELECT id, tags, level, grp, priority, version, subject FROM tickets WHERE id = ?",
                (ticket_id,),
            )
            .fetchone()
        )
        if row is None:
            raise NotFound(f"ticket {ticket_id} not found", status=404)
        return _ticket(row, instance)

    def write(self, ticket: Ticket, actions: Actions) -> bool:
        """Apply ``actions`` if the ticket is unchanged since it was read; False on a conflict."""
        with self._tx() as db:
            row = db.execute(
                "SELECT tags, level, grp, priority, version FROM tickets WHERE id = ?", (ticket.id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"ticket {ticket.id} not found", status=404)
            tags, level, group, priority, version = row
            if str(version) != ticket.version:
                return False
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
            db.execute(
                "INSERT INTO applies (ticket_id, level, grp, pid) VALUES (?, ?, ?, ?)",
                (ticket.id, actions.level, actions.group, os.getpid()),
            )
        return True

    def applies(self) -> dict[str, int]:
        """How many times each ticket was written to by escbridge."""
        rows = self._db().execute("SELECT ticket_id, COUNT(*) FROM applies GROUP BY ticket_id")
        return {ticket_id: count for ticket_id, count in rows}

    def levels(self) -> dict[str, str | None]:
        return dict(self._db().execute("SELECT id, level FROM tickets").fetchall())


def _ticket(row: Sequence[Any], instance: str) -> Ticket:
    ticket_id, tags, level, group, priority, version, subject = row
    return Ticket(
        id=ticket_id,
        instance=instance,
        subject=subject,
        tags=frozenset(json.loads(tags)),
        level=level,
        group=group,
        priority=Priority(priority),
        created_at=CREATED,
        updated_at=CREATED,
        version=str(version),
    )


Fault = Callable[[str, str], None]
"""Called with (operation, ticket id) before each helpdesk call; raises to fail it."""


class FakeConnector:
    """An in-process connector over a FakeHelpdesk, with fault injection."""

    info: ClassVar[ConnectorInfo] = ConnectorInfo(name="fake", version="1", display_name="Fake")

    def __init__(
        self,
        helpdesk: FakeHelpdesk,
        instance: str = "fake",
        *,
        fail: Fault | None = None,
        kill_at: tuple[str, int] | None = None,
        land_then_fail: Callable[[str], BaseException | None] | None = None,
    ) -> None:
        self.helpdesk = helpdesk
        self.instance = instance
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

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[Any]:
        raise NotImplementedError

    def apply(
        self, ticket: Ticket, actions: Actions, *, on_conflict: ConflictHandler | None = None
    ) -> ApplyResult:
        self._point("apply", ticket.id)
        wrote = self.helpdesk.write(ticket, actions)
        if not wrote:
            if on_conflict is None:
                raise Conflict(f"ticket {ticket.id} changed", status=409)
            fresh = self.helpdesk.ticket(ticket.id, self.instance)
            again = on_conflict(fresh)
            if again is None:
                return ApplyResult(ticket.id, ok=True, skipped=True, conflicts=1)
            if not self.helpdesk.write(fresh, again):
                return ApplyResult(
                    ticket.id, ok=False, error="conflict", retryable=True, conflict=True
                )
            actions = again
        self._point("after_apply", ticket.id)
        if self.land_then_fail is not None:
            error = self.land_then_fail(ticket.id)
            if error is not None:
                raise error
        return ApplyResult(ticket.id, ok=True, actions=actions)

    def apply_many(
        self, items: Sequence[tuple[Ticket, Actions]], *, on_conflict: ConflictHandler | None = None
    ) -> list[ApplyResult]:
        return [self.apply(t, a, on_conflict=on_conflict) for t, a in items]

    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket:
        raise NotImplementedError

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]
    ) -> None:
        return None

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[TicketEvent]:
        return []

    def is_own_change(self, event: TicketEvent) -> bool:
        return event.actor == "escbridge"

    @classmethod
    def sandbox(cls, **options: Any) -> Any:
        return None


Clock = FakeClock  # the one fake clock: moved by hand with ``advance(minutes=…)``


def event(
    ticket_id: str, key: str | None = None, instance: str = "fake", **extra: Any
) -> TicketEvent:
    return TicketEvent(
        instance=instance, ticket_id=ticket_id, dedupe_key=key or f"evt-{ticket_id}", **extra
    )


# --- the worker process ------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--helpdesk", required=True)
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--kill-at", default=None, help="POINT:N, e.g. after_apply:3")
    parser.add_argument("--clock-offset", type=float, default=0.0, help="seconds added to now")
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument(
        "--flaky", type=float, default=0.0, help="share of helpdesk calls that fail with a 503"
    )
    parser.add_argument("--backoff", type=float, default=2.0, help="first retry delay, seconds")
    parser.add_argument(
        "--stop-file", default=None, help="stop once this file exists and all is done"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    kill_at = None
    if args.kill_at:
        point, count = args.kill_at.split(":")
        kill_at = (point, int(count))
    offset = timedelta(seconds=args.clock_offset)
    store = Store(args.store)
    rng = random.Random()

    def flaky(_name: str, _ticket_id: str) -> None:
        if rng.random() < args.flaky:
            raise TransientError("HTTP 503: Service Unavailable", status=503)

    connector = FakeConnector(
        FakeHelpdesk(args.helpdesk), kill_at=kill_at, fail=flaky if args.flaky else None
    )
    processor = Processor(
        store,
        engine(),
        {"fake": connector},
        settings=ProcessingConfig(
            lease_seconds=args.lease,
            batch_size=args.batch,
            poll_seconds=args.poll,
            backoff_seconds=args.backoff,
        ),
        clock=lambda: datetime.now(UTC) + offset,
        worker_id=args.worker_id,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    report = RunReport()
    if args.stop_file:
        # Run until told the producer has finished, then until the inbox is empty.
        stop_file = Path(args.stop_file)
        while not stop.is_set() and not stop_file.exists():
            batch = processor.run_once()
            report.add(batch)
            if not batch.claimed:
                stop.wait(args.poll)
    report.add(processor.run(stop=stop, drain=True))
    store.close()
    print(
        json.dumps(
            {
                "done": report.done,
                "outcomes": report.outcomes,
                "dead": report.dead,
                "deferred": report.deferred,
                "retried": report.retried,
                "claimed": report.claimed,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
