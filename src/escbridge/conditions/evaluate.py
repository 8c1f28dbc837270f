"""Evaluating a condition tree on one ticket: closures per condition, and one generated matcher
for all the rules of a matrix.

Both read the tree of ``escbridge.conditions.ast``. The generated matcher inlines the leaves that
have a cheap Python expression and calls the closure of every other leaf, so the two share one
meaning; ``tests/core/test_conditions_differential.py`` checks on random tickets and trees that
they (and the explanations) agree.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from escbridge.calendar import BusinessCalendar
from escbridge.conditions.ast import (
    AllOf,
    AnyOf,
    Condition,
    FieldTest,
    KeywordTest,
    NotOf,
    TagTest,
    TimeTest,
)
from escbridge.model import EscalationRecord, Priority, Ticket

if TYPE_CHECKING:  # the matrix model imports this package's AST: no import cycle at run time
    from escbridge.matrix.model import Rung

FIELD_SEPARATOR = "\x1f"


class Context:
    """One ticket at one moment on one rung, with derived values computed at most once."""

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
            found = FIELD_SEPARATOR.join(getattr(t, f) for f in fields).lower()
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

    def bounds(self, test: TimeTest) -> tuple[timedelta | None, timedelta | None]:
        """(over, under) of a time test in the time it counts: a level-following test with days
        written counts the working days of the level's calendar."""
        if test.follow_level and test.level_bounds:
            business = self.rung.business
            name = self.rung.calendar.name if business else ""
            for b, n, over, under in test.level_bounds:
                if b == business and n == name:
                    return over, under
        return test.over, test.under

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
        raise AssertionError(f"unknown measure {m}")  # the parser rejects these


Test = Callable[[Context], bool]


def field_value(cond: FieldTest, ctx: Context) -> Any:
    """The ticket's value of a condition's field, normalised like the literal (explanations)."""
    return ctx.rung.id if cond.field == "level" else getter(cond.field)(ctx.ticket)


def getter(name: str) -> Callable[[Ticket], Any]:
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


def number(value: Any) -> float | None:
    """A field value as a number (``"1,200"`` too), or None when it is not one."""
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
    found = number(value)
    return math.nan if found is None else found


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
    value = actual if isinstance(actual, Priority) else number(actual)
    if value is None:
        return False
    if op == "gt":
        return bool(value > expected)
    if op == "gte":
        return bool(value >= expected)
    if op == "lt":
        return bool(value < expected)
    return bool(value <= expected)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def phrase_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Whole words, any punctuation or spacing between them, never across two fields."""
    between = r"[^\w\x1f]+"
    return re.compile(r"\b" + between.join(map(re.escape, words)) + r"\b")


# --- closures ---------------------------------------------------------------------------------


def compile_condition(cond: Condition) -> Test:
    """A fast boolean test for one condition.

    Closures are specialised per operator at load time: a sync scan evaluates every rule for
    every open ticket, so per-call dispatch on strings would dominate the cost.
    """
    if isinstance(cond, AllOf | AnyOf):
        parts = tuple(compile_condition(c) for c in cond.items)
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
        inner = compile_condition(cond.item)
        return lambda ctx: not inner(ctx)
    if isinstance(cond, FieldTest):
        return _compile_field(cond)
    if isinstance(cond, TagTest):
        return _compile_tags(cond)
    if isinstance(cond, KeywordTest):
        return _compile_keywords(cond)
    return _compile_time(cond)


_LEAF_TESTS: dict[int, tuple[Condition, Test]] = {}


def leaf_test(cond: Condition) -> Test:
    """``compile_condition`` of a leaf, compiled once: explanations run on every escalation."""
    cached = _LEAF_TESTS.get(id(cond))
    if cached is None or cached[0] is not cond:
        cached = (cond, compile_condition(cond))
        _LEAF_TESTS[id(cond)] = cached
    return cached[1]


def _compile_field(cond: FieldTest) -> Test:
    get, op, value = getter(cond.field), cond.op, cond.value
    if cond.field == "level":
        # The level the engine works with: the marker, else the one inferred from the group.
        return lambda ctx: _compare(op, ctx.rung.id, value)
    if op == "equals":
        return lambda ctx: bool(get(ctx.ticket) == value)
    if op == "in":

        def member(ctx: Context) -> bool:
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

    def tags(ctx: Context) -> bool:
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
    phrases = tuple((words[0], phrase_pattern(words)) for words in cond.phrases)
    fields = cond.fields

    def keywords(ctx: Context) -> bool:
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

        def span(ctx: Context) -> bool:
            at = get_at(ctx.ticket)
            if at is None:
                return False
            value = at - ctx.now if forward else ctx.now - at
            return (over is None or value > over) and (under is None or value < under)

        return span

    def timed(ctx: Context) -> bool:
        value = ctx.measure(cond)
        if value is None:
            return False
        low, high = ctx.bounds(cond) if cond.level_bounds else (over, under)
        return (low is None or value > low) and (high is None or value < high)

    return timed


# --- the generated matcher ----------------------------------------------------------------------

Matcher = Callable[[Context], list[int]]


def build_matcher(conditions: Sequence[Condition]) -> Matcher:
    """One function that tests every condition and returns the indices of those that hold.

    Why: a sync scan evaluates every rule for every open ticket, and one function of inline
    boolean expressions costs a fraction of fifty closure calls.
    """
    return _MatcherBuilder().build(conditions)


class _MatcherBuilder:
    """Writes the matcher's source. Only names are generated: every value an admin wrote
    (words, numbers, patterns) is passed in as a constant, never pasted into the source.
    Leaves without a cheap inline form call their ``compile_condition`` closure."""

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
        inline = self._inline(cond)
        return inline if inline is not None else f"{self.const(compile_condition(cond))}(ctx)"

    def _inline(self, cond: Condition) -> str | None:
        """A leaf as an inline expression, or None when its closure is the cheap form."""
        if isinstance(cond, TagTest) and not cond.all_of and not cond.none_of:
            return f"(not {self.const(cond.any_of)}.isdisjoint(tags))"
        if isinstance(cond, TagTest) and not cond.any_of and not cond.none_of:
            return f"({self.const(cond.all_of)} <= tags)"
        if isinstance(cond, KeywordTest):
            txt = self.text(cond.fields)
            tests = [
                f"({self.const(words[0])} in {txt} and {self.const(phrase_pattern(words))}"
                f".search({txt}) is not None)"
                for words in cond.phrases
            ]
            return "(" + " or ".join(tests) + ")"
        if isinstance(cond, FieldTest):
            return self._field(cond)
        if isinstance(cond, TimeTest) and not cond.business and cond.measure in _SIMPLE_SPANS:
            attr, forward = _SIMPLE_SPANS[cond.measure]
            span = f"(t.{attr} - now)" if forward else f"(now - t.{attr})"
            bounds = []
            if cond.over is not None:
                bounds.append(f"{span} > {self.const(cond.over)}")
            if cond.under is not None:
                bounds.append(f"{span} < {self.const(cond.under)}")
            return f"(t.{attr} is not None and " + " and ".join(bounds) + ")"
        return None

    def _field(self, cond: FieldTest) -> str | None:
        if cond.field in ("priority", "reopen_count", "channel"):
            symbol = {"equals": "==", "in": "in", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
            if cond.op in symbol:
                return f"(t.{cond.field} {symbol[cond.op]} {self.const(cond.value)})"
        if cond.field.startswith("custom_fields.") and cond.op in ("gt", "gte", "lt", "lte"):
            key = self.const(cond.field.removeprefix("custom_fields."))
            sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[cond.op]
            # NaN for a missing or non-numeric value: every comparison with it is false.
            value = self.const(cond.value)
            return f"(_number_or_nan(t.custom_fields.get({key})) {sign} {value})"
        if cond.field.split(".")[0] in ("requester", "organization"):
            owner, attr = cond.field.split(".", 1)
            # Missing person or value reads as "": it equals no literal (literals are non-empty
            # after normalisation) and is searched only by patterns that cannot match "".
            text = f"((t.{owner} and t.{owner}.{attr}) or '')"
            if cond.op == "equals" and isinstance(cond.value, str) and cond.value:
                return f"({text}.lower() == {self.const(cond.value)})"
            if cond.op == "regex" and cond.value.search("") is None:
                return f"({self.const(cond.value)}.search({text}) is not None)"
        if cond.field == "status" and cond.op == "in":
            return f"(t.status in {self.const(cond.value)})"
        return None

    def build(self, conditions: Sequence[Condition]) -> Matcher:
        body = [
            f"    if {self.expr(cond)}:\n        m.append({i})" for i, cond in enumerate(conditions)
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
        matcher: Matcher = namespace["_match"]
        return matcher
