"""Small builders for the matrix, engine and CLI specifications: one ladder, inline rules, tickets.

Not a conftest: plain functions, imported by name, so each test shows what it builds.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from escbridge.matrix import Matrix, parse_matrix
from escbridge.model import Decision, EscalationRecord, RuleOutcome, Ticket
from escbridge.policy import Engine

# Wednesday 11 March 2026, 15:00 UTC: inside office hours (Mon-Fri 09:00-17:00 UTC).
NOW = datetime(2026, 3, 11, 15, 0, tzinfo=UTC)

LADDER = """\
version: 1
name: Test matrix
defaults:
  time: business
  calendar: office
calendars:
  office:
    timezone: UTC
    hours: {mon-fri: "09:00-17:00"}
levels:
  - id: l1
    name: Frontline
    groups: {zendesk: Support, freshdesk: Frontline}
    response: 4h
    resolution: 1d
  - id: l2
    name: Senior support
    groups: {zendesk: Senior Support, freshdesk: Team Leads}
    min_priority: high
    resolution: 8h
  - id: l3
    name: Support manager
    groups: {zendesk: Support Managers, freshdesk: Managers}
    min_priority: urgent
    resolution: 4h
teams:
  billing:
    name: Billing specialists
    groups: {zendesk: Billing}
    level: l2
  security:
    name: Security
    groups: {zendesk: Security}
    level: l3
limits:
  cooldown: 30m
  daily_cap: 3
"""


def rule_yaml(
    when: str,
    *,
    rule_id: str = "r",
    to: str = "l2",
    kind: str = "hierarchical",
    actions: str = "",
) -> str:
    """One rule as YAML list item; ``when`` and ``actions`` are flow or block YAML."""
    out = f"  - id: {rule_id}\n    kind: {kind}\n    to: {to}\n"
    out += _block("when", when)
    if actions:
        out += _block("actions", actions)
    return out


def _block(key: str, text: str) -> str:
    text = textwrap.dedent(text).strip("\n")
    if "\n" not in text:
        return f"    {key}: {text}\n"
    return f"    {key}:\n" + textwrap.indent(text, " " * 6) + "\n"


def matrix(*rules: str, head: str = LADDER) -> Matrix:
    """The test ladder plus the given rules (each from ``rule_yaml``)."""
    listed = "rules:\n" + "".join(rules) if rules else "rules: []\n"
    return parse_matrix(head + listed, "matrix.yaml")


def one_rule(when: str, **kwargs: Any) -> Matrix:
    return matrix(rule_yaml(when, **kwargs))


def ticket(**fields: Any) -> Ticket:
    """An open, normal-priority zendesk ticket at l1 (group Support), created an hour ago."""
    data: dict[str, Any] = {
        "id": "42",
        "instance": "support-eu",
        "subject": "Question",
        "description": "Hello",
        "latest_comment": "",
        "requester": {"id": "u1", "name": "Dana Fischer", "email": "dana@example.com"},
        "channel": "email",
        "status": "open",
        "priority": "normal",
        "group": "Support",
        "created_at": NOW - timedelta(hours=1),
        "updated_at": NOW - timedelta(minutes=30),
    }
    data.update(fields)
    return Ticket.model_validate(data)


def engine(m: Matrix, helpdesk: str = "zendesk") -> Engine:
    return Engine(m, {"support-eu": helpdesk})


def decide(
    m: Matrix,
    t: Ticket,
    history: Sequence[EscalationRecord] = (),
    now: datetime = NOW,
    helpdesk: str = "zendesk",
) -> Decision:
    return engine(m, helpdesk).decide(t, history, now, explain=True)


def matches(m: Matrix, t: Ticket, now: datetime = NOW) -> bool:
    """Whether the matrix's only rule matches (regardless of whether it may escalate)."""
    return outcome(decide(m, t, now=now), "r").matched


def outcome(decision: Decision, rule_id: str) -> RuleOutcome:
    found = [o for o in decision.outcomes if o.rule_id == rule_id]
    assert found, f"no outcome for rule {rule_id}: {decision.outcomes}"
    return found[0]


def record(
    at: datetime, to: str, rule_id: str = "an-earlier-rule", from_level: str = "l1"
) -> EscalationRecord:
    """A past escalation, by default by another rule than the one under test ("r")."""
    return EscalationRecord(at=at, to=to, from_level=from_level, rule_id=rule_id)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


class CountingEngine(Engine):
    """The engine, noting every ticket it decides (what a scan's skip saves is counted here)."""

    def __init__(self, matrix: Matrix) -> None:
        super().__init__(matrix)
        self.decided: list[str] = []

    def decide(
        self,
        ticket: Ticket,
        history: Sequence[EscalationRecord],
        now: datetime,
        *,
        explain: bool = False,
    ) -> Decision:
        self.decided.append(ticket.id)
        return super().decide(ticket, history, now, explain=explain)
