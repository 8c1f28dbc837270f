"""Evaluating a condition tree on one ticket: closures per condition, and one generated matcher
for all the rules of a matrix.

Both read the tree of ``escbridge.conditions.ast``. The generated matcher writes each leaf as an
inline expression over locals that hold the ticket's values, each read once per ticket (only a
time test whose bounds depend on the level's calendar calls its closure), with the same meaning
as the closures: ``tests/core/test_conditions_differential.py`` checks on random tickets and
trees that they (and the explanations) agree.
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

    __slots__ = ("_cache", "_since", "_text", "history", "now", "rung", "ticket")

    def __init__(
        self, ticket: Ticket, now: datetime, rung: Rung, history: Sequence[EscalationRecord]
    ) -> None:
        self.ticket = ticket
        self.now = now
        self.rung = rung
        self.history = history
        self._text: dict[str | tuple[str, ...], str] = {}
        self._cache: dict[tuple[str, int, bool], timedelta | None] = {}
        self._since: datetime | None = None

    def text(self, fields: tuple[str, ...]) -> str:
        """The lower-cased text of some fields, joined by a separator no phrase crosses.

        Each field is lower-cased once per ticket, whatever sets of fields the rules search
        (the separator is no letter, so lower-casing the parts is lower-casing the whole)."""
        found = self._text.get(fields)
        if found is None:
            found = FIELD_SEPARATOR.join(self.lower(f) for f in fields)
            self._text[fields] = found
        return found

    def lower(self, field: str) -> str:
        """One text field of the ticket, lower-cased."""
        found = self._text.get(field)
        if found is None:
            found = getattr(self.ticket, field).lower()
            self._text[field] = found
        return found

    def level_since(self) -> datetime:
        """When the ticket reached its current rung: the last escalation there, else creation."""
        if self._since is None:
            self._since = self.ticket.created_at
            for record in reversed(self.history):
                if record.to == self.rung.id:
                    self._since = record.at
                    break
        return self._since

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
    boolean expressions costs a fraction of fifty closure calls. Each ticket value it needs
    (a custom field, a time span, a lower-cased text, a number) is read once per call into a
    local, however many rules test it.
    """
    return _MatcherBuilder().build(conditions)


# Fields compared as they are (IntEnum, StrEnum, int), like ``getter`` reads them.
_AS_IS_FIELDS = ("priority", "reopen_count", "channel", "status")
# Text fields the ticket model always holds a string in.
_ALWAYS_TEXT = frozenset({"subject", "description", "latest_comment", "instance"})
_OPTIONAL_TIMES = frozenset({"first_response_at", "last_customer_reply_at", "due_at"})
_SIGNS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_REF = re.compile(r"\x00(\d+)\x00|\x01(\d+)\x01")


class _Unset:
    """The value of a lazily computed local before its first use."""


_UNSET = _Unset()


class _Value:
    """One value the matcher reads from the ticket, held in the local ``name``.

    ``cheap`` ones (an attribute, a dict lookup) are read up front whenever they are used.
    The others are computed up front when some rule always reads them (the first test of a
    rule always runs), else on first use: a business-time span behind ``tags: [vip]`` costs
    nothing on the tickets without the tag.
    """

    __slots__ = ("always", "bare", "cheap", "expr", "name", "uses")

    def __init__(self, name: str, expr: str, cheap: bool) -> None:
        self.name = name
        self.expr = expr  # may refer to other values, each at most once or cheap ones only
        self.cheap = cheap
        self.uses = 0  # references that compute it (the first one in each test)
        self.bare = False  # referred to by name after a first reference in the same test
        self.always = False


class _MatcherBuilder:
    """Writes the matcher's source. Only names are generated: every value an admin wrote
    (words, numbers, patterns) is passed in as a constant, never pasted into the source.

    A test reads ticket values through ``read``, which returns a placeholder: the first
    reference in a test may compute the value, later ones in the same test use the local, so
    each test is written with the reference it evaluates first leftmost (``_checks``).
    ``build`` then decides, per value, whether it is computed up front, on first use, or in
    place when one test reads it.
    """

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {
            "_number_or_nan": _number_or_nan,
            "_compare": _compare,
            "_hashable": _hashable,
            "_UNSET": _UNSET,
            "_SEP": FIELD_SEPARATOR,
        }
        self.values: list[_Value] = []
        self.keys: dict[tuple[Any, ...], int] = {}
        self.always = False  # the test being written runs for every ticket
        self.seen: set[int] = set()  # values already referred to in the test being written
        self.measured: dict[tuple[Any, ...], TimeTest] = {}

    def const(self, value: Any) -> str:
        name = f"K{len(self.consts)}"
        self.consts[name] = value
        return name

    # --- values ---

    def read(self, key: tuple[Any, ...]) -> str:
        """A placeholder for the ticket value ``key`` in the test being written."""
        index = self.keys.get(key)
        if index is None:
            always, seen = self.always, self.seen
            self.always, self.seen = False, set()
            expr, cheap = self._value_expr(key)
            self.always, self.seen = always, seen
            index = len(self.values)
            self.values.append(_Value(f"V{index}", expr, cheap))
            self.keys[key] = index
        value = self.values[index]
        if index in self.seen:
            value.bare = True
            return f"\x01{index}\x01"
        self.seen.add(index)
        value.uses += 1
        value.always = value.always or self.always
        return f"\x00{index}\x00"

    def _cheap(self, key: tuple[Any, ...]) -> str:
        """``read`` of a value that a value's expression may name more than once: such
        expressions evaluate their parts in any order, so only up-front values qualify."""
        ref = self.read(key)
        assert self.values[self.keys[key]].cheap, key
        return ref

    def _value_expr(self, key: tuple[Any, ...]) -> tuple[str, bool]:
        """(expression, cheap?) of a value: it names cheap values, or others once."""
        kind = key[0]
        if kind == "attr":
            return f"t.{key[1]}", True
        if kind == "level":
            return "ctx.rung.id", True
        if kind == "custom":  # the raw value
            return f"{self._cheap(('attr', 'custom_fields'))}.get({self.const(key[1])})", True
        if kind == "custom_number":  # NaN when missing or not a number: every comparison fails
            return f"_number_or_nan({self._cheap(('custom', key[1]))})", False
        if kind == "custom_lower":
            return self._lowered(self._cheap(("custom", key[1]))), False
        if kind == "person":  # (owner, attribute)
            owner = self._cheap(("attr", key[1]))
            return f"(None if {owner} is None else {owner}.{key[2]})", True
        if kind == "person_lower":
            return self._lowered(self._cheap(("person", key[1], key[2]))), False
        if kind == "lower":  # a plain ticket field, lower-cased like ``getter``
            attr = self._cheap(("attr", key[1]))
            return (f"{attr}.lower()" if key[1] in _ALWAYS_TEXT else self._lowered(attr)), False
        if kind == "text":  # the fields a keyword test searches, as ``Context.text``
            parts = ", ".join(self.read(("lower", f)) for f in key[1])
            return f"_SEP.join(({parts}))", False
        if kind == "span":  # (attribute, from now to it?) in calendar time
            attr, forward = self._cheap(("attr", key[1])), key[2]
            span = f"{attr} - now" if forward else f"now - {attr}"
            if key[1] in _OPTIONAL_TIMES:
                return f"(None if {attr} is None else {span})", False
            return f"({span})", False
        if kind == "measure":  # (measure, way of counting): through the first test of it
            return f"ctx.measure({self.const(self.measured[key])})", False
        raise AssertionError(f"unknown matcher value {key}")

    @staticmethod
    def _lowered(ref: str) -> str:
        return f"({ref} if not isinstance({ref}, str) else {ref}.lower())"

    def _checks(self, key: tuple[Any, ...], checks: Sequence[str], joiner: str = " and ") -> str:
        """``checks`` of one value joined left to right, each written with ``{}`` for it: the
        leftmost, evaluated first, reads the value, the others its local."""
        parts = [c.format(self.read(key)) for c in checks]
        return "(" + joiner.join(parts) + ")"

    # --- tests ---

    def expr(self, cond: Condition, always: bool) -> str:
        """``cond`` as an expression; ``always`` when it runs for every ticket."""
        if isinstance(cond, AllOf | AnyOf):
            joiner = " and " if isinstance(cond, AllOf) else " or "
            parts = (self.expr(c, always and i == 0) for i, c in enumerate(cond.items))
            return "(" + joiner.join(parts) + ")"
        if isinstance(cond, NotOf):
            return f"(not {self.expr(cond.item, always)})"
        self.always, self.seen = always, set()
        inline = self._inline(cond)
        return inline if inline is not None else f"{self.const(compile_condition(cond))}(ctx)"

    def _inline(self, cond: Condition) -> str | None:
        """A leaf as an inline expression, or None when its closure is the cheap form."""
        if isinstance(cond, TagTest):
            checks = []
            if cond.any_of:
                checks.append(f"not {self.const(cond.any_of)}.isdisjoint({{}})")
            if cond.all_of:
                checks.append(f"{self.const(cond.all_of)} <= {{}}")
            if cond.none_of:
                checks.append(f"{self.const(cond.none_of)}.isdisjoint({{}})")
            return self._checks(("attr", "tags"), checks)
        if isinstance(cond, KeywordTest):
            # A plain substring test rules most tickets out at C speed; the whole-word
            # pattern runs only when the phrase's first word occurs at all.
            fields = cond.fields
            key = ("text", fields) if len(fields) > 1 else ("lower", fields[0])
            tests = []
            for words in cond.phrases:
                first, pattern = self.const(words[0]), self.const(phrase_pattern(words))
                tests.append(self._checks(key, [f"{first} in {{}}", f"{pattern}.search({{}})"]))
            return "(" + " or ".join(tests) + ")"
        if isinstance(cond, FieldTest):
            return self._field(cond)
        if isinstance(cond, TimeTest):
            return self._time(cond)
        return None

    def _time(self, cond: TimeTest) -> str | None:
        if cond.level_bounds:  # bounds that depend on the level's calendar: the closure
            return None
        if not cond.business and cond.measure in _SIMPLE_SPANS:
            attr, forward = _SIMPLE_SPANS[cond.measure]
            key: tuple[Any, ...] = ("span", attr, forward)
            optional = attr in _OPTIONAL_TIMES
        else:
            # Tests of one measure counted one way share it (as ``Context.measure`` caches).
            mode = (True,) if cond.follow_level else (False, id(cond.calendar), cond.business)
            key = ("measure", cond.measure, *mode)
            self.measured.setdefault(key, cond)
            optional = True
        checks = ["{} is not None"] if optional else []
        if cond.over is not None:
            checks.append(f"{{}} > {self.const(cond.over)}")
        if cond.under is not None:
            checks.append(f"{{}} < {self.const(cond.under)}")
        return self._checks(key, checks)

    def _field(self, cond: FieldTest) -> str | None:
        field, op = cond.field, cond.op
        if field == "level":
            key: tuple[Any, ...] = ("level",)
        elif field in _AS_IS_FIELDS:
            key = ("attr", field)
        elif field.startswith("custom_fields."):
            name = field.removeprefix("custom_fields.")
            if op in _SIGNS:
                number = self.read(("custom_number", name))
                return f"({number} {_SIGNS[op]} {self.const(cond.value)})"
            key = ("custom_lower", name)
        elif "." in field:
            owner, attr = field.split(".", 1)
            key = ("person_lower", owner, attr)
        else:
            key = ("lower", field)
        expected = self.const(cond.value)
        if op == "exists":
            if cond.value:
                return self._checks(key, ["{} is not None", "{} != ''"])
            return self._checks(key, ["{} is None", "{} == ''"], " or ")
        if op == "regex" and key[0] in ("lower", "person_lower"):  # text or None
            found = f"{expected}.search({{}}) is not None"
            if key[0] == "lower" and field in _ALWAYS_TEXT:
                return self._checks(key, [found])
            return self._checks(key, ["{} is not None", found])
        value = self.read(key)
        if op == "equals":
            return f"({value} == {expected})"
        if op == "not_equals":
            return f"({value} != {expected})"
        if op in ("in", "not_in"):
            member = f"_hashable({value})" if key[0] == "custom_lower" else value
            return f"({member} {'in' if op == 'in' else 'not in'} {expected})"
        if op in _SIGNS and field in ("priority", "reopen_count"):
            return f"({value} {_SIGNS[op]} {expected})"
        return f"_compare({self.const(op)}, {value}, {expected})"

    # --- the function ---

    def build(self, conditions: Sequence[Condition]) -> Matcher:
        body = [
            f"    if {self.expr(cond, True)}:\n        m.append({i})"
            for i, cond in enumerate(conditions)
        ]
        # Values a computed-up-front value reads are computed up front too: later values read
        # earlier ones only, so one pass from the last settles it.
        for value in reversed(self.values):
            if value.cheap or value.always:
                for found in _REF.finditer(value.expr):
                    self.values[int(found.group(1) or found.group(2))].always = True
        head = ["def _match(ctx):", "    t = ctx.ticket", "    now = ctx.now"]
        for value in self.values:
            if value.cheap or value.always:
                head.append(f"    {value.name} = {self._render(value.expr)}")
            elif value.uses > 1:
                head.append(f"    {value.name} = _UNSET")
        lines = [*head, "    m = []", *(self._render(line) for line in body), "    return m", ""]
        namespace = dict(self.consts)
        exec(compile("\n".join(lines), "<escbridge matrix rules>", "exec"), namespace)
        matcher: Matcher = namespace["_match"]
        return matcher

    def _render(self, text: str) -> str:
        """``text`` with each placeholder replaced by how its value is read there."""

        def one(found: re.Match[str]) -> str:
            if found.group(2) is not None:  # a later reference in the same test
                return self.values[int(found.group(2))].name
            value = self.values[int(found.group(1))]
            if value.cheap or value.always:
                return value.name
            expr = self._render(value.expr)
            if value.uses > 1:  # on first use, then the local
                name = value.name
                return f"({name} if {name} is not _UNSET else ({name} := {expr}))"
            return f"({value.name} := {expr})" if value.bare else f"({expr})"

        return _REF.sub(one, text)
