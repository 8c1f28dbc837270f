"""The engine: (Ticket, history, now) -> Decision, with the reason for every rule.

Pure and deterministic: time is passed in, nothing is read or written. The matrix's conditions
are compiled once into one generated matcher (``escbridge.conditions.evaluate``) so a sync scan
over many tickets stays cheap. A decision comes in two steps: :meth:`Engine.choose` settles
whether the ticket escalates, by which rule and where to (what a scan needs), and
:meth:`Engine.decision` builds the rest only for the tickets that get it — the note (a Jinja
render), the actions, the winning rule's reasons and, with ``explain=True``, an explanation for
every rule (``escbridge.conditions.explain``). :meth:`Engine.decide` is both at once.

The invariants of ARCHITECTURE.md "Exactly-once in effect" live here and in ``Matrix.resolve``:
never de-escalate, never re-apply the rung a ticket is already on, never lower a priority, and a
per-ticket cooldown and daily cap stop any loop that slips through.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    Status,
    Ticket,
)

DAY = timedelta(days=1)
#: Statuses no rule escalates (``Status.is_open`` as a set: one hash lookup per ticket).
_CLOSED = frozenset({Status.SOLVED, Status.CLOSED})
#: Distinct (level, group, instance) keys ``current_rung`` remembers before starting over.
_RUNG_CACHE = 4096


@dataclass(frozen=True)
class _Candidate:
    rule: Rule
    rung: Rung


@dataclass(frozen=True, eq=False)
class Choice:
    """What a decision settles: whether the ticket escalates, by which rule, to which rung and
    group, and the one-line summary — without what only an applied or explained decision needs.

    Why a step of its own: a scan decides every open ticket, and the note (a Jinja render), the
    actions and the explanations cost more than the matching; :meth:`Engine.decision` builds
    them from a choice for the tickets that are applied or explained, and ``decide`` gives the
    same Decision as ever.
    """

    ctx: Context
    summary: str
    rule: Rule | None = None  # the rule that escalates the ticket (None: no escalation)
    rung: Rung | None = None  # where it goes
    group: str | None = None  # the rung's group on the ticket's helpdesk
    blocked: Mapping[str, str] = field(default_factory=dict)  # matching rules that did not act
    closed: bool = False  # solved or closed: no rule looked at

    @property
    def escalate(self) -> bool:
        return self.rule is not None

    @property
    def ticket(self) -> Ticket:
        return self.ctx.ticket

    @property
    def at(self) -> datetime:
        return self.ctx.now

    @property
    def rule_id(self) -> str | None:
        return None if self.rule is None else self.rule.id

    @property
    def to(self) -> str | None:
        """The id of the rung the ticket escalates to (None: no escalation)."""
        return None if self.rung is None else self.rung.id


class _Template:
    """A note template, ready to render many times: the environment's globals copied once,
    and whether it reads ``ticket`` at all.

    ``jinja2.Template.render`` copies the template's globals (a ChainMap) into a new dict on
    every call, and the ticket as a template sees it is a ``model_dump``: both were a large
    share of an escalation's cost for a default note that reads neither. The compiled render
    function and the sandboxed environment are the template's own, so the text (and any error
    it raises) is what ``render`` gives.
    """

    __slots__ = ("_globals", "reads_ticket", "template")

    def __init__(self, template: jinja2.Template) -> None:
        self.template = template
        self._globals = dict(template.globals)
        self.reads_ticket = _reads_variable(template, "ticket")

    def render(self, variables: Mapping[str, Any]) -> str:
        t = self.template
        env = t.environment
        context = env.context_class(
            env, {**self._globals, **variables}, t.name, t.blocks, globals=self._globals
        )
        return env.concat(t.root_render_func(context))


def _reads_variable(template: jinja2.Template, name: str) -> bool:
    """Whether a compiled template may read the variable ``name``.

    Jinja compiles every variable a template reads into a lookup by its name, a string
    constant of the render function (or of a macro or block compiled inside it): a template
    without that constant anywhere cannot read it. A constant that is only text the template
    prints counts too, which errs on the side of providing the variable.
    """
    todo: list[Any] = [template.root_render_func.__code__]
    todo.extend(block.__code__ for block in template.blocks.values())
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if item == name:
                return True
        elif isinstance(item, types.CodeType):
            todo.extend(item.co_consts)
        elif isinstance(item, tuple | frozenset):
            todo.extend(item)
    return False


class Engine:
    """Decides, for one ticket at one moment, whether and where it escalates, and why."""

    def __init__(self, matrix: Matrix, helpdesks: Mapping[str, str] | None = None) -> None:
        """``helpdesks`` maps instance names to connector types, for per-helpdesk groups."""
        self.matrix = matrix
        self.helpdesks = dict(helpdesks or {})
        self._match = build_matcher([rule.condition for rule in matrix.rules])
        self._rungs: dict[tuple[str | None, str | None, str], Rung] = {}
        self._templates: dict[int, _Template] = {}
        for template in (
            matrix.default_note,
            *(rule.actions.note for rule in matrix.rules),
            *(rule.actions.customer_update for rule in matrix.rules),
        ):
            if template is not None:
                self._templates[id(template)] = _Template(template)

    def current_rung(self, ticket: Ticket) -> Rung:
        """Where a ticket sits now: its marker, else the rung owning its group, else level 1.

        Remembered per (marker, group, instance): a scan meets the same few combinations over
        and over, and the answer depends on nothing else (the matrix and the helpdesks are
        fixed for the engine's life)."""
        key = (ticket.level, ticket.group, ticket.instance)
        rung = self._rungs.get(key)
        if rung is None:
            rung = self._find_rung(ticket)
            if len(self._rungs) >= _RUNG_CACHE:
                self._rungs.clear()
            self._rungs[key] = rung
        return rung

    def _find_rung(self, ticket: Ticket) -> Rung:
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
        return self.decision(self.choose(ticket, history, now), explain=explain)

    def choose(self, ticket: Ticket, history: Sequence[EscalationRecord], now: datetime) -> Choice:
        """Whether, by which rule and where ``ticket`` escalates at ``now``: ``decide`` without
        the note, the actions and the explanations (see :class:`Choice`)."""
        if now.tzinfo is not UTC:
            if now.tzinfo is None:
                raise ValueError("now needs a timezone")
            now = now.astimezone(UTC)
        current = self.current_rung(ticket)
        ctx = Context(ticket, now, current, history)
        if ticket.status in _CLOSED:
            return Choice(ctx, f"no escalation: the ticket is {ticket.status.value}", closed=True)
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
            return Choice(ctx, summary, blocked=blocked)
        rule, rung = winner.rule, winner.rung
        group = rung.group_for(ticket.instance, self.helpdesks.get(ticket.instance))
        if group is None:
            why = f"{rung.kind} {rung.id} has no group for helpdesk {ticket.instance}"
            return Choice(ctx, f"no escalation: {why}", blocked={**blocked, rule.id: why})
        summary = (
            f"escalate {current.id} → {rung.id} ({rung.name}, group {group}) by rule {rule.id}"
        )
        return Choice(ctx, summary, rule, rung, group, blocked)

    def decision(self, choice: Choice, *, explain: bool = False) -> Decision:
        """The full Decision of a choice: for an escalation its note, actions and reasons; with
        ``explain``, an outcome for every rule."""
        ctx = choice.ctx
        if choice.rule is None or choice.rung is None or choice.group is None:
            closed = choice.summary if choice.closed else None
            outcomes = self._outcomes(ctx, choice.blocked, closed) if explain else ()
            return _no_escalation(ctx, choice.summary, outcomes)
        return self._escalation(choice, choice.rule, choice.rung, choice.group, explain)

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
        if now.tzinfo is not UTC:
            if now.tzinfo is None:
                raise ValueError("now needs a timezone")
            now = now.astimezone(UTC)
        if ticket.status in _CLOSED:
            return None
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
        self, ctx: Context, blocked: Mapping[str, str], closed: str | None
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
        self, choice: Choice, rule: Rule, rung: Rung, group: str, explain: bool
    ) -> Decision:
        ctx = choice.ctx
        ticket, current = ctx.ticket, ctx.rung
        _, lines = explain_condition(rule.condition, ctx)
        reasons = tuple(line[2:] for line in lines) or (rule.name,)
        priority = max(
            ticket.priority,
            rule.actions.priority or Priority.LOW,
            rung.min_priority or Priority.LOW,
        )
        # Built from values the engine made itself, like the "no escalation" decisions (a test
        # compares them with validated models).
        destination = _trusted(
            Destination, kind=rung.kind, id=rung.id, name=rung.name, rank=rung.rank, group=group
        )
        helpdesk = self.helpdesks.get(ticket.instance)
        variables: dict[str, Any] = {
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
        note, failure = self._render(
            rule.actions.note or self.matrix.default_note, variables, ticket
        )
        if note is None:
            note = (self._render(self.matrix.default_note, variables, ticket)[0] or "") + (
                f"\n\n(the note template of rule {rule.id} failed on this ticket: {failure}; "
                "this is escbridge's default note)"
            )
        customer = None
        if rule.actions.customer_update is not None:
            customer, failure = self._render(rule.actions.customer_update, variables, ticket)
            if customer is None:
                note += (
                    f"\n(the customer update of rule {rule.id} failed on this ticket and was not "
                    f"sent: {failure})"
                )
        old_marker = current.marker if ticket.level == current.id else None
        actions = _trusted(
            Actions,
            group=group,
            priority=priority if priority > ticket.priority else None,
            note=note,
            tags_add=(rung.marker, *(t for t in rule.actions.tags if t not in ticket.tags)),
            tags_remove=(old_marker,) if old_marker else (),
            customer_update=customer,
            unassign=rule.actions.unassign,
            level=rung.id,
        )
        outcomes = self._outcomes(ctx, choice.blocked, None) if explain else ()
        return _trusted(
            Decision,
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
            summary=choice.summary,
        )

    def _render(
        self, template: jinja2.Template, variables: dict[str, Any], ticket: Ticket
    ) -> tuple[str | None, str]:
        """(text, "") or (None, why). Templates were trial-rendered at load, but one ticket can
        still lack what a template uses (a custom field, an organisation): the escalation must
        still happen, so the caller falls back instead of failing. The ticket is put in the
        variables the first time a template that reads it is rendered."""
        prepared = self._templates.get(id(template))
        if prepared is None or prepared.template is not template:  # not from this matrix
            prepared = self._templates[id(template)] = _Template(template)
        if prepared.reads_ticket and "ticket" not in variables:
            variables["ticket"] = _ticket_for_template(ticket)
        try:
            return prepared.render(variables).strip(), ""
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
