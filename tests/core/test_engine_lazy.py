"""A decision in two steps: ``choose`` (whether, by which rule, where to) and ``decision`` (the
note, the actions, the explanations), built only for the tickets that get them.

``decide`` is both at once and must give the Decision it always gave: the same verdict and
summary from ``choose``, models indistinguishable from validated ones, notes rendered exactly
as ``jinja2.Template.render`` renders them, and the ticket dumped for a template only when the
template reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from matrix_helpers import NOW, ago, engine, matrix, record, rule_yaml, ticket

from escbridge.cli.matrix import load_tickets
from escbridge.matrix import load_matrix
from escbridge.matrix.templates import compile_template
from escbridge.model import Actions, Decision, Destination, Priority, Ticket
from escbridge.policy import Engine, _reads_variable, _ticket_for_template

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "examples" / "matrix.yaml"
TICKETS = ROOT / "examples" / "tickets"
AT = datetime(2026, 3, 11, 15, 0, tzinfo=UTC)  # as test_examples.py evaluates them

RULES = (
    rule_yaml("{keywords: [manager]}", rule_id="asks-manager", to="next"),
    rule_yaml("{tags: [vip]}", rule_id="vip", to="l3", actions="{priority: urgent, tags: [hot]}"),
    rule_yaml("{tags: [invoice]}", rule_id="billing", to="billing", kind="functional"),
    rule_yaml(
        "{idle: {over: 2h}}",
        rule_id="idle",
        to="next",
        actions="""
        note: "{{ ticket.subject }} waited: {{ reasons | join(', ') }}"
        customer_update: "Hello {{ ticket.requester.name }}, {{ destination.name }} has it."
        unassign: true
        """,
    ),
)


def varied_tickets() -> list[Ticket]:
    """Tickets that escalate, stay, are closed, sit higher, or have no group on their helpdesk."""
    out = []
    for i, (subject, tags, level, status, idle) in enumerate(
        [
            ("Please get me a manager", [], None, "open", 1),
            ("Question", ["vip"], None, "open", 1),
            ("Question", ["vip"], "l3", "open", 1),
            ("Invoice wrong", ["invoice"], None, "pending", 1),
            ("Invoice wrong", ["invoice", "vip"], None, "open", 5),
            ("Nothing special", [], None, "open", 5),
            ("Nothing special", [], "l2", "on_hold", 5),
            ("A manager, now", ["vip"], None, "solved", 5),
            ("Quiet", [], None, "new", 0.5),
        ]
    ):
        for instance in ("support-eu", "elsewhere"):
            out.append(
                ticket(
                    id=f"{i}-{instance}",
                    instance=instance,
                    subject=subject,
                    tags=tags,
                    level=level,
                    status=status,
                    updated_at=ago(hours=idle),
                )
            )
    return out


HISTORIES = [(), (record(ago(minutes=10), "l2"),), (record(ago(hours=3), "l2", rule_id="vip"),)]


def test_decide_is_choose_then_decision_with_the_same_verdict() -> None:
    e = engine(matrix(*RULES))
    seen = set()
    for t in varied_tickets():
        for history in HISTORIES:
            choice = e.choose(t, history, NOW)
            decided = e.decide(t, history, NOW)
            assert e.decision(choice) == decided
            assert choice.escalate == decided.escalate
            assert choice.summary == decided.summary
            assert choice.rule_id == decided.rule_id
            assert choice.to == (decided.destination.id if decided.destination else None)
            assert choice.at == decided.at
            seen.add(decided.summary.split(":")[0].split(" ")[0])
    assert seen == {"escalate", "no"}  # both kinds were decided


def test_an_explained_decision_is_the_explained_choice() -> None:
    e = engine(matrix(*RULES))
    for t in varied_tickets():
        choice = e.choose(t, HISTORIES[2], NOW)
        assert e.decision(choice, explain=True) == e.decide(t, HISTORIES[2], NOW, explain=True)


def test_escalations_are_indistinguishable_from_validated_models() -> None:
    """Destination, Actions and Decision of an escalation are built without validation (for
    speed): a pydantic upgrade that changes what validation sets must fail here."""
    e = engine(matrix(*RULES))
    escalations = [
        d
        for t in varied_tickets()
        for d in [e.decide(t, (), NOW, explain=True)]
        if d.escalate and d.actions is not None and d.destination is not None
    ]
    assert len(escalations) >= 4
    for fast in escalations:
        assert fast.actions is not None and fast.destination is not None
        slow = Decision.model_validate(fast.model_dump())
        assert slow == fast
        assert slow.model_dump(mode="json") == fast.model_dump(mode="json")
        assert slow.model_fields_set == fast.model_fields_set
        for model, cls in ((fast.actions, Actions), (fast.destination, Destination)):
            again = cls.model_validate(model.model_dump())
            assert again == model and again.model_fields_set == model.model_fields_set
            assert {k: type(v) for k, v in vars(again).items()} == {
                k: type(v) for k, v in vars(model).items()
            }
        if fast.actions.priority is not None:
            assert type(fast.actions.priority) is Priority


def test_the_examples_decide_as_jinja_renders_their_notes() -> None:
    """Every example ticket's note and customer update is the text ``Template.render`` gives
    with the whole context, the ticket dumped in it (as the engine rendered them before)."""
    example = load_matrix(MATRIX)
    e = Engine(example, {"support-eu": "zendesk"})
    rules = {r.id: r for r in example.rules}
    rendered = 0
    for t in load_tickets(TICKETS):
        d = e.decide(t, [], AT)
        if not d.escalate:
            continue
        assert d.actions is not None and d.destination is not None and d.rule_id is not None
        rule = rules[d.rule_id]
        context = full_context(e, t, d)
        template = rule.actions.note or example.default_note
        try:
            expected = template.render(context).strip()
        except Exception:  # the engine falls back to the default note: it starts with it
            expected = example.default_note.render(context).strip()
        assert d.actions.note is not None and d.actions.note.startswith(expected)
        if rule.actions.customer_update is not None:
            customer = rule.actions.customer_update.render(context).strip()
            assert d.actions.customer_update == customer
        rendered += 1
    assert rendered >= 10


def full_context(e: Engine, t: Ticket, d: Decision) -> dict[str, Any]:
    """The variables of a note, as the engine gave every template before it looked which read
    the ticket."""
    assert d.destination is not None and d.from_level is not None
    rule = next(r for r in e.matrix.rules if r.id == d.rule_id)
    current = e.current_rung(t)
    helpdesk = e.helpdesks.get(t.instance)
    return {
        "ticket": _ticket_for_template(t),
        "rule": {"id": rule.id, "name": rule.name, "kind": rule.kind},
        "destination": {
            "id": d.destination.id,
            "name": d.destination.name,
            "kind": d.destination.kind,
            "group": d.destination.group,
        },
        "from_level": {
            "id": current.id,
            "name": current.name,
            "kind": current.kind,
            "group": current.group_for(t.instance, helpdesk),
        },
        "reasons": list(d.reasons),
        "now": d.at,
    }


@pytest.mark.parametrize(
    "text",
    [
        "{{ ticket.id }}",
        "{{ reasons | join(ticket.subject) }}",
        "{% if ticket.tags %}tagged{% endif %}",
        "{% for tag in ticket.tags %}{{ tag }}{% endfor %}",
        "{% macro who() %}{{ ticket.requester.name }}{% endmacro %}{{ who() }}",
        "{% set t = ticket %}{{ t.id }}",
        "{% block body %}{{ ticket.id }}{% endblock %}",
    ],
)
def test_a_template_that_reads_the_ticket_is_given_it(text: str) -> None:
    assert _reads_variable(compile_template(text), "ticket")


@pytest.mark.parametrize(
    "text",
    [
        "{{ rule.name }} [{{ rule.id }}]",
        "{% for reason in reasons %}- {{ reason }}\n{% endfor %}",
        "{{ destination.name }}{% if destination.group %} ({{ destination.group }}){% endif %}",
        "{% macro r() %}{{ rule.id }}{% endmacro %}{{ r() }}",
    ],
)
def test_a_template_that_never_reads_the_ticket_is_not_given_it(text: str) -> None:
    assert not _reads_variable(compile_template(text), "ticket")


def test_the_default_note_never_dumps_the_ticket(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ticket as templates see it is a full ``model_dump``: not made for the default note."""

    def refuse(t: Ticket) -> dict[str, Any]:
        raise AssertionError("the ticket was dumped for a note that does not read it")

    monkeypatch.setattr("escbridge.policy._ticket_for_template", refuse)
    d = engine(matrix(*RULES)).decide(ticket(subject="A manager please"), (), NOW)
    assert d.escalate and d.actions is not None
    assert d.actions.note is not None and "asks-manager" in d.actions.note


def test_a_note_that_reads_the_ticket_renders_it() -> None:
    d = engine(matrix(*RULES)).decide(ticket(subject="Stuck", updated_at=ago(hours=5)), (), NOW)
    assert d.actions is not None
    assert d.actions.note == (
        "Stuck waited: time since the ticket was last updated is 5h of business time (office), "
        "over 2h"
    )
    assert d.actions.customer_update == "Hello Dana Fischer, Senior support has it."


def test_a_failing_template_still_falls_back_to_the_default_note() -> None:
    m = matrix(
        rule_yaml(
            "{tags: [vip]}",
            actions='{note: "{{ ticket.custom_fields.missing_field }}"}',
        )
    )
    d = engine(m).decide(ticket(tags=["vip"]), (), NOW)
    assert d.actions is not None and d.actions.note is not None
    assert d.actions.note.startswith("escbridge escalated this ticket to Senior support")
    assert "the note template of rule r failed on this ticket" in d.actions.note


def test_the_current_rung_is_remembered_per_marker_group_and_instance() -> None:
    """One engine answers as a fresh one would, in any order of tickets."""
    m = matrix(*RULES)
    shared = engine(m)
    cases = [
        ticket(level=None, group="Support"),
        ticket(level=None, group="Senior Support"),
        ticket(level=None, group="senior support", instance="support-eu"),
        ticket(level=None, group="Senior Support", instance="elsewhere"),
        ticket(level="l3", group="Support"),
        ticket(level="billing", group=None),
        ticket(level=None, group="Billing"),
        ticket(level=None, group="Unknown"),
        ticket(level=None, group="Support"),
    ]
    for t in cases * 2:
        assert shared.current_rung(t) == engine(m).current_rung(t)
    assert [shared.current_rung(t).id for t in cases[:4]] == ["l1", "l2", "l2", "l1"]


def test_now_in_another_zone_decides_as_the_same_instant_in_utc() -> None:
    e = engine(matrix(*RULES))
    berlin = NOW.astimezone(ZoneInfo("Europe/Berlin"))
    t = ticket(tags=["vip"], updated_at=ago(hours=5))
    assert e.decide(t, (), berlin) == e.decide(t, (), NOW)
    assert e.choose(t, (), berlin).at.tzinfo is NOW.tzinfo
    with pytest.raises(ValueError, match="timezone"):
        e.choose(t, (), NOW.replace(tzinfo=None))


def test_a_choice_of_a_closed_ticket_explains_every_rule_as_closed() -> None:
    e = engine(matrix(*RULES))
    t = ticket(tags=["vip"], status="solved", updated_at=NOW - timedelta(hours=5))
    choice = e.choose(t, (), NOW)
    assert not choice.escalate and choice.closed
    explained = e.decision(choice, explain=True)
    assert {o.rule_id: o.blocked for o in explained.outcomes if o.matched} == {
        "vip": "no escalation: the ticket is solved",
        "idle": "no escalation: the ticket is solved",
    }
