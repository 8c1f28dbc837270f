"""What a notification says about one escalation: a JSON-able dict stored with it in the outbox.

Built once, when the escalation is recorded, from what the record phase holds (the decision,
the ticket, the matrix, the agent-view link): the message is rendered from it at send time, so
a retry hours later still tells what happened then, and a digest joins several of them.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from escbridge.conditions.due import first_at_least
from escbridge.model import Decision, Ticket

if TYPE_CHECKING:
    from escbridge.matrix.model import Matrix, Rung

__all__ = ["CONTEXT_KEYS", "next_deadline", "notification_context", "sample_context", "targets_for"]

#: The keys of a notification context, which are also the variables of a custom template.
CONTEXT_KEYS = frozenset(
    {
        "id",
        "instance",
        "helpdesk",
        "ticket_id",
        "subject",
        "url",
        "from_level",
        "from_level_name",
        "to_level",
        "to_level_name",
        "to_kind",
        "team",
        "from_group",
        "to_group",
        "priority",
        "rule_id",
        "rule_name",
        "reasons",
        "escalated_at",
        "next_deadline",
        "timezone",
        "matrix",
    }
)


def targets_for(matrix: Matrix, decision: Decision) -> tuple[str, ...]:
    """The notification targets of the rung ``decision`` escalates to (none: not an escalation,
    or a rung the matrix no longer has)."""
    if not decision.escalate or decision.destination is None:
        return ()
    rung = matrix.rung(decision.destination.id)
    return rung.notify if rung is not None else ()


def next_deadline(rung: Rung, ticket: Ticket, since: datetime) -> dict[str, str] | None:
    """The next expected time at ``rung`` for a ticket that arrived there at ``since``: its
    response time while the ticket has no first response, else its resolution time; counted as
    the engine counts them (the rung's calendar in business time), or None when it has neither."""
    what: Literal["response", "resolution"]
    if rung.response is not None and ticket.first_response_at is None:
        what, length = "response", rung.response
    elif rung.resolution is not None:
        what, length = "resolution", rung.resolution
    else:
        return None
    due = first_at_least(rung.calendar, rung.business, since, length)
    return None if due is None else {"what": what, "due_at": due.isoformat()}


def notification_context(
    decision: Decision,
    ticket: Ticket,
    matrix: Matrix,
    *,
    helpdesk: str | None = None,
    agent_url: str | None = None,
) -> dict[str, Any]:
    """The context of one escalation (``decision`` must escalate). ``helpdesk`` is the instance's
    connector type, ``agent_url`` the ticket's link in the agent view (``BaseConnector.agent_url``).
    ``id`` is None here: the outbox row's id, filled in when the message is sent."""
    destination = decision.destination
    if not decision.escalate or destination is None:
        raise ValueError(f"ticket {decision.ticket_id}: not an escalation, nothing to notify")
    source = matrix.rung(decision.from_level)
    target = matrix.rung(destination.id)
    rule = next((r for r in matrix.rules if r.id == decision.rule_id), None)
    priority = (
        decision.actions.priority
        if decision.actions is not None and decision.actions.priority is not None
        else ticket.priority
    )
    return {
        "id": None,
        "instance": decision.instance,
        "helpdesk": helpdesk,
        "ticket_id": decision.ticket_id,
        "subject": ticket.subject,
        "url": agent_url,
        "from_level": decision.from_level,
        "from_level_name": source.name if source is not None else decision.from_level,
        "to_level": destination.id,
        "to_level_name": destination.name,
        "to_kind": destination.kind,
        "team": (
            {"id": destination.id, "name": destination.name} if destination.kind == "team" else None
        ),
        "from_group": (
            source.group_for(decision.instance, helpdesk) if source is not None else ticket.group
        ),
        "to_group": destination.group,
        "priority": priority.label,
        "rule_id": decision.rule_id,
        "rule_name": rule.name if rule is not None else decision.rule_id,
        "reasons": list(decision.reasons),
        "escalated_at": decision.at.isoformat(),
        "next_deadline": (
            next_deadline(target, ticket, decision.at) if target is not None else None
        ),
        "timezone": target.calendar.tz.key if target is not None else "UTC",
        "matrix": matrix.name,
    }


def sample_context(**changes: Any) -> dict[str, Any]:
    """A made-up escalation with every key set: what templates are trial-rendered with at load
    and what ``escbridge notify test`` sends."""
    sample: dict[str, Any] = {
        "id": 0,
        "instance": "support",
        "helpdesk": "zendesk",
        "ticket_id": "12345",
        "subject": "Sample: the invoice export fails",
        "url": "https://example.zendesk.com/agent/tickets/12345",
        "from_level": "l1",
        "from_level_name": "Level 1",
        "to_level": "l2",
        "to_level_name": "Level 2",
        "to_kind": "level",
        "team": {"id": "billing", "name": "Billing"},
        "from_group": "Tier 1",
        "to_group": "Tier 2",
        "priority": "high",
        "rule_id": "sample-rule",
        "rule_name": "Sample rule",
        "reasons": ["idle over 4h (5h)", "priority is high"],
        "escalated_at": "2026-01-05T09:00:00+00:00",
        "next_deadline": {"what": "response", "due_at": "2026-01-05T13:00:00+00:00"},
        "timezone": "UTC",
        "matrix": "escalation matrix",
    }
    sample.update(changes)
    return sample
