"""Engine throughput: 100,000 generated tickets against a 50-rule matrix, on one core.

In the same run the same 50 conditions are written for the `rule-engine` package and evaluated
over the same tickets, so the ratio is measured on this machine, now. Both evaluate every rule
for every ticket (the engine needs all matches to pick the highest destination), and the
matching rules of both are compared on a sample to prove they evaluate the same conditions.

Run: .venv/bin/python benchmarks/engine.py [--tickets 100000] [--rule-engine-tickets 20000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import rule_engine

from escbridge.conditions.evaluate import Context, compile_condition
from escbridge.matrix import parse_matrix
from escbridge.model import Channel, Priority, Status, Ticket
from escbridge.policy import Engine

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--rule-engine-tickets", type=int, default=20_000)
    args = parser.parse_args(argv)

    rules = build_rules()
    matrix = parse_matrix(matrix_yaml(rules), "bench-matrix.yaml")
    engine = Engine(matrix)
    print(f"generating {args.tickets:,} tickets…", file=sys.stderr)
    tickets = make_tickets(args.tickets)

    # Agreement check: the same rules match in both engines.
    compiled_re = [rule_engine.Rule(expr) for _, _, expr in rules]
    tests = [compile_condition(r.condition) for r in matrix.rules]
    level1 = matrix.levels[0]
    for t in tickets[:2000]:
        ctx = Context(t, NOW, level1, ())
        ours = [test(ctx) for test in tests]
        generated = engine._match(Context(t, NOW, level1, ()))
        theirs = [r.matches(as_record(t)) for r in compiled_re]
        if generated != [i for i, ok in enumerate(ours) if ok]:
            print(f"generated matcher disagrees with closures on ticket {t.id}", file=sys.stderr)
            return 1
        if ours != theirs:
            diff = [rules[i][0] for i in range(50) if ours[i] != theirs[i]]
            print(f"DISAGREEMENT on ticket {t.id}: {diff}", file=sys.stderr)
            return 1

    start = time.perf_counter()
    decisions = [engine.decide(t, (), NOW) for t in tickets]
    ours_s = time.perf_counter() - start
    ours_rate = len(tickets) / ours_s
    escalated = sum(d.escalate for d in decisions)

    # The same engine on the tickets that do not escalate: a steady-state sync scan, where
    # almost every open ticket is fine and escalations are the exception.
    quiet = [t for t, d in zip(tickets, decisions, strict=True) if not d.escalate]
    loud = [t for t, d in zip(tickets, decisions, strict=True) if d.escalate]
    start = time.perf_counter()
    for t in quiet:
        engine.decide(t, (), NOW)
    quiet_rate = len(quiet) / (time.perf_counter() - start)
    start = time.perf_counter()
    for t in loud:
        engine.decide(t, (), NOW)
    per_escalation_us = (time.perf_counter() - start) / max(1, len(loud)) * 1e6

    start = time.perf_counter()
    for t in tickets:
        engine._match(Context(t, NOW, level1, ()))
    match_s = time.perf_counter() - start
    match_rate = len(tickets) / match_s

    records = [as_record(t) for t in tickets[: args.rule_engine_tickets]]
    start = time.perf_counter()
    matched = 0
    for rec in records:
        for rule in compiled_re:
            matched += rule.matches(rec)
    theirs_s = time.perf_counter() - start
    theirs_rate = len(records) / theirs_s

    print(f"rules: {len(matrix.rules)}; tickets: {len(tickets):,}; escalated: {escalated:,}")
    share = escalated / len(tickets)
    print(
        f"escbridge engine : {ours_rate:12,.0f} tickets/s  ({ours_s:.2f} s, full decisions; "
        f"{share:.0%} escalate, each with its note rendered)"
    )
    print(
        f"  no-escalation  : {quiet_rate:12,.0f} tickets/s  (the {len(quiet):,} that do not "
        "escalate: a steady-state scan)"
    )
    print(f"  per escalation : {per_escalation_us:12,.0f} µs  (explanation, Jinja2 note, actions)")
    for steady in (0.01, 0.05):
        blended = 1 / ((1 - steady) / quiet_rate + steady * per_escalation_us / 1e6)
        print(f"  at {steady:.0%} escalating: {blended:10,.0f} tickets/s  (derived)")
    print(f"escbridge match  : {match_rate:12,.0f} tickets/s  ({match_s:.2f} s, conditions only)")
    print(
        f"rule-engine {rule_engine.__version__:5}: {theirs_rate:12,.0f} tickets/s  "
        f"({theirs_s:.2f} s for {len(records):,} tickets, conditions only)"
    )
    print(f"ratio (decisions): {ours_rate / theirs_rate:12.1f}x rule-engine's conditions-only rate")
    print(f"ratio (conditions): {match_rate / theirs_rate:11.1f}x")
    verdict = "met" if ours_rate >= 50_000 else "NOT met"
    print(f"target 50,000/s  : {verdict} for full decisions at {share:.0%} escalating")
    return 0


if __name__ == "__main__":
    sys.exit(main())
