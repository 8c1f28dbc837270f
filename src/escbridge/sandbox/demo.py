"""`escbridge demo`: one simulated support day, end to end, on this machine, in under a minute.

What runs: the helpdesk emulator of every installed connector (seeded with a realistic
backlog), the webhook receiver on 127.0.0.1, a worker, and `escbridge sync` — the same code as
in production, on an embedded SQLite store, with no credentials. What is simulated is the
clock: the day is a recent business day of the matrix's calendar, every emulator, connector and
the processor read one :class:`~escbridge.sandbox.driver.SimClock`, and the script jumps it
from one moment to the next, so "idle for two hours" takes no time at all.

The script: a customer asks for a manager, a VIP ticket goes idle, a billing dispute arrives, a
customer writes back furious, a legal threat, an agent flags a policy exception, an outage report,
an unanswered chat and an SLA about to breach — through webhooks as they happen, and, for the
time-based rules, at their deadlines: as the clock moves on, the worker acts on each deadline in
the store's due-queue at its instant (``via deadline`` in the table). Sync runs over the day
(the first of them reconciles every open ticket, the backlog included), and every hour and a
half or so the teams resolve the backlog tickets escalated to them, as teams do. Each story is
checked: its first escalation must come from the rule its title names, to the destination the
script expects; anything else is a failed demo (exit 1, named in the output). At the end it
prints the day in figures (tickets escalated, how many reached the top level, how many more than
once), what was escalated, where and why, and where to look next; then it stops everything it
started.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time as _time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from escbridge.errors import DemoError
from escbridge.model import Channel, Priority, Status
from escbridge.sandbox.backlog import SandboxSet, config_yaml, default_matrix_path
from escbridge.sandbox.demo_notify import DemoNotifications, demo_matrix, tally
from escbridge.sandbox.driver import SandboxDriver, SimClock, TicketSpec
from escbridge.sandbox.emulator import ServerThread, quiet_werkzeug
from escbridge.sandbox.sinks import HttpSink, SinkUnavailable, SmtpSink
from escbridge.store import DUE_KIND
from escbridge.sync import CallCounter, Syncer, SyncOptions, SyncReport, build_sync_processor
from escbridge.wording import plural

if TYPE_CHECKING:
    from escbridge.calendar import BusinessCalendar
    from escbridge.matrix import Matrix
    from escbridge.processing import Processor
    from escbridge.store import StoredEscalation

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_STORE",
    "DEMO_TICKETS",
    "DayFigures",
    "DemoError",
    "DemoOptions",
    "DemoResult",
    "day_figures",
    "format_result",
    "run_demo_day",
    "simulated_day",
]

DEFAULT_STORE = "escbridge-demo.db"
DEMO_TICKETS = 100  # per helpdesk: a few hundred in all, and the demo stays well under a minute


@dataclass(frozen=True)
class DemoOptions:
    store: Path = Path(DEFAULT_STORE)
    matrix: Path | None = None
    tickets: int = DEMO_TICKETS  # backlog per helpdesk
    keep: bool = False  # keep the working directory (escbridge.yaml for the sandboxes)
    day: date | None = None  # the simulated day (default: a recent business day)


@dataclass(frozen=True)
class Story:
    """One scripted ticket: where it lives, what happens, and what the matrix should do first."""

    key: str
    helpdesk: str
    title: str
    expect: str  # the first destination it must reach (level or team id)
    rule: str  # the rule the title names: the one that must move it first

    @property
    def phrase(self) -> str:
        """The title inside a sentence ("an SLA about to breach", acronyms kept)."""
        return self.title[:1].lower() + self.title[1:]


@dataclass(frozen=True)
class DemoRow:
    """One escalation of a scripted ticket."""

    story: Story
    ticket_id: str
    at: datetime
    destination: str
    destination_name: str
    group: str | None
    rule_id: str | None
    via: str  # webhook | deadline (the due-queue) | sync
    why: str


@dataclass(frozen=True)
class SyncRun:
    at: datetime
    report: SyncReport


@dataclass
class DemoResult:
    day: date
    timezone: str
    store_url: str
    store_path: Path
    sandboxes: dict[str, str] = field(default_factory=dict)  # instance -> URL
    receiver_url: str = ""
    seeded: int = 0
    stories: dict[str, tuple[Story, str]] = field(default_factory=dict)  # key -> (story, id)
    rows: list[DemoRow] = field(default_factory=list)
    syncs: list[SyncRun] = field(default_factory=list)
    escalations: list[StoredEscalation] = field(default_factory=list)
    job_kinds: dict[int, str] = field(default_factory=dict)  # inbox kind of escalating jobs
    missing: list[str] = field(default_factory=list)  # stories that did not escalate as expected
    ticket_urls: dict[str, str] = field(default_factory=dict)  # story key -> URL
    access: dict[str, str] = field(default_factory=dict)  # instance -> how to read a ticket
    workdir: Path | None = None  # kept with --keep: escbridge.yaml for the sandboxes
    duration: float = 0.0
    notifications: DemoNotifications | None = None  # what the local sinks received

    @property
    def ok(self) -> bool:
        return not self.missing and not (self.notifications and self.notifications.problems)


# --- the simulated day ---------------------------------------------------------------------------


def simulated_day(calendar: BusinessCalendar, today: date) -> date:
    """The latest day before ``today`` that is a business day, as is the day before it
    (the backlog's "yesterday" then has business hours too)."""

    def open_on(day: date) -> bool:
        return calendar.is_open(datetime.combine(day, time(12, 0), calendar.tz))

    day = today - timedelta(days=1)
    for _ in range(60):
        if open_on(day) and open_on(day - timedelta(days=1)):
            return day
        day -= timedelta(days=1)
    raise ValueError(f"calendar {calendar.name} has no two business days in a row in 60 days")


STORIES = {
    s.key: s
    for s in (
        Story("manager", "zendesk", "A customer asks for a manager", "l2", "supervisor-requested"),
        Story("vip", "zendesk", "A VIP ticket goes idle", "l2", "vip-idle"),
        Story(
            "exception", "zendesk", "An agent flags a policy exception", "l2", "policy-exception"
        ),
        Story("chat", "freshdesk", "A chat nobody answers", "l2", "first-response-late"),
        Story("sla", "freshdesk", "An SLA about to breach", "l2", "sla-about-to-breach"),
        Story("billing", "freshdesk", "A billing dispute arrives", "billing", "billing-dispute"),
        Story("hostile", "zendesk", "A furious customer writes back", "l2", "hostile-conversation"),
        Story("legal", "zohodesk", "A customer threatens legal action", "l3", "legal-threat"),
        Story("outage", "zohodesk", "An outage report", "technical", "technical-specialist"),
    )
}


class _Day:
    """The running demo: the emulators, the receiver, a worker, sync, one clock."""

    def __init__(
        self,
        matrix: Matrix,
        sandboxes: SandboxSet,
        processor: Processor,
        counter: CallCounter,
        day: date,
        result: DemoResult,
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.say = say
        self.matrix = matrix
        self.sandboxes = sandboxes
        self.processor = processor
        self.counter = counter
        self.day = day
        self.tz = matrix.default_calendar.tz
        self.result = result
        self.clock = sandboxes.clock
        self._now = ""
        self._worked: set[tuple[str, str]] = set()  # backlog tickets the teams have resolved
        self.drivers: dict[str, SandboxDriver] = {r.instance: r.driver for r in sandboxes.running}

    # -- the script's verbs ------------------------------------------------------------------

    def at(self, hhmm: str) -> datetime:
        hour, minute = (int(p) for p in hhmm.split(":"))
        when = datetime.combine(self.day, time(hour, minute), self.tz)
        self.deadlines(until=when)
        self.clock.advance_to(when)
        self._now = hhmm
        return when

    def local(self, hhmm: str) -> datetime:
        hour, minute = (int(p) for p in hhmm.split(":"))
        return datetime.combine(self.day, time(hour, minute), self.tz)

    def group(self, helpdesk: str, rung_id: str | None = None) -> str | None:
        rung = self.matrix.rung(rung_id) if rung_id else self.matrix.levels[0]
        return rung.group_for(helpdesk, helpdesk) if rung is not None else None

    def opens(self, key: str, spec: TicketSpec) -> None:
        """The customer of story ``key`` opens a ticket (the helpdesk fires its webhook)."""
        story = STORIES[key]
        driver = self.drivers.get(story.helpdesk)
        if driver is None:
            return
        if spec.group is None:
            spec = replace(spec, group=self.group(story.helpdesk))
        self.say(f"{self._now}  {story.helpdesk}: {story.phrase}")
        ticket_id = driver.create_ticket(spec)
        self.result.stories[key] = (story, ticket_id)
        self.result.ticket_urls[key] = driver.ticket_url(ticket_id)
        self.settle()

    def agent_replies(self, key: str, text: str) -> None:
        driver, ticket_id = self._ticket(key)
        if driver is not None:
            driver.agent_replies(ticket_id, text)
            self.settle()

    def customer_writes(self, key: str, text: str) -> None:
        driver, ticket_id = self._ticket(key)
        if driver is not None:
            driver.customer_writes(ticket_id, text)
            self.settle()

    def agent_tags(self, key: str, tags: Sequence[str]) -> None:
        driver, ticket_id = self._ticket(key)
        if driver is not None:
            driver.agent_adds_tags(ticket_id, tags)
            self.settle()

    def agent_solves(self, key: str) -> None:
        driver, ticket_id = self._ticket(key)
        if driver is not None:
            self.say(f"{self._now}  an agent solves: {STORIES[key].phrase}")
            driver.agent_solves(ticket_id)
            self.settle()

    def teams_work(self) -> None:
        """The groups escbridge escalated backlog tickets to resolve them, as a team does
        between its checks of the queue (the scripted tickets follow their own script).

        Without this, nobody would ever answer an escalated ticket and the day's limits would
        push each one up the whole ladder, which no support manager would recognise.
        """
        scripted = {(story.helpdesk, tid) for story, tid in self.result.stories.values()}
        waiting = [
            key
            for e in self.processor.store.escalations()
            if (key := (e.instance, e.ticket_id)) not in scripted and key not in self._worked
        ]
        tickets = list(dict.fromkeys(waiting))
        if not tickets:
            return
        self.say(f"{self._now}  the teams resolve {plural(len(tickets), 'escalated ticket')}")
        for instance, ticket_id in tickets:
            self._worked.add((instance, ticket_id))
            driver = self.drivers.get(instance)
            if driver is not None:
                driver.agent_solves(ticket_id)
        self.settle()

    def sync(self) -> None:
        self.say(f"{self._now}  escbridge sync")
        report = Syncer(self.processor, SyncOptions(), api_calls=self.counter).run()
        self.result.syncs.append(SyncRun(self.clock.now(), report))
        self.settle()

    def _ticket(self, key: str) -> tuple[SandboxDriver | None, str]:
        found = self.result.stories.get(key)
        if found is None:
            return None, ""
        story, ticket_id = found
        return self.drivers.get(story.helpdesk), ticket_id

    def deadlines(self, until: datetime) -> None:
        """Let time run to ``until`` as a worker lives it: at each deadline in the store's
        due-queue on the way (a time limit running out), the worker acts on it then."""
        store = self.processor.store
        for _ in range(1000):  # bounded: each round acts on at least one deadline
            due = store.earliest_due()
            if due is None or due > until:
                return
            if due > self.clock.now():
                self.clock.advance_to(due)
            self._now = due.astimezone(self.tz).strftime("%H:%M")
            self.settle()

    def settle(self) -> None:
        """Deliver every webhook sent so far and let the worker process the inbox (due
        tickets included)."""
        for _ in range(20):
            for driver in self.drivers.values():
                driver.flush(10.0)
            self.processor.store.promote_due(self.processor.clock(), limit=100)
            claimed = 0
            while True:
                report = self.processor.run_once(limit=100)
                claimed += report.claimed
                if not report.claimed:
                    break
            if not claimed:
                self.notify()
                return

    def notify(self) -> None:
        """Deliver the notifications due now, as the worker loop does after the inbox."""
        for _ in range(100):  # bounded: each pass sends up to 20 messages per target
            report = self.processor.notify_once()
            if report is None or not report.messages:
                return

    # -- the script ------------------------------------------------------------------------------

    def play(self) -> None:
        self.at("07:55")
        self.sync()  # the first run of the day: the backlog that built up overnight
        self.at("08:00")
        self.opens(
            "exception",
            TicketSpec(
                "Refund requested 45 days after purchase",
                "The course did not suit me; can I still get my money back?",
            ),
        )
        self.at("08:05")
        self.opens(
            "chat",
            TicketSpec(
                "Cannot add a second payment method",
                "The 'add card' button does nothing.",
                channel=Channel.CHAT,
            ),
        )
        self.at("08:10")
        self.opens(
            "sla",
            TicketSpec(
                "Warehouse scanners offline",
                "None of our scanners can sync since this morning.",
                priority=Priority.URGENT,
                channel=Channel.PHONE,
                first_response_at=self.local("08:10"),
                due_at=self.local("14:30"),
            ),
        )
        self.at("08:15")
        self.agent_replies("exception", "Let me check that with the team.")
        self.at("08:20")
        self.opens(
            "manager",
            TicketSpec(
                "Still broken after three calls",
                "I have explained this three times now. I want to speak to a manager today.",
            ),
        )
        self.at("08:35")
        self.agent_replies("manager", "I am sorry about this; I am looking into it myself.")
        self.at("08:45")
        self.opens(
            "vip",
            TicketSpec(
                "Checkout fails for our whole team",
                "Nobody at Globex can complete a purchase.",
                priority=Priority.HIGH,
                tags=("vip",),
            ),
        )
        self.at("09:00")
        self.sync()
        self.at("09:05")
        self.teams_work()  # the teams work what escbridge escalated: every 90 minutes or so
        self.at("09:10")
        self.opens(
            "billing",
            TicketSpec(
                "Double charged for the March invoice",
                "We were charged twice for invoice 2026-031. Please refund one payment.",
                tags=("billing_dispute",),
            ),
        )
        self.at("09:30")
        self.opens(
            "hostile",
            TicketSpec("Order 4711 never arrived", "It was due last Friday. Where is it?"),
        )
        self.at("09:35")
        self.agent_replies("hostile", "The carrier says it is on its way; tracking to follow.")
        self.at("09:40")
        self.customer_writes(
            "hostile", "This is ridiculous. Third lost order this month - completely unacceptable."
        )
        self.at("10:05")
        self.opens(
            "legal",
            TicketSpec(
                "Cancel my account",
                "If this is not fixed today, my lawyer will be in touch.",
            ),
        )
        self.at("10:30")
        self.agent_tags("exception", ["policy_exception"])
        self.at("10:50")
        self.sync()  # the VIP ticket was escalated at 10:45, idle for two hours
        self.at("11:00")
        self.agent_replies("vip", "Senior support here: we are on it, a fix is being tested.")
        self.teams_work()
        self.at("11:15")
        self.opens(
            "outage",
            TicketSpec(
                "API returns 502 for every order",
                "Since 11:00 every call to /orders fails.",
                status=Status.NEW,
                tags=("outage",),
                channel=Channel.WEB,
            ),
        )
        self.at("12:15")
        self.agent_replies("chat", "Team lead here - sorry for the wait. Let us sort out the card.")
        self.at("12:30")
        self.sync()  # the chat waited four hours for a first answer (escalated at 12:05)
        self.teams_work()
        self.at("13:40")
        self.sync()  # the scanners' SLA runs out at 14:30
        self.at("14:00")
        self.teams_work()
        self.at("15:00")
        self.agent_solves("vip")  # resolutions, for `escbridge report`
        self.at("15:30")
        self.agent_solves("manager")
        self.teams_work()
        self.at("16:00")
        self.sync()  # the afternoon: whatever else the day's limits caught
        self.at("16:30")
        self.agent_solves("exception")
        self.at("17:00")
        self.agent_solves("billing")
        self.teams_work()


# --- running it ----------------------------------------------------------------------------------


def run_demo_day(
    options: DemoOptions,
    *,
    on_ready: Callable[[DemoResult], None] | None = None,
    say: Callable[[str], None] = lambda _line: None,
) -> DemoResult:
    """Run the demo; everything it starts is stopped before this returns."""
    from escbridge.config import parse_config
    from escbridge.matrix import load_matrix
    from escbridge.store import upgrade

    started = _time.monotonic()
    matrix_path = (options.matrix or default_matrix_path()).resolve()
    matrix = load_matrix(matrix_path)
    calendar = matrix.default_calendar
    today = datetime.now(calendar.tz).date()
    day = options.day or simulated_day(calendar, today)
    store_path = options.store.resolve()
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{store_path}{suffix}").unlink(missing_ok=True)
    store_url = f"sqlite:///{store_path}"
    upgrade(store_url)
    result = DemoResult(day, str(calendar.tz), store_url, store_path)
    clock = SimClock(datetime.combine(day, time(7, 50), calendar.tz))
    restore_logging = quiet_werkzeug(("werkzeug", "escbridge_webhooks"))
    workdir = Path(tempfile.mkdtemp(prefix="escbridge-demo-"))
    counter = CallCounter()
    try:
        with contextlib.ExitStack() as stack:
            sandboxes = stack.enter_context(
                SandboxSet(matrix, clock=clock, tickets=options.tickets)
            )
            result.seeded = sum(r.seeded for r in sandboxes.running)
            http, smtp = _start_sinks(stack)
            run_text, result.notifications = demo_matrix(matrix_path, http, smtp)
            run_matrix = workdir / "matrix.yaml"  # the targets pointed at the sinks
            run_matrix.write_text(run_text, encoding="utf-8")
            config_path = workdir / "escbridge.yaml"
            text = config_yaml(sandboxes.instances(), run_matrix, store_url)
            config_path.write_text(text, encoding="utf-8")
            config = parse_config(text, str(config_path), workdir)
            processor = build_sync_processor(
                config,
                counter,
                overrides={"utcnow": clock.now, "wallclock": clock.wall, "clock": clock.monotonic},
            )
            processor.clock = clock.now
            stack.callback(processor.store.close)
            stack.callback(counter.close)
            receiver = stack.enter_context(_receiver(config, processor))
            result.receiver_url = receiver.url
            for r in sandboxes.running:
                result.sandboxes[r.instance] = r.driver.url
                result.access[r.instance] = r.driver.access_hint()
            sandboxes.connect_webhooks(receiver.url)
            the_day = _Day(matrix, sandboxes, processor, counter, day, result, say)
            the_day.play()
            the_day.notify()
            tally(result.notifications, processor.store, http, smtp)
            result.escalations = processor.store.escalations()
            result.job_kinds = {
                e.job_id: job.kind
                for e in result.escalations
                if e.job_id is not None and (job := processor.store.job(e.job_id)) is not None
            }
            _collect(result, matrix)
            result.duration = _time.monotonic() - started
            if on_ready is not None:
                on_ready(result)
    finally:
        restore_logging()
        if options.keep:
            result.workdir = workdir
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result.duration = _time.monotonic() - started
    return result


def _start_sinks(stack: contextlib.ExitStack) -> tuple[HttpSink, SmtpSink | None]:
    """The local stand-ins for Slack, Teams, webhooks and mail (no SMTP sink without
    aiosmtpd: the demo then leaves its e-mail targets out and says so)."""
    http = stack.enter_context(HttpSink())
    try:
        return http, stack.enter_context(SmtpSink())
    except SinkUnavailable:
        return http, None


@contextlib.contextmanager
def _receiver(config: Any, processor: Processor) -> Iterator[ServerThread]:
    """The webhook receiver (escbridge_webhooks.create_app) on a free loopback port."""
    try:
        from escbridge_webhooks import create_app
    except ImportError as error:
        from escbridge.wording import pip_install

        raise DemoError(
            "the webhook receiver is not installed: "
            f"{pip_install('escbridge-webhooks', checkout=False)} "
            f"(from a checkout, `make demo` installs everything) ({error})"
        ) from None
    app = create_app(config, processor=processor)
    server = ServerThread(app).start()
    try:
        yield server
    finally:
        server.stop()


def _collect(result: DemoResult, matrix: Matrix) -> None:
    by_ticket = {(story.helpdesk, tid): story for story, tid in result.stories.values()}
    for e in result.escalations:
        story = by_ticket.get((e.instance, e.ticket_id))
        if story is None:
            continue
        rung = matrix.rung(e.to_level)
        result.rows.append(
            DemoRow(
                story=story,
                ticket_id=e.ticket_id,
                at=e.decided_at,
                destination=e.to_level,
                destination_name=rung.name if rung is not None else e.to_level,
                group=e.to_group,
                rule_id=e.rule_id,
                via=_via(e.job_id, result.job_kinds),
                why="; ".join(e.reasons) if e.reasons else e.summary,
            )
        )
    first: dict[str, DemoRow] = {}
    for row in result.rows:
        first.setdefault(row.story.key, row)
    for key, (story, _tid) in result.stories.items():
        got = first.get(key)
        if got is None:
            result.missing.append(
                f"{story.title} ({key}): expected {story.expect} by rule {story.rule}, "
                "got no escalation"
            )
        elif (got.destination, got.rule_id) != (story.expect, story.rule):
            result.missing.append(
                f"{story.title} ({key}): expected {story.expect} by rule {story.rule}, "
                f"got {got.destination} by rule {got.rule_id or 'none'}"
            )


@dataclass(frozen=True)
class DayFigures:
    """The day as a support manager reads it: how many tickets escalated, how far, how often."""

    tickets: int  # the backlog and the scripted tickets
    escalated: int  # tickets escalated at least once
    top_level: str  # the ladder's top level, e.g. "l3 Support manager"
    reached_top: int  # tickets escalated to the top level
    repeated: int  # tickets escalated more than once

    @property
    def escalated_share(self) -> float:
        return self.escalated / self.tickets if self.tickets else 0.0

    def sentence(self) -> str:
        return (
            f"{self.escalated} of {plural(self.tickets, 'ticket')} escalated "
            f"({self.escalated_share:.0%}); {self.reached_top} reached the top level "
            f"({self.top_level}); {self.repeated} escalated more than once"
        )


def day_figures(result: DemoResult, matrix: Matrix) -> DayFigures:
    """Count the day's escalations per ticket (from the store's escalation history)."""
    per_ticket = Counter((e.instance, e.ticket_id) for e in result.escalations)
    top = matrix.levels[-1]
    reached = {(e.instance, e.ticket_id) for e in result.escalations if e.to_level == top.id}
    return DayFigures(
        tickets=result.seeded + len(result.stories),
        escalated=len(per_ticket),
        top_level=f"{top.id} {top.name}",
        reached_top=len(reached),
        repeated=sum(1 for n in per_ticket.values() if n > 1),
    )


def _via(job_id: int | None, kinds: Mapping[int, str]) -> str:
    if job_id is None:
        return "sync"
    return "deadline" if kinds.get(job_id) == DUE_KIND else "webhook"


# --- printing ------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return (indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _short(text: str, width: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_result(
    result: DemoResult, matrix: Matrix, *, running: bool = False, program: str = "escbridge"
) -> str:
    """The demo's printout; ``program`` is how the reader runs escbridge again (e.g.
    ``.venv/bin/escbridge`` when the venv is not active)."""
    tz = matrix.default_calendar.tz

    def hhmm(at: datetime) -> str:
        return at.astimezone(tz).strftime("%H:%M")

    out: list[str] = []
    day = result.day.strftime("%A %d %B %Y")
    out.append(f"escbridge demo — a simulated support day: {day}, times {result.timezone}")
    helpdesks = ", ".join(result.sandboxes) or "none"
    out.append(
        f"{plural(len(result.sandboxes), 'sandbox helpdesk')} ({helpdesks}) seeded with "
        f"{plural(result.seeded, 'ticket')}; receiver {result.receiver_url}; "
        f"store {result.store_path}"
    )
    out.append(f"The day: {day_figures(result, matrix).sentence()}.")
    out.append("")
    out.append("What escbridge escalated, where and why (the scripted tickets):")
    rows = []
    whys = []
    for row in result.rows:
        rows.append(
            [
                hhmm(row.at),
                f"{row.story.helpdesk} #{row.ticket_id}",
                row.story.title,
                f"{row.destination} {row.destination_name}",
                row.group or "",
                row.rule_id or "",
                row.via,
            ]
        )
        whys.append(row.why)
    lines = _table(("time", "ticket", "story", "escalated to", "group", "rule", "via"), rows)
    out.extend(lines[:2])
    for line, why in zip(lines[2:], whys, strict=True):
        out.append(line)
        out.append(f"        why: {_short(why)}")
    out.append("")

    out.append("Sync runs over the day (changes since the last run; the first also reconciles):")
    sync_rows = []
    for run in result.syncs:
        totals = run.report.totals()
        escalated = totals["escalated"]
        shown = ", ".join(f"{n} to {dest}" for dest, n in escalated.items()) or "—"
        sync_rows.append(
            [
                hhmm(run.at),
                str(totals["scanned"]),
                str(sum(escalated.values())),
                shown,
                str(totals["api_calls"]),
                f"{run.report.duration:.1f}s",
            ]
        )
    out.extend(_table(("time", "scanned", "escalated", "to", "API calls", "took"), sync_rows))
    out.append("")

    by_rule: Counter[str] = Counter(e.rule_id or "?" for e in result.escalations)
    by_place: Counter[tuple[str, str]] = Counter(
        (e.instance, e.to_level) for e in result.escalations
    )
    paths = Counter(_via(e.job_id, result.job_kinds) for e in result.escalations)
    out.append(
        f"All {plural(len(result.escalations), 'escalation')} of the day ({paths['webhook']} "
        f"from webhooks, {paths['deadline']} at their deadline, {paths['sync']} from sync):"
    )
    destinations = [r.id for r in matrix.rungs]
    place_rows = [
        [instance, *(str(by_place.get((instance, d), 0)) for d in destinations)]
        for instance in result.sandboxes
    ]
    out.extend(_table(("helpdesk", *destinations), place_rows))
    out.append("  by rule: " + ", ".join(f"{rule} {n}" for rule, n in by_rule.most_common()))
    out.append("")
    if result.notifications is not None and result.notifications.kinds:
        out.extend(result.notifications.lines())
        out.append("")

    out.append("Where to look next:")
    report_cmd = f"{program} report --store {result.store_url} --matrix {matrix.source}"
    out.append(f"  {report_cmd}")
    if result.stories:  # everything escbridge knows of one ticket, with times
        story, ticket_id = next(iter(result.stories.values()))
        out.append(
            f"  {program} history --store {result.store_url} {story.helpdesk} {ticket_id}"
            f"   # {story.title}"
        )
    browse = "" if running else " (run with --keep-running to browse them)"
    out.append(f"  the scripted tickets in the sandboxes{browse}:")
    for key, (story, ticket_id) in result.stories.items():
        out.append(f"    {story.helpdesk:<10} #{ticket_id:<18} {result.ticket_urls[key]}")
    for instance, hint in result.access.items():
        out.append(f"    {instance}: {hint}")
    if result.missing:
        out.append("")
        out.append("PROBLEM: the matrix did not do what the script expects:")
        out.extend(f"  {m}" for m in result.missing)
    if result.notifications is not None and result.notifications.problems:
        out.append("")
        out.append("PROBLEM: the notifications did not arrive once each:")
        out.extend(f"  {m}" for m in result.notifications.problems)
    if result.workdir is not None:
        out.append(
            f"  escbridge.yaml for the sandboxes (kept): {result.workdir / 'escbridge.yaml'}"
        )
    out.append("")
    left = "the sandboxes are still up" if running else "nothing is left running"
    out.append(f"Done in {result.duration:.1f}s; {left}.")
    return "\n".join(out) + "\n"
