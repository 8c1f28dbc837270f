"""The fault suite's rig: one helpdesk emulator with network faults, the webhook receiver, a
store, and workers — everything real over HTTP on 127.0.0.1 — and what it checks per ticket.

Time: the emulator, the connector's clock and the processor share a SimClock; the HTTP layer's
sleeps (retry backoff, the wait for an in-flight write to settle) move a fake monotonic clock
and cost no real time. A ``late`` write lands ``LATE_SECONDS`` of that fake time after its
request: whenever the fake clock moves (a connector waits, or the rig lets time pass between
worker rounds), the late writes held long enough are applied. A connector that waits for an
in-flight write to settle sees it land; one that retries blindly writes twice.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from escbridge_webhooks.app import create_app

from escbridge.config import parse_config
from escbridge.processing import Processor
from escbridge.sandbox import ServerThread, serve
from escbridge.sandbox.backlog import config_yaml
from escbridge.sandbox.driver import SandboxDriver, SimClock, TicketSpec, available_drivers
from escbridge.sandbox.emulator import Change
from escbridge.sandbox.faults import FaultPlan
from escbridge.sync import CallCounter
from escbridge.testing import FakeClock
from escbridge.testing.simulated import simulated_processor

HELPDESKS = ("zendesk", "freshdesk", "zohodesk")
START = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)  # a Wednesday morning
LATE_SECONDS = 10.0  # a late write completes this long after its request (fake time)
READ_TIMEOUT = 1.0  # the connectors' read timeout here: a ``slow`` answer outlasts it
SLOW_SECONDS = 3.0
WORKERS = 4
WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})
GROUPS = ("Frontline", "Team Leads")
NOTE = "Flagged ticket {{ ticket.id }} needs a team lead."
REPLY = "Your request {{ ticket.id }} has been passed to our team leads."
MATRIX = f"""\
version: 1
name: Fault suite
defaults:
  time: calendar
levels:
  - id: l1
    name: Frontline
    groups: {{zendesk: Frontline, freshdesk: Frontline, zohodesk: Frontline}}
  - id: l2
    name: Team leads
    groups: {{zendesk: Team Leads, freshdesk: Team Leads, zohodesk: Team Leads}}
limits:
  cooldown: 30m
  daily_cap: 3
rules:
  - id: flagged
    name: Flagged for a team lead
    kind: hierarchical
    when:
      tags: {{all: [fault_suite]}}
    to: l2
    actions:
      priority: high
      note: "{NOTE}"
      customer_update: "{REPLY}"
      tags: [team_lead]
"""
_LEVEL = re.compile(r"^escbridge_(l\d+)$")


@dataclass
class Outcome:
    """What one ticket came to, on the helpdesk's side and in the store."""

    ticket: str
    level_changes: int
    notes: int
    replies: int
    recorded: int

    def problems(self) -> list[str]:
        found = []
        if self.level_changes != 1:
            found.append(f"escalated {self.level_changes} times on the helpdesk")
        if self.notes != 1:
            found.append(f"{self.notes} internal notes")
        if self.replies > 1:
            found.append(f"{self.replies} customer replies")
        if self.level_changes and self.recorded != 1:
            found.append(f"{self.recorded} escalations recorded for {self.level_changes} made")
        return found


@dataclass
class FaultRig:
    helpdesk: str
    driver: SandboxDriver
    clock: SimClock
    time: FakeClock
    processor: Processor
    counter: CallCounter
    receiver: ServerThread
    faults: FaultPlan
    level_changes: Counter[str] = field(default_factory=Counter)
    events: int = 0
    duplicates: int = 0

    @property
    def instance(self) -> str:
        return self.helpdesk

    # -- the emulator's side ----------------------------------------------------------------

    @property
    def emulator(self) -> Any:
        d: Any = self.driver
        return d._desk if self.helpdesk == "zohodesk" else d._sandbox

    def watch_levels(self) -> None:
        """Count level changes as the helpdesk's history has them (every change, any writer)."""

        def on_change(change: Change) -> None:
            before, after = change.before, change.after
            if before is not None and self.level(before) != self.level(after):
                self.level_changes[str(change.id)] += 1

        self.emulator.tickets.subscribe(on_change)

    def level(self, record: Any) -> str | None:
        levels = sorted(m.group(1) for t in record.get("tags") or [] if (m := _LEVEL.match(t)))
        return ",".join(levels) or None

    def comments(self, ticket_id: str) -> tuple[int, int]:
        """escbridge's (internal notes, public replies) on the ticket."""
        emulator = self.emulator
        if self.helpdesk == "zendesk":
            thread = emulator.ticket(int(ticket_id))["_comments"]
            ours = [c for c in thread if c["author_id"] == emulator.ADMIN_ID]
            return sum(not c["public"] for c in ours), sum(bool(c["public"]) for c in ours)
        if self.helpdesk == "freshdesk":
            thread = emulator.ticket(int(ticket_id))["_conversations"]
            ours = [c for c in thread if c["user_id"] == emulator.ESCBRIDGE_ID]
            return sum(bool(c["private"]) for c in ours), sum(not c["private"] for c in ours)
        from escbridge_zohodesk.sandbox import ESCBRIDGE_AGENT

        thread = emulator.comments.get(ticket_id, [])
        ours = [c for c in thread if c["commenterId"] == ESCBRIDGE_AGENT]
        return sum(not c["isPublic"] for c in ours), sum(bool(c["isPublic"]) for c in ours)

    # -- events -----------------------------------------------------------------------------

    def open_tickets(self, count: int) -> list[str]:
        """Tickets flagged for a team lead, opened by customers (each fires a webhook)."""
        now = self.clock.now()
        return [
            self.driver.create_ticket(
                TicketSpec(
                    subject=f"Order {n} arrived broken",
                    description="The box was crushed and the screen is cracked.",
                    tags=("fault_suite",),
                    group=GROUPS[0],
                    created_at=now - timedelta(minutes=5),
                ),
                notify=True,
            )
            for n in range(count)
        ]

    def deliveries(self) -> list[Any]:
        d: Any = self.driver
        return list(d._webhooks.deliveries)

    def redeliver(self, deliveries: Iterable[Any]) -> None:
        """Deliver these webhooks again, byte for byte: the helpdesk's at-least-once retries."""
        for delivery in deliveries:
            answer = requests.post(
                delivery.url, data=delivery.body, headers=dict(delivery.headers), timeout=30
            )
            assert answer.status_code < 500, f"redelivery refused: {answer.status_code}"
            self.duplicates += 1

    # -- workers ----------------------------------------------------------------------------

    def let_time_pass(self, seconds: float) -> None:
        self.clock.advance_to(self.clock.now() + timedelta(seconds=seconds))
        self.time.advance(seconds=seconds)

    def work(self, *, rounds: int = 400, until: Callable[[], bool] | None = None) -> int:
        """Worker rounds (``WORKERS`` threads each claim a batch) until the inbox is drained
        (or ``until``); time passes while no job is due. How many rounds it took."""
        store = self.processor.store
        with ThreadPoolExecutor(WORKERS) as pool:
            for n in range(rounds):
                self.driver.flush(30)
                reports = list(pool.map(lambda i: self.processor.run_once(f"w{i}"), range(WORKERS)))
                if until is not None and until():
                    return n
                counts = store.job_counts()
                if counts["pending"] == 0 and counts["processing"] == 0 and not self.in_flight():
                    self.driver.flush(30)
                    if store.job_counts()["pending"] == 0:
                        return n
                if not any(r.claimed for r in reports):
                    self.let_time_pass(60)
        raise AssertionError(f"the inbox did not drain in {rounds} rounds: {store.job_counts()}")

    def in_flight(self) -> bool:
        return self.faults.pending_late > 0

    def outcomes(self, tickets: Iterable[str]) -> list[Outcome]:
        recorded = Counter(
            e.ticket_id for e in self.processor.store.escalations(instance=self.instance)
        )
        out = []
        for ticket in tickets:
            notes, replies = self.comments(ticket)
            out.append(
                Outcome(ticket, self.level_changes[ticket], notes, replies, recorded[ticket])
            )
        return out

    def check(self, tickets: list[str], label: Callable[[str], str] = str) -> list[str]:
        """Everything the promise says, per ticket and for the inbox: a list of what broke."""
        problems = [
            f"{self.helpdesk} ticket {o.ticket} ({label(o.ticket)}): {p}"
            for o in self.outcomes(tickets)
            for p in o.problems()
        ]
        recorded = {e.ticket_id for e in self.processor.store.escalations(instance=self.instance)}
        problems += [f"escalation of unknown ticket {t} recorded" for t in recorded - set(tickets)]
        counts = self.processor.store.job_counts()
        if counts["pending"] or counts["processing"]:
            problems.append(f"events not processed: {counts}")
        if counts["failed"]:
            problems.append(f"{counts['failed']} events dead-lettered: {self.dead_letters()}")
        return problems

    def dead_letters(self) -> list[str]:
        jobs = self.processor.store.jobs(["failed"], instance=self.instance, limit=10)
        return [f"ticket {j.ticket_id}: {j.last_error}" for j in jobs]

    def summary(self, name: str, tickets: int) -> str:
        counts = dict(sorted(self.faults.counts.items()))
        return (
            f"{name} {self.helpdesk}/{self.processor.store.dialect}: {tickets} tickets, "
            f"{len(self.deliveries())} webhook deliveries + {self.duplicates} duplicates, "
            f"{self.events} events, faults fired {counts}"
        )


RigFactory = Callable[..., FaultRig]


def start_rig(helpdesk: str, store_url: str, tmp_path: Path, *, fault_seed: int = 0) -> FaultRig:
    clock = SimClock(START)
    fake = FakeClock()
    [driver] = available_drivers(only=[helpdesk])
    driver.start(clock, GROUPS)
    plan = getattr(driver, "faults", None)
    assert isinstance(plan, FaultPlan), "the driver's emulator has no fault plan"
    plan.seed, plan.clock = fault_seed, fake.monotonic
    fake.on_move(lambda now: plan.release_late(held_before=now - LATE_SECONDS))
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(MATRIX, encoding="utf-8")
    settings = {**driver.instance_settings(), "read_timeout": READ_TIMEOUT}
    text = config_yaml({helpdesk: settings}, matrix, store_url)
    config = parse_config(text, str(tmp_path / "escbridge.yaml"), tmp_path)
    processor, counter = simulated_processor(config, clock, fake)
    receiver = serve(create_app(config, processor=processor))
    driver.connect_webhooks(driver.webhook_url(receiver.url, helpdesk))
    rig = FaultRig(helpdesk, driver, clock, fake, processor, counter, receiver, plan)
    rig.watch_levels()
    return rig


def stop_rig(rig: FaultRig) -> None:
    rig.faults.close()
    rig.driver.stop()
    rig.receiver.stop()
    rig.processor.store.close()
    rig.counter.close()


def write_calls(seen: Iterable[tuple[str, str]], ticket: str) -> list[tuple[str, str]]:
    """The write requests a connector made for one ticket, in order."""
    on_ticket = re.compile(rf"/{re.escape(ticket)}(\.json|/|$)")
    return [(m, p) for m, p in seen if m in WRITE_METHODS and on_ticket.search(p)]
