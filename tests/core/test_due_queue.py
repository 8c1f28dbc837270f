"""The shadow of open tickets and the due-queue: a time limit is acted on at its deadline.

Every test runs on SQLite and PostgreSQL with a fake helpdesk whose edits and writes are stamped
by the test's clock, as a helpdesk stamps ``updated_at``. What is checked is what an admin would
check: the ticket escalates at the instant its limit runs out (not at the next scan), exactly
once, and the queue says when each open ticket is next due.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from escbridge.matrix import parse_matrix
from escbridge.model import Status, Ticket, TicketEvent
from escbridge.policy import Engine
from escbridge.processing import ProcessingConfig, Processor
from escbridge.store import DUE_KIND, ShadowWrite, Store
from escbridge.testing import FakeClock, FakeConnector, FakeHelpdesk

US = timedelta(microseconds=1)
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

MATRIX = """\
version: 1
name: due-queue tests
defaults: {time: calendar}
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
limits:
  cooldown: 30m
  daily_cap: 3
rules:
  - id: idle
    name: Idle too long
    kind: hierarchical
    repeat: true
    when: {idle: {over: 2h}}
    to: next
  - id: legal
    name: Legal threat
    kind: hierarchical
    when: {keywords: [lawyer]}
    to: l3
"""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def helpdesk(tmp_path: Path, clock: FakeClock) -> FakeHelpdesk:
    return FakeHelpdesk(tmp_path / "helpdesk.db", clock=clock)


@pytest.fixture
def processor(store: Store, helpdesk: FakeHelpdesk, clock: FakeClock) -> Processor:
    return Processor(
        store,
        Engine(parse_matrix(MATRIX, "due.yaml")),
        {"fake": FakeConnector(helpdesk)},
        settings=ProcessingConfig(poll_seconds=86_400),
        clock=clock,
        rng=random.Random(3),
        worker_id="due-worker",
    )


def webhook(ticket_id: str, key: str) -> TicketEvent:
    return TicketEvent(instance="fake", ticket_id=ticket_id, dedupe_key=key)


def open_ticket(ticket_id: str) -> Ticket:
    return Ticket(id=ticket_id, instance="fake", created_at=T0, updated_at=T0)


def opened(processor: Processor, helpdesk: FakeHelpdesk, updated_at: datetime) -> None:
    """Ticket 1, last changed at ``updated_at``, reaches escbridge through a webhook."""
    helpdesk.add("1", updated_at=updated_at)
    processor.enqueue(webhook("1", "e1"))
    work(processor)


def work(processor: Processor) -> None:
    """What one turn of a worker's loop does: due tickets into the inbox, then the inbox."""
    processor.store.promote_due(processor.clock())
    while processor.run_once().claimed:
        pass


def test_a_processed_ticket_is_due_exactly_when_its_idle_limit_runs_out(
    processor: Processor, helpdesk: FakeHelpdesk, store: Store
) -> None:
    opened(processor, helpdesk, T0 - timedelta(minutes=30))

    shadow = store.shadow("fake", "1")
    assert shadow is not None
    # Idle over 2h, strictly: from the first microsecond after 2h since the last change.
    assert shadow.due_at == T0 + timedelta(minutes=90) + US
    assert shadow.ticket.level is None and shadow.seen_at == T0
    assert store.earliest_due() == shadow.due_at
    assert helpdesk.applies() == {}


def test_the_due_ticket_escalates_at_its_deadline_once_and_the_next_deadline_follows(
    processor: Processor, helpdesk: FakeHelpdesk, store: Store, clock: FakeClock
) -> None:
    opened(processor, helpdesk, T0 - timedelta(minutes=30))
    due = T0 + timedelta(minutes=90) + US

    clock.now = due - US
    work(processor)  # a microsecond early: nothing moves
    assert helpdesk.applies() == {} and store.jobs(["done"], limit=None)[-1].kind != DUE_KIND

    clock.now = due
    work(processor)
    assert helpdesk.levels()["1"] == "l2" and helpdesk.applies() == {"1": 1}
    [record] = store.escalations(ticket_id="1")
    assert (record.rule_id, record.decided_at) == ("idle", due)
    [job] = [j for j in store.jobs(["done"], limit=None) if j.kind == DUE_KIND]
    assert (job.outcome, job.occurred_at) == ("escalated", due)

    # The write stamped the ticket at `due`: idle again from there, so l3 is due 2h later.
    shadow = store.shadow("fake", "1")
    assert shadow is not None and shadow.ticket.level == "l2"
    assert shadow.due_at == due + timedelta(hours=2) + US
    work(processor)  # nothing is due twice
    assert helpdesk.applies() == {"1": 1}

    clock.now = due + timedelta(hours=2) + US
    work(processor)
    assert helpdesk.levels()["1"] == "l3"
    assert [r.to_level for r in store.escalations(ticket_id="1")] == ["l2", "l3"]


def test_a_change_before_the_deadline_moves_it(
    processor: Processor, helpdesk: FakeHelpdesk, store: Store, clock: FakeClock
) -> None:
    opened(processor, helpdesk, T0)
    clock.advance(hours=1)
    helpdesk.edit("1", tags=["touched"])  # a person replies: idle starts again
    processor.enqueue(webhook("1", "e2"))
    work(processor)

    shadow = store.shadow("fake", "1")
    assert shadow is not None and shadow.due_at == T0 + timedelta(hours=3) + US


def test_a_deadline_queued_before_a_change_it_missed_reads_once_and_requeues(
    processor: Processor, helpdesk: FakeHelpdesk, store: Store, clock: FakeClock
) -> None:
    # The change's webhook was lost: the shadow still says "due at 2h". At that instant the
    # ticket is read once, found not due, and queued again at its true deadline.
    opened(processor, helpdesk, T0)
    clock.advance(hours=1)
    helpdesk.edit("1", tags=["touched"])

    clock.now = T0 + timedelta(hours=2) + US
    work(processor)
    assert helpdesk.applies() == {}
    shadow = store.shadow("fake", "1")
    assert shadow is not None and shadow.due_at == T0 + timedelta(hours=3) + US


def test_a_solved_ticket_leaves_the_queue_and_a_deleted_one_too(
    processor: Processor, helpdesk: FakeHelpdesk, store: Store, clock: FakeClock
) -> None:
    helpdesk.add("1", updated_at=T0)
    helpdesk.add("2", updated_at=T0)
    for ticket_id in ("1", "2"):
        processor.enqueue(webhook(ticket_id, f"e{ticket_id}"))
    work(processor)
    assert {s.ticket_id for s in store.due_tickets()} == {"1", "2"}

    helpdesk.edit("1", status=Status.SOLVED)
    processor.enqueue(webhook("1", "solved"))
    helpdesk.delete("2")
    clock.advance(hours=3)
    work(processor)

    assert store.shadow("fake", "1") is None and store.shadow("fake", "2") is None
    assert store.earliest_due() is None
    assert store.job_counts()["failed"] == 0  # a deleted ticket is not a dead letter
    assert helpdesk.applies() == {}


def test_free_text_is_kept_only_where_a_rule_reads_it(
    processor: Processor, helpdesk: FakeHelpdesk, store: Store
) -> None:
    helpdesk.add("1", subject="Printer on fire", updated_at=T0)
    processor.enqueue(webhook("1", "e1"))
    work(processor)
    shadow = store.shadow("fake", "1")
    assert shadow is not None and shadow.ticket.subject == "Printer on fire"
    assert processor.shadower is not None
    # The keyword rule reads the default keyword fields; nothing else free-text is kept.
    kept = processor.shadower.text
    assert kept <= {"description", "latest_comment"}


def test_promoting_twice_makes_one_job_per_deadline(store: Store) -> None:
    ticket = open_ticket("9")
    store.save_shadows([ShadowWrite("fake", "9", ticket, T0)], T0)
    assert store.promote_due(T0 - US) == 0  # not yet
    assert store.promote_due(T0) == 1
    assert store.promote_due(T0) == 0  # its due time was cleared
    store.save_shadows([ShadowWrite("fake", "9", ticket, T0)], T0)  # the same deadline again
    assert store.promote_due(T0 + timedelta(hours=1)) == 0  # same dedupe key: still one job
    [job] = store.jobs()
    assert (job.kind, job.ticket_id, job.occurred_at) == (DUE_KIND, "9", T0)


def test_an_idle_worker_sleeps_until_the_earliest_deadline_not_a_fixed_poll(
    processor: Processor, helpdesk: FakeHelpdesk, store: Store, clock: FakeClock
) -> None:
    opened(processor, helpdesk, T0 - timedelta(minutes=30))
    waits: list[float] = []
    stop = threading.Event()

    def wait(_bell: threading.Event, seconds: float) -> bool:
        waits.append(seconds)
        clock.advance(seconds=seconds)  # the time passes; nothing else happens meanwhile
        if len(waits) == 2:
            stop.set()
        return False

    processor._wait = wait
    processor.run(stop=stop, concurrency=1)

    # poll_seconds is a day: the worker slept exactly until the deadline, escalated there.
    assert waits[0] == pytest.approx((timedelta(minutes=90) + US).total_seconds())
    assert helpdesk.levels()["1"] == "l2"
    [record] = store.escalations(ticket_id="1")
    assert record.decided_at == T0 + timedelta(minutes=90) + US


def test_wake_rouses_an_idle_worker_at_once(processor: Processor) -> None:
    seen: list[bool] = []

    def wait(bell: threading.Event, seconds: float) -> bool:
        seen.append(bell.is_set())
        return bell.is_set()

    processor._wait = wait
    processor.wake()
    stop = threading.Event()
    processor._idle(stop)
    processor._idle(stop)
    assert seen == [True, False]  # the bell was heard once, then cleared


def test_a_shadow_row_locked_by_another_promoter_is_skipped_on_postgresql(
    store: Store, db_backend: str
) -> None:
    if db_backend != "postgresql":
        pytest.skip("SQLite runs one writer at a time: there is nothing to skip")
    from escbridge.store.schema import ticket_shadow

    for ticket_id in ("1", "2"):
        store.save_shadows([ShadowWrite("fake", ticket_id, open_ticket(ticket_id), T0)], T0)
    with store.engine.connect() as other, other.begin():
        other.execute(
            sa.select(ticket_shadow.c.ticket_id)
            .where(ticket_shadow.c.ticket_id == "1")
            .with_for_update()
        ).all()
        # Another worker holds ticket 1's row: this one takes ticket 2 and does not wait.
        assert store.promote_due(T0) == 1
        assert [j.ticket_id for j in store.jobs()] == ["2"]
    assert store.promote_due(T0) == 1
    assert sorted(j.ticket_id for j in store.jobs()) == ["1", "2"]


def test_the_due_command_lists_the_next_deadlines_soonest_first(
    store: Store, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    import json

    from escbridge.cli.store import configure_due_parser, run_due

    now = datetime.now(UTC)

    def shadow(ticket_id: str, subject: str, due: datetime | None) -> ShadowWrite:
        ticket = Ticket(
            id=ticket_id, instance="eu", subject=subject, created_at=now, updated_at=now
        )
        return ShadowWrite("eu", ticket_id, ticket, due)

    def due(*argv: str) -> tuple[int, str]:
        parser = argparse.ArgumentParser(prog="escbridge")
        configure_due_parser(parser)
        code = run_due(parser.parse_args(["--store", store_url, *argv]))
        return code, capsys.readouterr().out

    code, out = due()
    assert code == 0 and "no open tickets in the shadow yet" in out

    store.save_shadows(
        [
            shadow("7", "Refund not received", now + timedelta(hours=3, minutes=5)),
            shadow("8", "Printer on fire", now - timedelta(minutes=10)),
            shadow("9", "Quiet one", None),
        ],
        now,
    )
    code, out = due()
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "eu: 3 open tickets known, 2 with a deadline"
    assert "eu/8" in lines[2] and "overdue 10m" in lines[2] and "Printer on fire" in lines[2]
    assert "eu/7" in lines[3] and "in 3h" in lines[3]
    assert "eu/9" not in out
    assert "no worker is running" in lines[-1]

    code, out = due("--format", "json", "--limit", "1")
    data = json.loads(out)
    assert data["instances"] == {"eu": {"open": 3, "with_deadline": 2}}
    assert [(d["ticket_id"], d["overdue"]) for d in data["due"]] == [("8", True)]


def test_an_edited_matrix_recomputes_the_stored_deadlines_without_calling_the_helpdesk(
    processor: Processor, helpdesk: FakeHelpdesk, store: Store, clock: FakeClock
) -> None:
    opened(processor, helpdesk, T0)
    shadow = store.shadow("fake", "1")
    assert shadow is not None and shadow.due_at == T0 + timedelta(hours=2) + US

    # The admin tightens the idle limit to 45 minutes and restarts the workers.
    edited = Engine(parse_matrix(MATRIX.replace("over: 2h", "over: 45m"), "due.yaml"))
    connector = FakeConnector(helpdesk)
    restarted = Processor(store, edited, {"fake": connector}, clock=clock)
    assert restarted.refresh_due_times() == 1
    assert connector.calls == {}  # from the shadow and the history alone
    shadow = store.shadow("fake", "1")
    assert shadow is not None and shadow.due_at == T0 + timedelta(minutes=45) + US
    assert restarted.refresh_due_times() == 0  # nothing stale any more


def test_an_event_kept_by_another_process_wakes_a_listening_worker_on_postgresql(
    store: Store, store_url: str, db_backend: str
) -> None:
    if db_backend != "postgresql":
        assert store.listen(threading.Event(), lambda: None) is False  # SQLite: the poll
        return
    stop, ready, heard = threading.Event(), threading.Event(), threading.Event()
    listener = threading.Thread(
        target=store.listen, args=(stop, heard.set), kwargs={"ready": ready.set}, daemon=True
    )
    listener.start()
    try:
        assert ready.wait(60)
        with Store(store_url) as receiver:  # the receiver: another store, another connection
            assert receiver.enqueue(webhook("1", "e1"), T0).accepted
        assert heard.wait(60)  # waits for the notification, however slow the machine
    finally:
        stop.set()
        listener.join()


def test_metrics_show_overdue_deadlines_so_a_stopped_worker_can_be_alerted_on(
    store: Store,
) -> None:
    from escbridge_webhooks.metrics import StoreCollector

    store.save_shadows(
        [
            ShadowWrite("fake", "1", open_ticket("1"), T0 - timedelta(minutes=5)),
            ShadowWrite("fake", "2", open_ticket("2"), T0 + timedelta(hours=1)),
            ShadowWrite("fake", "3", open_ticket("3"), T0 + timedelta(hours=2)),
            ShadowWrite("fake", "4", open_ticket("4"), None),
        ],
        T0,
    )
    collector = StoreCollector(store, {"fake": "fake"}, wall=lambda: T0)
    [family] = [m for m in collector.collect() if m.name == "escbridge_due_tickets"]
    samples = {(s.labels["instance"], s.labels["state"]): s.value for s in family.samples}
    assert samples == {("fake", "overdue"): 1, ("fake", "ahead"): 2}


def test_a_due_read_hands_the_connector_the_ticket_as_last_seen(
    store: Store, helpdesk: FakeHelpdesk, clock: FakeClock
) -> None:
    """So a connector whose full read costs several calls (Zendesk: the ticket, then its
    comments) can read less of a ticket that has not changed."""
    seen: list[Ticket] = []

    class Recording(FakeConnector):
        def refetch(self, ticket_id: str, known: Ticket) -> Ticket:
            seen.append(known)
            return super().refetch(ticket_id, known)

    processor = Processor(
        store,
        Engine(parse_matrix(MATRIX, "due.yaml")),
        {"fake": Recording(helpdesk)},
        clock=clock,
    )
    opened(processor, helpdesk, T0 - timedelta(minutes=30))
    assert seen == []  # a webhook's read is a full one
    clock.now = T0 + timedelta(minutes=90) + US
    work(processor)
    assert [t.id for t in seen] == ["1"] and seen[0].version == "1"
    assert helpdesk.levels()["1"] == "l2"
