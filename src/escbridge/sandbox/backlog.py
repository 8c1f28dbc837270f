"""Every installed connector's helpdesk emulator, running and full of tickets.

Each emulator gets the groups the matrix routes to and a backlog a support team would recognise
(:func:`realistic_backlog`): several hundred tickets across priorities, channels, tags, ages,
statuses and levels. :func:`config_yaml` is the escbridge.yaml that reaches them, so
`escbridge check`, `escbridge sync` and `escbridge serve` can be tried against them with no
account and no credentials (`escbridge sandbox`, `escbridge demo`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from escbridge.model import Channel, Priority, Status
from escbridge.sandbox.driver import (
    SandboxDriver,
    SimClock,
    TicketSpec,
    available_drivers,
    group_names,
)

if TYPE_CHECKING:
    from escbridge.matrix import Matrix, Rung

__all__ = [
    "DEFAULT_TICKETS",
    "RunningSandbox",
    "SandboxSet",
    "config_yaml",
    "default_matrix_path",
    "realistic_backlog",
]

DEFAULT_TICKETS = 150  # per helpdesk


def default_matrix_path() -> Path:
    """The matrix `escbridge demo` and `escbridge sandbox` use unless told otherwise: a copy of
    examples/matrix.yaml shipped in the package (a test keeps the two the same)."""
    return Path(str(resources.files("escbridge") / "templates" / "demo-matrix.yaml"))


# --- a backlog a support team would recognise ------------------------------------------------

# (subject, description, tags, weight)
_TOPICS: tuple[tuple[str, str, tuple[str, ...], int], ...] = (
    ("Cannot log in after the password reset", "The reset link works but the login page "
     "still says my password is wrong.", (), 6),
    ("Two-factor code never arrives", "I have not received a single SMS code since Monday.",
     (), 4),
    ("SSO login loops back to the start page", "Our Okta users land on the start page again "
     "after signing in.", ("sso",), 3),
    ("Please send a copy of the March invoice", "Our accounting needs the PDF for March.",
     ("invoice",), 5),
    ("Invoice shows the wrong VAT number", "The VAT number on the last invoice belongs to our "
     "old office.", ("invoice",), 3),
    ("Upgrade to the annual plan", "How do we switch to yearly billing without losing data?",
     ("sales",), 3),
    ("Card declined on renewal", "The renewal failed although the card is valid.", (), 2),
    ("Charged twice this month", "I see two identical charges on my statement.",
     ("billing_dispute",), 2),
    ("Order 48213 has not arrived", "Tracking has shown 'in transit' for nine days.",
     ("shipping",), 5),
    ("Parcel damaged on delivery", "The box was crushed and two items are broken.",
     ("shipping", "returns"), 3),
    ("Change the delivery address", "We moved; please send the next order to the new office.",
     ("shipping",), 2),
    ("Export to CSV drops the last column", "The 'notes' column is missing from every export.",
     ("bug",), 4),
    ("Dashboard is slow since the update", "Loading the dashboard takes 40 seconds now.",
     ("performance",), 3),
    ("Mobile app crashes on start", "The Android app closes right after the splash screen.",
     ("bug", "mobile"), 3),
    ("API returns 502 on /orders", "About one call in ten fails with a 502 since 9:00.",
     ("api_error",), 2),
    ("Records missing after the import", "Half of yesterday's imported contacts are gone.",
     ("data_loss",), 1),
    ("How do I add a second admin?", "We need another administrator for holidays.",
     ("how_to",), 5),
    ("Where do I change notification e-mails?", "Too many notifications go to my inbox.",
     ("how_to",), 4),
    ("Feature request: dark mode", "Our night shift would love a dark theme.",
     ("feedback",), 2),
    ("Thanks for the quick help last week", "Just wanted to say thank you to Sam.",
     ("feedback",), 2),
)  # fmt: skip
_NAMES = (
    "Dana Fischer", "Luca Rossi", "Amira Haddad", "Jonas Berg", "Mei Tanaka", "Olivia Brown",
    "Noah Schmidt", "Sofia Garcia", "Kwame Mensah", "Ines Duarte", "Piotr Nowak", "Aiko Sato",
)  # fmt: skip
_PRIORITIES = ((Priority.LOW, 20), (Priority.NORMAL, 50), (Priority.HIGH, 22), (Priority.URGENT, 8))
_CHANNELS = (
    (Channel.EMAIL, 40),
    (Channel.WEB, 20),
    (Channel.CHAT, 14),
    (Channel.PHONE, 14),
    (Channel.SOCIAL, 6),
    (Channel.API, 6),
)
_LEVELS = ((0, 72), (1, 20), (2, 8))  # rung index on the ladder
_SLA = {
    Priority.URGENT: timedelta(hours=8),
    Priority.HIGH: timedelta(days=1),
    Priority.NORMAL: timedelta(days=3),
    Priority.LOW: timedelta(days=5),
}
# What a day's work looks like from the backlog: most tickets that are not done are on track
# (answered, within their level's time, due later); about one in six is running late in one of
# these ways, and that is what a matrix like the demo's escalates over the day.
_LATE_SHARE = 0.17
_LATE = (("unanswered", 30), ("stuck", 25), ("due_soon", 30), ("vip_waiting", 15))
_HORIZON = timedelta(hours=10)  # "on track" means still on track at the end of the working day
_SPECIALISTS = 0.8  # share of billing disputes and outages already with their team


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, int]]) -> Any:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def _within_level_time(rung: Rung, created: datetime, until: datetime) -> bool:
    """Whether a ticket that reached ``rung`` at ``created`` is still within its level's
    expected response and resolution times at ``until`` (counted as the level counts them)."""
    spent = rung.calendar.elapsed(created, until) if rung.business else until - created
    return all(limit is None or spent < limit for limit in (rung.response, rung.resolution))


def _before(rung: Rung, now: datetime, delta: timedelta) -> datetime:
    """``delta`` of the level's time before ``now``."""
    return rung.calendar.add(now, -delta) if rung.business else now - delta


def realistic_backlog(
    now: datetime,
    matrix: Matrix,
    *,
    instance: str,
    helpdesk: str,
    count: int = DEFAULT_TICKETS,
    seed: int = 7,
) -> list[TicketSpec]:
    """``count`` tickets as a helpdesk holds them at ``now``, oldest change first.

    Ages run from minutes to two weeks; old tickets are mostly solved or closed, so what is
    open is mostly recent; a quarter sit above the first level, in that level's group (most of
    those wait on the customer or a third party); billing disputes and outages are mostly with
    their teams already; some carry VIP, enterprise or billing-dispute tags. Most tickets that
    are not done are on track for the rest of the day by the matrix's own levels (answered; open
    only while within the level's response and resolution times, else waiting on the customer;
    not due yet), as a team that works to its matrix keeps them; about one in six is late
    (unanswered, stuck at its level, due within hours, or a VIP left waiting), at the first
    level — those are what a day of escalation is about.
    Deterministic for a given ``seed``.
    """
    rng = random.Random(f"{seed}:{helpdesk}")
    levels = matrix.levels
    end_of_day = now + _HORIZON
    specs: list[TicketSpec] = []
    for _ in range(count):
        subject, description, topic_tags, _w = rng.choices(_TOPICS, [t[3] for t in _TOPICS])[0]
        bucket = rng.random()
        if bucket < 0.3:
            age = timedelta(minutes=rng.uniform(5, 240))
        elif bucket < 0.6:
            age = timedelta(hours=rng.uniform(4, 24))
        elif bucket < 0.85:
            age = timedelta(days=rng.uniform(1, 4))
        else:
            age = timedelta(days=rng.uniform(4, 14))
        created = now - age
        # Old tickets are mostly done; what is still open is mostly recent.
        done_share = 0.2 if age < timedelta(days=1) else 0.5 if age < timedelta(days=4) else 0.85
        done = rng.random() < done_share
        late = None if done or rng.random() >= _LATE_SHARE else _pick(rng, _LATE)
        tags = list(topic_tags)
        if done and rng.random() < 0.12:
            tags.append("vip" if rng.random() < 0.5 else "enterprise")
        rung = levels[min(_pick(rng, _LEVELS), len(levels) - 1)]
        team = _team_for(matrix, tags)
        if team is not None and (done or rng.random() < _SPECIALISTS):
            rung = team
        priority = _pick(rng, _PRIORITIES)
        first_response: datetime | None = created + timedelta(minutes=rng.uniform(5, 180))
        customer_reply = created if rng.random() < 0.5 else None
        due: datetime | None = None
        if late is not None:  # late where most tickets are: at the first level
            rung = levels[0]
        if late == "unanswered":  # nobody has answered yet
            created = now - timedelta(minutes=rng.uniform(15, 14 * 60))
            first_response = None
        elif late == "stuck":  # answered, but beyond its level's resolution time
            created = _before(rung, now, (rung.resolution or _HORIZON) + age / 4)
        elif late == "due_soon":  # its due date falls within the working day
            priority = max(priority, Priority.NORMAL)
            due = now + timedelta(minutes=rng.uniform(90, 540))
            created = min(created, due - _SLA[priority])
        elif late == "vip_waiting":  # a VIP answered once, then left idle
            tags.append("vip")
            priority = max(priority, Priority.HIGH)
            customer_reply = None
        updated = created + (now - created) * rng.uniform(0.2, 1.0) ** 2
        if first_response is not None:
            first_response = min(first_response, updated)
        if done:
            status = Status.SOLVED if rng.random() < 0.65 else Status.CLOSED
        elif late == "unanswered":
            status = Status.NEW if now - created < timedelta(hours=1) else Status.OPEN
        elif late == "stuck" or _within_level_time(rung, created, end_of_day):
            status = _pick(rng, ((Status.OPEN, 80), (Status.PENDING, 20)))
        else:  # answered and on track: the customer or a third party has the next move
            status = _pick(rng, ((Status.PENDING, 75), (Status.ON_HOLD, 25)))
        if rung.min_priority is not None and priority < rung.min_priority:
            priority = rung.min_priority
        if due is None:
            due = created + _SLA[priority]
            if not done and due < end_of_day:  # on track: the due date was agreed anew
                due = end_of_day + timedelta(hours=rng.uniform(2, 72))
        specs.append(
            TicketSpec(
                subject=subject,
                description=description,
                priority=priority,
                channel=_pick(rng, _CHANNELS),
                status=status,
                tags=tuple(dict.fromkeys(tags)),
                group=rung.group_for(instance, helpdesk),
                level=None if rung is levels[0] else rung.id,
                created_at=created,
                updated_at=updated,
                first_response_at=first_response,
                last_customer_reply_at=customer_reply,
                due_at=due,
                requester=rng.choice(_NAMES),
            )
        )
    specs.sort(key=lambda s: s.updated_at or now)
    return specs


def _team_for(matrix: Matrix, tags: Sequence[str]) -> Rung | None:
    """The functional team a topic belongs with, if the matrix has it."""
    if "billing_dispute" in tags:
        return matrix.teams.get("billing")
    if {"outage", "data_loss", "api_error"} & set(tags):
        return matrix.teams.get("technical")
    return None


# --- a set of running emulators ----------------------------------------------------------------


@dataclass
class RunningSandbox:
    instance: str
    driver: SandboxDriver
    seeded: int = 0


@dataclass
class SandboxSet:
    """The emulators of every installed connector, started and seeded; stopped on exit."""

    matrix: Matrix
    clock: SimClock = field(default_factory=SimClock)
    tickets: int = DEFAULT_TICKETS
    only: Sequence[str] | None = None
    port: int = 0
    seed: int = 7
    running: list[RunningSandbox] = field(default_factory=list)
    #: where the emulators post their webhooks, once connected (:meth:`connect_webhooks`)
    receiver_url: str = ""

    def __enter__(self) -> SandboxSet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        drivers = available_drivers(only=self.only)
        now = self.clock.now()
        for offset, driver in enumerate(drivers):
            instance = driver.helpdesk
            groups = group_names(self.matrix.rungs, instance, driver.helpdesk)
            driver.start(self.clock, groups, port=self.port + offset if self.port else 0)
            running = RunningSandbox(instance, driver)
            self.running.append(running)
            backlog = realistic_backlog(
                now,
                self.matrix,
                instance=instance,
                helpdesk=driver.helpdesk,
                count=self.tickets,
                seed=self.seed,
            )
            for spec in backlog:
                driver.create_ticket(spec, notify=False)
            running.seeded = len(backlog)

    def stop(self) -> None:
        while self.running:
            self.running.pop().driver.stop()

    def instances(self) -> dict[str, dict[str, Any]]:
        """escbridge.yaml ``instances:`` for the running emulators."""
        return {r.instance: r.driver.instance_settings() for r in self.running}

    def connect_webhooks(self, receiver_url: str) -> None:
        """Make every emulator post its webhooks to the receiver at ``receiver_url``.

        The receiver must already answer: a helpdesk that checks the URL first (Zoho Desk's
        validation GET) refuses it otherwise, raised as WebhookRegistrationError naming the
        instance and ``receiver_url``.
        """
        from escbridge.errors import WebhookRegistrationError

        base = receiver_url.rstrip("/")
        for running in self.running:
            try:
                running.driver.connect_webhooks(running.driver.webhook_url(base, running.instance))
            except ValueError as error:
                raise WebhookRegistrationError(running.instance, base, str(error)) from None
        self.receiver_url = base


def config_yaml(instances: dict[str, dict[str, Any]], matrix: Path, store: str) -> str:
    """An escbridge.yaml for the emulators (their credentials are the sandboxes' own)."""
    body = yaml.safe_dump(
        {"store": store, "matrix": str(matrix), "instances": instances},
        sort_keys=False,
        default_flow_style=False,
    )
    return (
        "# escbridge.yaml for the built-in sandbox helpdesks (`escbridge sandbox`).\n"
        "# The credentials below are the emulators' own and open nothing else.\n" + body
    )
