"""What a notification says about an escalation, built from the engine's own decision: the
ticket, the link, from → to with the groups, the rule, the reasons and the next deadline counted
in the destination's business time."""

from __future__ import annotations

import json

import pytest
from matrix_helpers import LADDER, NOW, decide, rule_yaml, ticket

from escbridge.matrix import Matrix, parse_matrix
from escbridge.notify.context import (
    CONTEXT_KEYS,
    next_deadline,
    notification_context,
    sample_context,
    targets_for,
)

NOTIFY = """\
notify:
  targets:
    leads: {teams: {url: "https://example.com/teams"}}
    billing-mail: {email: {host: mx.example.com, from: e@example.com, to: b@example.com}}
"""


def notifying_matrix(*rules: str) -> Matrix:
    ladder = LADDER.replace(
        "    min_priority: high\n    resolution: 8h\n",
        "    min_priority: high\n    resolution: 8h\n    notify: [leads]\n",
    ).replace("    level: l2\n", "    level: l2\n    notify: [billing-mail]\n")
    return parse_matrix(ladder + NOTIFY + "rules:\n" + "".join(rules), "matrix.yaml")


M = notifying_matrix(
    rule_yaml("{field: subject, contains: outage}", rule_id="outage", to="l2"),
    rule_yaml(
        "{field: subject, contains: invoice}", rule_id="invoice", to="billing", kind="functional"
    ),
)


def test_the_context_of_an_escalation_to_a_level() -> None:
    t = ticket(subject="Total outage <now>")
    decision = decide(M, t)
    ctx = notification_context(
        decision, t, M, helpdesk="zendesk", agent_url="https://acme.zendesk.com/agent/tickets/42"
    )
    assert set(ctx) == CONTEXT_KEYS
    assert ctx == {
        "id": None,
        "instance": "support-eu",
        "helpdesk": "zendesk",
        "ticket_id": "42",
        "subject": "Total outage <now>",
        "url": "https://acme.zendesk.com/agent/tickets/42",
        "from_level": "l1",
        "from_level_name": "Frontline",
        "to_level": "l2",
        "to_level_name": "Senior support",
        "to_kind": "level",
        "team": None,
        "from_group": "Support",
        "to_group": "Senior Support",
        "priority": "high",  # raised to the level's min_priority
        "rule_id": "outage",
        "rule_name": "outage",
        "reasons": list(decision.reasons),
        "escalated_at": "2026-03-11T15:00:00+00:00",
        # 8 business hours from Wednesday 15:00 (office Mon-Fri 09-17 UTC): Thursday 15:00
        "next_deadline": {"what": "resolution", "due_at": "2026-03-12T15:00:00+00:00"},
        "timezone": "UTC",
        "matrix": "Test matrix",
    }
    assert ctx["reasons"] == ['subject contains "outage" ("total outage <now>")']
    assert json.loads(json.dumps(ctx)) == ctx  # stored as JSON in the outbox as it is


def test_a_functional_escalation_names_the_team() -> None:
    t = ticket(subject="Wrong invoice")
    decision = decide(M, t)
    ctx = notification_context(decision, t, M, helpdesk="zendesk")
    assert ctx["to_kind"] == "team"
    assert ctx["team"] == {"id": "billing", "name": "Billing specialists"}
    assert (ctx["to_level"], ctx["to_group"]) == ("billing", "Billing")
    assert ctx["url"] is None  # a connector that cannot link
    assert ctx["next_deadline"] is None  # the team has no expected times


def test_the_response_time_comes_first_until_someone_answered() -> None:
    rung = M.levels[0]  # l1: response 4h, resolution 1d
    waiting = ticket()
    answered = ticket(first_response_at=NOW)
    assert next_deadline(rung, waiting, NOW) == {
        "what": "response",
        "due_at": "2026-03-12T11:00:00+00:00",  # 2h on Wednesday, 2h on Thursday
    }
    assert next_deadline(rung, answered, NOW) == {
        "what": "resolution",
        "due_at": "2026-03-12T15:00:00+00:00",  # one working day of 8h
    }


def test_targets_are_those_of_the_destination() -> None:
    assert targets_for(M, decide(M, ticket(subject="outage"))) == ("leads",)
    assert targets_for(M, decide(M, ticket(subject="invoice"))) == ("billing-mail",)
    assert targets_for(M, decide(M, ticket(subject="nothing"))) == ()


def test_no_context_without_an_escalation() -> None:
    t = ticket(subject="nothing to see")
    with pytest.raises(ValueError, match="not an escalation"):
        notification_context(decide(M, t), t, M)


def test_the_sample_has_every_key() -> None:
    assert set(sample_context()) == CONTEXT_KEYS
    assert sample_context(id=5)["id"] == 5
