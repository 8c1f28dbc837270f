"""A condition in words, for people reading the matrix: ``tagged vip and idle over 2h``.

Used by the matrix views (the chart's rule list) and the reports (time conditions).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from escbridge.calendar import BusinessCalendar, format_duration
from escbridge.conditions.ast import (
    TIME_MEASURES,
    AllOf,
    AnyOf,
    Condition,
    FieldTest,
    KeywordTest,
    NotOf,
    TagTest,
)
from escbridge.model import Priority

_OP_WORDS = {
    "equals": "is",
    "not_equals": "is not",
    "in": "is",
    "not_in": "is not",
    "contains": "contains",
    "regex": "matches",
    "gt": "above",
    "gte": "at least",
    "lt": "below",
    "lte": "at most",
}
_PARTIES = frozenset({"requester", "organization"})


def describe_condition(cond: Condition, *, nested: bool = False) -> str:
    """A rule's trigger in words; ``nested`` brackets a group inside another."""
    if isinstance(cond, AllOf | AnyOf):
        party = _party_text(cond) if isinstance(cond, AnyOf) else None
        if party is not None:
            return party
        joiner = " and " if isinstance(cond, AllOf) else " or "
        text = joiner.join(describe_condition(c, nested=True) for c in cond.items)
        return f"({text})" if nested and len(cond.items) > 1 else text
    if isinstance(cond, NotOf):
        return f"not {describe_condition(cond.item, nested=True)}"
    if isinstance(cond, FieldTest):
        return _field_text(cond)
    if isinstance(cond, TagTest):
        parts = []
        if cond.any_of:
            parts.append("tagged " + " or ".join(sorted(cond.any_of)))
        if cond.all_of:
            parts.append("tagged " + " and ".join(sorted(cond.all_of)))
        if cond.none_of:
            parts.append("not tagged " + " or ".join(sorted(cond.none_of)))
        return " and ".join(parts) or "any tags"
    if isinstance(cond, KeywordTest):
        words = ", ".join(f"“{' '.join(p)}”" for p in cond.phrases)
        where = " or ".join(f.replace("_", " ") for f in cond.fields)
        return f"mentions {words} in the {where}"
    return time_condition_text(
        cond.measure,
        cond.over,
        cond.under,
        business=cond.business,
        calendar=cond.calendar,
        written=cond.written,
    )


def _value_text(value: Any) -> str:
    if isinstance(value, Priority):
        return value.label
    if isinstance(value, frozenset):
        return " or ".join(sorted(_value_text(v) for v in value))
    if isinstance(value, re.Pattern):
        return f"/{value.pattern}/"
    return str(value)


def _field_text(cond: FieldTest) -> str:
    name = cond.field.replace("custom_fields.", "").replace("_", " ")
    if cond.op == "exists":
        return f"{name} {'is set' if cond.value else 'is empty'}"
    if cond.field == "priority" and cond.op in ("gt", "gte", "lt", "lte"):
        return f"priority {_OP_WORDS[cond.op]} {_value_text(cond.value)}"
    return f"{name} {_OP_WORDS[cond.op]} {_value_text(cond.value)}"


def _party_text(cond: AnyOf) -> str | None:
    """The ``organization: [Globex, Initech]`` shorthand reads back as one clause."""
    tests = [c for c in cond.items if isinstance(c, FieldTest)]
    if len(tests) != len(cond.items):
        return None
    parties = {c.field.split(".")[0] for c in tests}
    if len(parties) != 1 or not parties <= _PARTIES:
        return None
    values: list[str] = []
    for c in tests:
        text = _value_text(c.value).strip("/").removesuffix("$").replace("\\", "")
        if text not in values:
            values.append(text)
    return f"{parties.pop()} is {' or '.join(values)}"


#: ``over: 0m`` on these measures reads better as what it means.
_RUN_OUT = {
    "level_overdue": "the current level's expected resolution time has run out",
    "response_overdue": "the level's expected first-response time has run out, unanswered",
    "overdue": "the ticket is past its due time",
}


def time_condition_text(
    measure: str,
    over: timedelta | None,
    under: timedelta | None,
    *,
    business: bool,
    calendar: BusinessCalendar | None = None,
    written: tuple[str | None, str | None] = (None, None),
) -> str:
    """``time since the ticket was last updated over 2h`` (calendar time says so).

    Bounds read as the admin ``written`` them; else business durations are written in working
    days of ``calendar`` (the one measuring them), and without it a day is 24h.
    """
    unit = calendar if business else None
    mode = "" if business else " (calendar time)"
    if over == timedelta(0) and under is None and measure in _RUN_OUT:
        return _RUN_OUT[measure] + mode
    bounds = []
    if over is not None:
        bounds.append(f"over {written[0] or format_duration(over, unit)}")
    if under is not None:
        bounds.append(f"under {written[1] or format_duration(under, unit)}")
    return f"{TIME_MEASURES[measure]} {' and '.join(bounds)}{mode}"
