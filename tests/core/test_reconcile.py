"""The reconcile pass of `escbridge sync`: every open ticket whatever its age, at a low cadence.

What it promises, counted on the in-memory helpdesk of test_sync.py (tickets in a fixed order,
an integer cursor, every write counted) with the real store, engine and processing phases:
a ticket nobody touched for a month is reached and escalated; an interrupted reconciliation
resumes from its cursor and escalates nothing twice; ``auto`` runs it on a store's first sync,
then once a day; a complete one drops the shadows of tickets no longer open, and never those
of tickets it (or the part of it an earlier run did) saw open.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from matrix_helpers import matrix, rule_yaml
from test_sync import INSTANCE, NOW, MemoryDesk, calm, processor

from escbridge.cli.sync import format_report
from escbridge.errors import RateLimited
from escbridge.model import Status
from escbridge.policy import Engine
from escbridge.store import Store, upgrade
from escbridge.sync import EPOCH, STREAMS, InstanceResult, Syncer, SyncOptions
from escbridge.testing import FakeClock

MONTH_AGO = NOW - timedelta(days=30)


@pytest.fixture(scope="module")
def engine() -> Engine:
    """One rule: a ticket idle over 20 days (calendar time) goes to l2."""
    forgotten = rule_yaml("{idle: {over: 20d, time: calendar}}", rule_id="forgotten", to="l2")
    return Engine(matrix(forgotten), {INSTANCE: "zendesk"})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'reconcile.db'}"
    upgrade(url)
    with Store(url) as store:
        yield store


def forgotten(desk: MemoryDesk, count: int, first: int = 1) -> list[str]:
    """Open tickets nobody has touched for 30 days: older than any sweep's lookback was."""
    ids = [f"old{i}" for i in range(first, first + count)]
    for ticket_id in ids:
        desk.add(ticket_id, subject="Still waiting for my replacement", created_at=MONTH_AGO)
    return ids


def close(desk: MemoryDesk, ticket_id: str, status: Status = Status.CLOSED) -> None:
    """Closed on the helpdesk, and no webhook said so: the listing leaves it out from now on."""
    desk.tickets[ticket_id] = desk.tickets[ticket_id].model_copy(update={"status": status})


def throttled() -> RateLimited:
    return RateLimited("export budget spent", status=429, retry_after=60)


def run(syncer: Syncer) -> InstanceResult:
    return syncer.run().instances[INSTANCE]


def test_a_ticket_idle_for_a_month_is_reached_and_escalated(
    sqlite_store: Store, engine: Engine, clock: FakeClock
) -> None:
    """A store that synced before the shadows existed: its changes cursor is past every ticket,
    so no change brings the forgotten one back. Its first sync reconciles, and reaches it."""
    desk = MemoryDesk()
    [old] = forgotten(desk, 1)
    [recent] = calm(desk, 1)
    sqlite_store.save_cursor(INSTANCE, "2", NOW - timedelta(minutes=1), NOW, STREAMS["changes"])

    report = Syncer(processor(sqlite_store, engine, desk, clock)).run()

    result = report.instances[INSTANCE]
    assert result.passes == {"changes": 0, "reconcile": 2}
    assert desk.escalated("l2") == [old] and desk.writes == Counter({old: 1})
    [escalation] = report.escalations
    assert (escalation.ticket_id, escalation.rule_id) == (old, "forgotten")
    assert desk.scans[-1] == (EPOCH, None)  # from the beginning of the helpdesk's listing
    for ticket_id in (old, recent):  # both are in the shadow now, seen by this run
        shadow = sqlite_store.shadow(INSTANCE, ticket_id)
        assert shadow is not None and shadow.seen_at == NOW
    assert result.reconciliation is not None and result.reconciliation.complete
    assert result.last_reconciled == NOW


def test_an_interrupted_reconciliation_resumes_from_its_cursor_and_escalates_none_twice(
    sqlite_store: Store, engine: Engine, clock: FakeClock
) -> None:
    desk = MemoryDesk(page_size=3)
    old = forgotten(desk, 10)
    sqlite_store.save_cursor(INSTANCE, "10", NOW, NOW, STREAMS["changes"])
    desk.fail_page[2] = throttled()  # the reconciliation's second page (changes: one page)
    syncer = Syncer(processor(sqlite_store, engine, desk, clock))

    stopped = run(syncer)

    assert stopped.stopped is not None and "throttled" in stopped.stopped
    assert stopped.reconciliation is not None and not stopped.reconciliation.complete
    assert desk.escalated("l2") == sorted(old[:3])  # the first page only
    stream = sqlite_store.get_cursor(INSTANCE, STREAMS["reconcile"])
    assert stream is not None and (stream.cursor, stream.since) == ("3", NOW)

    clock.advance(minutes=5)
    resumed = run(syncer)

    assert desk.scans[-1] == (EPOCH, "3")  # where the first run stopped
    assert resumed.passes == {"changes": 0, "reconcile": 7}
    assert desk.escalated("l2") == sorted(old)
    assert set(desk.writes.values()) == {1}, desk.writes  # the helpdesk: once each
    per_ticket = Counter(e.ticket_id for e in sqlite_store.escalations(instance=INSTANCE))
    assert sorted(per_ticket) == sorted(old) and set(per_ticket.values()) == {1}
    done = resumed.reconciliation
    assert done is not None and done.complete and done.resumed
    assert done.began == NOW  # the reconciliation began with the first run
    stream = sqlite_store.get_cursor(INSTANCE, STREAMS["reconcile"])
    assert stream is not None and (stream.cursor, stream.since) == (None, NOW)


def test_auto_reconciles_on_the_first_sync_then_once_a_day(
    sqlite_store: Store, engine: Engine, clock: FakeClock
) -> None:
    desk = MemoryDesk()
    calm(desk, 3)
    syncer = Syncer(processor(sqlite_store, engine, desk, clock))

    def reconciled() -> bool:
        result = run(syncer)
        assert result.complete
        return result.reconciliation is not None

    assert reconciled()  # none recorded: the first sync reconciles
    clock.advance(hours=8)
    assert not reconciled()
    clock.advance(hours=15, minutes=59)  # 23:59 after the first began
    assert not reconciled()
    clock.advance(minutes=1)  # a day after
    assert reconciled()
    assert desk.scans.count((EPOCH, None)) == 2
    clock.advance(hours=23, minutes=59)
    assert not reconciled()
    assert run(syncer).last_reconciled == NOW + timedelta(days=1)


def test_always_and_never_override_the_cadence(
    sqlite_store: Store, engine: Engine, clock: FakeClock
) -> None:
    desk = MemoryDesk()
    calm(desk, 2)
    build = processor(sqlite_store, engine, desk, clock)

    never = run(Syncer(build, SyncOptions(reconcile="never")))
    assert never.passes == {"changes": 2} and never.reconciliation is None
    assert sqlite_store.get_cursor(INSTANCE, STREAMS["reconcile"]) is None
    always = Syncer(build, SyncOptions(reconcile="always"))
    assert run(always).reconciliation is not None
    assert run(always).reconciliation is not None  # again, within the same minute
    every_hour = Syncer(build, SyncOptions(reconcile_every=timedelta(hours=1)))
    assert run(every_hour).reconciliation is None
    clock.advance(hours=1)
    assert run(every_hour).reconciliation is not None


def test_a_complete_reconciliation_drops_the_shadows_of_tickets_no_longer_open(
    store: Store, engine: Engine, clock: FakeClock
) -> None:
    """Closed and solved while no webhook came through: their shadows go. The ticket the
    changes pass processed in the same run (so the reconcile pass skipped it) stays."""
    desk = MemoryDesk(page_size=2)
    calm(desk, 5)  # 100 … 104
    syncer = Syncer(processor(store, engine, desk, clock))
    run(syncer)
    assert all(store.shadow(INSTANCE, str(t)) is not None for t in range(100, 105))
    close(desk, "101")
    close(desk, "103", Status.SOLVED)
    clock.advance(days=1)
    [new] = calm(desk, 1, first=200)  # a change since the last run: the changes pass does it

    result = run(syncer)

    assert result.passes == {"changes": 1, "reconcile": 3}  # 200 is not read twice
    assert result.reconciliation is not None and result.reconciliation.dropped == 2
    assert store.shadow(INSTANCE, "101") is None and store.shadow(INSTANCE, "103") is None
    for kept in ("100", "102", "104", new):
        shadow = store.shadow(INSTANCE, kept)
        assert shadow is not None and shadow.seen_at == clock.now, kept


def test_an_interrupted_reconciliation_drops_nothing_and_its_end_keeps_what_its_start_saw(
    sqlite_store: Store, engine: Engine, clock: FakeClock
) -> None:
    desk = MemoryDesk(page_size=2)
    calm(desk, 6)  # 100 … 105
    syncer = Syncer(processor(sqlite_store, engine, desk, clock))
    run(syncer)
    close(desk, "104")
    clock.advance(days=1)
    began = clock.now
    desk.fail_page[2] = throttled()  # the reconciliation's second page

    stopped = run(syncer)

    assert stopped.stopped is not None
    assert stopped.reconciliation is not None and stopped.reconciliation.dropped == 0
    assert sqlite_store.shadow(INSTANCE, "104") is not None  # nothing is dropped mid-way

    clock.advance(hours=1)  # the second run sees the rest of the listing
    finished = run(syncer)

    assert finished.reconciliation is not None and finished.reconciliation.complete
    assert finished.reconciliation.dropped == 1
    assert sqlite_store.shadow(INSTANCE, "104") is None
    seen: dict[str, object] = {}
    for ticket_id in ("100", "101", "102", "103", "105"):
        shadow = sqlite_store.shadow(INSTANCE, ticket_id)
        seen[ticket_id] = shadow.seen_at if shadow else None
    # the first page was seen by the interrupted run, before this one: kept all the same
    assert seen == {
        "100": began,
        "101": began,
        "102": clock.now,
        "103": clock.now,
        "105": clock.now,
    }


def test_a_dry_run_reconciles_in_reading_only(
    sqlite_store: Store, engine: Engine, clock: FakeClock
) -> None:
    desk = MemoryDesk()
    [old] = forgotten(desk, 1)
    result = run(Syncer(processor(sqlite_store, engine, desk, clock), SyncOptions(dry_run=True)))

    assert [e.ticket_id for e in result.escalations] == [old]
    assert result.reconciliation is not None and result.reconciliation.complete
    assert desk.writes == Counter() and sqlite_store.shadow(INSTANCE, old) is None
    assert sqlite_store.get_cursor(INSTANCE, STREAMS["reconcile"]) is None


def test_the_summary_says_a_reconciliation_stopped_and_will_resume(
    sqlite_store: Store, engine: Engine, clock: FakeClock
) -> None:
    desk = MemoryDesk(page_size=2)
    calm(desk, 4)
    sqlite_store.save_cursor(INSTANCE, "4", NOW, NOW, STREAMS["changes"])
    desk.fail_page[2] = throttled()  # the reconciliation's second page
    report = Syncer(processor(sqlite_store, engine, desk, clock)).run()

    text = format_report(report)
    assert "  passes: changes 0, reconcile 2\n" in text
    assert (
        "  reconciliation stopped before the end: the next run resumes it from its cursor\n"
    ) in text
    assert "  stopped early, the cursor is kept: throttled: RateLimited" in text
    data = report.as_json()["instances"][INSTANCE]
    assert data["reconciliation"] == {
        "began": NOW.isoformat(),
        "resumed": False,
        "complete": False,
        "dropped": 0,
    }
    assert data["last_reconciled"] is None
