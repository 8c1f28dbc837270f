"""The three evaluators of the condition language agree: on random tickets and random condition
trees, the closures, the generated matcher and the explanations give the same verdict.

Why it matters: the engine picks rules with the generated matcher, while `escbridge explain`
and the escalation note show the explanations. If they disagreed, an admin would read "✗ no
match" for a rule that escalated the ticket (or the reverse). The trees are written as the
admin writes them (YAML, through the real loader), so every shorthand is covered as parsed.

Deterministic for CI: derandomized, no example database, a bounded number of examples.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matrix_helpers import LADDER, NOW

from escbridge.conditions.ast import TEXT_FIELDS, TIME_MEASURES, Condition
from escbridge.conditions.describe import describe_condition
from escbridge.conditions.evaluate import Context, build_matcher, compile_condition
from escbridge.conditions.explain import MATCHED, MISSED, explain
from escbridge.matrix import Matrix, parse_matrix
from escbridge.model import Channel, EscalationRecord, Priority, Status, Ticket

DIFFERENTIAL = settings(
    max_examples=1000,
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

texts = st.lists(st.sampled_from(WORDS), max_size=6).flatmap(
    lambda words: st.lists(
        st.sampled_from(SEPARATORS), min_size=len(words), max_size=len(words)
    ).map(lambda seps: "".join(w + s for w, s in zip(words, seps, strict=True)))
)
minutes = st.integers(min_value=0, max_value=60 * 24 * 10)
maybe_minutes = st.none() | minutes
custom_values = st.sampled_from([None, 5, 9000.5, "1,200", "abc", True, "", "Gold", "gold", 0])
persons = st.fixed_dictionaries(
    {
        "id": st.sampled_from([None, "u1", "U2", "o1"]),
        "name": st.sampled_from([None, "", "Dana Fischer", "dana fischer", "Globex"]),
        "email": st.sampled_from([None, "", "dana@example.com", "DANA@Example.COM", "x@other.org"]),
    }
)


@st.composite
def tickets(draw: st.DrawFn) -> Ticket:
    age = draw(minutes)
    since_update = draw(st.integers(min_value=0, max_value=age))

    def before_now(offset: int | None) -> Any:
        return None if offset is None else NOW - timedelta(minutes=min(offset, age))

    due = draw(st.none() | st.integers(min_value=-60 * 24 * 3, max_value=60 * 24 * 3))
    custom = {
        key: value
        for key, value in draw(
            st.dictionaries(st.sampled_from(["amount", "plan"]), custom_values, max_size=2)
        ).items()
    }
    return Ticket.model_validate(
        {
            "id": "t",
            "instance": draw(st.sampled_from(["support-eu", "Other"])),
            "subject": draw(texts),
            "description": draw(texts),
            "latest_comment": draw(texts),
            "requester": draw(persons),
            "organization": draw(st.none() | persons),
            "tags": draw(st.frozensets(st.sampled_from(TAGS))),
            "custom_fields": custom,
            "channel": draw(st.sampled_from(list(Channel))),
            "status": draw(st.sampled_from(list(Status))),
            "priority": draw(st.sampled_from(list(Priority))),
            "group": draw(st.sampled_from([None, "", "Support", "Billing", "senior support"])),
            "assignee": draw(st.sampled_from([None, "Alex"])),
            "created_at": NOW - timedelta(minutes=age),
            "updated_at": NOW - timedelta(minutes=since_update),
            "first_response_at": before_now(draw(maybe_minutes)),
            "last_customer_reply_at": before_now(draw(maybe_minutes)),
            "due_at": None if due is None else NOW + timedelta(minutes=due),
            "reopen_count": draw(st.integers(min_value=0, max_value=4)),
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


@st.composite
def field_conditions(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from([*PLAIN_FIELDS, "channel", "status", "priority"]))
    enum = {"channel": CHANNELS, "status": STATUSES, "priority": PRIORITIES}.get(field)
    ops = ["exists", "in", "not_in", "equals", "not_equals", "contains", "regex"]
    if enum is None or field == "priority":
        ops += ["gt", "gte", "lt", "lte"]
    op = draw(st.sampled_from(ops))
    value: Any
    if op == "exists":
        value = draw(st.booleans())
    elif op == "regex":
        value = draw(st.sampled_from(PATTERNS))
    elif op == "contains":
        value = draw(st.sampled_from(["a", "dana", "Gold", "example", "5", "l"]))
    elif enum is not None and op in ("in", "not_in"):
        value = draw(subsets(enum, 1))
    elif enum is not None:
        value = draw(st.sampled_from(enum))
    elif op in ("in", "not_in"):
        value = draw(st.lists(literals, min_size=1, max_size=3))
    elif op in ("gt", "gte", "lt", "lte"):
        value = draw(numbers)
    else:
        value = draw(literals)
    return {"field": field, op: value}


@st.composite
def time_conditions(draw: st.DrawFn) -> dict[str, Any]:
    measure = draw(st.sampled_from(list(TIME_MEASURES)))
    if draw(st.booleans()):
        return {measure: draw(st.sampled_from(DURATIONS))}  # the shorthand
    spec: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "over": st.sampled_from(DURATIONS),
                "under": st.sampled_from(DURATIONS),
                "time": st.sampled_from(["business", "calendar"]),
                "calendar": st.just("office"),
            },
        )
    )
    spec.setdefault("over", "0m")
    return {measure: spec}


leaves = st.one_of(
    tag_conditions,
    keyword_conditions,
    priority_conditions,
    shorthand_conditions,
    field_conditions(),
    time_conditions(),
)
condition_trees = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda items: {"all": items}),
        st.lists(inner, min_size=1, max_size=3).map(lambda items: {"any": items}),
        st.lists(inner, min_size=1, max_size=3),  # a plain list means all
        inner.map(lambda item: {"not": item}),
    ),
    max_leaves=6,
)


def matrix_of(conditions: list[Any]) -> Matrix:
    """The test ladder with one rule per condition (YAML is a superset of JSON)."""
    rules = "".join(
        f"  - {{id: r{i}, kind: hierarchical, to: next, when: {json.dumps(when)}}}\n"
        for i, when in enumerate(conditions)
    )
    return parse_matrix(LADDER + "rules:\n" + rules, "differential.yaml")


@st.composite
def situations(draw: st.DrawFn) -> tuple[Ticket, str, tuple[EscalationRecord, ...]]:
    """A ticket, the rung it sits on, and maybe the escalation that put it there."""
    t = draw(tickets())
    rung = draw(st.sampled_from(RUNGS))
    history: tuple[EscalationRecord, ...] = ()
    arrived = draw(st.none() | st.integers(min_value=0, max_value=60 * 24 * 4))
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
    m = matrix_of(written)
    conditions: list[Condition] = [rule.condition for rule in m.rules]
    closures = [compile_condition(c) for c in conditions]
    matcher = build_matcher(conditions)
    for t, rung_id, history in cases:
        rung = m.rung(rung_id)
        assert rung is not None

        def ctx(t: Ticket = t, rung: Any = rung, history: Any = history) -> Context:
            return Context(t, NOW, rung, history)  # a fresh one: no cache shared between paths

        by_closure = [test(ctx()) for test in closures]
        by_matcher = matcher(ctx())
        assert by_matcher == [i for i, ok in enumerate(by_closure) if ok], (written, t)
        for i, cond in enumerate(conditions):
            verdict, lines = explain(cond, ctx())
            assert verdict == by_closure[i], (written[i], t)
            mark = MATCHED if verdict else MISSED
            assert lines, written[i]
            assert all(line.startswith(mark + " ") for line in lines), (written[i], lines)


@DIFFERENTIAL
@given(condition_trees)
def test_every_tree_reads_back_in_words(written: Any) -> None:
    cond = matrix_of([written]).rules[0].condition
    text = describe_condition(cond)
    assert text and "<" not in text and "object at" not in text
