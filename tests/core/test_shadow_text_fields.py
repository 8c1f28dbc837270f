"""A matrix edit that starts reading a ticket's text: the next scan decides the tickets again.

The shadow keeps a ticket's description and latest comment only when the matrix reads them, and
a scan passes over a ticket whose shadow is unchanged under the current matrix. A worker's
start recomputes the due times of every shadow for an edited matrix, from the shadows alone; a
shadow that lacks a text field the new matrix reads must not then pass for decided, or a new
keyword rule would never meet the description it looks for (until the ticket changed). The
store is real, both databases; the helpdesk is a list in memory, the engine counts what it
decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, cast

import sqlalchemy as sa
from matrix_helpers import CountingEngine

from escbridge.connector import ApplyResult, Connector, ConnectorInfo, TicketPage
from escbridge.matrix import parse_matrix
from escbridge.model import Actions, Ticket
from escbridge.policy import Engine
from escbridge.processing import Processor
from escbridge.store import Store
from escbridge.store.schema import ticket_shadow
from escbridge.sync import UNCHANGED, Syncer, SyncOptions, SyncReport
from escbridge.testing import FakeClock

NOW = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)
INSTANCE = "desk"
TICKETS = 20
LAWYER = "7"  # the one ticket whose description names a lawyer
THANKS = ("3", "12")  # a description without the keyword; the others have none at all

MATRIX = """\
version: 1
levels:
  - {id: l1, name: Frontline, groups: {"*": Support}}
  - {id: l2, name: Senior, groups: {"*": Senior}}
rules:
  - {id: vip, kind: hierarchical, when: {tags: [vip]}, to: l2}
  - {id: idle, kind: hierarchical, when: {idle: {over: 2h, time: calendar}}, to: l2}
"""
LEGAL = (
    "  - {id: legal, kind: hierarchical, to: l2,"
    " when: {keywords: {words: [lawyer], in: [description]}}}\n"
)


def engine(text: str) -> CountingEngine:
    return CountingEngine(parse_matrix(text, "matrix.yaml"))


class TextDesk:
    """Open tickets in memory with their descriptions; a scan lists those changed after its
    cursor (all of them from none) in the order they changed. A write sets the level and
    group and bumps the version. ``fetches`` counts the single-ticket reads."""

    info: ClassVar[ConnectorInfo] = ConnectorInfo(name="text", version="1", display_name="Text")
    PAGE = 50

    def __init__(self) -> None:
        self.tickets: dict[str, Ticket] = {}
        self.changed: dict[str, int] = {}
        self.changes = 0
        self.fetches = 0

    def _store(self, ticket: Ticket) -> None:
        self.changes += 1
        self.tickets[ticket.id] = ticket
        self.changed[ticket.id] = self.changes

    def add(self, ticket_id: str, updated_at: datetime, description: str = "") -> None:
        self._store(
            Ticket(
                id=ticket_id,
                instance=INSTANCE,
                subject="About my order",
                description=description,
                group="Support",
                created_at=updated_at - timedelta(days=1),
                updated_at=updated_at,
                version="1",
            )
        )

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        self.fetches += 1
        return self.tickets[ticket_id]

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        after = int(cursor or 0)
        ids = sorted(
            (i for i, n in self.changed.items() if n > after), key=self.changed.__getitem__
        )
        for start in range(0, max(len(ids), 1), self.PAGE):
            page = ids[start : start + self.PAGE]
            done = start + self.PAGE >= len(ids)
            last = str(self.changed[page[-1]]) if page else cursor
            yield TicketPage([self.tickets[i] for i in page], last, done)

    def apply(self, ticket: Ticket, actions: Actions, **_: Any) -> ApplyResult:
        current = self.tickets[ticket.id]
        version = str(int(current.version or "0") + 1)
        update = {"level": actions.level, "group": actions.group, "version": version}
        self._store(current.model_copy(update=update))
        return ApplyResult(ticket.id, ok=True, actions=actions)


def backlog(desk: TextDesk) -> None:
    """``TICKETS`` open tickets idle for an hour (due when idle for 2h), one asking for a
    lawyer in its description, two with a description that does not."""
    for i in range(TICKETS):
        ticket_id = str(i)
        text = "My lawyer will call you." if ticket_id == LAWYER else ""
        desk.add(ticket_id, NOW - timedelta(hours=1), "Thanks!" if ticket_id in THANKS else text)


def processor(store: Store, engine: Engine, desk: TextDesk, clock: FakeClock) -> Processor:
    """Processing over ``desk``: what it implements is all a scan and the due times use."""
    connectors = {INSTANCE: cast(Connector, desk)}
    return Processor(store, engine, connectors, clock=clock, worker_id="test")


def sync(store: Store, engine: Engine, desk: TextDesk, clock: FakeClock) -> SyncReport:
    scan = processor(store, engine, desk, clock)
    return Syncer(scan, SyncOptions(reconcile="always")).run()


def restart_worker(store: Store, engine: Engine, desk: TextDesk, clock: FakeClock) -> int:
    """A worker started on the edited matrix: the due times it recomputes."""
    return processor(store, engine, desk, clock).refresh_due_times()


def skipped_by(report: SyncReport) -> dict[str, int]:
    return dict(report.instances[INSTANCE].as_json()["skipped_by_reason"])


def escalated(report: SyncReport) -> dict[str, int]:
    return dict(report.instances[INSTANCE].escalated)


def settled(store: Store, desk: TextDesk, clock: FakeClock, text: str) -> CountingEngine:
    """Every ticket decided under ``text`` and the escalated ones again as the helpdesk now
    has them: every shadow is current, the next scan decides nothing."""
    counting = engine(text)
    sync(store, counting, desk, clock)
    clock.advance(minutes=1)
    sync(store, counting, desk, clock)
    clock.advance(minutes=1)
    counting.decided.clear()
    return counting


def test_a_new_keyword_rule_on_the_description_escalates_at_the_next_scan(store: Store) -> None:
    desk, clock = TextDesk(), FakeClock(NOW)
    backlog(desk)
    settled(store, desk, clock, MATRIX)  # reads no text: the shadows keep none

    edited = engine(MATRIX + LEGAL)
    assert restart_worker(store, edited, desk, clock) == TICKETS
    report = sync(store, edited, desk, clock)

    assert escalated(report) == {"l2": 1}
    assert desk.tickets[LAWYER].level == "l2"
    assert sorted(edited.decided) == sorted(desk.tickets)  # none had kept its description
    assert desk.fetches == 0  # decided from the scanned page

    # Decided with their descriptions, empty or not: passed over from now on (the escalated
    # one once more first, as the helpdesk has it after the write).
    edited.decided.clear()
    clock.advance(minutes=1)
    report = sync(store, edited, desk, clock)
    assert edited.decided == [LAWYER]
    assert skipped_by(report)[UNCHANGED] == TICKETS - 1

    edited.decided.clear()
    report = sync(store, edited, desk, clock)
    assert edited.decided == []
    assert skipped_by(report) == {UNCHANGED: TICKETS}


def test_an_edit_that_reads_no_new_text_still_passes_the_tickets_over(store: Store) -> None:
    desk, clock = TextDesk(), FakeClock(NOW)
    backlog(desk)
    settled(store, desk, clock, MATRIX + LEGAL)  # reads descriptions: the shadows keep them

    # The keyword rule is dropped, then put back: the shadows still hold every description,
    # so the recomputed due times are all a scan needs, each time.
    for text in (MATRIX, MATRIX + LEGAL):
        edited = engine(text)
        assert restart_worker(store, edited, desk, clock) == TICKETS
        report = sync(store, edited, desk, clock)
        assert edited.decided == []
        assert skipped_by(report) == {UNCHANGED: TICKETS}
        clock.advance(minutes=1)


def test_the_due_times_are_recomputed_for_shadows_without_the_text(store: Store) -> None:
    desk, clock = TextDesk(), FakeClock(NOW)
    backlog(desk)
    settled(store, desk, clock, MATRIX)
    idle_since = desk.tickets["1"].updated_at
    before = store.shadow(INSTANCE, "1")
    assert before is not None and before.due_at is not None
    assert (
        idle_since + timedelta(hours=2)
        <= before.due_at
        < idle_since + timedelta(hours=2, seconds=1)
    )

    # The keyword rule comes with a tighter idle limit: the deadline moves without a call.
    edited = engine(MATRIX.replace("over: 2h", "over: 90m") + LEGAL)
    assert restart_worker(store, edited, desk, clock) == TICKETS
    assert desk.fetches == 0
    after = store.shadow(INSTANCE, "1")
    assert after is not None and after.due_at is not None
    assert (
        idle_since + timedelta(minutes=90)
        <= after.due_at
        < idle_since + timedelta(minutes=90, seconds=1)
    )
    assert restart_worker(store, edited, desk, clock) == 0  # nothing stale any more

    # At that deadline a worker reads each due ticket once and escalates it, the lawyer's too.
    clock.advance(after.due_at - clock())
    worker = processor(store, edited, desk, clock)
    assert store.promote_due(clock()) == TICKETS
    while worker.run_once().claimed:
        pass
    assert desk.fetches == TICKETS
    assert {ticket.level for ticket in desk.tickets.values()} == {"l2"}


def test_a_shadow_that_does_not_say_what_text_it_holds_is_decided_once_more(
    store: Store,
) -> None:
    """Shadows written before they recorded their text fields (escbridge 0.2.0)."""
    desk, clock = TextDesk(), FakeClock(NOW)
    backlog(desk)
    counting = settled(store, desk, clock, MATRIX + LEGAL)
    with store.engine.begin() as connection:
        key = (ticket_shadow.c.instance == INSTANCE) & (ticket_shadow.c.ticket_id == "5")
        document = connection.execute(sa.select(ticket_shadow.c.ticket).where(key)).scalar_one()
        del document["_text"]
        connection.execute(sa.update(ticket_shadow).where(key).values(ticket=document))

    assert restart_worker(store, counting, desk, clock) == 1
    report = sync(store, counting, desk, clock)

    assert counting.decided == ["5"]
    assert skipped_by(report)[UNCHANGED] == TICKETS - 1
    assert restart_worker(store, counting, desk, clock) == 0
