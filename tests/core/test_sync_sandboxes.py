"""`escbridge sync` against each helpdesk's emulator, for real over HTTP on 127.0.0.1.

Each test starts one emulator (Zendesk, Freshdesk, Zoho Desk), builds the connector the way
`escbridge sync` does (from escbridge.yaml, through the plugin registry), and checks on the
helpdesk's side — the tickets and the notes on them — what sync promises: a crash mid-batch
loses no ticket and escalates none twice, two runs never overlap, a dry run writes nothing,
throttling slows a run but loses nothing, and Zoho's daily credits stop a run cleanly.

Time is simulated: the emulators, connectors and the processor share a SimClock, and the
HTTP layer's sleeps advance a fake monotonic clock the emulators' rate limiters also read.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from escbridge.config import parse_config
from escbridge.matrix import Matrix, load_matrix
from escbridge.processing import Processor
from escbridge.sandbox.backlog import config_yaml, default_matrix_path
from escbridge.sandbox.driver import SandboxDriver, SimClock, TicketSpec, available_drivers
from escbridge.store import TicketWrites, upgrade
from escbridge.sync import CallCounter, Syncer, SyncOptions, SyncReport
from escbridge.testing import FakeClock
from escbridge.testing.simulated import simulated_processor

HELPDESKS = ("zendesk", "freshdesk", "zohodesk")
START = datetime(2026, 3, 11, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # a Wednesday morning


class Crash(BaseException):
    """The process dies here."""


@dataclass
class Rig:
    helpdesk: str
    driver: SandboxDriver
    clock: SimClock
    time: FakeClock
    processor: Processor
    counter: CallCounter
    matrix: Matrix

    @property
    def instance(self) -> str:
        return self.helpdesk

    def syncer(self, **options: Any) -> Syncer:
        return Syncer(self.processor, SyncOptions(**options), api_calls=self.counter)

    def flagged(self, count: int) -> list[str]:
        """Tickets an agent flagged as a policy exception: the matrix sends them to l2 at once
        (and no further on its own)."""
        group = self.matrix.levels[0].group_for(self.instance, self.helpdesk)
        now = self.clock.now()
        return [
            self.driver.create_ticket(
                TicketSpec(
                    subject=f"Refund for order {n}, 45 days after purchase",
                    description="Can I still get my money back?",
                    tags=("policy_exception",),
                    group=group,
                    created_at=now - timedelta(minutes=5),
                    first_response_at=now - timedelta(minutes=4),
                ),
                notify=False,
            )
            for n in range(count)
        ]

    def escalations(self, rule: str | None = None) -> Counter[str]:
        return Counter(
            e.ticket_id
            for e in self.processor.store.escalations()
            if rule is None or e.rule_id == rule
        )

    def notes(self, ticket_id: str) -> int:
        """escbridge's internal notes on the helpdesk ticket."""
        d: Any = self.driver
        if self.helpdesk == "zendesk":
            t = d._sandbox.ticket(int(ticket_id))
            return sum(1 for c in t["_comments"] if not c["public"])
        if self.helpdesk == "freshdesk":
            return len(d._sandbox.notes(int(ticket_id)))
        return len(d._desk.comments.get(ticket_id, []))

    def level(self, ticket_id: str) -> str | None:
        return self.processor.connectors[self.instance].fetch_ticket(ticket_id).level

    def records(self) -> list[dict[str, Any]]:
        d: Any = self.driver
        store = d._desk.tickets if self.helpdesk == "zohodesk" else d._sandbox.tickets
        return sorted(store.values(), key=lambda r: str(r["id"]))


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix(default_matrix_path())


@pytest.fixture(params=HELPDESKS)
def helpdesk(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if not available_drivers(only=[name]):
        pytest.skip(f"the {name} connector is not installed")
    return name


RigFactory = Callable[..., Rig]


@pytest.fixture
def rig(helpdesk: str, matrix: Matrix, tmp_path: Path) -> Iterator[RigFactory]:
    """Start ``helpdesk``'s emulator (options: its constructor's) and a processor for it."""
    started: list[Rig] = []

    def make(emulator: Callable[[FakeClock], dict[str, Any]] | None = None, **settings: Any) -> Rig:
        clock = SimClock(START)
        fake = FakeClock()
        [driver] = available_drivers(only=[helpdesk])
        groups = [g for r in matrix.rungs if (g := r.group_for(helpdesk, helpdesk))]
        driver.start(clock, groups, **(emulator(fake) if emulator else {}))
        url = f"sqlite:///{tmp_path / 'sync.db'}"
        upgrade(url)
        instance = {**driver.instance_settings(), "max_attempts": 8, **settings}
        text = config_yaml({helpdesk: instance}, default_matrix_path(), url)
        config = parse_config(text, str(tmp_path / "escbridge.yaml"), tmp_path)
        processor, counter = simulated_processor(config, clock, fake)
        made = Rig(helpdesk, driver, clock, fake, processor, counter, matrix)
        started.append(made)
        return made

    yield make
    for made in started:
        made.processor.store.close()
        made.counter.close()
        made.driver.stop()


def run_until_complete(
    rig: Rig, runs: int = 4, step: timedelta = timedelta(minutes=1), **options: Any
) -> list[SyncReport]:
    """Run sync until a run gets to the end, ``step`` apart."""
    reports = []
    for _ in range(runs):
        report = rig.syncer(**options).run()
        reports.append(report)
        if report.instances[rig.instance].complete:
            return reports
        rig.clock.advance_to(rig.clock.now() + step)
    raise AssertionError(f"sync never completed: {[r.as_json() for r in reports]}")


def assert_each_escalated_once(rig: Rig, tickets: list[str]) -> None:
    """Each ticket went to l2 by the policy-exception rule exactly once, and the helpdesk has
    exactly one note per recorded escalation (none written twice, none lost)."""
    per_ticket = rig.escalations("policy-exception")
    assert sorted(per_ticket) == sorted(tickets), "a ticket was missed"
    assert set(per_ticket.values()) == {1}, f"escalated twice: {per_ticket}"
    recorded = rig.escalations()
    for ticket_id in tickets:
        assert rig.level(ticket_id) in ("l2", "l3")
        notes = rig.notes(ticket_id)
        assert notes == recorded[ticket_id], f"{ticket_id}: {notes} notes, {recorded[ticket_id]}"


def test_a_crash_between_apply_and_record_loses_no_ticket_and_escalates_none_twice(
    rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rig()
    tickets = r.flagged(12)
    real = TicketWrites.record_escalations

    def record_then_die(*args: Any, **kwargs: Any) -> Any:
        raise Crash()  # applied on the helpdesk, not recorded: the worst moment to die

    monkeypatch.setattr(TicketWrites, "record_escalations", record_then_die)
    with pytest.raises(Crash):
        r.syncer(batch_size=4).run()
    monkeypatch.setattr(TicketWrites, "record_escalations", real)
    assert r.escalations() == Counter()  # the page's one record transaction was lost whole
    r.clock.advance_to(r.clock.now() + timedelta(minutes=11))  # the dead run's locks expire

    [report] = run_until_complete(r, batch_size=4)

    assert_each_escalated_once(r, tickets)
    assert report.instances[r.instance].recovered == len(tickets)  # recorded, not re-applied


def test_two_runs_never_overlap(rig: RigFactory) -> None:
    r = rig()
    tickets = r.flagged(6)
    connector: Any = r.processor.connectors[r.instance]
    real_scan = connector.iter_tickets
    scanning, go_on = threading.Event(), threading.Event()

    def held_scan(*args: Any) -> Any:
        scanning.set()
        go_on.wait(10)
        return real_scan(*args)

    connector.iter_tickets = held_scan
    first: list[SyncReport] = []
    thread = threading.Thread(target=lambda: first.append(r.syncer().run()))
    thread.start()
    try:
        assert scanning.wait(10)
        connector.iter_tickets = real_scan
        second = r.syncer().run().instances[r.instance]
    finally:
        go_on.set()
        thread.join(20)

    assert second.locked_by is not None and second.scanned == 0
    assert first[0].instances[r.instance].complete
    assert_each_escalated_once(r, tickets)


def test_a_dry_run_changes_nothing(rig: RigFactory) -> None:
    r = rig()
    tickets = r.flagged(5)
    before = r.records()

    report = r.syncer(dry_run=True).run()

    assert sorted(e.ticket_id for e in report.escalations) == sorted(tickets)
    assert {(e.destination, e.rule_id) for e in report.escalations} == {("l2", "policy-exception")}
    assert r.records() == before
    store = r.processor.store
    assert store.escalations() == [] and store.get_cursor(r.instance) is None
    assert store.job_counts()["pending"] == 0


def _throttled(helpdesk: str) -> Callable[[FakeClock], dict[str, Any]]:
    """Emulator options for a 429 storm: tiny rate limits on the fake clock (Zoho: forced 429s
    on the next calls, its per-minute limits being undocumented)."""

    def options(fake: FakeClock) -> dict[str, Any]:
        if helpdesk == "zendesk":
            return {"account_limit": 12, "window_seconds": 60.0, "monotonic": fake.monotonic}
        if helpdesk == "freshdesk":
            return {"rate_limit": 25, "window_seconds": 60.0, "monotonic": fake.monotonic}
        return {}

    return options


def test_a_429_storm_slows_the_run_but_loses_nothing(rig: RigFactory, helpdesk: str) -> None:
    r = rig(_throttled(helpdesk))
    tickets = r.flagged(15)
    if helpdesk == "zohodesk":
        r.driver._desk.throttle_next("TOO_MANY_REQUESTS", 3)  # type: ignore[attr-defined]

    reports = run_until_complete(r, batch_size=5)

    assert_each_escalated_once(r, tickets)
    assert r.time.sleeps and sum(r.time.sleeps) > 0, "no 429 was met: the test proves nothing"
    assert sum(rep.instances[r.instance].failed for rep in reports) == 0
    assert reports[-1].instances[r.instance].api_calls > 0


def _credits_run_out(r: Rig, batch_size: int) -> None:
    """Twelve tickets, 50 credits a day (tag reads and writes cost credits too): each day's run
    stops when they are gone, cleanly (the page in hand not committed, nothing handed to
    workers), and the next day's run goes on from there until one gets to the end."""
    tickets = r.flagged(12)

    stopped = r.syncer(batch_size=batch_size).run().instances[r.instance]

    assert stopped.stopped is not None and "daily API credits" in stopped.stopped
    assert stopped.resume_at is not None and stopped.resume_at > r.clock.now()
    assert 0 < sum(stopped.escalated.values()) < len(tickets)
    assert r.processor.store.job_counts()["pending"] == 0  # not a ticket's failure

    day = timedelta(days=1)
    r.clock.advance_to(r.clock.now() + day)  # a new day, new credits
    resumed = run_until_complete(r, runs=8, step=day, batch_size=batch_size)

    assert len(resumed) >= 2  # 50 credits do not cover the rest in one day either
    assert all(rep.instances[r.instance].failed == 0 for rep in resumed)
    r.clock.advance_to(r.clock.now() + day)  # reading the levels back spends credits too
    assert_each_escalated_once(r, tickets)


@pytest.mark.parametrize("helpdesk", ["zohodesk"])  # daily API credits are Zoho Desk's
def test_zoho_daily_credits_stop_the_run_cleanly_and_the_next_day_resumes(rig: RigFactory) -> None:
    _credits_run_out(rig(lambda _fake: {"daily_credits": 50}), batch_size=1)


@pytest.mark.parametrize("helpdesk", ["zohodesk"])
def test_zoho_daily_credits_running_out_between_bulk_writes_lose_nothing(rig: RigFactory) -> None:
    _credits_run_out(rig(lambda _fake: {"daily_credits": 50}), batch_size=3)
