"""`escbridge sandbox`: every installed connector's helpdesk emulator, running and full of tickets.

Each emulator gets the groups the matrix routes to and a backlog a support team would recognise
(:func:`realistic_backlog`): several hundred tickets across priorities, channels, tags, ages,
statuses and levels. The command prints the escbridge.yaml that reaches them (and writes it with
``--write-config``), so `escbridge check`, `escbridge sync` and `escbridge serve` can be tried
against them with no account and no credentials. It runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from escbridge.model import Channel, Priority, Status
from escbridge.sandbox_drivers import (
    SandboxDriver,
    SimClock,
    TicketSpec,
    available_drivers,
    group_names,
)

if TYPE_CHECKING:
    from escbridge.matrix import Matrix

__all__ = [
    "SandboxSet",
    "configure_sandbox_parser",
    "default_matrix_path",
    "realistic_backlog",
    "run_sandbox",
]

EXIT_OK, EXIT_PROBLEM, EXIT_INVALID = 0, 1, 2
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


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, int]]) -> Any:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


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
    open is mostly recent; most open ones have had a first response; each has a due date from
    its priority's SLA; a quarter already sit above the first level, in that level's group;
    some carry VIP, enterprise, billing-dispute or outage tags.
    Deterministic for a given ``seed``.
    """
    rng = random.Random(f"{seed}:{helpdesk}")
    levels = matrix.levels
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
        updated = created + (now - created) * rng.uniform(0.2, 1.0) ** 2
        # Old tickets are mostly done; what is still open is mostly recent.
        done_share = 0.2 if age < timedelta(days=1) else 0.5 if age < timedelta(days=4) else 0.85
        if rng.random() < done_share:
            status = Status.SOLVED if rng.random() < 0.65 else Status.CLOSED
        elif age < timedelta(hours=1):
            status = Status.NEW
        else:
            status = _pick(rng, ((Status.OPEN, 60), (Status.PENDING, 30), (Status.ON_HOLD, 10)))
        first_response = None
        if status is not Status.NEW and rng.random() < 0.85:
            first_response = min(updated, created + timedelta(minutes=rng.uniform(5, 180)))
        tags = list(topic_tags)
        if rng.random() < 0.06:
            tags.append("vip")
        elif rng.random() < 0.06:
            tags.append("enterprise")
        rung = levels[min(_pick(rng, _LEVELS), len(levels) - 1)]
        if "billing_dispute" in tags and "billing" in matrix.teams and rng.random() < 0.5:
            rung = matrix.teams["billing"]
        priority = _pick(rng, _PRIORITIES)
        if rung.min_priority is not None and priority < rung.min_priority:
            priority = rung.min_priority
        due = created + _SLA[priority]
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
                last_customer_reply_at=created if rng.random() < 0.5 else None,
                due_at=due,
                requester=rng.choice(_NAMES),
            )
        )
    specs.sort(key=lambda s: s.updated_at or now)
    return specs


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


# --- `escbridge sandbox` -------------------------------------------------------------------------


def configure_sandbox_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Start the helpdesk emulator of every installed connector on 127.0.0.1, seeded with "
        "realistic tickets, and print the escbridge.yaml that reaches them. Runs until Ctrl-C."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="first port; the emulators take consecutive ports (default: any free ports)",
    )
    parser.add_argument(
        "--tickets",
        type=int,
        default=DEFAULT_TICKETS,
        metavar="N",
        help=f"tickets seeded in each helpdesk (default {DEFAULT_TICKETS})",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="CONNECTOR",
        help="only this connector's emulator (repeatable; default: every installed one)",
    )
    parser.add_argument(
        "--matrix",
        help="matrix whose groups the emulators get (default: the demo matrix)",
    )
    parser.add_argument(
        "--write-config",
        metavar="FILE",
        help="write the escbridge.yaml for the emulators to FILE",
    )
    parser.add_argument(
        "--store",
        default="sqlite:///escbridge-sandbox.db",
        help="store URL written into that escbridge.yaml (default sqlite:///escbridge-sandbox.db)",
    )
    parser.add_argument(
        "--webhook-url",
        metavar="URL",
        help="the receiver's base URL (e.g. http://127.0.0.1:8000): the emulators post their "
        "webhooks to URL/webhooks/<instance>",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated backlog")


def run_sandbox(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
    ready: Callable[[SandboxSet], None] | None = None,
) -> int:
    """`escbridge sandbox`: serve until SIGINT/SIGTERM (or ``stop``); 2 on invalid input."""
    from escbridge.errors import InvalidInputError
    from escbridge.matrix import load_matrix

    out = out or sys.stdout
    if args.tickets < 0 or not 0 <= args.port <= 65535:
        print("escbridge sandbox: --tickets and --port must not be negative", file=sys.stderr)
        return EXIT_INVALID
    matrix_path = Path(args.matrix) if args.matrix else default_matrix_path()
    try:
        matrix = load_matrix(matrix_path)
    except InvalidInputError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    from escbridge.sandbox import quiet_werkzeug

    quiet_werkzeug()  # one line per API call would drown what the command prints
    stop = stop or threading.Event()
    with contextlib.ExitStack() as stack:
        sandboxes = SandboxSet(
            matrix, tickets=args.tickets, only=args.only, port=args.port, seed=args.seed
        )
        try:
            stack.enter_context(sandboxes)
        except OSError as error:
            print(f"escbridge sandbox: cannot start the emulators: {error}", file=sys.stderr)
            return EXIT_PROBLEM
        if not sandboxes.running:
            print(
                "escbridge sandbox: no installed connector has a sandbox "
                "(install escbridge-zendesk, escbridge-freshdesk or escbridge-zohodesk)",
                file=sys.stderr,
            )
            return EXIT_PROBLEM
        if args.webhook_url:
            base = args.webhook_url.rstrip("/")
            for running in sandboxes.running:
                running.driver.connect_webhooks(running.driver.webhook_url(base, running.instance))
        text = config_yaml(sandboxes.instances(), matrix_path.resolve(), args.store)
        if args.write_config:
            Path(args.write_config).write_text(text, encoding="utf-8")
        _describe(sandboxes, text, args, out)
        stack.enter_context(_signals(stop))
        if ready is not None:
            ready(sandboxes)
        stop.wait()
    return EXIT_OK


def _describe(sandboxes: SandboxSet, text: str, args: argparse.Namespace, out: TextIO) -> None:
    count = len(sandboxes.running)
    out.write(f"escbridge sandbox: {count} helpdesk emulator(s) on 127.0.0.1 (Ctrl-C stops them)\n")
    for r in sandboxes.running:
        out.write(f"  {r.instance:<10} {r.driver.url:<24} {r.seeded} tickets\n")
        out.write(f"             {r.driver.access_hint()}\n")
    if args.write_config:
        out.write(f"\nescbridge.yaml for them: {args.write_config}\n")
        out.write(
            f"  escbridge db upgrade --config {args.write_config}\n"
            f"  escbridge sync --config {args.write_config} --dry-run\n"
        )
    else:
        out.write("\nescbridge.yaml for them (or use --write-config FILE):\n\n" + text)
    out.flush()


@contextlib.contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
