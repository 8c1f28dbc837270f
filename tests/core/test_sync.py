"""`escbridge sync`, specified on an in-memory helpdesk: cursors, the lease, batching, dry runs.

The helpdesk here pages its tickets in a fixed order with an integer cursor and counts every
write, so "no ticket missed, none escalated twice" is counted on the helpdesk's side. The
store is real (SQLite and PostgreSQL), and so are the engine and the processing phases. A page
is processed in a plain loop (no threads), so every count here is deterministic.
The same behaviours against the three emulated helpdesks: test_sync_sandboxes.py.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TextIO

import pytest

from escbridge.cli.sync import configure_sync_parser, run_sync
from escbridge.connector import (
    CAP_BULK_UPDATE,
    ApplyResult,
    CheckReport,
    ConflictHandler,
    ConnectorInfo,
    TicketPage,
)
from escbridge.errors import AuthError, Conflict, NotFound, RateLimited
from escbridge.matrix import load_matrix
from escbridge.model import Actions, Priority, Status, Ticket, TicketEvent
from escbridge.policy import Engine
from escbridge.processing import Processor
from escbridge.sandbox.backlog import default_matrix_path
from escbridge.store import PENDING, Store, TicketWrites
from escbridge.sync import EPOCH, LEASE_TICKET_ID, STREAMS, Syncer, SyncLease, SyncOptions
from escbridge.testing import FakeClock

NOW = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)  # a Wednesday, 10:00 in Berlin: business hours
INSTANCE = "desk"


class Crash(BaseException):
    """The process dies here (not an error anything may catch)."""


class MemoryDesk:
    """A helpdesk in memory: tickets in a fixed order, an integer cursor, every write counted."""

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="memory", version="1", display_name="Memory", capabilities=frozenset({CAP_BULK_UPDATE})
    )

    def __init__(self, instance: str = INSTANCE, page_size: int = 5) -> None:
        self.instance = instance
        self.page_size = page_size
        self.tickets: dict[str, Ticket] = {}
        self.order: list[str] = []
        self.writes: Counter[str] = Counter()
        self.bulk_calls: list[int] = []
        self.pages_served = 0
        self.scans: list[tuple[datetime | None, str | None]] = []
        self.fail_write: dict[str, Exception] = {}
        self.edited_by_humans: set[str] = set()  # every write to these meets a 409
        self.conflicts_seen: list[str] = []  # re-decisions asked for, by ticket id
        self.fail_page: dict[int, BaseException] = {}  # page number (1-based, per scan) -> error
        self.block_scan: threading.Event | None = None
        self.on_page: Callable[[], None] | None = None  # e.g. count an API call
        self.scanning = threading.Event()
        self._lock = threading.Lock()

    def add(self, ticket_id: str, *, subject: str = "Order is late", **fields: Any) -> None:
        created = fields.pop("created_at", NOW - timedelta(minutes=5))
        self.tickets[ticket_id] = Ticket(
            id=ticket_id,
            instance=self.instance,
            subject=subject,
            created_at=created,
            updated_at=fields.pop("updated_at", created),
            first_response_at=fields.pop("first_response_at", created),
            group="Support",
            version="1",
            **fields,
        )
        self.order.append(ticket_id)

    def escalated(self, level: str) -> list[str]:
        return sorted(t.id for t in self.tickets.values() if t.level == level)

    # -- the connector contract ----------------------------------------------------------

    def check(self, groups: Collection[str]) -> CheckReport:
        return CheckReport(ok=True)

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        with self._lock:
            if ticket_id not in self.tickets:
                raise NotFound(f"ticket {ticket_id}", status=404)
            return self.tickets[ticket_id]

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        self.scans.append((since, cursor))
        self.scanning.set()
        if self.block_scan is not None:
            self.block_scan.wait(10)
        start = int(cursor) if cursor else 0
        number = 0
        while True:
            number += 1
            if number in self.fail_page:
                raise self.fail_page.pop(number)
            with self._lock:
                ids = self.order[start : start + self.page_size]
                tickets = [self.tickets[i] for i in ids if self.tickets[i].status.is_open]
            start += len(ids)
            self.pages_served += 1
            if self.on_page is not None:
                self.on_page()
            done = start >= len(self.order)
            yield TicketPage(tickets, str(start), done)
            if done:
                return

    def _write(
        self, ticket: Ticket, actions: Actions, on_conflict: ConflictHandler | None = None
    ) -> ApplyResult:
        if ticket.id in self.edited_by_humans:
            # A person keeps editing the ticket: the re-decision is asked for, and the retry
            # meets a conflict again, past the connector's bounded retries.
            if on_conflict is None:
                raise Conflict(f"ticket {ticket.id} changed", status=409)
            self.conflicts_seen.append(ticket.id)
            if on_conflict(self.fetch_ticket(ticket.id)) is None:
                return ApplyResult(ticket.id, ok=True, skipped=True, conflicts=1)
            return ApplyResult(
                ticket.id, ok=False, error="conflict", retryable=True, conflict=True, conflicts=2
            )
        if ticket.id in self.fail_write:
            error = self.fail_write[ticket.id]
            if isinstance(error, RateLimited | AuthError):
                raise error
            return ApplyResult(ticket.id, ok=False, error=str(error))
        with self._lock:
            current = self.tickets[ticket.id]
            tags = (set(current.tags) | set(actions.tags_add)) - set(actions.tags_remove)
            if actions.level:
                tags.add(f"escbridge_{actions.level}")
            self.tickets[ticket.id] = current.model_copy(
                update={
                    "level": actions.level or current.level,
                    "group": actions.group or current.group,
                    "priority": max(current.priority, actions.priority or Priority.LOW),
                    "tags": frozenset(tags),
                    "version": str(int(current.version or "0") + 1),
                }
            )
            self.writes[ticket.id] += 1
        return ApplyResult(ticket.id, ok=True, actions=actions)

    def apply(
        self, ticket: Ticket, actions: Actions, *, on_conflict: ConflictHandler | None = None
    ) -> ApplyResult:
        return self._write(ticket, actions, on_conflict)

    def apply_many(
        self,
        items: Sequence[tuple[Ticket, Actions]],
        *,
        on_conflict: ConflictHandler | None = None,
    ) -> list[ApplyResult]:
        with self._lock:
            self.bulk_calls.append(len(items))
        return [self._write(t, a, on_conflict) for t, a in items]

    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket:
        return Ticket.model_validate(raw)

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]
    ) -> None:
        return None

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[TicketEvent]:
        return []

    def is_own_change(self, event: TicketEvent) -> bool:
        return False

    @classmethod
    def sandbox(cls, **options: Any) -> Any:
        return None


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_matrix(default_matrix_path()), {INSTANCE: "zendesk"})


@pytest.fixture
def desk() -> MemoryDesk:
    return MemoryDesk()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    from escbridge.store import upgrade

    url = f"sqlite:///{tmp_path / 'sync.db'}"
    upgrade(url)
    with Store(url) as store:
        yield store


def processor(store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock) -> Processor:
    connectors: dict[str, Any] = {INSTANCE: desk}
    return Processor(store, engine, connectors, clock=clock, worker_id="test")


def flagged(desk: MemoryDesk, count: int, first: int = 1) -> list[str]:
    """Tickets an agent flagged as a policy exception: the matrix sends them to l2 as soon as it
    sees them, and never further on its own."""
    ids = [str(i) for i in range(first, first + count)]
    for ticket_id in ids:
        desk.add(
            ticket_id, subject=f"Refund after 45 days ({ticket_id})", tags=["policy_exception"]
        )
    return ids


def calm(desk: MemoryDesk, count: int, first: int = 100) -> list[str]:
    ids = [str(i) for i in range(first, first + count)]
    for ticket_id in ids:
        desk.add(ticket_id, subject="A question about my invoice")
    return ids


def escalations_per_ticket(store: Store) -> Counter[str]:
    return Counter(e.ticket_id for e in store.escalations(instance=INSTANCE))


# --- a run, from the stored cursor -----------------------------------------------------------


def test_a_run_escalates_what_the_matrix_says_and_saves_the_cursor(
    store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock
) -> None:
    hot = flagged(desk, 7)
    calm(desk, 6)
    report = Syncer(processor(store, engine, desk, clock), SyncOptions(reconcile="never")).run()

    result = report.instances[INSTANCE]
    assert (result.scanned, dict(result.escalated), result.skipped, result.failed) == (
        13,
        {"l2": 7},
        6,
        0,
    )
    assert desk.escalated("l2") == sorted(hot)
    assert report.ok and result.complete
    cursor = store.get_cursor(INSTANCE, STREAMS["changes"])
    assert cursor is not None and cursor.cursor == "13"
    assert cursor.since == NOW  # "covered up to": the run's start


def test_the_next_run_starts_from_the_saved_cursor(
    store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock
) -> None:
    flagged(desk, 3)
    syncer = Syncer(processor(store, engine, desk, clock), SyncOptions(reconcile="never"))
    syncer.run()
    flagged(desk, 2, first=50)
    clock.advance(minutes=5)
    report = syncer.run()

    assert desk.scans[-1] == (NOW, "3")
    assert report.instances[INSTANCE].scanned == 2
    assert desk.escalated("l2") == ["1", "2", "3", "50", "51"]


def test_since_replaces_the_stored_cursor(
    sqlite_store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock
) -> None:
    flagged(desk, 2)
    Syncer(processor(sqlite_store, engine, desk, clock), SyncOptions(reconcile="never")).run()
    since = NOW - timedelta(days=2)
    Syncer(
        processor(sqlite_store, engine, desk, clock), SyncOptions(since=since, reconcile="never")
    ).run()
    assert desk.scans[-1] == (since, None)


def test_the_reconciliation_finds_tickets_no_change_brought_back(
    sqlite_store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock
) -> None:
    """A VIP ticket that nobody touches for two business hours: no change brings it back to the
    changes pass; the reconcile pass reaches it (the safety net under the due-queue)."""
    desk.add("vip", subject="Checkout fails", tags=["vip"], priority=Priority.HIGH)
    syncer = Syncer(processor(sqlite_store, engine, desk, clock))
    first = syncer.run().instances[INSTANCE]
    # the first sync reconciles, and its changes pass starts from then on (no double listing)
    assert first.passes == {"changes": 0, "reconcile": 1}
    assert desk.escalated("l2") == []
    clock.advance(hours=2, minutes=5)
    quiet = syncer.run().instances[INSTANCE]
    assert quiet.passes == {"changes": 0} and quiet.reconciliation is None  # within the day
    assert desk.escalated("l2") == []

    report = Syncer(
        processor(sqlite_store, engine, desk, clock), SyncOptions(reconcile="always")
    ).run()

    assert desk.escalated("l2") == ["vip"]
    assert report.escalations[0].rule_id == "vip-idle"
    assert report.instances[INSTANCE].passes == {"changes": 0, "reconcile": 1}
    stream = sqlite_store.get_cursor(INSTANCE, STREAMS["reconcile"])
    assert stream is not None and stream.cursor is None  # the next one starts afresh
    assert stream.since == clock.now  # when the last complete reconciliation began
    assert desk.scans[-1] == (EPOCH, None)  # every open ticket, whatever its age


# --- batching: one bulk call for the writes of a page ------------------------------------------


def test_the_writes_of_a_page_go_out_in_bulk_calls(
    sqlite_store: Store, engine: Engine, clock: FakeClock
) -> None:
    desk = MemoryDesk(page_size=40)
    flagged(desk, 30)
    calm(desk, 10)
    report = Syncer(
        processor(sqlite_store, engine, desk, clock), SyncOptions(reconcile="never", batch_size=10)
    ).run()

    assert sum(report.instances[INSTANCE].escalated.values()) == 30
    assert desk.bulk_calls == [10, 10, 10]  # 30 writes, 10 per call
    assert set(desk.writes.values()) == {1}
    assert set(escalations_per_ticket(sqlite_store).values()) == {1}


def test_the_store_work_of_a_page_is_one_lock_statement_and_two_transactions(
    store: Store, engine: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per page, not per ticket: the locks in one statement, the intents in one transaction,
    and the records (with the releases of the tickets left as they were) in one more."""
    desk = MemoryDesk(page_size=20)
    flagged(desk, 24)
    calm(desk, 16)
    calls: Counter[str] = Counter()
    for name in ("lock_tickets", "batch", "lock_ticket", "write_intent", "record_escalation"):
        real = getattr(store, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, spy)

    report = Syncer(processor(store, engine, desk, clock), SyncOptions(reconcile="never")).run()

    assert report.instances[INSTANCE].pages == 2
    assert sum(report.instances[INSTANCE].escalated.values()) == 24
    # two pages: the sync lease is the one per-ticket lock, and each page has its three
    assert calls == {"lock_ticket": 1, "lock_tickets": 2, "batch": 4}


def test_without_a_bulk_api_tickets_are_written_one_by_one(
    sqlite_store: Store, engine: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = MemoryDesk()
    monkeypatch.setattr(MemoryDesk, "info", ConnectorInfo("memory", "1", "Memory"))
    flagged(desk, 6)
    Syncer(processor(sqlite_store, engine, desk, clock), SyncOptions(reconcile="never")).run()
    assert desk.bulk_calls == [] and sum(desk.writes.values()) == 6


# --- crashes: the cursor moves only past recorded pages ------------------------------------------


def test_a_crash_between_apply_and_record_loses_no_ticket_and_escalates_none_twice(
    store: Store, engine: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = MemoryDesk(page_size=6)
    hot = flagged(desk, 18)
    real = TicketWrites.record_escalations
    pages = 0

    def record_then_die(*args: Any, **kwargs: Any) -> Any:
        nonlocal pages
        pages += 1
        if pages == 2:  # page 2, written to the helpdesk in two bulk calls, not recorded
            raise Crash()
        return real(*args, **kwargs)

    monkeypatch.setattr(TicketWrites, "record_escalations", record_then_die)
    syncer = Syncer(
        processor(store, engine, desk, clock), SyncOptions(reconcile="never", batch_size=4)
    )
    with pytest.raises(Crash):
        syncer.run()
    assert store.get_cursor(INSTANCE, STREAMS["changes"]).cursor == "6"  # type: ignore[union-attr]
    assert desk.bulk_calls == [4, 2, 4, 2]  # page 2 reached the helpdesk

    monkeypatch.setattr(TicketWrites, "record_escalations", real)
    clock.advance(minutes=11)  # the dead run's lease and ticket locks have expired
    report = syncer.run()

    assert desk.escalated("l2") == sorted(hot)
    assert set(desk.writes.values()) == {1}, desk.writes  # the helpdesk was written once each
    per_ticket = escalations_per_ticket(store)
    assert sorted(per_ticket) == sorted(hot) and set(per_ticket.values()) == {1}
    # page 2's record transaction was lost whole: its six are recorded, not applied again
    assert report.instances[INSTANCE].recovered == 6
    assert desk.scans[-1][1] == "6"  # resumed at the last committed page


def test_a_crash_between_two_bulk_calls_of_a_page_loses_nothing(
    sqlite_store: Store, engine: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first call's four landed; the process died before the second: the next run records
    those four and writes the other two."""
    desk = MemoryDesk(page_size=6)
    hot = flagged(desk, 6)
    real = desk.apply_many

    def die_on_the_second_call(*args: Any, **kwargs: Any) -> Any:
        if len(desk.bulk_calls) == 1:
            raise Crash()
        return real(*args, **kwargs)

    monkeypatch.setattr(desk, "apply_many", die_on_the_second_call)
    syncer = Syncer(
        processor(sqlite_store, engine, desk, clock), SyncOptions(reconcile="never", batch_size=4)
    )
    with pytest.raises(Crash):
        syncer.run()
    monkeypatch.setattr(desk, "apply_many", real)
    clock.advance(minutes=11)
    report = syncer.run().instances[INSTANCE]

    assert desk.escalated("l2") == sorted(hot) and set(desk.writes.values()) == {1}
    assert (report.recovered, sum(report.escalated.values())) == (4, 6)
    assert set(escalations_per_ticket(sqlite_store).values()) == {1}


def test_a_run_that_dies_on_a_page_resumes_on_that_page(
    sqlite_store: Store, engine: Engine, clock: FakeClock
) -> None:
    desk = MemoryDesk(page_size=4)
    hot = flagged(desk, 10)
    desk.fail_page[2] = Crash()
    syncer = Syncer(processor(sqlite_store, engine, desk, clock), SyncOptions(reconcile="never"))
    with pytest.raises(Crash):
        syncer.run()
    clock.advance(minutes=11)
    syncer.run()
    assert desk.scans[-1][1] == "4"
    assert desk.escalated("l2") == sorted(hot) and set(desk.writes.values()) == {1}


# --- the lease: two runs never overlap ----------------------------------------------------------


def test_a_second_run_skips_an_instance_whose_lease_is_held(
    store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock
) -> None:
    flagged(desk, 4)
    first = Syncer(
        processor(store, engine, desk, clock), SyncOptions(reconcile="never"), owner="run-a"
    )
    second = Syncer(
        processor(store, engine, desk, clock), SyncOptions(reconcile="never"), owner="run-b"
    )
    desk.block_scan = threading.Event()
    reports: list[Any] = []
    thread = threading.Thread(target=lambda: reports.append(first.run()))
    thread.start()
    try:
        assert desk.scanning.wait(5)
        blocked = second.run().instances[INSTANCE]
    finally:
        desk.block_scan.set()
        thread.join(10)

    assert blocked.locked_by is not None and blocked.locked_by.startswith("run-a until ")
    assert blocked.scanned == 0 and len(desk.scans) == 1
    assert reports[0].instances[INSTANCE].scanned == 4
    assert set(desk.writes.values()) == {1}
    assert SyncLease.holder(store, INSTANCE) is None  # released at the end of the run


def test_a_dead_runs_lease_expires_and_the_next_run_takes_over(
    sqlite_store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock
) -> None:
    flagged(desk, 2)
    lease = SyncLease.acquire(
        sqlite_store, INSTANCE, "dead-run", duration=timedelta(minutes=10), clock=clock
    )
    assert lease is not None  # held, never released: the process died
    syncer = Syncer(processor(sqlite_store, engine, desk, clock), SyncOptions(reconcile="never"))
    assert syncer.run().instances[INSTANCE].locked_by is not None
    clock.advance(minutes=10, seconds=1)
    assert syncer.run().instances[INSTANCE].scanned == 2
    with pytest.raises(Exception, match="another run took over"):
        lease.renew()


# --- dry runs --------------------------------------------------------------------------------


def test_a_dry_run_changes_nothing_and_says_what_it_would_do(
    store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock
) -> None:
    hot = flagged(desk, 3)
    calm(desk, 2)
    report = Syncer(processor(store, engine, desk, clock), SyncOptions(dry_run=True)).run()

    assert sorted(e.ticket_id for e in report.escalations) == sorted(hot)
    assert {(e.destination, e.rule_id, e.status) for e in report.escalations} == {
        ("l2", "policy-exception", "would_escalate")
    }
    assert desk.writes == Counter() and desk.bulk_calls == []
    assert store.escalations() == []
    for stream in STREAMS.values():
        assert store.get_cursor(INSTANCE, stream) is None
    assert store.ticket_state(INSTANCE, LEASE_TICKET_ID) is None  # no lease taken either
    assert all(store.ticket_state(INSTANCE, t) is None for t in hot)
    assert store.job_counts()[PENDING] == 0


# --- failures: one ticket, or the whole helpdesk --------------------------------------------------


def test_a_ticket_that_fails_alone_is_counted_and_kept_for_a_worker(
    sqlite_store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock
) -> None:
    flagged(desk, 5)
    desk.fail_write["3"] = ValueError("group 'Senior Support' was deleted")
    syncer = Syncer(processor(sqlite_store, engine, desk, clock), SyncOptions(reconcile="never"))
    result = syncer.run().instances[INSTANCE]

    assert (result.failed, sum(result.escalated.values())) == (1, 4)
    assert result.failures[0][0] == "3" and "was deleted" in result.failures[0][1]
    [job] = sqlite_store.jobs()
    assert (job.ticket_id, job.kind) == ("3", "sync.failed")
    assert sqlite_store.get_cursor(INSTANCE, STREAMS["changes"]).cursor == "5"  # type: ignore[union-attr]
    again = Syncer(
        processor(sqlite_store, engine, desk, clock),
        SyncOptions(reconcile="never", since=NOW - timedelta(days=1)),
    ).run()
    assert again.instances[INSTANCE].failed == 1
    assert len(sqlite_store.jobs()) == 1  # the same version of the ticket: one job


def test_a_ticket_a_person_keeps_editing_is_left_to_a_worker_not_lost(
    sqlite_store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock
) -> None:
    flagged(desk, 3)
    desk.edited_by_humans.add("2")
    sync = processor(sqlite_store, engine, desk, clock)
    result = Syncer(sync, SyncOptions(reconcile="never")).run().instances[INSTANCE]

    assert desk.conflicts_seen == ["2"]  # decided again on the ticket as the person left it
    assert (result.failed, sum(result.escalated.values())) == (1, 2)
    assert result.failures[0][0] == "2" and "conflict" in result.failures[0][1]
    [job] = sqlite_store.jobs()
    assert (job.ticket_id, job.kind) == ("2", "sync.failed")

    desk.edited_by_humans.clear()  # the person is done: a worker escalates it
    assert sync.run_once().outcomes == {"escalated": 1}
    assert desk.escalated("l2") == ["1", "2", "3"] and set(desk.writes.values()) == {1}


def test_throttling_past_the_retries_stops_the_run_and_keeps_the_cursor(
    sqlite_store: Store, engine: Engine, clock: FakeClock
) -> None:
    desk = MemoryDesk(page_size=3)
    hot = flagged(desk, 9)
    resume = NOW + timedelta(hours=3)
    desk.fail_write["5"] = RateLimited(
        "THRESHOLD_EXCEEDED", status=429, retry_after=3 * 3600, resume_at=resume
    )
    syncer = Syncer(processor(sqlite_store, engine, desk, clock), SyncOptions(reconcile="never"))
    stopped = syncer.run()

    result = stopped.instances[INSTANCE]
    assert not stopped.ok and result.stopped is not None and "throttled" in result.stopped
    assert result.resume_at == resume
    assert sqlite_store.get_cursor(INSTANCE, STREAMS["changes"]).cursor == "3"  # type: ignore[union-attr]
    assert sqlite_store.jobs() == []  # not a ticket's failure: nothing for the worker

    del desk.fail_write["5"]
    clock.advance(hours=3)
    assert syncer.run().ok
    assert desk.escalated("l2") == sorted(hot) and set(desk.writes.values()) == {1}


def test_refused_credentials_stop_the_run(
    sqlite_store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock
) -> None:
    flagged(desk, 2)
    desk.fail_page[1] = AuthError("credentials not accepted", status=401)
    result = Syncer(processor(sqlite_store, engine, desk, clock)).run().instances[INSTANCE]
    assert result.stopped is not None and "AuthError" in result.stopped
    assert sqlite_store.get_cursor(INSTANCE, STREAMS["changes"]) is None


# --- the command -----------------------------------------------------------------------------


@dataclass
class Command:
    config: Path
    desk: MemoryDesk
    parser: argparse.ArgumentParser

    def run(self, *argv: str, out: TextIO, err: TextIO) -> int:
        return run_sync(self.parser.parse_args(["--config", str(self.config), *argv]), out, err)


@pytest.fixture
def command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Engine) -> Command:
    """`escbridge sync` on an escbridge.yaml whose one instance is the in-memory helpdesk
    (two flagged tickets, one calm); each page it serves counts as an API call."""
    from escbridge.cli import sync as sync_command
    from escbridge.store import upgrade

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    config = tmp_path / "escbridge.yaml"
    config.write_text(
        f"store: {url}\nmatrix: {default_matrix_path()}\n"
        f"instances:\n  {INSTANCE}:\n    type: memory\n"
    )
    desk = MemoryDesk()
    flagged(desk, 2)
    calm(desk, 1)

    def build(config: Any, counter: Any, **_: Any) -> Processor:
        desk.on_page = lambda: counter.bump(INSTANCE)
        connectors: dict[str, Any] = {INSTANCE: desk}
        return Processor(
            Store(config.store_url), engine, connectors, clock=FakeClock(NOW), worker_id="cli"
        )

    monkeypatch.setattr(sync_command, "build_sync_processor", build)
    parser = argparse.ArgumentParser()
    configure_sync_parser(parser)
    return Command(config, desk, parser)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_command_prints_one_json_summary_line_off_a_terminal(command: Command) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert command.run("--dry-run", out=out, err=err) == 0
    dry = json.loads(out.getvalue())
    assert dry["dry_run"] is True and len(dry["would_escalate"]) == 2
    assert command.desk.writes == Counter()

    out = io.StringIO()
    assert command.run(out=out, err=err) == 0
    [line] = out.getvalue().splitlines()
    summary = json.loads(line)
    assert {k: summary[k] for k in ("scanned", "escalated", "skipped", "failed")} == {
        "scanned": 3,
        "escalated": {"l2": 2},
        "skipped": 1,
        "failed": 0,
    }
    # each page served counts: one listing of the account, not a second for a changes pass
    assert summary["api_calls"] == 1 and summary["duration_s"] >= 0 and summary["ok"] is True
    desk = summary["instances"][INSTANCE]
    assert desk["escalated"] == {"l2": 2}
    # the first sync of a store reconciles: every open ticket, listed once (no changes pass
    # from the beginning as well)
    assert desk["passes"] == {"changes": 0, "reconcile": 3}
    assert desk["reconciliation"] == {
        "began": NOW.isoformat(),
        "resumed": False,
        "complete": True,
        "dropped": 0,
    }
    assert desk["last_reconciled"] == NOW.isoformat()


def test_on_a_terminal_it_shows_progress_and_a_summary_a_person_reads(command: Command) -> None:
    out, err = Terminal(), Terminal()
    assert command.run("--dry-run", out=out, err=err) == 0
    assert "would escalate:" in out.getvalue()
    assert f"{INSTANCE} #1 → l2 (Senior Support)" in out.getvalue()
    assert "(dry run: nothing was changed)" in out.getvalue()

    out, err = Terminal(), Terminal()
    assert command.run(out=out, err=err) == 0
    assert f"{INSTANCE}: scanned 3, escalated 2 (2 to l2), skipped 1, failed 0" in out.getvalue()
    assert "█" in err.getvalue() and f"\r{INSTANCE} reconcile page 1" in err.getvalue()
    plain = Terminal()
    assert command.run("--json", out=plain, err=Terminal()) == 0
    again = json.loads(plain.getvalue())  # --json: JSON even on a terminal
    assert (again["scanned"], again["escalated"]) == (0, {})  # no change since the last run
    desk = again["instances"][INSTANCE]
    assert (desk["passes"], desk["reconciliation"]) == ({"changes": 0}, None)  # not within a day
    assert desk["last_reconciled"] == NOW.isoformat()


def test_the_summary_a_person_reads_says_what_the_reconciliation_did(command: Command) -> None:
    out = Terminal()
    assert command.run(out=out, err=Terminal()) == 0
    assert "  passes: changes 0, reconcile 3\n" in out.getvalue()
    assert (
        "  reconciliation complete: every open ticket checked, 0 shadows of tickets no longer "
        "open dropped\n"
    ) in out.getvalue()
    out = Terminal()
    assert command.run(out=out, err=Terminal()) == 0
    assert "  passes: changes 0\n" in out.getvalue()
    assert (
        f"  no reconciliation this run (the last complete one began {NOW.isoformat()})\n"
        in out.getvalue()
    )


def test_reconcile_flags_choose_the_passes(command: Command) -> None:
    out = io.StringIO()
    assert command.run("--reconcile", "never", out=out, err=io.StringIO()) == 0
    summary = json.loads(out.getvalue())["instances"][INSTANCE]
    assert (summary["passes"], summary["reconciliation"]) == ({"changes": 3}, None)
    out = io.StringIO()
    assert command.run("--reconcile-every", "1h", out=out, err=io.StringIO()) == 0
    summary = json.loads(out.getvalue())["instances"][INSTANCE]
    assert summary["passes"] == {"changes": 0, "reconcile": 3}  # none had completed yet
    out = io.StringIO()
    assert command.run("--reconcile", "always", out=out, err=io.StringIO()) == 0
    assert json.loads(out.getvalue())["instances"][INSTANCE]["reconciliation"]["complete"]


def test_the_gone_sweep_flags_still_parse_and_say_why_they_do_nothing(command: Command) -> None:
    """Cron lines written for the sweep keep working: one line on stderr, the run as usual."""
    out, err = io.StringIO(), io.StringIO()
    assert command.run("--lookback", "30d", "--no-sweep", out=out, err=err) == 0
    assert err.getvalue() == (
        "escbridge sync: --lookback is gone: time limits are watched by the due-queue, and a "
        "daily reconciliation covers every open ticket whatever its age (see --reconcile)\n"
    )
    summary = json.loads(out.getvalue())
    assert summary["escalated"] == {"l2": 2}
    assert summary["instances"][INSTANCE]["passes"] == {"changes": 0, "reconcile": 3}
    assert "--lookback" not in command.parser.format_help()  # gone from the help


def test_the_command_refuses_an_unknown_instance(command: Command) -> None:
    err = io.StringIO()
    assert command.run("--instance", "nope", out=io.StringIO(), err=err) == 2
    assert "unknown instance nope (configured: desk)" in err.getvalue()


def test_closed_tickets_are_not_scanned(
    sqlite_store: Store, engine: Engine, desk: MemoryDesk, clock: FakeClock
) -> None:
    desk.add("done", tags=["policy_exception"], status=Status.CLOSED)
    result = Syncer(processor(sqlite_store, engine, desk, clock)).run().instances[INSTANCE]
    assert result.scanned == 0 and desk.writes == Counter()


def test_the_summaries_count_skips_by_reason_and_a_dry_run_says_why(command: Command) -> None:
    """Issue 17: "skipped 1" alone hid why; each summary counts its skips by reason, and each
    ticket a dry run would escalate carries its rule and the conditions that held."""
    out = Terminal()
    assert command.run("--dry-run", out=out, err=Terminal()) == 0
    text = out.getvalue()
    assert "  skipped 1: 1 no rule matched\n" in text
    assert "      why: " in text
    out = io.StringIO()
    assert command.run("--dry-run", out=out, err=io.StringIO()) == 0
    dry = json.loads(out.getvalue())
    assert dry["skipped_by_reason"] == {"no rule matched": 1}
    assert dry["instances"][INSTANCE]["skipped_by_reason"] == {"no rule matched": 1}
    assert {e["rule"] for e in dry["would_escalate"]} == {"policy-exception"}
    assert all(e["reasons"] for e in dry["would_escalate"])
