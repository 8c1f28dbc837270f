"""The time path: escalate at the deadline, not at the next scan (issue 16's benchmark).

One Zendesk emulator account per design, both from the same seed: ``--tickets`` open tickets
(default 50,000) with a realistic spread of ages (most changed within 14 days, some on hold for
up to 20 days, one idle for 30 days and a few idle for 19d23h50m+ that an "idle over 20 days"
rule catches 10 to 14 simulated minutes in), due dates, missing first responses, customer
replies, levels; the emulator enforces Zendesk's limits (incremental export 10 a minute, 100
ticket updates a minute, 700 requests a minute). The account is one escbridge has kept up
with: no ticket is due during the ``--warmup`` before the window but the 30-day-idle one (a
draw that would be is drawn again), so the time limits reach the window at their natural rate.
The window starts at 10:15 in Berlin on a Wednesday (``--start``): business hours, away from
the burst at 10:00, when every second-line ticket that came in overnight unanswered reaches
its 2 business hours at once (there Zendesk's 100 updates a minute set the pace).

The matrix is benchmarks/timepath_matrix.yaml: twenty rules, most of them time-based (idle,
SLA about to breach, time at the level, first response, customer waiting). For ``--minutes`` of
simulated time (default 30) a human changes a random ticket about once a simulated second
(replies, notes, priority, status, tags, due date), and each change reaches escbridge as a
webhook event (``processor.enqueue``, then ``processor.wake()`` as the in-process receiver
does); escbridge's own writes send none (the receiver would drop them as its own changes).

``new``
    one reconciliation before the window fills the shadow (timed, not part of the lateness
    figures), then worker threads with the due-queue on (``Processor.run``) and the changes pass
    of ``escbridge sync`` every 60 s (reconciliation "auto": not again within the day).
``sweep``
    today's design, ``escbridge sync --loop --interval 60s``: webhooks and workers as above but
    ``processing.due_queue: false``, and each run a changes pass plus the old sweep (every open
    ticket changed within 14 days through the incremental export), then 60 s of rest.

Everything runs on one accelerated clock (``--speed`` simulated seconds per real second): the
emulator's limits and timestamps, the connectors' clocks and sleeps, the processor's clock and
waits, the syncer. Real work (HTTP, SQLite, CPU) takes real time, so it weighs ``--speed`` times
more in simulated seconds than it would in a live system: the lateness figures are upper bounds.

Measured from outside escbridge, from the emulator's ticket history only: every change to a
ticket (time, actor, JSON) is recorded as it happens; between two changes a ticket only ages,
so the pure engine says when each state becomes due (``Engine.next_due``, confirmed with
``decide``). An escalation landed when escbridge's update carrying a new level marker reached
the emulator (rules tag ``fired_<rule>``, so the oracle knows which rule acted); lateness is
landed - due. Printed per design: time-based escalations due in the window and their lateness
(p50/p99/max), escalations caused by changes, API calls per hour by kind, reads per hour
against the budget "changes + escalations + one reconciliation a day", and tickets missed (due
in the window, not escalated by its end), with the 30-day-idle ticket's fate named.
Goals (issue 16): p99 lateness <= 5 s, reads per hour within budget, nothing missed.
Zendesk's ``fetch_ticket`` is two GETs (the ticket, then its comments for ``latest_comment``):
"ticket reads/hour" counts the ticket reads (show + export) alone, next to all GETs.

The defaults take about 10 real minutes (speed 8: 30 simulated minutes are 225 real seconds
per design, plus seeding, the reconciliation and the replay).

    .venv/bin/python benchmarks/timepath.py                        # 50,000 tickets, 30 min
    .venv/bin/python benchmarks/timepath.py --tickets 2000 --minutes 5 --only new
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from escbridge_zendesk.parse import format_time, parse_ticket, parse_time
from escbridge_zendesk.sandbox import TEST_SIGNING_SECRET, ZendeskSandbox
from escbridge_zendesk.sandbox_driver import zendesk_metrics

from escbridge.config import parse_config
from escbridge.matrix import Matrix, load_matrix
from escbridge.model import EscalationRecord, LevelMarker, Ticket, TicketEvent
from escbridge.policy import Engine
from escbridge.processing import Processor
from escbridge.sandbox import Change, serve
from escbridge.sandbox.driver import SimClock
from escbridge.sandbox.emulator import quiet_werkzeug
from escbridge.store import upgrade
from escbridge.sync import CallCounter, Syncer, SyncOptions, build_sync_processor

log = logging.getLogger("timepath")

INSTANCE = "zendesk"
MATRIX = Path(__file__).with_name("timepath_matrix.yaml")
#: 10:15 in Berlin on a Wednesday: business hours, so business-time rules move in the window
#: (away from the 10:00 burst, see the module docstring; ``--start`` can put the window there).
START = datetime(2026, 3, 11, 9, 15, tzinfo=UTC)
GROUPS = ("Support", "Tier 2", "Managers", "Billing")
LEVEL_GROUP = {"l1": "Support", "l2": "Tier 2", "l3": "Managers"}
FIRED = "fired_"
#: The ticket the issue names: idle 30 days under an "idle over 20 days" rule.
IDLE_30_DAYS = "idle-30d"
#: Tickets an "idle over 20 days" rule reaches 10, 12 and 14 minutes into the window.
NEARLY_FORGOTTEN = (
    ("idle-19d23h50m", timedelta(days=20, minutes=-10)),
    ("idle-19d23h48m", timedelta(days=20, minutes=-12)),
    ("idle-19d23h46m", timedelta(days=20, minutes=-14)),
)
SWEEP_LOOKBACK = timedelta(days=14)
CURSOR_AGE = timedelta(minutes=1)
SYNC_INTERVAL = 60.0  # simulated seconds between sync runs, as `--loop --interval 60s`
DAY_SECONDS = 86_400


# --- one accelerated clock for the whole system ------------------------------------------------


class FastClock(SimClock):
    """Simulated time running ``speed`` times faster than real time, and able to jump ahead.

    ``wall``/``now`` are simulated UTC, ``monotonic`` simulated seconds (rate-limit windows,
    pacing), ``sleep``/``wait`` take simulated seconds. Sleeps and waits look at the clock in
    short real slices, so a jump ahead (``advance_to``) ends them on time.
    """

    SLICE = 0.1  # real seconds

    def __init__(self, start: datetime, speed: float) -> None:
        super().__init__(start)
        self.speed = speed
        self._base_real = time.monotonic()
        self._base_sim = start.timestamp()
        self._shift = threading.Lock()

    def wall(self) -> float:
        with self._shift:
            return self._base_sim + (time.monotonic() - self._base_real) * self.speed

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), UTC)

    def monotonic(self) -> float:
        return self.wall()

    def advance_to(self, when: datetime) -> None:
        with self._shift:
            current = self._base_sim + (time.monotonic() - self._base_real) * self.speed
            if when.timestamp() > current:
                self._base_sim += when.timestamp() - current

    def sleep(self, seconds: float) -> None:
        self.wait(threading.Event(), seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """``event.wait`` for simulated ``seconds``: True when the event was set."""
        until = self.wall() + max(0.0, seconds)
        while True:
            left = until - self.wall()
            if left <= 0:
                return event.is_set()
            if event.wait(min(left / self.speed, self.SLICE)):
                return True

    def sleep_until(self, when: float, stop: threading.Event) -> bool:
        """Sleep until simulated epoch ``when``; False when ``stop`` was set first."""
        return not self.wait(stop, when - self.wall())


# --- the account: tickets, and what people do to them --------------------------------------------


@dataclass(frozen=True)
class Seed:
    """One ticket as the emulator is seeded with it (``create_ticket`` keyword arguments)."""

    label: str
    updated: datetime
    kwargs: Mapping[str, Any]


_PRIORITIES = (("low", 20), ("normal", 50), ("high", 22), ("urgent", 8))
_STATUSES = (("new", 6), ("open", 62), ("pending", 18), ("hold", 14))
_CHANNELS = (("email", 45), ("web", 20), ("chat", 14), ("voice", 11), ("api", 10))
_LEVELS = (("l1", 75), ("l2", 18), ("l3", 7))
#: Mean time since the last change of an active ticket, by priority (an exponential spread).
_IDLE_MEAN = {
    "urgent": timedelta(minutes=50),
    "high": timedelta(hours=3),
    "normal": timedelta(days=1),
    "low": timedelta(days=2),
}
_SLA = {
    "urgent": timedelta(hours=8),
    "high": timedelta(days=1),
    "normal": timedelta(days=3),
    "low": timedelta(days=5),
}


def _pick(rng: random.Random, weighted: Sequence[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def _ticket(
    label: str,
    *,
    status: str,
    priority: str,
    channel: str,
    level: str,
    created: datetime,
    updated: datetime,
    first_reply: datetime | None,
    customer: datetime | None,
    due: datetime | None,
    tags: Iterable[str] = (),
) -> Seed:
    marker = [LevelMarker.tag(level)] if level != "l1" else []
    kwargs: dict[str, Any] = {
        "subject": f"{label}: {priority} {channel} ticket",
        "description": "Please help.",
        "priority": priority,
        "status": status,
        "group": LEVEL_GROUP[level],
        "tags": [*tags, *marker],
        "at": created,
        "updated_at": format_time(updated),
        "generated_timestamp": int(updated.timestamp()),
        "via": {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}},
        "due_at": format_time(due) if due else None,
        "metric_set": zendesk_metrics(created, first_reply, customer),
    }
    return Seed(label, updated, kwargs)


def _draw(rng: random.Random, number: int, now: datetime) -> Seed:
    """One ticket of an account changed mostly within two weeks before ``now`` (some on hold
    longer)."""
    status = _pick(rng, _STATUSES)
    priority = _pick(rng, _PRIORITIES)
    if status == "hold":
        idle = timedelta(days=rng.uniform(0, 20))
    elif status == "pending":
        idle = timedelta(days=min(rng.expovariate(1 / 2.0), 14))
    else:
        idle = min(
            timedelta(seconds=rng.expovariate(1 / _IDLE_MEAN[priority].total_seconds())),
            timedelta(days=14),
        )
    updated = now - idle
    created = updated - timedelta(days=rng.expovariate(1 / 1.5))
    first_reply = None
    if rng.random() < 0.85:
        first_reply = min(created + timedelta(minutes=rng.uniform(5, 240)), updated)
    customer = None
    if rng.random() < 0.5:
        customer = created + (updated - created) * rng.random()
    due = None
    if status != "hold" and rng.random() < 0.7:
        due = created + _SLA[priority]
        if due < now:  # renegotiated: a new date within three days
            due = now + timedelta(hours=rng.uniform(0.5, 72))
    tags = [t for t, p in (("vip", 0.03), ("enterprise", 0.06)) if rng.random() < p]
    return _ticket(
        f"t{number}",
        status=status,
        priority=priority,
        channel=_pick(rng, _CHANNELS),
        level=_pick(rng, _LEVELS),
        created=created,
        updated=updated,
        first_reply=first_reply,
        customer=customer,
        due=due,
        tags=tags,
    )


def _special(label: str, idle: timedelta, start: datetime) -> Seed:
    """A ticket on hold, answered, without due date, nothing but its idleness to notice."""
    updated = start - idle
    created = updated - timedelta(days=10)
    return _ticket(
        label,
        status="hold",
        priority="normal",
        channel="email",
        level="l1",
        created=created,
        updated=updated,
        first_reply=created + timedelta(hours=1),
        customer=None,
        due=None,
    )


def backlog(
    count: int, engine: Engine, start: datetime, quiet_from: datetime, seed: int
) -> list[Seed]:
    """``count`` tickets, oldest change first, as the account stands at ``quiet_from`` (no
    change after it), none of them due in ``[quiet_from, start]`` but the 30-day-idle one: an
    account escbridge has kept up with, whose time limits fall into the window at their
    natural rate. A draw that would be due then is drawn again."""
    rng = random.Random(seed)
    seeds = [_special(IDLE_30_DAYS, timedelta(days=30), start)]
    seeds += [_special(label, idle, start) for label, idle in NEARLY_FORGOTTEN]
    for number in range(max(0, count - len(seeds))):
        for _ in range(100):
            candidate = _draw(rng, number, quiet_from)
            ticket = seed_ticket(candidate)
            if engine.decide(ticket, [], quiet_from).escalate:
                continue
            due = engine.next_due(ticket, [], quiet_from)
            if due is None or due > start:
                break
        seeds.append(candidate)
    seeds.sort(key=lambda s: s.updated)
    return seeds


def seed_ticket(seed: Seed) -> Ticket:
    """The Ticket escbridge reads for a seed (the connector's own parser)."""
    k = seed.kwargs
    raw = {
        "id": 0,
        "created_at": format_time(k["at"]),
        "status": k["status"],
        "priority": k["priority"],
        "tags": k["tags"],
        "group_id": GROUPS.index(k["group"]) + 1,
        **{key: k[key] for key in ("updated_at", "via", "due_at", "metric_set", "subject")},
    }
    return parse_ticket(
        raw, instance=INSTANCE, group_names={i + 1: g for i, g in enumerate(GROUPS)}
    )


@dataclass(frozen=True)
class PlannedChange:
    """What a human does to which ticket (by seed position) at which simulated second."""

    at: float
    index: int
    kind: str
    value: float


_CHANGE_KINDS = (
    ("agent_reply", 30),
    ("customer_reply", 25),
    ("note", 14),
    ("priority", 10),
    ("status", 6),
    ("due_date", 6),
    ("tag", 6),
    ("solve", 3),
)


def change_plan(
    seeds: Sequence[Seed], start: datetime, minutes: float, seed: int
) -> list[PlannedChange]:
    """About one change a second (a Poisson stream) on random ordinary tickets."""
    rng = random.Random(seed + 1)
    ordinary = [i for i, s in enumerate(seeds) if s.label.startswith("t")]
    plan: list[PlannedChange] = []
    at = start.timestamp()
    end = at + minutes * 60
    while True:
        at += rng.expovariate(1.0)
        if at >= end or not ordinary:
            return plan
        plan.append(
            PlannedChange(at, rng.choice(ordinary), _pick(rng, _CHANGE_KINDS), rng.random())
        )


class Human:
    """Makes the planned changes in the emulator, as an agent or the customer would."""

    def __init__(self, sandbox: ZendeskSandbox, clock: FastClock) -> None:
        self.sandbox = sandbox
        self.clock = clock

    def make(self, ticket_id: int, change: PlannedChange) -> bool:
        """Apply one change; False when the ticket is closed for changes (solved)."""
        sandbox = self.sandbox
        record = sandbox.ticket(ticket_id)
        if record["status"] in ("solved", "closed"):
            return False
        now = self.clock.now()
        kind, value = change.kind, change.value
        if kind == "agent_reply":
            metrics = record.get("metric_set") or {}
            if not metrics.get("replies"):
                created = parse_time(record["created_at"]) or now
                customer = parse_time(metrics.get("requester_updated_at"))
                self._metrics(ticket_id, zendesk_metrics(created, now, customer))
            sandbox.human_update(ticket_id, comment={"body": "Looking into it.", "public": True})
        elif kind == "customer_reply":
            metrics = dict(record.get("metric_set") or {})
            metrics["requester_updated_at"] = format_time(now)
            self._metrics(ticket_id, metrics)
            body = {"body": "Any news?", "public": True, "author_id": sandbox.CUSTOMER_ID}
            sandbox.human_update(ticket_id, comment=body)
        elif kind == "note":
            sandbox.human_update(ticket_id, comment={"body": "Internal note.", "public": False})
        elif kind == "priority":
            priority = _PRIORITIES[int(value * len(_PRIORITIES))][0]
            sandbox.human_update(ticket_id, priority=priority)
        elif kind == "status":
            status = "pending" if record["status"] in ("new", "open") else "open"
            sandbox.human_update(ticket_id, status=status)
        elif kind == "due_date":
            due = now + timedelta(hours=1 + 5 * value)
            sandbox.human_update(ticket_id, due_at=format_time(due))
        elif kind == "tag":
            tag = "vip" if value < 0.4 else "enterprise" if value < 0.9 else "outage"
            sandbox.human_update(ticket_id, additional_tags=[tag])
        elif kind == "solve":
            sandbox.human_update(ticket_id, status="solved")
        else:
            raise ValueError(kind)
        return True

    def _metrics(self, ticket_id: int, metrics: Mapping[str, Any]) -> None:
        """The metric set moves with the change that follows (no event of its own)."""

        def put(record: dict[str, Any]) -> None:
            record["metric_set"] = dict(metrics)

        self.sandbox.tickets.update(ticket_id, put, notify=False)


# --- measuring from outside: calls by kind, and every change to every ticket ---------------------

KINDS = ("export", "show", "comments", "update", "job", "other")


class ApiCounter:
    """Counts the emulator's API requests by kind and phase (a WSGI middleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.phase = "setup"
        self.counts: Counter[tuple[str, str]] = Counter()
        self.throttled: Counter[str] = Counter()
        self.conflicts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @staticmethod
    def kind(method: str, path: str) -> str:
        if "/incremental/" in path:
            return "export"
        if path.startswith("/api/v2/job_statuses"):
            return "job"
        if path.startswith("/api/v2/tickets/"):
            rest = path.removeprefix("/api/v2/tickets/").removesuffix(".json")
            if rest == "update_many" or (method == "PUT" and rest.isdigit()):
                return "update"
            if method == "GET" and rest.isdigit():
                return "show"
            if method == "GET" and rest.endswith("/comments"):
                return "comments"
        return "other"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = str(environ.get("PATH_INFO", ""))
        if not path.startswith("/api/"):
            return self.app(environ, start_response)
        kind = self.kind(str(environ.get("REQUEST_METHOD", "GET")), path)
        phase = self.phase

        def counted(status: str, headers: Any, *rest: Any) -> Any:
            with self._lock:
                self.counts[(phase, kind)] += 1
                if status.startswith("429"):
                    self.throttled[phase] += 1
                elif status.startswith("409"):
                    self.conflicts[phase] += 1
            return start_response(status, headers, *rest)

        return self.app(environ, counted)

    def of(self, phase: str) -> dict[str, int]:
        with self._lock:
            return {k: self.counts[(phase, k)] for k in KINDS}


@dataclass(frozen=True)
class Seen:
    """One change to a ticket as the emulator made it, at simulated time ``at``."""

    at: float
    seq: int
    actor: Any
    raw: Mapping[str, Any]


class Timeline:
    """Every change to every ticket, recorded as the emulator notifies it."""

    def __init__(self, sandbox: ZendeskSandbox, clock: FastClock) -> None:
        self.clock = clock
        self.start = clock.wall()
        self.initial = {int(r["id"]): r for r in sandbox.tickets.values()}
        self.changes: dict[int, list[Seen]] = {}
        self._lock = threading.Lock()
        sandbox.tickets.subscribe(self._seen)

    def _seen(self, change: Change) -> None:
        seen = Seen(self.clock.wall(), change.seq, change.actor, change.after)
        with self._lock:
            self.changes.setdefault(int(change.id), []).append(seen)

    def of(self, ticket_id: int) -> list[Seen]:
        """The ticket's states in order: as seeded, then after each change."""
        with self._lock:
            later = sorted(self.changes.get(ticket_id, []), key=lambda s: s.seq)
        return [Seen(self.start, 0, None, self.initial[ticket_id]), *later]


# --- the oracle: when was each ticket due, and when did its escalation land -----------------------


@dataclass
class Verdict:
    """What happened to the time limits of one design's run."""

    lateness: list[float] = field(default_factory=list)  # seconds, escalations due in window
    missed: list[tuple[int, float]] = field(default_factory=list)  # (ticket, due) not escalated
    overtaken: int = 0  # due, then a change made it not due before escbridge escalated
    event_lateness: list[float] = field(default_factory=list)  # escalations a change caused
    latest: list[tuple[float, str]] = field(default_factory=list)  # (lateness, what), worst
    unexpected: int = 0  # escalations the oracle saw no reason for
    before_window: int = 0  # landed before the window (the reconciliation's)
    landed: int = 0  # escalations landed in the window, all causes
    fates: dict[str, str] = field(default_factory=dict)


def _escalation(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[str, str | None] | None:
    """(new level, rule) when this change moved the ticket to a new level marker."""
    old = LevelMarker.from_tags(before.get("tags") or [])
    new = LevelMarker.from_tags(after.get("tags") or [])
    if new is None or new == old:
        return None
    added = set(after.get("tags") or []) - set(before.get("tags") or [])
    rules = [t.removeprefix(FIRED) for t in added if t.startswith(FIRED)]
    return new, (rules[0] if rules else None)


def judge(
    timeline: Timeline,
    engine: Engine,
    sandbox: ZendeskSandbox,
    labels: Mapping[int, str],
    window: tuple[float, float],
    grace: float,
) -> Verdict:
    """Replay each ticket's history through the pure engine and compare with what landed."""
    begin, end = window
    groups = {int(g["id"]): str(g["name"]) for g in sandbox.groups}
    escbridge = sandbox.ADMIN_ID
    verdict = Verdict()
    for ticket_id in labels:
        states = timeline.of(ticket_id)
        history: list[EscalationRecord] = []
        pending: float | None = None  # when the current time-based escalation fell due
        event_at: float | None = None  # when a change made it escalate at once
        previous: Mapping[str, Any] = states[0].raw
        fate = "never due"
        for i, seen in enumerate(states):
            if seen.at > end:
                break
            nxt = states[i + 1].at if i + 1 < len(states) else math.inf
            landed = _escalation(previous, seen.raw) if seen.actor == escbridge else None
            previous = seen.raw
            if landed is not None:
                level, rule = landed
                moment = datetime.fromtimestamp(seen.at, UTC)
                from_level = history[-1].to if history else None
                history.append(
                    EscalationRecord(at=moment, to=level, from_level=from_level, rule_id=rule)
                )
                if seen.at < begin:
                    verdict.before_window += 1
                else:
                    verdict.landed += 1
                fate = f"escalated to {level} at {_clock(seen.at, begin)}"
                if pending is not None:
                    if begin <= pending <= end - grace:
                        verdict.lateness.append(seen.at - pending)
                        what = f"ticket {ticket_id} ({rule}) due at {_clock(pending, begin)}"
                        verdict.latest.append((seen.at - pending, what))
                elif event_at is not None:
                    verdict.event_lateness.append(seen.at - event_at)
                elif seen.at >= begin:
                    verdict.unexpected += 1
                pending = event_at = None
            ticket = parse_ticket(seen.raw, instance=INSTANCE, group_names=groups)
            at = datetime.fromtimestamp(seen.at, UTC)
            escalates = engine.decide(ticket, history, at).escalate
            if pending is not None or event_at is not None:
                if not escalates:  # a change came first and took the reason away
                    if pending is not None and begin <= pending <= end - grace:
                        verdict.overtaken += 1
                    pending = event_at = None
                continue
            if escalates:
                if i == 0:
                    pending = seen.at  # due when the run began (only the 30-day ticket)
                    fate = "due before the run began"
                elif seen.actor == escbridge:
                    pending = seen.at  # its own write left it due (a second step)
                else:
                    event_at = seen.at
                continue
            due = engine.next_due(ticket, history, at)
            if due is None:
                continue
            when = due.timestamp()
            if when < nxt and when <= end and engine.decide(ticket, history, due).escalate:
                pending = when
                fate = f"due at {_clock(when, begin)}"
        if pending is not None:
            if begin <= pending <= end - grace:
                verdict.missed.append((ticket_id, pending))
            fate += ", not escalated by the end"
        label = labels[ticket_id]
        if not label.startswith("t"):
            verdict.fates[label] = fate
    return verdict


def _clock(at: float, begin: float) -> str:
    """A simulated instant relative to the window's start: ``+10m02s`` / ``-3m10s``."""
    delta = at - begin
    sign = "-" if delta < 0 else "+"
    seconds = abs(delta)
    if seconds >= DAY_SECONDS:
        return f"{sign}{seconds / DAY_SECONDS:.1f}d"
    return f"{sign}{int(seconds // 60)}m{int(seconds % 60):02d}s"


# --- running one design ----------------------------------------------------------------------


@dataclass
class Run:
    """One design's run, measured."""

    name: str
    verdict: Verdict
    window: dict[str, int]  # API calls in the window, by kind
    throttled: int
    minutes: float
    changes: int
    conflicts: int = 0
    reconcile_calls: dict[str, int] = field(default_factory=dict)
    reconcile_sim: float = 0.0
    reconcile_real: float = 0.0
    real_seconds: float = 0.0
    open_tickets: int = 0


class Stopped(Exception):
    """The run's time is up: a sync run in progress stops at its next page."""


def _config_text(url: str, store: str, *, due_queue: bool) -> str:
    processing = {"due_queue": due_queue}
    body = {
        "store": store,
        "matrix": str(MATRIX),
        "processing": processing,
        "instances": {
            INSTANCE: {
                "type": "zendesk",
                "base_url": url,
                "sandbox": True,
                "email": "escbridge@sandbox.example",
                "api_token": "sandbox-admin-token",
                "webhook_secret": TEST_SIGNING_SECRET,
                "integration_user_id": ZendeskSandbox.ADMIN_ID,
                "incremental_per_minute": 10,
            }
        },
    }
    return yaml.safe_dump(body, sort_keys=False)


def _processor(config_text: str, tmp: Path, clock: FastClock, counter: CallCounter) -> Processor:
    config = parse_config(config_text, str(tmp / "escbridge.yaml"), tmp)
    overrides = {
        "utcnow": clock.now,
        "sleep": clock.sleep,
        "clock": clock.monotonic,
        "wallclock": clock.wall,
    }
    built = build_sync_processor(config, counter, overrides=overrides)
    return Processor(
        built.store,
        built.engine,
        built.connectors,
        settings=built.settings,
        clock=clock.now,
        secrets=built.secrets,
        wait=clock.wait,
    )


def run_design(
    name: str,
    seeds: Sequence[Seed],
    plan: Sequence[PlannedChange],
    engine: Engine,
    args: argparse.Namespace,
) -> Run:
    """Seed a fresh emulator and store, run the design for the window, judge it."""
    began_real = time.monotonic()
    new = name == "new"
    start: datetime = args.start
    clock = FastClock(start - timedelta(minutes=args.warmup), args.speed)
    sandbox = ZendeskSandbox(
        groups=GROUPS,
        account_limit=700,
        update_limit=100,
        incremental_limit=10,
        window_seconds=60.0,
        wall_clock=clock.wall,
        monotonic=clock.monotonic,
    )
    labels: dict[int, str] = {}
    for s in seeds:
        labels[int(sandbox.create_ticket(notify=False, **s.kwargs)["id"])] = s.label
    ids = list(labels)
    timeline = Timeline(sandbox, clock)
    api = ApiCounter(sandbox.app)
    human = Human(sandbox, clock)
    counter = CallCounter()
    stop = threading.Event()
    run = Run(name, Verdict(), {}, 0, args.minutes, 0, open_tickets=len(seeds))
    with tempfile.TemporaryDirectory() as tmpdir, serve(api) as server:
        tmp = Path(tmpdir)
        store_url = f"sqlite:///{tmp / 'store.db'}"
        upgrade(store_url)
        text = _config_text(server.url, store_url, due_queue=new)
        processor = _processor(text, tmp, clock, counter)
        processor.store.check_schema()
        workers = threading.Thread(
            target=processor.run,
            kwargs={"stop": stop, "concurrency": args.workers},
            name=f"{name}-workers",
            daemon=True,
        )
        workers.start()

        def halt(_: object) -> None:
            if stop.is_set():
                raise Stopped

        syncing: threading.Thread | None = None
        begin = end = clock.wall()
        try:
            if new:
                api.phase = "reconcile"
                sim, real = clock.wall(), time.monotonic()
                Syncer(processor, SyncOptions(reconcile="always"), api_calls=counter).run()
                run.reconcile_sim = clock.wall() - sim
                run.reconcile_real = time.monotonic() - real
                run.reconcile_calls = api.of("reconcile")
                run.reconcile_calls["429s"] = api.throttled["reconcile"]
                if clock.now() > start:
                    log.warning("the reconciliation ran %s into the window", clock.now() - start)
            clock.advance_to(start)
            api.phase = "window"
            begin = start.timestamp()
            end = begin + args.minutes * 60

            def sync_loop() -> None:
                # The sweep design has run for long: its changes cursor is a minute old.
                cursor: dict[str, Any] = {} if new else {"since": clock.now() - CURSOR_AGE}
                while not stop.is_set():
                    now = clock.now()
                    passes = (
                        [SyncOptions(reconcile="auto")]
                        if new
                        else [
                            SyncOptions(reconcile="never", **cursor),
                            SyncOptions(reconcile="never", since=now - SWEEP_LOOKBACK),
                        ]
                    )
                    cursor = {}
                    try:
                        for options in passes:
                            Syncer(processor, options, api_calls=counter, progress=halt).run()
                    except Stopped:
                        return
                    clock.wait(stop, SYNC_INTERVAL)

            syncing = threading.Thread(target=sync_loop, name=f"{name}-sync", daemon=True)
            syncing.start()
            wake = getattr(processor, "wake", None)
            for change in plan:
                if not clock.sleep_until(change.at, stop):
                    break
                ticket_id = ids[change.index]
                if not human.make(ticket_id, change):
                    continue
                run.changes += 1
                processor.enqueue(
                    TicketEvent(
                        instance=INSTANCE,
                        ticket_id=str(ticket_id),
                        dedupe_key=uuid.uuid4().hex,
                        kind="ticket.updated",
                        actor=str(sandbox.HUMAN_ID),
                        occurred_at=clock.now(),
                    )
                )
                if callable(wake):
                    wake()
            clock.sleep_until(end, stop)
            api.phase = "after"
        finally:
            stop.set()
            workers.join(timeout=120)
            if syncing is not None:
                syncing.join(timeout=120)
            processor.store.close()
            counter.close()
    run.window = api.of("window")
    run.throttled = api.throttled["window"]
    run.conflicts = api.conflicts["window"]
    run.verdict = judge(timeline, engine, sandbox, labels, (begin, end), args.grace)
    run.open_tickets = sum(
        1 for r in sandbox.tickets.values() if r["status"] not in ("solved", "closed")
    )
    run.real_seconds = time.monotonic() - began_real
    return run


# --- the table -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def reading(run: Run) -> tuple[float, float, float]:
    """Reads per hour in the window: all GETs, the ticket reads alone (show + export), and
    the issue's budget: changes + escalations + one reconciliation (its pages) a day."""
    hours = run.minutes / 60
    reads = sum(run.window[k] for k in KINDS if k != "update") / hours
    tickets = (run.window["show"] + run.window["export"]) / hours
    pages = math.ceil(run.open_tickets / 1000)
    return reads, tickets, (run.changes + run.verdict.landed) / hours + pages / 24


def rows(run: Run) -> Iterator[tuple[str, str]]:
    v = run.verdict
    hours = run.minutes / 60
    late = v.lateness
    due = len(late) + len(v.missed) + v.overtaken
    yield "time-based escalations due", f"{due}"
    yield "  escalated", f"{len(late)}"
    yield (
        "  lateness p50 / p99 / max (s)",
        (
            f"{percentile(late, 50):.1f} / {percentile(late, 99):.1f} / "
            f"{max(late, default=math.nan):.1f}"
        ),
    )
    yield "  missed (not escalated by the end)", f"{len(v.missed)}"
    yield "  overtaken (a change came first)", f"{v.overtaken}"
    yield "escalations caused by changes", f"{len(v.event_lateness)}"
    ev = v.event_lateness
    yield "  after the change p50 / p99 (s)", f"{percentile(ev, 50):.1f} / {percentile(ev, 99):.1f}"
    yield "escalations the oracle did not expect", f"{v.unexpected}"
    yield "escalations landed in the window", f"{v.landed}"
    for kind in KINDS:
        yield f"API calls/hour: {kind}", f"{run.window[kind] / hours:.0f}"
    yield "429 / 409 answers in the window", f"{run.throttled} / {run.conflicts}"
    reads, ticket_reads, budget = reading(run)
    yield "reads/hour (all GETs)", f"{reads:.0f}"
    yield "  ticket reads/hour (show + export)", f"{ticket_reads:.0f}"
    yield "  budget: changes+escalations+recon/day", f"{budget:.0f}"
    for label in (IDLE_30_DAYS, *(n for n, _ in NEARLY_FORGOTTEN)):
        yield f"ticket {label}", v.fates.get(label, "?")


def report(runs: Sequence[Run], args: argparse.Namespace, real: float) -> None:
    print()
    print(
        f"{args.tickets} open tickets, {args.minutes:g} simulated minutes, "
        f"~1 change/s, speed {args.speed:g}x (simulated s per real s), seed {args.seed}"
    )
    print(
        f"window from {args.start.isoformat()}, warm-up {args.warmup:g} min, grace {args.grace:g} s"
    )
    for run in runs:
        if run.reconcile_sim:
            calls = ", ".join(f"{k} {n}" for k, n in run.reconcile_calls.items() if n)
            print(
                f"{run.name}: reconciliation before the window {run.reconcile_sim:.0f} s simulated "
                f"({run.reconcile_real:.0f} s real), calls: {calls}"
            )
    names = {"new": "new (due-queue)", "sweep": "today (sweep 60s)"}
    table = [list(rows(run)) for run in runs]
    width = max(len(label) for label, _ in table[0])
    print(f"{'':<{width}}  " + "  ".join(f"{names[r.name]:>22}" for r in runs))
    for i, (label, _) in enumerate(table[0]):
        print(f"{label:<{width}}  " + "  ".join(f"{t[i][1]:>22}" for t in table))
    print(
        f"real time: {real:.0f} s ("
        + ", ".join(f"{r.name} {r.real_seconds:.0f} s" for r in runs)
        + ")"
    )
    for run in runs:
        worst = sorted(run.verdict.latest, reverse=True)[:3]
        if worst:
            print(f"{run.name}: latest: " + "; ".join(f"{what} +{s:.1f} s" for s, what in worst))
    for run in runs:
        v = run.verdict
        p99 = percentile(v.lateness, 99)
        reads = reading(run)
        checks = {
            "p99 lateness <= 5 s": bool(v.lateness) and p99 <= 5.0,
            "nothing missed": not v.missed and "not escalated" not in v.fates.get(IDLE_30_DAYS, ""),
            "ticket reads/hour <= budget": reads[1] <= reads[2],
            "all GETs/hour <= budget": reads[0] <= reads[2],
        }
        for what, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}  {run.name}: {what}")


def _instant(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError("give an offset, e.g. 2026-03-11T10:15+01:00")
    return when.astimezone(UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tickets", type=int, default=50_000)
    parser.add_argument("--minutes", type=float, default=30.0, help="simulated window")
    parser.add_argument("--speed", type=float, default=8.0, help="simulated s per real s")
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="simulated minutes for the reconciliation"
    )
    parser.add_argument(
        "--grace", type=float, default=30.0, help="dues in the last s are not judged"
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--start",
        type=_instant,
        default=START,
        help="the window's start, ISO 8601 with offset (default 2026-03-11T10:15+01:00)",
    )
    parser.add_argument("--only", choices=("new", "sweep"), default=None)
    args = parser.parse_args(argv)
    quiet_werkzeug()
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)

    began = time.monotonic()
    matrix: Matrix = load_matrix(MATRIX)
    engine = Engine(matrix, helpdesks={INSTANCE: "zendesk"})
    quiet_from = args.start - timedelta(minutes=args.warmup)
    seeds = backlog(args.tickets, engine, args.start, quiet_from, args.seed)
    plan = change_plan(seeds, args.start, args.minutes, args.seed)
    log.info(
        "%d tickets and %d changes drawn in %.0f s", len(seeds), len(plan), time.monotonic() - began
    )
    runs = []
    for name in ("new", "sweep"):
        if args.only in (None, name):
            runs.append(run_design(name, seeds, plan, engine, args))
            log.info("%s done in %.0f s", name, runs[-1].real_seconds)
    report(runs, args, time.monotonic() - began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
