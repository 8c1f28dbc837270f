"""Engine throughput against the same 50 rules written by hand, in the same process.

100,000 generated tickets, a 50-rule matrix, one core. Every path is timed next to a baseline
written by hand — the 50 conditions as plain Python ``if`` statements over the same ticket
objects (:func:`hand_matches`), and the decision as "the highest destination among the rules
that match, the earlier rule on a tie" (:func:`hand_decide`) — checked first to agree with
escbridge on every ticket, so each ratio is measured on this machine, now:

``conditions only``
    the generated matcher (``Engine._match``) against :func:`hand_matches`;
``decisions, nothing escalating`` / ``decisions, 20% escalating``
    what a scan decides (``Engine.choose``: whether, by which rule, where to) against
    :func:`hand_decide`, on the tickets that do not escalate, then on all of them;
``full Decision objects, 20% escalating``
    ``Engine.decide``: also the note (Jinja), the actions and the reasons of every escalation,
    which escbridge builds only for a ticket it applies or explains;
``rule-engine``
    the same conditions written for the `rule-engine` package (the ``dev`` extra), on fewer
    tickets (it is slow), against escbridge's conditions-only rate;
``scan, 1% changed``
    a reconciliation of ``--scan-tickets`` open tickets through the real sync path (pages of
    1,000, a SQLite store, an in-memory helpdesk) where 1% changed since the last one, which
    passes over the unchanged tickets that are not due, against the same scan deciding every
    ticket (what a scan did before; forced here by a matrix whose text differs by a comment).

Results are not kept alive (a scan does not keep them; ``--keep`` adds a row that does), and
each figure is the median of ``--runs`` runs, the paths interleaved within a run so a change
of load on a shared machine hits them alike; ratios are medians of each run's own ratio.

Run: .venv/bin/python benchmarks/engine.py [--tickets 100000] [--runs 3] [--scan-tickets 50000]
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import rule_engine

from escbridge.conditions.evaluate import Context
from escbridge.connector import CAP_BULK_UPDATE, ApplyResult, ConnectorInfo, TicketPage
from escbridge.matrix import Matrix, parse_matrix
from escbridge.model import Actions, Channel, Priority, Status, Ticket
from escbridge.policy import Engine
from escbridge.processing import Processor
from escbridge.store import Store, upgrade
from escbridge.sync import EPOCH, UNCHANGED, Syncer, SyncOptions
from escbridge.testing import FakeClock

NOW = datetime(2026, 3, 11, 15, 0, tzinfo=UTC)
WORDS = [
    *("login", "password", "export", "report", "invoice", "order", "shipping", "refund"),
    *("account", "sync", "api", "error", "slow", "broken", "missing", "question", "feature"),
    *("seats", "printer", "driver", "dashboard", "integration", "webhook"),
]
TRIGGERS = [
    "supervisor",
    "manager",
    "lawyer",
    "attorney",
    "chargeback",
    "unacceptable",
    "ridiculous",
    "outage",
    "data loss",
    "cancel my account",
]
TAGS = ["vip", "enterprise", "billing_dispute", "outage", "api_error", "policy_exception", "beta"]
ORGS = ["Globex Corporation", "Initech", "Umbrella", "Hooli", "Acme"]


def build_rules() -> list[tuple[str, str, str]]:
    """50 rules as (id, escbridge YAML condition, rule-engine expression)."""
    rules: list[tuple[str, str, str]] = []
    for i, word in enumerate(TRIGGERS):
        pattern = r"\\b" + r"\\W+".join(word.split()) + r"\\b"
        rules.append(
            (
                f"kw-{i}",
                f'keywords: ["{word}"]',
                f'subject =~~ "(?i){pattern}" or description =~~ "(?i){pattern}" '
                f'or latest_comment =~~ "(?i){pattern}"',
            )
        )
    for i, tag in enumerate(TAGS):
        rules.append((f"tag-{i}", f"tags: [{tag}]", f'"{tag}" in tags'))
    for i, (a, b) in enumerate([("vip", "enterprise"), ("outage", "api_error"), ("beta", "vip")]):
        rules.append(
            (
                f"tags2-{i}",
                f"tags: {{all: [{a}, {b}]}}",
                f'"{a}" in tags and "{b}" in tags',
            )
        )
    for i, limit in enumerate([9000, 9200, 9400, 9500, 9600, 9700, 9800, 9900]):
        rules.append(
            (
                f"refund-{i}",
                f"{{field: custom_fields.refund_amount, gt: {limit}}}",
                f"refund_amount != null and refund_amount > {limit}",
            )
        )
    for i, (prio, channel) in enumerate(
        [("urgent", c) for c in ("phone", "chat", "email", "web", "social", "api", "other")]
        + [("high", "phone")]
    ):
        p = Priority.parse(prio).value
        rules.append(
            (
                f"prio-{i}",
                f"all: [{{priority: {{at_least: {prio}}}}}, {{channel: [{channel}]}}]",
                f'priority >= {p} and channel == "{channel}"',
            )
        )
    for i, hours in enumerate([270, 290, 300, 310, 320]):
        rules.append(
            (
                f"idle-{i}",
                f"idle: {{over: {hours}h, time: calendar}}",
                f"idle > {hours * 3600}",
            )
        )
    for i, hours in enumerate([330, 332, 334]):
        rules.append(
            (f"age-{i}", f"age: {{over: {hours}h, time: calendar}}", f"age > {hours * 3600}")
        )
    for i, hours in enumerate([1, 2]):
        rules.append(
            (
                f"due-{i}",
                f"until_due: {{under: {hours}h, time: calendar}}",
                f"until_due != null and until_due < {hours * 3600}",
            )
        )
    for i, org in enumerate(ORGS[:2]):
        rules.append(
            (
                f"org-{i}",
                f'organization: ["{org}"]',
                f'org_name == "{org.lower()}" or org_id == "{org.lower()}"',
            )
        )
    rules.append(
        (
            "reopened",
            "all: [{reopens: 2}, {not: {status: [pending]}}]",
            'reopen_count >= 2 and not status == "pending"',
        )
    )
    rules.append(
        (
            "requester-domain",
            'requester: ["@globex.example"]',
            r'requester_email =~ ".*@globex\\.example$"',
        )
    )
    assert len(rules) == 50, len(rules)
    return rules


def matrix_yaml(rules: list[tuple[str, str, str]]) -> str:
    lines = [
        "version: 1",
        "levels:",
        "  - {id: l1, name: Frontline, groups: {'*': Support}}",
        "  - {id: l2, name: Senior, groups: {'*': Senior}}",
        "  - {id: l3, name: Manager, groups: {'*': Managers}}",
        "rules:",
    ]
    for i, (rule_id, cond, _) in enumerate(rules):
        lines += [
            f"  - id: {rule_id}",
            "    kind: hierarchical",
            f"    when: {cond}" if cond.startswith("{") else f"    when: {{{cond}}}",
            f"    to: {'next' if i % 3 else 'l3'}",
        ]
    return "\n".join(lines) + "\n"


def make_tickets(n: int, seed: int = 7) -> list[Ticket]:
    rnd = random.Random(seed)
    tickets = []
    for i in range(n):

        def text(k: int) -> str:
            words = rnd.choices(WORDS, k=k)
            if rnd.random() < 0.01:
                words.insert(rnd.randrange(len(words) + 1), rnd.choice(TRIGGERS))
            return " ".join(words).capitalize() + "."

        created = NOW - timedelta(minutes=rnd.randrange(10, 60 * 24 * 14))
        updated = created + (NOW - created) * rnd.random()
        org = rnd.choice(ORGS) if rnd.random() < 0.05 else None
        tickets.append(
            Ticket(
                id=str(i),
                instance="bench",
                subject=text(6),
                description=text(40),
                latest_comment=text(15),
                requester={
                    "id": f"u{i}",
                    "email": f"user{i}@"
                    + ("globex.example" if rnd.random() < 0.01 else "example.com"),
                },
                organization={"id": f"o{i % 50}", "name": org} if org else None,
                tags=rnd.sample(TAGS, k=1) if rnd.random() < 0.03 else [],
                custom_fields={"refund_amount": rnd.randrange(0, 10_000)}
                if rnd.random() < 0.2
                else {},
                channel=rnd.choice(list(Channel)),
                status=rnd.choice([Status.NEW, Status.OPEN, Status.OPEN, Status.PENDING]),
                priority=rnd.choices(list(Priority), weights=[40, 45, 12, 3])[0],
                group="Support",
                created_at=created,
                updated_at=updated,
                due_at=NOW + timedelta(minutes=rnd.randrange(30, 6000))
                if rnd.random() < 0.5
                else None,
                reopen_count=rnd.choice([0] * 30 + [1, 2]),
            )
        )
    return tickets


def as_record(t: Ticket) -> dict[str, Any]:
    """The ticket as rule-engine sees it: plain values, time spans precomputed (in its favour)."""
    return {
        "subject": t.subject,
        "description": t.description,
        "latest_comment": t.latest_comment,
        "tags": tuple(sorted(t.tags)),
        "refund_amount": t.custom_fields.get("refund_amount"),
        "priority": int(t.priority),
        "channel": t.channel.value,
        "status": t.status.value,
        "idle": (NOW - t.updated_at).total_seconds(),
        "age": (NOW - t.created_at).total_seconds(),
        "until_due": (t.due_at - NOW).total_seconds() if t.due_at else None,
        "org_name": t.organization.name.lower() if t.organization and t.organization.name else None,
        "org_id": t.organization.id.lower() if t.organization and t.organization.id else None,
        "reopen_count": t.reopen_count,
        "requester_email": t.requester.email or "",
    }


# --- the baseline, by hand -------------------------------------------------------------------
#
# The 50 rules of build_rules() as a person would write them for these tickets: one lower-cased
# text, a substring test before each whole-word pattern, plain comparisons. Rule i sends a ticket
# to l3 when i % 3 == 0, else one level up (l2: every generated ticket starts at l1, with no
# history, which spares this version the marker, group and history the engine looks at).

_SEP = "\x1f"  # between fields, as escbridge joins them: no phrase matches across two


def _phrase(text: str) -> re.Pattern[str]:
    return re.compile(r"\b" + r"[^\w\x1f]+".join(map(re.escape, text.split())) + r"\b")


(KW0, KW1, KW2, KW3, KW4, KW5, KW6, KW7, KW8, KW9) = (_phrase(w) for w in TRIGGERS)
H = timedelta(hours=1)
URGENT, HIGH, PENDING = Priority.URGENT, Priority.HIGH, Status.PENDING
PHONE, CHAT, EMAIL, WEB, SOCIAL, API, OTHER = (
    Channel.PHONE, Channel.CHAT, Channel.EMAIL, Channel.WEB, Channel.SOCIAL, Channel.API,
    Channel.OTHER,
)  # fmt: skip


def hand_matches(t: Ticket, now: datetime) -> list[int]:
    """The indices of the rules that match, in rule order."""
    text = f"{t.subject}{_SEP}{t.description}{_SEP}{t.latest_comment}".lower()
    tags = t.tags
    refund = t.custom_fields.get("refund_amount")
    idle = now - t.updated_at
    age = now - t.created_at
    due = t.due_at
    org = t.organization
    org_name = ((org.name or "").lower(), (org.id or "").lower()) if org else ("", "")
    m = []
    if "supervisor" in text and KW0.search(text):
        m.append(0)
    if "manager" in text and KW1.search(text):
        m.append(1)
    if "lawyer" in text and KW2.search(text):
        m.append(2)
    if "attorney" in text and KW3.search(text):
        m.append(3)
    if "chargeback" in text and KW4.search(text):
        m.append(4)
    if "unacceptable" in text and KW5.search(text):
        m.append(5)
    if "ridiculous" in text and KW6.search(text):
        m.append(6)
    if "outage" in text and KW7.search(text):
        m.append(7)
    if "data" in text and KW8.search(text):
        m.append(8)
    if "cancel" in text and KW9.search(text):
        m.append(9)
    if "vip" in tags:
        m.append(10)
    if "enterprise" in tags:
        m.append(11)
    if "billing_dispute" in tags:
        m.append(12)
    if "outage" in tags:
        m.append(13)
    if "api_error" in tags:
        m.append(14)
    if "policy_exception" in tags:
        m.append(15)
    if "beta" in tags:
        m.append(16)
    if "vip" in tags and "enterprise" in tags:
        m.append(17)
    if "outage" in tags and "api_error" in tags:
        m.append(18)
    if "beta" in tags and "vip" in tags:
        m.append(19)
    if refund is not None:
        if refund > 9000:
            m.append(20)
        if refund > 9200:
            m.append(21)
        if refund > 9400:
            m.append(22)
        if refund > 9500:
            m.append(23)
        if refund > 9600:
            m.append(24)
        if refund > 9700:
            m.append(25)
        if refund > 9800:
            m.append(26)
        if refund > 9900:
            m.append(27)
    if t.priority >= URGENT:
        channel = t.channel
        if channel is PHONE:
            m.append(28)
        if channel is CHAT:
            m.append(29)
        if channel is EMAIL:
            m.append(30)
        if channel is WEB:
            m.append(31)
        if channel is SOCIAL:
            m.append(32)
        if channel is API:
            m.append(33)
        if channel is OTHER:
            m.append(34)
    if t.priority >= HIGH and t.channel is PHONE:
        m.append(35)
    if idle > 270 * H:
        m.append(36)
    if idle > 290 * H:
        m.append(37)
    if idle > 300 * H:
        m.append(38)
    if idle > 310 * H:
        m.append(39)
    if idle > 320 * H:
        m.append(40)
    if age > 330 * H:
        m.append(41)
    if age > 332 * H:
        m.append(42)
    if age > 334 * H:
        m.append(43)
    if due is not None and due - now < H:
        m.append(44)
    if due is not None and due - now < 2 * H:
        m.append(45)
    if "globex corporation" in org_name:
        m.append(46)
    if "initech" in org_name:
        m.append(47)
    if t.reopen_count >= 2 and t.status is not PENDING:
        m.append(48)
    if (t.requester.email or "").lower().endswith("@globex.example"):
        m.append(49)
    return m


#: Rank of each rule's destination from l1: 2 (l3) for every third rule, else 1 (l2).
RANKS = [2 if i % 3 == 0 else 1 for i in range(50)]
RULE_IDS = [rule_id for rule_id, _, _ in build_rules()]
CLOSED = (Status.SOLVED, Status.CLOSED)


def hand_decide(t: Ticket, now: datetime) -> tuple[str, str] | None:
    """(rule, destination) or None: the highest destination, the earlier rule on a tie."""
    if t.status in CLOSED:
        return None
    best, rank = -1, 0
    for i in hand_matches(t, now):
        if RANKS[i] > rank:
            best, rank = i, RANKS[i]
    if best < 0:
        return None
    return RULE_IDS[best], "l3" if rank == 2 else "l2"


def agree(engine: Engine, rules: list[tuple[str, str, str]], tickets: Sequence[Ticket]) -> str:
    """Why escbridge and the hand-written version (and rule-engine, on a sample) disagree on
    some ticket, or "" when they agree on every one; full decisions agree with choices."""
    level1 = engine.matrix.levels[0]
    compiled = [rule_engine.Rule(expr) for _, _, expr in rules]
    for i, t in enumerate(tickets):
        ours = engine._match(Context(t, NOW, level1, ()))
        if ours != hand_matches(t, NOW):
            return f"conditions disagree on ticket {t.id}: {ours} vs {hand_matches(t, NOW)}"
        choice = engine.choose(t, (), NOW)
        verdict = (choice.rule_id, choice.to) if choice.escalate else None
        if verdict != hand_decide(t, NOW):
            return f"decisions disagree on ticket {t.id}: {verdict} vs {hand_decide(t, NOW)}"
        if i % 10 == 0:
            full = engine.decide(t, (), NOW)
            if (full.escalate, full.rule_id, full.summary) != (
                choice.escalate,
                choice.rule_id,
                choice.summary,
            ):
                return f"decide and choose disagree on ticket {t.id}"
        if i < 2000:
            theirs = [j for j, r in enumerate(compiled) if r.matches(as_record(t))]
            if theirs != ours:
                return f"rule-engine disagrees on ticket {t.id}: {ours} vs {theirs}"
    return ""


# --- timing --------------------------------------------------------------------------------------


def rate(work: Callable[[], object], count: int) -> float:
    """Items per second of one call of ``work`` (collected garbage first, none left behind)."""
    gc.collect()
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def each(fn: Callable[[Ticket], object], tickets: Sequence[Ticket]) -> Callable[[], None]:
    def run() -> None:
        for t in tickets:
            fn(t)

    return run


# --- the scan: the real sync path over an in-memory helpdesk ---------------------------------


class ScanDesk:
    """Open tickets in memory, listed whole by a reconciliation (``since`` = EPOCH) 1,000 a
    page and not at all by a changes pass; a write lands at once and bumps the version."""

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="bench", version="1", display_name="Bench", capabilities=frozenset({CAP_BULK_UPDATE})
    )
    PAGE = 1000

    def __init__(self, tickets: Sequence[Ticket]) -> None:
        self.tickets = {t.id: t.model_copy(update={"version": "1"}) for t in tickets}

    def edit(self, ticket_id: str, at: datetime) -> None:
        t = self.tickets[ticket_id]
        version = str(int(t.version or "0") + 1)
        self.tickets[ticket_id] = t.model_copy(update={"updated_at": at, "version": version})

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        return self.tickets[ticket_id]

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        ids = list(self.tickets) if since == EPOCH else []
        start = int(cursor or 0)
        while True:
            page = [self.tickets[i] for i in ids[start : start + self.PAGE]]
            start += self.PAGE
            done = start >= len(ids)
            yield TicketPage(page, str(start), done)
            if done:
                return

    def apply(self, ticket: Ticket, actions: Actions, **_: Any) -> ApplyResult:
        t = self.tickets[ticket.id]
        self.tickets[ticket.id] = t.model_copy(
            update={
                "level": actions.level,
                "group": actions.group,
                "tags": (t.tags | set(actions.tags_add)) - set(actions.tags_remove),
                "version": str(int(t.version or "0") + 1),
            }
        )
        return ApplyResult(ticket.id, ok=True, actions=actions)

    def apply_many(self, items: Sequence[tuple[Ticket, Actions]], **_: Any) -> list[ApplyResult]:
        return [self.apply(t, a) for t, a in items]


class Scan:
    """A store and a helpdesk with ``n`` open tickets, every one decided and recorded once."""

    def __init__(self, matrices: tuple[Matrix, Matrix], tickets: Sequence[Ticket]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="escbridge-bench-")
        url = f"sqlite:///{Path(self._tmp.name) / 'store.db'}"
        upgrade(url)
        self.store = Store(url)
        self.desk = ScanDesk(tickets)
        self.clock = FakeClock(NOW)
        self.engines = [Engine(m) for m in matrices]
        self.current = 0  # the engine whose matrix the shadows were computed under
        self.rnd = random.Random(11)
        self.run(self.current)  # decides all, escalates a fifth
        self.run(self.current)  # decides the escalated ones again, as the helpdesk has them

    def run(self, engine: int) -> tuple[float, int, int]:
        """(seconds, tickets scanned, tickets passed over) of one reconciliation."""
        self.clock.advance(seconds=30)
        processor = Processor(
            self.store, self.engines[engine], {"bench": self.desk}, clock=self.clock, worker_id="b"
        )
        syncer = Syncer(processor, SyncOptions(reconcile="always"))
        start = time.perf_counter()
        report = syncer.run()
        seconds = time.perf_counter() - start
        result = report.instances["bench"]
        if not result.ok:
            raise RuntimeError(f"the scan did not go through: {result.as_json()}")
        self.current = engine
        return seconds, result.scanned, result.skipped_by[UNCHANGED]

    def changed_then_scan(self, share: float) -> tuple[float, int, int]:
        """Change ``share`` of the tickets, then scan with the shadows' own matrix."""
        ids = self.rnd.sample(sorted(self.desk.tickets), int(len(self.desk.tickets) * share))
        for ticket_id in ids:
            self.desk.edit(ticket_id, self.clock())
        return self.run(self.current)

    def decide_all(self) -> tuple[float, int, int]:
        """The same scan deciding every ticket: the other matrix makes every shadow stale."""
        return self.run(1 - self.current)

    def close(self) -> None:
        self.store.close()
        self._tmp.cleanup()


# --- main ----------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="figures are medians of this many")
    parser.add_argument("--rule-engine-tickets", type=int, default=5_000)
    parser.add_argument("--scan-tickets", type=int, default=50_000, help="0: no scan")
    parser.add_argument("--changed", type=float, default=0.01, help="share changed per scan")
    parser.add_argument("--keep", action="store_true", help="also time keeping decisions alive")
    args = parser.parse_args(argv)

    rules = build_rules()
    text = matrix_yaml(rules)
    matrix = parse_matrix(text, "bench-matrix.yaml")
    engine = Engine(matrix)
    print(f"generating {args.tickets:,} tickets…", file=sys.stderr)
    tickets = make_tickets(args.tickets)
    print(
        "checking that escbridge and the hand-written rules agree on every ticket…", file=sys.stderr
    )
    problem = agree(engine, rules, tickets)
    if problem:
        print(f"DISAGREEMENT: {problem}", file=sys.stderr)
        return 1
    loud = {t.id for t in tickets if engine.choose(t, (), NOW).escalate}
    quiet = [t for t in tickets if t.id not in loud]
    level1 = matrix.levels[0]
    compiled = [rule_engine.Rule(expr) for _, _, expr in rules]
    records = [as_record(t) for t in tickets[: args.rule_engine_tickets]]

    def rule_engine_pass() -> None:
        for rec in records:
            for rule in compiled:
                rule.matches(rec)

    def kept() -> list[object]:
        return [engine.decide(t, (), NOW) for t in tickets]

    n, q = len(tickets), len(quiet)
    paths: list[tuple[str, Callable[[], object], int, Callable[[], object] | None]] = [
        (
            "conditions only",
            each(lambda t: engine._match(Context(t, NOW, level1, ())), tickets),
            n,
            each(lambda t: hand_matches(t, NOW), tickets),
        ),
        (
            "decisions, nothing escalating",
            each(lambda t: engine.choose(t, (), NOW), quiet),
            q,
            each(lambda t: hand_decide(t, NOW), quiet),
        ),
        (
            f"decisions, {len(loud) / n:.0%} escalating",
            each(lambda t: engine.choose(t, (), NOW), tickets),
            n,
            each(lambda t: hand_decide(t, NOW), tickets),
        ),
        (
            f"full Decision objects, {len(loud) / n:.0%} escalating",
            each(lambda t: engine.decide(t, (), NOW), tickets),
            n,
            each(lambda t: hand_decide(t, NOW), tickets),
        ),
    ]
    if args.keep:
        paths.append(
            ("full Decisions kept alive", kept, n, each(lambda t: hand_decide(t, NOW), tickets))
        )
    paths.append(("rule-engine, conditions only", rule_engine_pass, len(records), None))

    ours: dict[str, list[float]] = {name: [] for name, *_ in paths}
    hand: dict[str, list[float]] = {name: [] for name, *_ in paths}
    ratios: dict[str, list[float]] = {name: [] for name, *_ in paths}
    for run in range(args.runs):
        print(f"run {run + 1} of {args.runs}…", file=sys.stderr)
        for name, work, count, baseline in paths:
            ours[name].append(rate(work, count))
            if baseline is not None:
                hand[name].append(rate(baseline, count))
                ratios[name].append(ours[name][-1] / hand[name][-1])
        conditions = ours["conditions only"][-1]
        ratios["rule-engine, conditions only"].append(
            conditions / ours["rule-engine, conditions only"][-1]
        )

    scans: list[tuple[float, float]] = []
    scanned = passed = 0
    if args.scan_tickets:
        print(f"preparing the scan of {args.scan_tickets:,} tickets…", file=sys.stderr)
        edited = parse_matrix(text + "# the same rules\n", "bench-matrix.yaml")
        scan = Scan((matrix, edited), make_tickets(args.scan_tickets, seed=13))
        try:
            for run in range(args.runs):
                print(f"scan run {run + 1} of {args.runs}…", file=sys.stderr)
                skipping, scanned, passed = scan.changed_then_scan(args.changed)
                everything, all_scanned, none = scan.decide_all()
                if none or all_scanned != scanned:
                    raise RuntimeError("the scan deciding every ticket passed some over")
                scans.append((skipping, everything))
        finally:
            scan.close()

    print(
        f"rules: {len(matrix.rules)}; tickets: {n:,} ({len(loud):,} escalate); "
        f"medians of {args.runs} run(s); hand-written = the same rules as Python ifs"
    )
    print(f"{'path':42} {'escbridge/s':>12} {'hand-written/s':>15} {'ratio':>7}")
    for name, _, _, baseline in paths:
        if baseline is None:
            continue
        print(
            f"{name:42} {median(ours[name]):12,.0f} {median(hand[name]):15,.0f} "
            f"{median(ratios[name]):7.2f}"
        )
    name = "rule-engine, conditions only"
    print(
        f"{f'rule-engine {rule_engine.__version__}, same conditions':42} "
        f"{median(ours[name]):12,.0f} {'':>15} "
        f"escbridge conditions {median(ratios[name]):.1f}x faster ({len(records):,} tickets)"
    )
    if scans:
        skip_s = median([s for s, _ in scans])
        all_s = median([a for _, a in scans])
        speedup = median([a / s for s, a in scans])
        print(
            f"scan of {scanned:,} tickets, {args.changed:.0%} changed: {skip_s:.2f}s "
            f"({passed:,} passed over: unchanged and not due yet) vs {all_s:.2f}s deciding every "
            f"ticket: {speedup:.1f}x faster"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
