"""A scan passes over the tickets escbridge already decided as they are, until they are due.

With ``next_due`` exact, a ticket's decision changes only when the ticket, its history or the
matrix changes, or at its next due time: a sync page is read, the store says in one query which
of its tickets are unchanged since escbridge last decided them and not due yet, and only the
others are decided (counted on the engine here). The store is real, both databases; the
helpdesk is a list in memory, paged in a fixed order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from matrix_helpers import CountingEngine

from escbridge.connector import CAP_BULK_UPDATE, ApplyResult, ConnectorInfo, TicketPage
from escbridge.matrix import parse_matrix
from escbridge.model import Actions, Priority, Ticket, TicketEvent
from escbridge.policy import Engine
from escbridge.processing import Processor
from escbridge.store import Store
from escbridge.sync import UNCHANGED, Syncer, SyncOptions, SyncReport
from escbridge.testing import FakeClock

NOW = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)
INSTANCE = "desk"
TICKETS = 200

MATRIX = """\
version: 1
levels:
  - {id: l1, name: Frontline, groups: {"*": Support}}
  - {id: l2, name: Senior, groups: {"*": Senior}}
rules:
  - {id: vip, kind: hierarchical, when: {tags: [vip]}, to: l2}
  - {id: idle, kind: hierarchical, when: {idle: {over: 2h, time: calendar}}, to: l2}
"""


class ListDesk:
    """Open tickets in memory, every change numbered as a helpdesk's export numbers them: a
    scan lists the tickets changed after its cursor (the whole account from none), 50 a page,
    in the order they changed. A write sets the level and group and bumps the version."""

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="list", version="1", display_name="List", capabilities=frozenset({CAP_BULK_UPDATE})
    )
    PAGE = 50

    def __init__(self) -> None:
        self.tickets: dict[str, Ticket] = {}
        self.changed: dict[str, int] = {}  # ticket id -> number of its last change
        self.changes = 0

    def _store(self, ticket: Ticket) -> None:
        self.changes += 1
        self.tickets[ticket.id] = ticket
        self.changed[ticket.id] = self.changes

    def add(self, ticket_id: str, updated_at: datetime, tags: Sequence[str] = ()) -> None:
        self._store(
            Ticket(
                id=ticket_id,
                instance=INSTANCE,
                subject="Where is my order?",
                tags=frozenset(tags),
                group="Support",
                created_at=updated_at - timedelta(days=1),
                updated_at=updated_at,
                version="1",
            )
        )

    def edit(self, ticket_id: str, at: datetime) -> None:
        """An agent writes to the customer: a new version."""
        ticket = self.tickets[ticket_id]
        version = str(int(ticket.version or "0") + 1)
        self._store(ticket.model_copy(update={"updated_at": at, "version": version}))

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        return self.tickets[ticket_id]

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        after = int(cursor or 0)
        ids = sorted((i for i, n in self.changed.items() if n > after), key=self.changed.get)
        for start in range(0, max(len(ids), 1), self.PAGE):
            page = ids[start : start + self.PAGE]
            done = start + self.PAGE >= len(ids)
            last = str(self.changed[page[-1]]) if page else cursor
            yield TicketPage([self.tickets[i] for i in page], last, done)

    def apply(self, ticket: Ticket, actions: Actions, **_: Any) -> ApplyResult:
        current = self.tickets[ticket.id]
        self._store(
            current.model_copy(
                update={
                    "level": actions.level,
                    "group": actions.group,
                    "priority": max(current.priority, actions.priority or Priority.LOW),
                    "tags": (current.tags | set(actions.tags_add)) - set(actions.tags_remove),
                    "version": str(int(current.version or "0") + 1),
                }
            )
        )
        return ApplyResult(ticket.id, ok=True, actions=actions)

    def apply_many(self, items: Sequence[tuple[Ticket, Actions]], **_: Any) -> list[ApplyResult]:
        return [self.apply(ticket, actions) for ticket, actions in items]


def sync(
    store: Store,
    engine: Engine,
    desk: ListDesk,
    clock: FakeClock,
    *,
    reconcile: str = "always",
    dry_run: bool = False,
) -> SyncReport:
    processor = Processor(store, engine, {INSTANCE: desk}, clock=clock, worker_id="test")
    options = SyncOptions(reconcile=reconcile, dry_run=dry_run)  # type: ignore[arg-type]
    return Syncer(processor, options).run()


def skipped_by(report: SyncReport) -> dict[str, int]:
    return dict(report.instances[INSTANCE].as_json()["skipped_by_reason"])


def backlog(desk: ListDesk, *, idle_for: timedelta = timedelta(hours=1)) -> None:
    """``TICKETS`` open tickets, one in 50 a VIP (escalated on sight); the others are due when
    they have been idle for 2h."""
    for i in range(TICKETS):
        desk.add(str(i), NOW - idle_for, tags=["vip"] if i % 50 == 7 else [])


def settled(store: Store, desk: ListDesk, clock: FakeClock) -> CountingEngine:
    """Two runs: the first decides every ticket (and escalates the VIPs), the second decides
    the escalated ones again as the helpdesk now has them; then every shadow is current."""
    engine = CountingEngine(parse_matrix(MATRIX, "matrix.yaml"))
    first = sync(store, engine, desk, clock)
    assert first.instances[INSTANCE].escalated["l2"] == TICKETS // 50
    assert len(engine.decided) == TICKETS
    clock.advance(minutes=1)
    sync(store, engine, desk, clock)
    engine.decided.clear()
    return engine


def test_a_page_where_one_percent_changed_decides_only_those(store: Store) -> None:
    desk, clock = ListDesk(), FakeClock(NOW)
    backlog(desk)
    engine = settled(store, desk, clock)
    clock.advance(minutes=10)
    changed = ["3", "150"]
    for ticket_id in changed:
        desk.edit(ticket_id, clock())

    report = sync(store, engine, desk, clock)

    assert sorted(engine.decided) == sorted(changed)
    result = report.instances[INSTANCE]
    assert result.scanned == TICKETS
    assert skipped_by(report)[UNCHANGED] == TICKETS - len(changed)
    assert not result.escalated  # the two edited tickets are not idle any more


def test_nothing_changed_decides_nothing(store: Store) -> None:
    desk, clock = ListDesk(), FakeClock(NOW)
    backlog(desk)
    engine = settled(store, desk, clock)

    report = sync(store, engine, desk, clock)

    assert engine.decided == []
    assert skipped_by(report) == {UNCHANGED: TICKETS}


def test_a_ticket_whose_due_time_has_come_is_decided_and_escalated(store: Store) -> None:
    desk, clock = ListDesk(), FakeClock(NOW)
    backlog(desk)  # idle for 1h: due at NOW + 1h
    early = [str(i) for i in range(0, TICKETS, 10)]
    for ticket_id in early:  # idle for 1h50m: due at NOW + 10m
        desk.add(ticket_id, NOW - timedelta(hours=1, minutes=50))
    engine = settled(store, desk, clock)
    clock.advance(minutes=15)

    report = sync(store, engine, desk, clock)

    assert sorted(engine.decided) == sorted(early)
    assert report.instances[INSTANCE].escalated["l2"] == len(early)
    assert skipped_by(report)[UNCHANGED] == TICKETS - len(early)


def test_a_reconciliation_keeps_the_shadows_of_the_tickets_it_passes_over(store: Store) -> None:
    desk, clock = ListDesk(), FakeClock(NOW)
    backlog(desk)
    engine = settled(store, desk, clock)
    clock.advance(minutes=10)  # later than every shadow was last seen

    report = sync(store, engine, desk, clock, reconcile="always")

    result = report.instances[INSTANCE]
    assert engine.decided == []
    assert result.reconciliation is not None and result.reconciliation.complete
    assert result.reconciliation.dropped == 0
    assert store.shadow_counts()[INSTANCE][0] == TICKETS
    shadow = store.shadow(INSTANCE, "1")
    assert shadow is not None and shadow.seen_at == clock()


def test_a_changed_matrix_decides_every_ticket_again(store: Store) -> None:
    desk, clock = ListDesk(), FakeClock(NOW)
    backlog(desk)
    settled(store, desk, clock)
    edited = CountingEngine(parse_matrix(MATRIX + "# idle means 2h\n", "matrix.yaml"))

    report = sync(store, edited, desk, clock)

    assert len(edited.decided) == TICKETS
    assert UNCHANGED not in skipped_by(report)


def test_a_ticket_with_a_job_in_the_inbox_is_decided_again(store: Store) -> None:
    desk, clock = ListDesk(), FakeClock(NOW)
    backlog(desk)
    engine = settled(store, desk, clock)
    event = TicketEvent(instance=INSTANCE, ticket_id="12", dedupe_key="hook-1")
    store.enqueue(event, clock())

    sync(store, engine, desk, clock)

    assert engine.decided == ["12"]


def test_a_dry_run_passes_over_them_too_and_writes_nothing(store: Store) -> None:
    desk, clock = ListDesk(), FakeClock(NOW)
    backlog(desk)
    engine = settled(store, desk, clock)
    seen = store.shadow(INSTANCE, "1")
    clock.advance(minutes=10)
    desk.edit("3", clock())

    report = sync(store, engine, desk, clock, dry_run=True)

    assert engine.decided == ["3"]
    assert skipped_by(report)[UNCHANGED] == TICKETS - 1
    assert store.shadow(INSTANCE, "1") == seen


def test_the_changes_pass_does_not_decide_again_what_a_webhook_had_decided(store: Store) -> None:
    desk, clock = ListDesk(), FakeClock(NOW)
    backlog(desk)
    engine = settled(store, desk, clock)
    clock.advance(minutes=10)
    desk.edit("5", clock())
    worker = Processor(store, engine, {INSTANCE: desk}, clock=clock, worker_id="worker")
    worker.process_ticket(INSTANCE, "5")  # the ticket's webhook, taken by a worker
    assert engine.decided == ["5"]
    engine.decided.clear()

    report = sync(store, engine, desk, clock, reconcile="never")

    assert report.instances[INSTANCE].passes == {"changes": 1}
    assert engine.decided == []
    assert skipped_by(report) == {UNCHANGED: 1}
