"""The engine: (Ticket, history, now) -> Decision, with the reason for every rule.

Pure and deterministic: time is passed in, nothing is read or written. The matrix's conditions
are compiled once into one generated matcher (``escbridge.conditions.evaluate``) so a sync scan
over many tickets stays cheap; explanations (``escbridge.conditions.explain``) are built only
when asked for (``explain=True``) and for the winning rule.

The invariants of ARCHITECTURE.md "Exactly-once in effect" live here and in ``Matrix.resolve``:
never de-escalate, never re-apply the rung a ticket is already on, never lower a priority, and a
per-ticket cooldown and daily cap stop any loop that slips through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import jinja2
from pydantic import BaseModel

from escbridge.calendar import format_duration
from escbridge.conditions.due import instants as due_instants
from escbridge.conditions.evaluate import Context, build_matcher
from escbridge.conditions.explain import explain as explain_condition
from escbridge.matrix import Matrix, Rule, Rung
from escbridge.model import (
    Actions,
    Decision,
    Destination,
    EscalationRecord,
    Priority,
    RuleOutcome,
    Ticket,
)

DAY = timedelta(days=1)


@dataclass(frozen=True)
class _Candidate:
    rule: Rule
    rung: Rung


class Engine:
    """Decides, for one ticket at one moment, whether and where it escalates, and why."""

    def __init__(self, matrix: Matrix, helpdesks: Mapping[str, str] | None = None) -> None:
        """``helpdesks`` maps instance names to connector types, for per-helpdesk groups."""
        self.matrix = matrix
        self.helpdesks = dict(helpdesks or {})
        self._match = build_matcher([rule.condition for rule in matrix.rules])

    def current_rung(self, ticket: Ticket) -> Rung:
        """Where a ticket sits now: its marker, else the rung owning its group, else level 1."""
        rung = self.matrix.rung(ticket.level)
        if rung is not None:
            return rung
        if ticket.group:
            group = ticket.group.lower()
            helpdesk = self.helpdesks.get(ticket.instance)
            for candidate in self.matrix.rungs:
                owned = candidate.group_for(ticket.instance, helpdesk)
                if owned is not None and owned.lower() == group:
                    return candidate
        return self.matrix.levels[0]

    def decide(
        self,
        ticket: Ticket,
        history: Sequence[EscalationRecord],
        now: datetime,
        *,
        explain: bool = False,
    ) -> Decision:
        """The decision for ``ticket`` at ``now``; ``explain`` adds an outcome for every rule."""
        if now.tzinfo is None:
            raise ValueError("now needs a timezone")
        now = now.astimezone(UTC)
        current = self.current_rung(ticket)
        ctx = Context(ticket, now, current, history)
        if not ticket.status.is_open:
            summary = f"no escalation: the ticket is {ticket.status.value}"
            outcomes = self._outcomes(ctx, current, {}, summary) if explain else ()
            return _no_escalation(ctx, summary, outcomes)
        winner, blocked, guard = self._select(ctx)
        if winner is None:
            if guard is not None:
                summary = f"no escalation: {guard}"
            elif blocked:
                summary = "no escalation: " + "; ".join(
                    f"{rid}: {why}" for rid, why in blocked.items()
                )
            else:
                summary = "no escalation: no rule matched"
            outcomes = self._outcomes(ctx, current, blocked, None) if explain else ()
            return _no_escalation(ctx, summary, outcomes)
        return self._escalation(ctx, current, winner, blocked, explain)

    def _select(self, ctx: Context) -> tuple[_Candidate | None, dict[str, str], str | None]:
        """(winner, why each other matching rule was blocked, the guard that stopped the winner).

        One place for the choice, so ``decide`` and ``next_due`` cannot disagree on it.
        """
        winner: _Candidate | None = None
        blocked: dict[str, str] = {}
        rules = self.matrix.rules
        history = ctx.history
        fired = {r.rule_id for r in history} if history else set()
        for index in self._match(ctx):
            rule = rules[index]
            if rule.id in fired and not rule.repeat:
                blocked[rule.id] = (
                    "this rule escalated the ticket already (a rule acts once per ticket "
                    "unless it measures time at the level or says repeat: true)"
                )
                continue
            resolved = self.matrix.resolve(rule, ctx.rung)
            if isinstance(resolved, str):
                blocked[rule.id] = resolved
                continue
            if winner is None or resolved.rank > winner.rung.rank:
                if winner is not None:
                    blocked[winner.rule.id] = f"rule {rule.id} goes higher"
                winner = _Candidate(rule, resolved)
            else:
                blocked[rule.id] = f"rule {winner.rule.id} goes as high or higher"
        guard = self._guard(history, ctx.now) if winner is not None else None
        if winner is not None and guard is not None:
            blocked[winner.rule.id] = guard
            winner = None
        return winner, blocked, guard

    def next_due(
        self, ticket: Ticket, history: Sequence[EscalationRecord], now: datetime
    ) -> datetime | None:
        """The earliest instant after ``now`` at which ``decide`` would decide differently
        (escalate or not, rule, destination), or None when time alone never changes it.

        Exact, not just safe: the decision is the same at every instant in ``[now, due)`` and
        differs at ``due``. Only time moves: ticket and history stay as given, so any change to
        them (an update, an escalation) needs a new ``next_due``. The instants checked are the
        flips of the time tests that can still matter (``escbridge.conditions.due``: business time,
        holidays and DST counted as each test counts them; rules that already acted or cannot
        move this ticket, and tests a constant sibling overrides, left out), the end of the
        cooldown and the moments past escalations leave the 24h cap window; the decision is
        re-taken at each in order, so a flip that changes nothing (a rule matching below the
        winner) does not make the ticket due. A ticket that escalates at ``now`` is due now;
        for it this is when it would stop escalating.
        """
        if now.tzinfo is None:
            raise ValueError("now needs a timezone")
        if not ticket.status.is_open:
            return None
        now = now.astimezone(UTC)
        current = self.current_rung(ticket)
        ctx = Context(ticket, now, current, history)
        fired = {r.rule_id for r in history} if history else set()
        candidates: set[datetime] = set()
        for rule in self.matrix.rules:
            if rule.id in fired and not rule.repeat:
                continue  # blocked whatever its conditions say
            if isinstance(self.matrix.resolve(rule, current), str):
                continue  # cannot move this ticket from its rung
            candidates.update(due_instants(rule.condition, ctx))
        if history:
            last = max(r.at for r in history)
            candidates.add(last + self.matrix.cooldown)
            candidates.update(r.at + DAY for r in history)
        first = self._verdict(ctx)
        for at in sorted(c for c in candidates if c > now):
            if self._verdict(Context(ticket, at, current, history)) != first:
                return at
        return None

    def _verdict(self, ctx: Context) -> tuple[str, str] | None:
        """What ``decide`` settles at this moment: (rule, destination), None for no escalation."""
        winner = self._select(ctx)[0]
        if winner is None:
            return None
        helpdesk = self.helpdesks.get(ctx.ticket.instance)
        if winner.rung.group_for(ctx.ticket.instance, helpdesk) is None:
            return None
        return winner.rule.id, winner.rung.id

    def _guard(self, history: Sequence[EscalationRecord], now: datetime) -> str | None:
        """Cooldown and daily cap: the last line of defence against escalation loops."""
        if not history:
            return None
        last = max(r.at for r in history)
        if now - last < self.matrix.cooldown:
            wait = format_duration(self.matrix.cooldown - (now - last))
            ago = format_duration(now - last)
            return f"cooldown: escalated {ago} ago, next escalation possible in {wait}"
        recent = sum(1 for r in history if now - r.at < DAY)
        if recent >= self.matrix.daily_cap:
            cap = self.matrix.daily_cap
            return f"daily cap reached: {recent} escalations in the last 24h (cap {cap})"
        return None

    def _outcomes(
        self, ctx: Context, current: Rung, blocked: Mapping[str, str], closed: str | None
    ) -> tuple[RuleOutcome, ...]:
        out = []
        for rule in self.matrix.rules:
            ok, lines = explain_condition(rule.condition, ctx)
            reason = closed if (ok and closed) else blocked.get(rule.id)
            out.append(
                RuleOutcome.model_construct(
                    rule_id=rule.id, matched=ok, details=tuple(lines), blocked=reason
                )
            )
        return tuple(out)

    def _escalation(
        self,
        ctx: Context,
        current: Rung,
        winner: _Candidate,
        blocked: Mapping[str, str],
        explain: bool,
    ) -> Decision:
        ticket, rule, rung = ctx.ticket, winner.rule, winner.rung
        helpdesk = self.helpdesks.get(ticket.instance)
        group = rung.group_for(ticket.instance, helpdesk)
        _, lines = explain_condition(rule.condition, ctx)
        reasons = tuple(line[2:] for line in lines) or (rule.name,)
        if group is None:
            why = f"{rung.kind} {rung.id} has no group for helpdesk {ticket.instance}"
            summary = f"no escalation: {why}"
            outcomes = (
                self._outcomes(ctx, current, {**blocked, rule.id: why}, None) if explain else ()
            )
            return _no_escalation(ctx, summary, outcomes)
        priority = max(
            ticket.priority,
            rule.actions.priority or Priority.LOW,
            rung.min_priority or Priority.LOW,
        )
        destination = Destination(
            kind=rung.kind, id=rung.id, name=rung.name, rank=rung.rank, group=group
        )
        context = {
            "ticket": _ticket_for_template(ticket),
            "rule": {"id": rule.id, "name": rule.name, "kind": rule.kind},
            "destination": {"id": rung.id, "name": rung.name, "kind": rung.kind, "group": group},
            "from_level": {
                "id": current.id,
                "name": current.name,
                "kind": current.kind,
                "group": current.group_for(ticket.instance, helpdesk),
            },
            "reasons": list(reasons),
            "now": ctx.now,
        }
        note, failure = _render(rule.actions.note or self.matrix.default_note, context)
        if note is None:
            note = (_render(self.matrix.default_note, context)[0] or "") + (
                f"\n\n(the note template of rule {rule.id} failed on this ticket: {failure}; "
                "this is escbridge's default note)"
            )
        customer = None
        if rule.actions.customer_update is not None:
            customer, failure = _render(rule.actions.customer_update, context)
            if customer is None:
                note += (
                    f"\n(the customer update of rule {rule.id} failed on this ticket and was not "
                    f"sent: {failure})"
                )
        old_marker = current.marker if ticket.level == current.id else None
        actions = Actions(
            group=group,
            priority=priority if priority > ticket.priority else None,
            note=note,
            tags_add=(rung.marker, *(t for t in rule.actions.tags if t not in ticket.tags)),
            tags_remove=(old_marker,) if old_marker else (),
            customer_update=customer,
            unassign=rule.actions.unassign,
            level=rung.id,
        )
        summary = (
            f"escalate {current.id} → {rung.id} ({rung.name}, group {group}) by rule {rule.id}"
        )
        outcomes = self._outcomes(ctx, current, blocked, None) if explain else ()
        return Decision(
            ticket_id=ticket.id,
            instance=ticket.instance,
            at=ctx.now,
            escalate=True,
            from_level=current.id,
            destination=destination,
            rule_id=rule.id,
            kind=rule.kind,
            actions=actions,
            reasons=reasons,
            outcomes=outcomes,
            summary=summary,
        )


def _render(template: jinja2.Template, context: Mapping[str, Any]) -> tuple[str | None, str]:
    """(text, "") or (None, why). Templates were trial-rendered at load, but one ticket can
    still lack what a template uses (a custom field, an organisation): the escalation must
    still happen, so the caller falls back instead of failing."""
    try:
        return template.render(context).strip(), ""
    except Exception as exc:  # the admin's template, whatever it raised
        return None, str(exc)


def _no_escalation(ctx: Context, summary: str, outcomes: tuple[RuleOutcome, ...]) -> Decision:
    return _trusted(
        Decision,
        ticket_id=ctx.ticket.id,
        instance=ctx.ticket.instance,
        at=ctx.now,
        escalate=False,
        from_level=ctx.rung.id,
        destination=None,
        rule_id=None,
        kind=None,
        actions=None,
        reasons=(),
        outcomes=outcomes,
        summary=summary,
    )


_Model = TypeVar("_Model", bound=BaseModel)


def _trusted(cls: type[_Model], **fields: Any) -> _Model:
    """A model from values the engine built itself, every field given, without validation.

    Why: a sync scan builds one "no escalation" decision per open ticket, and pydantic's
    ``model_construct`` spends more time filling defaults than the whole rule evaluation.
    This sets exactly the attributes ``model_construct`` sets; a test compares the result
    with a validated model so a pydantic upgrade that changes them fails loudly.
    """
    model = object.__new__(cls)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", set(fields))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


def _ticket_for_template(ticket: Ticket) -> dict[str, Any]:
    data = ticket.model_dump()
    data["priority"] = ticket.priority.label
    data["channel"] = ticket.channel.value
    data["status"] = ticket.status.value
    data["tags"] = sorted(ticket.tags)
    return data
