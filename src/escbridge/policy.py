"""The engine: (Ticket, history, now) -> Decision, with the reason for every rule.

Pure and deterministic: time is passed in, nothing is read or written. Conditions are compiled
once into small closures so a sync scan over many tickets stays cheap; explanations are built by
the same condition records, only when asked for (``explain=True``) and for the winning rule.

The invariants of ARCHITECTURE.md "Exactly-once in effect" live here: never de-escalate, never
re-apply the rung a ticket is already on, never lower a priority, and a per-ticket cooldown and
daily cap stop any loop that slips through.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import jinja2
from pydantic import BaseModel

from escbridge.calendar import BusinessCalendar, format_duration
from escbridge.matrix import (
    TIME_MEASURES,
    AllOf,
    AnyOf,
    Condition,
    FieldTest,
    KeywordTest,
    Matrix,
    NotOf,
    Rule,
    Rung,
    TagTest,
    TimeTest,
)
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


class _Ctx:
    """One ticket at one moment, with derived values computed at most once."""

    __slots__ = ("_cache", "_text", "history", "now", "rung", "ticket")

    def __init__(
        self, ticket: Ticket, now: datetime, rung: Rung, history: Sequence[EscalationRecord]
    ) -> None:
        self.ticket = ticket
        self.now = now
        self.rung = rung
        self.history = history
        self._text: dict[tuple[str, ...], str] = {}
        self._cache: dict[tuple[str, int, bool], timedelta | None] = {}

    def text(self, fields: tuple[str, ...]) -> str:
        """The lower-cased text of some fields, joined by a separator no phrase crosses."""
        found = self._text.get(fields)
        if found is None:
            t = self.ticket
            found = _FIELD_SEPARATOR.join(getattr(t, f) for f in fields).lower()
            self._text[fields] = found
        return found

    def level_since(self) -> datetime:
        """When the ticket reached its current rung: the last escalation there, else creation."""
        for record in reversed(self.history):
            if record.to == self.rung.id:
                return record.at
        return self.ticket.created_at

    def mode(self, test: TimeTest) -> tuple[bool, BusinessCalendar]:
        """(business time?, calendar) of a measure: the level's own for ``follow_level``."""
        if test.follow_level:
            return self.rung.business, self.rung.calendar
        return test.business, test.calendar

    def measure(self, test: TimeTest) -> timedelta | None:
        """A time measure of the ticket (None when it does not apply, e.g. no due date)."""
        business, calendar = self.mode(test)
        key = (test.measure, id(calendar), business)
        if key in self._cache:
            return self._cache[key]
        value = self._measure(test.measure, business, calendar)
        self._cache[key] = value
        return value

    def _measure(self, m: str, business: bool, calendar: BusinessCalendar) -> timedelta | None:
        t, now = self.ticket, self.now

        def span(start: datetime, end: datetime) -> timedelta:
            return calendar.elapsed(start, end) if business else end - start

        if m == "age":
            return span(t.created_at, now)
        if m == "idle":
            return span(t.updated_at, now)
        if m == "since_customer_reply":
            if t.last_customer_reply_at is None:
                return None
            return span(t.last_customer_reply_at, now)
        if m == "until_due":
            return None if t.due_at is None else span(now, t.due_at)
        if m == "overdue":
            return None if t.due_at is None else span(t.due_at, now)
        if m == "at_level":
            return span(self.level_since(), now)
        if m == "level_overdue":
            if self.rung.resolution is None:
                return None
            return span(self.level_since(), now) - self.rung.resolution
        if m == "response_overdue":
            if t.first_response_at is not None or self.rung.response is None:
                return None
            return span(self.level_since(), now) - self.rung.response
        raise AssertionError(f"unknown measure {m}")  # the matrix loader rejects these


Test = Callable[[_Ctx], bool]


def _getter(name: str) -> Callable[[Ticket], Any]:
    """How to read a condition's field from a ticket, normalised like the matrix literal."""
    if name in ("priority", "reopen_count", "channel", "status"):
        # Priority is an IntEnum, Channel and Status are StrEnums: they compare (and hash)
        # like the matrix literals as they are.
        return operator.attrgetter(name)
    if name.startswith("custom_fields."):
        key = name.removeprefix("custom_fields.")

        def custom(t: Ticket) -> Any:
            value = t.custom_fields.get(key)
            return value.lower() if isinstance(value, str) else value

        return custom
    if "." in name:
        owner, attr = name.split(".", 1)

        def party(t: Ticket) -> Any:
            person = getattr(t, owner)
            value = None if person is None else getattr(person, attr)
            return value.lower() if isinstance(value, str) else value

        return party

    def plain(t: Ticket) -> Any:
        value = getattr(t, name)
        return value.lower() if isinstance(value, str) else value

    return plain


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(",", ""))
        except ValueError:
            return None
    return None


def _number_or_nan(value: Any) -> float:
    number = _number(value)
    return math.nan if number is None else number


def _compare(op: str, actual: Any, expected: Any) -> bool:
    """One field comparison; a missing value fails every comparison except not_equals/not_in."""
    if op == "exists":
        return bool((actual is not None and actual != "") == expected)
    if op == "equals":
        return bool(actual == expected)
    if op == "not_equals":
        return bool(actual != expected)
    if op == "in":
        return _hashable(actual) in expected
    if op == "not_in":
        return _hashable(actual) not in expected
    if actual is None:
        return False
    if op == "contains":
        if isinstance(actual, list | tuple | set | frozenset):
            return expected in {str(a).lower() for a in actual}
        return expected in str(actual).lower()
    if op == "regex":
        return expected.search(str(actual)) is not None
    number = actual if isinstance(actual, Priority) else _number(actual)
    if number is None:
        return False
    if op == "gt":
        return bool(number > expected)
    if op == "gte":
        return bool(number >= expected)
    if op == "lt":
        return bool(number < expected)
    return bool(number <= expected)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_FIELD_SEPARATOR = "\x1f"


def _phrase_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Whole words, any punctuation or spacing between them, never across two fields."""
    between = r"[^\w\x1f]+"
    return re.compile(r"\b" + between.join(map(re.escape, words)) + r"\b")


def _compile(cond: Condition) -> Test:
    """A fast boolean test for one condition (explanations use ``_explain`` instead).

    Closures are specialised per operator at load time: a sync scan evaluates every rule for
    every open ticket, so per-call dispatch on strings would dominate the cost.
    """
    if isinstance(cond, AllOf | AnyOf):
        parts = tuple(_compile(c) for c in cond.items)
        if len(parts) == 1:
            return parts[0]
        if isinstance(cond, AllOf):
            if len(parts) == 2:
                a, b = parts
                return lambda ctx: a(ctx) and b(ctx)
            return lambda ctx: all(part(ctx) for part in parts)
        if len(parts) == 2:
            a, b = parts
            return lambda ctx: a(ctx) or b(ctx)
        return lambda ctx: any(part(ctx) for part in parts)
    if isinstance(cond, NotOf):
        inner = _compile(cond.item)
        return lambda ctx: not inner(ctx)
    if isinstance(cond, FieldTest):
        return _compile_field(cond)
    if isinstance(cond, TagTest):
        return _compile_tags(cond)
    if isinstance(cond, KeywordTest):
        return _compile_keywords(cond)
    return _compile_time(cond)


def _compile_field(cond: FieldTest) -> Test:
    get, op, value = _getter(cond.field), cond.op, cond.value
    if cond.field == "level":
        # The level the engine works with: the marker, else the one inferred from the group.
        return lambda ctx: _compare(op, ctx.rung.id, value)
    if op == "equals":
        return lambda ctx: bool(get(ctx.ticket) == value)
    if op == "in":

        def member(ctx: _Ctx) -> bool:
            return _hashable(get(ctx.ticket)) in value

        return member
    if op in ("gt", "gte", "lt", "lte") and cond.field in ("priority", "reopen_count"):
        compare = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}[op]
        return lambda ctx: bool(compare(get(ctx.ticket), value))
    return lambda ctx: _compare(op, get(ctx.ticket), value)


def _compile_tags(cond: TagTest) -> Test:
    any_of, all_of, none_of = cond.any_of, cond.all_of, cond.none_of
    if any_of and not all_of and not none_of:
        return lambda ctx: not any_of.isdisjoint(ctx.ticket.tags)
    if all_of and not any_of and not none_of:
        return lambda ctx: all_of <= ctx.ticket.tags

    def tags(ctx: _Ctx) -> bool:
        have = ctx.ticket.tags
        return (
            (not any_of or not any_of.isdisjoint(have))
            and all_of <= have
            and none_of.isdisjoint(have)
        )

    return tags


def _compile_keywords(cond: KeywordTest) -> Test:
    # A plain substring test on the lower-cased text rules most tickets out at C speed; the
    # whole-word regex runs only when the first word occurs at all.
    phrases = tuple((words[0], _phrase_pattern(words)) for words in cond.phrases)
    fields = cond.fields

    def keywords(ctx: _Ctx) -> bool:
        text = ctx.text(fields)
        return any(first in text and pattern.search(text) for first, pattern in phrases)

    return keywords


_SIMPLE_SPANS = {
    # measure: (ticket attribute, True when the span runs from now to the attribute)
    "age": ("created_at", False),
    "idle": ("updated_at", False),
    "since_customer_reply": ("last_customer_reply_at", False),
    "until_due": ("due_at", True),
    "overdue": ("due_at", False),
}


def _compile_time(cond: TimeTest) -> Test:
    over, under = cond.over, cond.under
    simple = _SIMPLE_SPANS.get(cond.measure)
    if simple is not None and not cond.business:
        get_at, forward = operator.attrgetter(simple[0]), simple[1]

        def span(ctx: _Ctx) -> bool:
            at = get_at(ctx.ticket)
            if at is None:
                return False
            value = at - ctx.now if forward else ctx.now - at
            return (over is None or value > over) and (under is None or value < under)

        return span

    def timed(ctx: _Ctx) -> bool:
        value = ctx.measure(cond)
        if value is None:
            return False
        return (over is None or value > over) and (under is None or value < under)

    return timed


class _MatcherBuilder:
    """Generates one Python function that tests every rule of a matrix and returns the indices
    of those that match.

    Why: a sync scan evaluates every rule for every open ticket, and one function of inline
    boolean expressions costs a fraction of fifty closure calls. Only names are generated:
    every value an admin wrote (words, numbers, patterns) is passed in as a constant, never
    pasted into the source. Leaves without a cheap inline form call their ``_compile`` closure,
    so both paths share one meaning; tests and the benchmark check they agree.
    """

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {"_number_or_nan": _number_or_nan}
        self.texts: dict[tuple[str, ...], str] = {}

    def const(self, value: Any) -> str:
        name = f"K{len(self.consts)}"
        self.consts[name] = value
        return name

    def text(self, fields: tuple[str, ...]) -> str:
        if fields not in self.texts:
            self.texts[fields] = f"TXT{len(self.texts)}"
        return self.texts[fields]

    def expr(self, cond: Condition) -> str:
        if isinstance(cond, AllOf | AnyOf):
            joiner = " and " if isinstance(cond, AllOf) else " or "
            return "(" + joiner.join(self.expr(c) for c in cond.items) + ")"
        if isinstance(cond, NotOf):
            return f"(not {self.expr(cond.item)})"
        if isinstance(cond, TagTest) and not cond.all_of and not cond.none_of:
            return f"(not {self.const(cond.any_of)}.isdisjoint(tags))"
        if isinstance(cond, TagTest) and not cond.any_of and not cond.none_of:
            return f"({self.const(cond.all_of)} <= tags)"
        if isinstance(cond, KeywordTest):
            txt = self.text(cond.fields)
            tests = [
                f"({self.const(words[0])} in {txt} and {self.const(_phrase_pattern(words))}"
                f".search({txt}) is not None)"
                for words in cond.phrases
            ]
            return "(" + " or ".join(tests) + ")"
        if isinstance(cond, FieldTest) and cond.field in ("priority", "reopen_count", "channel"):
            symbol = {"equals": "==", "in": "in", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
            if cond.op in symbol:
                return f"(t.{cond.field} {symbol[cond.op]} {self.const(cond.value)})"
        if (
            isinstance(cond, FieldTest)
            and cond.field.startswith("custom_fields.")
            and cond.op in ("gt", "gte", "lt", "lte")
        ):
            key = self.const(cond.field.removeprefix("custom_fields."))
            sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[cond.op]
            # NaN for a missing or non-numeric value: every comparison with it is false.
            value = self.const(cond.value)
            return f"(_number_or_nan(t.custom_fields.get({key})) {sign} {value})"
        if isinstance(cond, FieldTest) and cond.field.split(".")[0] in (
            "requester",
            "organization",
        ):
            owner, attr = cond.field.split(".", 1)
            # Missing person or value reads as "": it equals no literal (literals are non-empty
            # after normalisation) and is searched only by patterns that cannot match "".
            text = f"((t.{owner} and t.{owner}.{attr}) or '')"
            if cond.op == "equals" and isinstance(cond.value, str) and cond.value:
                return f"({text}.lower() == {self.const(cond.value)})"
            if cond.op == "regex" and cond.value.search("") is None:
                return f"({self.const(cond.value)}.search({text}) is not None)"
        if isinstance(cond, FieldTest) and cond.field == "status" and cond.op == "in":
            return f"(t.status in {self.const(cond.value)})"
        if isinstance(cond, TimeTest) and not cond.business and cond.measure in _SIMPLE_SPANS:
            attr, forward = _SIMPLE_SPANS[cond.measure]
            span = f"(t.{attr} - now)" if forward else f"(now - t.{attr})"
            bounds = []
            if cond.over is not None:
                bounds.append(f"{span} > {self.const(cond.over)}")
            if cond.under is not None:
                bounds.append(f"{span} < {self.const(cond.under)}")
            return f"(t.{attr} is not None and " + " and ".join(bounds) + ")"
        return f"{self.const(_compile(cond))}(ctx)"

    def build(self, rules: Sequence[Rule]) -> Callable[[_Ctx], list[int]]:
        body = [
            f"    if {self.expr(rule.condition)}:\n        m.append({i})"
            for i, rule in enumerate(rules)
        ]
        head = [
            "def _match(ctx):",
            "    t = ctx.ticket",
            "    now = ctx.now",
            "    tags = t.tags",
            *(
                f"    {name} = ctx.text({self.const(fields)})"
                for fields, name in self.texts.items()
            ),
            "    m = []",
        ]
        source = "\n".join([*head, *body, "    return m", ""])
        namespace = dict(self.consts)
        exec(compile(source, "<escbridge matrix rules>", "exec"), namespace)
        matcher: Callable[[_Ctx], list[int]] = namespace["_match"]
        return matcher


def _find_keyword(ctx: _Ctx, cond: KeywordTest) -> tuple[str, str] | None:
    """(phrase, field) of the first whole-word match, for explanations."""
    for field in cond.fields:
        text = ctx.text((field,))
        for words in cond.phrases:
            if _phrase_pattern(words).search(text):
                return " ".join(words), field
    return None


def _show(value: Any) -> str:
    if isinstance(value, Priority):
        return value.label
    if isinstance(value, frozenset):
        return "[" + ", ".join(sorted(_show(v) for v in value)) + "]"
    if isinstance(value, re.Pattern):
        return f"/{value.pattern}/"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


_OP_TEXT = {
    "equals": "is",
    "not_equals": "is not",
    "in": "is one of",
    "not_in": "is not one of",
    "contains": "contains",
    "regex": "matches",
    "gt": "is above",
    "gte": "is at least",
    "lt": "is below",
    "lte": "is at most",
}


def _explain(cond: Condition, ctx: _Ctx) -> tuple[bool, list[str]]:
    """Whether a condition holds, and the leaf lines responsible for that verdict.

    For a match: the leaves that made it true; for a miss: the leaves that kept it false
    (every alternative of a failed ``any``, the failing items of a failed ``all``). Each line
    starts with ✓ or ✗ for the verdict it contributes to the rule.
    """
    if isinstance(cond, AllOf | AnyOf):
        results = [_explain(c, ctx) for c in cond.items]
        ok = (all if isinstance(cond, AllOf) else any)(r[0] for r in results)
        decisive = [lines for sub_ok, lines in results if sub_ok == ok] or [
            lines for _, lines in results
        ]
        return ok, [line for lines in decisive for line in lines]
    if isinstance(cond, NotOf):
        inner_ok, lines = _explain(cond.item, ctx)
        mark = "✗" if inner_ok else "✓"
        return not inner_ok, [f"{mark} not: {line[2:]}" for line in lines]
    ok = _leaf_test(cond)(ctx)
    return ok, [f"{'✓' if ok else '✗'} {_leaf_text(cond, ctx, ok)}"]


_LEAF_TESTS: dict[int, tuple[Condition, Test]] = {}


def _leaf_test(cond: Condition) -> Test:
    """The compiled test of a leaf, compiled once (explanations run on every escalation)."""
    cached = _LEAF_TESTS.get(id(cond))
    if cached is None or cached[0] is not cond:
        cached = (cond, _compile(cond))
        _LEAF_TESTS[id(cond)] = cached
    return cached[1]


def _leaf_text(cond: Condition, ctx: _Ctx, ok: bool) -> str:
    t = ctx.ticket
    if isinstance(cond, FieldTest):
        actual = ctx.rung.id if cond.field == "level" else _getter(cond.field)(t)
        if cond.op == "exists":
            state = "has a value" if actual not in (None, "") else "has no value"
            return f"{cond.field} {state}"
        want = f"{_OP_TEXT[cond.op]} {_show(cond.value)}"
        if actual is None:
            return f"{cond.field} has no value (wanted: {want})"
        verdict = want if ok else f"wanted: {want}"
        text = f"{cond.field} is {_show(actual)}"
        if not ok and cond.op in ("gt", "gte", "lt", "lte"):
            number = actual if isinstance(actual, Priority) else _number(actual)
            if number is not None and not isinstance(number, Priority):
                gap = abs(float(number) - float(cond.value))
                text += f", {gap:g} from the limit"
        return f"{text} ({verdict})" if not ok else f"{cond.field} {want} ({_show(actual)})"
    if isinstance(cond, TagTest):
        have = _show(t.tags)
        parts = []
        if cond.any_of:
            parts.append(f"any of {_show(cond.any_of)}")
        if cond.all_of:
            parts.append(f"all of {_show(cond.all_of)}")
        if cond.none_of:
            parts.append(f"none of {_show(cond.none_of)}")
        return f"tags {have} {'have' if ok else 'do not have'} {' and '.join(parts)}"
    if isinstance(cond, KeywordTest):
        found = _find_keyword(ctx, cond)
        if found is not None:
            return f'"{found[0]}" appears in the {found[1].replace("_", " ")}'
        listed = ", ".join(f'"{" ".join(p)}"' for p in cond.phrases)
        return f"none of {listed} appears in {', '.join(cond.fields)}"
    assert isinstance(cond, TimeTest)
    return _time_text(cond, ctx, ok)


def _time_text(cond: TimeTest, ctx: _Ctx, ok: bool) -> str:
    label = TIME_MEASURES[cond.measure]
    value = ctx.measure(cond)
    if value is None:
        missing = {
            "since_customer_reply": "the customer has not replied",
            "until_due": "the ticket has no due time",
            "overdue": "the ticket has no due time",
            "level_overdue": f"level {ctx.rung.id} has no expected resolution time",
            "response_overdue": (
                "the ticket already has a first response"
                if ctx.ticket.first_response_at is not None
                else f"level {ctx.rung.id} has no expected response time"
            ),
        }.get(cond.measure, "not applicable")
        return f"{label}: {missing}"
    business, calendar = ctx.mode(cond)
    mode = f"business time ({calendar.name})" if business else "calendar time"
    bounds = []
    gap = None
    if cond.over is not None:
        bounds.append(f"over {format_duration(cond.over)}")
        if value <= cond.over:
            gap = f"{format_duration(cond.over - value)} to go"
    if cond.under is not None:
        bounds.append(f"under {format_duration(cond.under)}")
        if value >= cond.under and gap is None:
            gap = f"{format_duration(value - cond.under)} too much"
    wanted = " and ".join(bounds)
    text = f"{label} is {format_duration(value)} of {mode}"
    return f"{text}, {wanted}" if ok else f"{text}, not {wanted} ({gap})"


@dataclass(frozen=True)
class _CompiledRule:
    rule: Rule
    test: Test


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
        self._rules = tuple(_CompiledRule(r, _compile(r.condition)) for r in matrix.rules)
        self._match = _MatcherBuilder().build(matrix.rules)

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

    def _resolve(self, rule: Rule, current: Rung) -> Rung | str:
        """The rung a matched rule leads to, or why it may not go there."""
        if rule.target.next:
            above = current.rank + 1
            if above >= len(self.matrix.levels):
                return f"already at the top level ({current.id})"
            return self.matrix.levels[above]
        target = rule.target.rung
        assert target is not None
        if target.id == current.id:
            return f"the ticket is already at {target.id}"
        if target.rank < current.rank:
            return f"{target.id} is below the current {current.id}: escbridge never de-escalates"
        if target.rank == current.rank and (target.kind == "level" or current.kind == "team"):
            return f"{target.id} is at the same rank as the current {current.id}"
        return target

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
        ctx = _Ctx(ticket, now, current, history)
        if not ticket.status.is_open:
            summary = f"no escalation: the ticket is {ticket.status.value}"
            outcomes = self._outcomes(ctx, current, {}, summary) if explain else ()
            return _no_escalation(ctx, summary, outcomes)
        winner: _Candidate | None = None
        blocked: dict[str, str] = {}
        rules = self.matrix.rules
        fired = {r.rule_id for r in history} if history else set()
        for index in self._match(ctx):
            rule = rules[index]
            if rule.id in fired and not rule.repeat:
                blocked[rule.id] = (
                    "this rule escalated the ticket already (a rule acts once per ticket "
                    "unless it measures time at the level or says repeat: true)"
                )
                continue
            resolved = self._resolve(rule, current)
            if isinstance(resolved, str):
                blocked[rule.id] = resolved
                continue
            if winner is None or resolved.rank > winner.rung.rank:
                if winner is not None:
                    blocked[winner.rule.id] = f"rule {rule.id} goes higher"
                winner = _Candidate(rule, resolved)
            else:
                blocked[rule.id] = f"rule {winner.rule.id} goes as high or higher"
        guard = self._guard(history, now) if winner is not None else None
        if winner is not None and guard is not None:
            blocked[winner.rule.id] = guard
            winner = None
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
        self, ctx: _Ctx, current: Rung, blocked: Mapping[str, str], closed: str | None
    ) -> tuple[RuleOutcome, ...]:
        out = []
        for compiled in self._rules:
            ok, lines = _explain(compiled.rule.condition, ctx)
            reason = closed if (ok and closed) else blocked.get(compiled.rule.id)
            out.append(
                RuleOutcome.model_construct(
                    rule_id=compiled.rule.id, matched=ok, details=tuple(lines), blocked=reason
                )
            )
        return tuple(out)

    def _escalation(
        self,
        ctx: _Ctx,
        current: Rung,
        winner: _Candidate,
        blocked: Mapping[str, str],
        explain: bool,
    ) -> Decision:
        ticket, rule, rung = ctx.ticket, winner.rule, winner.rung
        helpdesk = self.helpdesks.get(ticket.instance)
        group = rung.group_for(ticket.instance, helpdesk)
        _, lines = _explain(rule.condition, ctx)
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


def _no_escalation(ctx: _Ctx, summary: str, outcomes: tuple[RuleOutcome, ...]) -> Decision:
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
