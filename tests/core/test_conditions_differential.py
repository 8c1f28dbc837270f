"""The three evaluators of the condition language agree: on random tickets and random condition
trees, the closures, the generated matcher and the explanations give the same verdict.

Why it matters: the engine picks rules with the generated matcher, while `escbridge explain`
and the escalation note show the explanations. If they disagreed, an admin would read "✗ no
match" for a rule that escalated the ticket (or the reverse). The trees are written as the
admin writes them (the YAML data, through the loader's parser), so every shorthand is covered
as parsed.

Deterministic for CI: derandomized, no example database, a bounded number of examples.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matrix_helpers import LADDER, NOW, ticket

from escbridge.conditions.ast import (
    TEXT_FIELDS,
    TIME_MEASURES,
    Condition,
    KeywordTest,
    TimeTest,
    walk,
)
from escbridge.conditions.describe import describe_condition
from escbridge.conditions.evaluate import Context, build_matcher, compile_condition
from escbridge.conditions.explain import MATCHED, MISSED, explain
from escbridge.conditions.parse import ConditionParser
from escbridge.matrix import parse_matrix
from escbridge.model import Channel, EscalationRecord, Priority, Status, Ticket

DIFFERENTIAL = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- tickets ----------------------------------------------------------------------------------

WORDS = ["refund", "Refund", "supervisor", "data", "loss", "lawyer", "cancel", "my", "account"]
WORDS += ["hello", "urgent", "sö", "2fa", "gold"]
SEPARATORS = [" ", ", ", "-", "! ", "\n", "_"]
TAGS = ["vip", "billing", "outage", "beta", "escbridge_l2"]
RUNGS = ["l1", "l2", "l3", "billing", "security"]

texts = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=6).map(
    lambda pairs: "".join(word + sep for word, sep in pairs)
)
# Spans of exactly a condition's bound come up often: "over 4h" must be false at 4h sharp.
BOUNDS = [0, 30, 90, 240, 1440, 4320]
minutes = st.sampled_from(BOUNDS) | st.integers(min_value=0, max_value=60 * 24 * 10)
maybe_minutes = st.none() | minutes
due_minutes = st.none() | st.sampled_from([-b for b in BOUNDS] + BOUNDS) | st.integers(-4320, 4320)
custom_fields = st.dictionaries(
    st.sampled_from(["amount", "plan"]),
    st.sampled_from([None, 5, 9000.5, "1,200", "abc", True, "", "Gold", "gold", 0, ["Gold", 5]]),
    max_size=2,
)
persons = st.fixed_dictionaries(
    {
        "id": st.sampled_from([None, "u1", "U2", "o1"]),
        "name": st.sampled_from([None, "", "Dana Fischer", "dana fischer", "Globex"]),
        "email": st.sampled_from([None, "", "dana@example.com", "DANA@Example.COM", "x@other.org"]),
    }
)
ticket_fields = st.fixed_dictionaries(
    {
        "instance": st.sampled_from(["support-eu", "Other"]),
        "subject": texts,
        "description": texts,
        "latest_comment": texts,
        "requester": persons,
        "organization": st.none() | persons,
        # Few tags, so that a ticket's tags often equal a condition's set exactly.
        "tags": st.frozensets(st.sampled_from(TAGS[:3])) | st.frozensets(st.sampled_from(TAGS)),
        "custom_fields": custom_fields,
        "channel": st.sampled_from(list(Channel)),
        "status": st.sampled_from(list(Status)),
        "priority": st.sampled_from(list(Priority)),
        "group": st.sampled_from([None, "", "Support", "Billing", "senior support"]),
        "assignee": st.sampled_from([None, "Alex"]),
        "reopen_count": st.integers(min_value=0, max_value=4),
    }
)


@st.composite
def tickets(draw: st.DrawFn) -> Ticket:
    age = draw(minutes)
    since_update = min(draw(minutes), age)

    def before_now(offset: int | None) -> Any:
        return None if offset is None else NOW - timedelta(minutes=min(offset, age))

    due = draw(due_minutes)
    return Ticket.model_validate(
        {
            **draw(ticket_fields),
            "id": "t",
            "created_at": NOW - timedelta(minutes=age),
            "updated_at": NOW - timedelta(minutes=since_update),
            "first_response_at": before_now(draw(maybe_minutes)),
            "last_customer_reply_at": before_now(draw(maybe_minutes)),
            "due_at": None if due is None else NOW + timedelta(minutes=due),
        }
    )


# --- conditions, as the admin writes them ------------------------------------------------------

DURATIONS = ["0m", "30m", "90m", "4h", "1d", "3d"]
PRIORITIES = [p.label for p in Priority]
CHANNELS = [c.value for c in Channel]
STATUSES = [s.value for s in Status]
PATTERNS = ["^dana", r"example\.com$", "gold", ".*", "^$", "refund|lawyer", r"\d"]
PLAIN_FIELDS = ["subject", "description", "latest_comment", "group", "assignee", "instance"]
PLAIN_FIELDS += ["requester.id", "requester.name", "requester.email", "level"]
PLAIN_FIELDS += ["organization.id", "organization.name", "custom_fields.amount"]
PLAIN_FIELDS += ["custom_fields.plan"]
literals = st.sampled_from(["refund", "Dana Fischer", "dana@example.com", "u1", "gold", "l2"])
literals = literals | st.sampled_from([None, True, False, 0, 5, 1200, 9000.5, "Support", "alex"])
numbers = st.sampled_from([-1, 0, 2, 5, 1200, 9000, 9000.5])
phrases = st.lists(st.sampled_from(WORDS), min_size=1, max_size=2).map(" ".join)


def subsets(values: list[str], min_size: int = 0) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=min_size, max_size=3, unique=True)


tag_conditions = st.one_of(
    subsets(TAGS, 1).map(lambda tags: {"tags": tags}),
    subsets(TAGS[:3], 1).map(lambda tags: {"tags": {"all": tags}}),
    st.fixed_dictionaries(
        {},
        optional={"any": subsets(TAGS), "all": subsets(TAGS), "none": subsets(TAGS)},
    )
    .filter(lambda sets: any(sets.values()))
    .map(lambda sets: {"tags": sets}),
)
keyword_conditions = st.one_of(
    st.lists(phrases, min_size=1, max_size=3).map(lambda words: {"keywords": words}),
    st.builds(
        lambda words, fields: {"keywords": {"words": words, "in": fields}},
        st.lists(phrases, min_size=1, max_size=3),
        subsets(list(TEXT_FIELDS), 1),
    ),
)
priority_conditions = st.one_of(
    st.sampled_from(PRIORITIES).map(lambda p: {"priority": p}),
    subsets(PRIORITIES, 1).map(lambda ps: {"priority": ps}),
    st.builds(
        lambda op, p: {"priority": {op: p}},
        st.sampled_from(["at_least", "at_most", "above", "below", "equals", "not_equals"]),
        st.sampled_from(PRIORITIES),
    ),
)
shorthand_conditions = st.one_of(
    subsets(CHANNELS, 1).map(lambda v: {"channel": v}),
    st.sampled_from(STATUSES).map(lambda v: {"status": v}),
    subsets(STATUSES, 1).map(lambda v: {"status": v}),
    subsets(["Support", "billing", "Senior Support"], 1).map(lambda v: {"group": v}),
    subsets(RUNGS, 1).map(lambda v: {"level": v}),
    subsets(["@example.com", "dana@example.com", "Dana Fischer", "u1", "@other.org"], 1).map(
        lambda v: {"requester": v}
    ),
    subsets(["Globex", "o1", "initech"], 1).map(lambda v: {"organization": v}),
    st.integers(min_value=0, max_value=3).map(lambda n: {"reopens": n}),
    st.builds(
        lambda op, n: {"reopens": {op: n}},
        st.sampled_from(["gt", "gte", "lt", "lte", "equals", "not_equals"]),
        st.integers(min_value=0, max_value=3),
    ),
)


ENUMS = {"channel": CHANNELS, "status": STATUSES, "priority": PRIORITIES}
TEXT_OPS = ("exists", "in", "not_in", "equals", "not_equals", "contains", "regex")
NUMBER_OPS = ("gt", "gte", "lt", "lte")


def field_values(field: str, op: str) -> st.SearchStrategy[Any]:
    """Literals the loader accepts for ``field`` and ``op``."""
    enum = ENUMS.get(field)
    if op == "exists":
        return st.booleans()
    if op == "regex":
        return st.sampled_from(PATTERNS)
    if op == "contains":
        return st.sampled_from(["a", "dana", "Gold", "example", "5", "l"])
    if enum is not None:
        return subsets(enum, 1) if op in ("in", "not_in") else st.sampled_from(enum)
    if op in ("in", "not_in"):
        return st.lists(literals, min_size=1, max_size=3)
    return numbers if op in NUMBER_OPS else literals


field_conditions = st.one_of(
    [
        field_values(field, op).map(lambda value, field=field, op=op: {"field": field, op: value})
        for field in [*PLAIN_FIELDS, *ENUMS]
        for op in (TEXT_OPS if field in ("channel", "status") else (*TEXT_OPS, *NUMBER_OPS))
    ]
)


time_conditions = st.builds(
    lambda measure, bounds, extra: {measure: {**bounds, **extra}},
    st.sampled_from(list(TIME_MEASURES)),
    st.fixed_dictionaries({"over": st.sampled_from(DURATIONS)})
    | st.fixed_dictionaries({"under": st.sampled_from(DURATIONS)})
    | st.fixed_dictionaries(
        {"over": st.sampled_from(DURATIONS), "under": st.sampled_from(DURATIONS)}
    ),
    # Calendar time most often: its spans have inline forms in the matcher.
    st.fixed_dictionaries(
        {"time": st.sampled_from(["calendar", "calendar", "business"])},
        optional={"calendar": st.just("office")},
    )
    | st.fixed_dictionaries({}, optional={"calendar": st.just("office")}),
) | st.builds(  # the shorthand
    lambda measure, duration: {measure: duration},
    st.sampled_from(list(TIME_MEASURES)),
    st.sampled_from(DURATIONS),
)


LEAF_FAMILIES = (
    tag_conditions,
    keyword_conditions,
    priority_conditions,
    shorthand_conditions,
    field_conditions,
    time_conditions,
    time_conditions,  # twice: they have the most inline forms to check
)


@st.composite
def leaves(draw: st.DrawFn) -> Any:
    """A family first, then a leaf of it: one flat one_of would let the many field comparisons
    crowd out tags, keywords and time."""
    return draw(draw(st.sampled_from(LEAF_FAMILIES)))


condition_trees = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda items: {"all": items}),
        st.lists(inner, min_size=1, max_size=3).map(lambda items: {"any": items}),
        st.lists(inner, min_size=1, max_size=3),  # a plain list means all
        inner.map(lambda item: {"not": item}),
    ),
    max_leaves=6,
)


# Levels that count time differently (l2: a 10-hour Berlin day, l3: calendar time), so that
# level_overdue/response_overdue with days written get bounds per level.
MIXED_LADDER = (
    LADDER.replace(
        "    min_priority: high\n    resolution: 8h\n",
        "    min_priority: high\n    resolution: 8h\n    calendar: berlin\n",
        1,
    )
    .replace(
        "    min_priority: urgent\n    resolution: 4h\n",
        "    min_priority: urgent\n    resolution: 4h\n    time: calendar\n",
        1,
    )
    .replace(
        "calendars:\n",
        'calendars:\n  berlin:\n    timezone: Europe/Berlin\n    hours: {mon-fri: "08:00-18:00"}\n',
        1,
    )
)
LADDER_MATRIX = parse_matrix(MIXED_LADDER + "rules: []\n", "differential.yaml")
LEVEL_MODES = {
    (r.business, r.calendar.name): (r.business, r.calendar)
    for r in (*LADDER_MATRIX.levels, *LADDER_MATRIX.teams.values())
}


def _refuse(path: object, message: str) -> None:
    raise AssertionError(f"the generator wrote an invalid condition: {path}: {message}")


def parse(written: Any) -> Condition:
    """A condition as the matrix loader parses it (office calendar, business time)."""
    calendars = LADDER_MATRIX.calendars
    parser = ConditionParser(
        _refuse,
        lambda name, _path: calendars[name],
        LADDER_MATRIX.default_calendar,
        business=True,
        level_modes=list(LEVEL_MODES.values()),
    )
    cond = parser.parse(written, ("when",))
    assert cond is not None
    return cond


@st.composite
def situations(draw: st.DrawFn) -> tuple[Ticket, str, tuple[EscalationRecord, ...]]:
    """A ticket, the rung it sits on, and maybe the escalation that put it there."""
    t = draw(tickets())
    rung = draw(st.sampled_from(RUNGS))
    history: tuple[EscalationRecord, ...] = ()
    arrived = draw(maybe_minutes)
    if arrived is not None:
        at = NOW - timedelta(minutes=arrived)
        history = (EscalationRecord(at=at, to=rung, from_level="l1", rule_id="earlier"),)
    return t, rung, history


# --- the property --------------------------------------------------------------------------------


@DIFFERENTIAL
@given(
    st.lists(condition_trees, min_size=1, max_size=4),
    st.lists(situations(), min_size=1, max_size=3),
)
def test_closures_matcher_and_explanations_agree(
    written: list[Any], cases: list[tuple[Ticket, str, tuple[EscalationRecord, ...]]]
) -> None:
    # Every part of every tree is compared on its own too: a wrong leaf cannot hide behind
    # an `any` that another leaf already decided.
    conditions = [part for w in written for part in walk(parse(w))]
    closures = [compile_condition(c) for c in conditions]
    matcher = build_matcher(conditions)
    for t, rung_id, history in cases:
        rung = LADDER_MATRIX.rung(rung_id)
        assert rung is not None

        def ctx(t: Ticket = t, rung: Any = rung, history: Any = history) -> Context:
            return Context(t, NOW, rung, history)  # a fresh one: no cache shared between paths

        by_closure = [test(ctx()) for test in closures]
        by_matcher = matcher(ctx())
        assert by_matcher == [i for i, ok in enumerate(by_closure) if ok], (conditions, t)
        for cond, expected in zip(conditions, by_closure, strict=True):
            verdict, lines = explain(cond, ctx())
            assert verdict == expected, (cond, t)
            mark = MATCHED if verdict else MISSED
            assert lines, cond
            assert all(line.startswith(mark + " ") for line in lines), (cond, lines)
            if isinstance(cond, KeywordTest):  # a match names the phrase and where it is
                assert ("appears in the" in lines[0]) == verdict, (cond, lines)


@settings(DIFFERENTIAL, max_examples=100)
@given(condition_trees)
def test_every_tree_reads_back_in_words(written: Any) -> None:
    text = describe_condition(parse(written))
    assert text and "<" not in text and "object at" not in text


@DIFFERENTIAL
@given(
    st.lists(st.tuples(leaves(), condition_trees, st.booleans()), min_size=1, max_size=4),
    st.lists(situations(), min_size=1, max_size=3),
)
def test_matcher_agrees_on_values_read_only_behind_other_tests(
    written: list[tuple[Any, Any, bool]],
    cases: list[tuple[Ticket, str, tuple[EscalationRecord, ...]]],
) -> None:
    # The matcher reads a value that some rule tests first up front, and one that rules test
    # only behind another test on first use (or in place when one test reads it): rules
    # behind a guard, not taken apart, reach those forms.
    conditions = [parse({"all" if both else "any": [guard, w]}) for guard, w, both in written]
    closures = [compile_condition(c) for c in conditions]
    matcher = build_matcher(conditions)
    for t, rung_id, history in cases:
        rung = LADDER_MATRIX.rung(rung_id)
        assert rung is not None
        expected = [i for i, test in enumerate(closures) if test(Context(t, NOW, rung, history))]
        assert matcher(Context(t, NOW, rung, history)) == expected, (conditions, t)


@settings(DIFFERENTIAL, max_examples=200)
@given(st.lists(time_conditions, min_size=1, max_size=8), situations())
def test_time_tests_agree_on_every_level(
    written: list[Any], case: tuple[Ticket, str, tuple[EscalationRecord, ...]]
) -> None:
    # Levels count time their own way (a 10-hour Berlin day, calendar time): a level_overdue
    # written in days must hold from the same moment in the matcher as in the closures.
    conditions = [parse(w) for w in written]
    matcher = build_matcher(conditions)
    t, _, history = case
    for rung in (*LADDER_MATRIX.levels, *LADDER_MATRIX.teams.values()):
        expected = [
            i
            for i, c in enumerate(conditions)
            if compile_condition(c)(Context(t, NOW, rung, history))
        ]
        assert matcher(Context(t, NOW, rung, history)) == expected, (conditions, rung.id)


class CountingContext(Context):
    """A context that lists the time measures read from it."""

    __slots__ = ("measured",)

    def __init__(self, t: Ticket) -> None:
        super().__init__(t, NOW, LADDER_MATRIX.levels[0], ())
        self.measured: list[str] = []

    def measure(self, test: TimeTest) -> timedelta | None:
        self.measured.append(test.measure)
        return super().measure(test)


def test_a_business_span_is_measured_once_and_only_for_rules_that_get_to_it() -> None:
    # Working out business time is the dear part of a time test: three rules of the same span
    # measure it once, and not at all for a ticket none of their guards lets through.
    idle = {"idle": {"over": "1h", "time": "business"}}
    matcher = build_matcher(
        [
            parse({"all": [{"tags": ["vip"]}, idle]}),
            parse({"all": [{"tags": ["vip"]}, {"idle": {"over": "1d", "time": "business"}}]}),
            parse({"all": [{"tags": ["beta"]}, {"idle": {"under": "1d", "time": "business"}}]}),
        ]
    )
    # Idle since 12:00 on a Wednesday: 3 hours of office time at 15:00.
    since = {"created_at": NOW - timedelta(hours=5), "updated_at": NOW - timedelta(hours=3)}
    plain = ticket(**since)
    ctx = CountingContext(plain)
    assert matcher(ctx) == []
    assert ctx.measured == []
    ctx = CountingContext(ticket(**since, tags=["vip", "beta"]))
    assert matcher(ctx) == [0, 2]
    assert ctx.measured == ["idle"]
