"""Why a condition held or not for one ticket: the lines ``escbridge explain`` and the escalation
note show.

Leaves get their verdict from the closures of ``escbridge.conditions.evaluate`` (one meaning);
this module decides which leaves are responsible for the verdict of the whole tree and says
what each one saw.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from escbridge.calendar import format_duration
from escbridge.conditions.ast import (
    TIME_MEASURES,
    AllOf,
    AnyOf,
    Condition,
    FieldTest,
    KeywordTest,
    Leaf,
    NotOf,
    TagTest,
    TimeTest,
)
from escbridge.conditions.evaluate import Context, field_value, leaf_test, number, phrase_pattern
from escbridge.model import Priority

MATCHED = "✓"
MISSED = "✗"


def explain(cond: Condition, ctx: Context) -> tuple[bool, list[str]]:
    """Whether a condition holds, and the leaf lines responsible for that verdict.

    For a match: the leaves that made it true; for a miss: the leaves that kept it false
    (every alternative of a failed ``any``, the failing items of a failed ``all``). Each line
    starts with ✓ or ✗ and a space: the verdict it contributes to the whole condition.
    """
    if isinstance(cond, AllOf | AnyOf):
        results = [explain(c, ctx) for c in cond.items]
        ok = (all if isinstance(cond, AllOf) else any)(r[0] for r in results)
        decisive = [lines for sub_ok, lines in results if sub_ok == ok] or [
            lines for _, lines in results
        ]
        return ok, [line for lines in decisive for line in lines]
    if isinstance(cond, NotOf):
        inner_ok, lines = explain(cond.item, ctx)
        mark = MISSED if inner_ok else MATCHED
        return not inner_ok, [f"{mark} not: {line[2:]}" for line in lines]
    ok = leaf_test(cond)(ctx)
    return ok, [f"{MATCHED if ok else MISSED} {_leaf_text(cond, ctx, ok)}"]


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


def _leaf_text(cond: Leaf, ctx: Context, ok: bool) -> str:
    if isinstance(cond, FieldTest):
        return _field_text(cond, ctx, ok)
    if isinstance(cond, TagTest):
        parts = []
        if cond.any_of:
            parts.append(f"any of {_show(cond.any_of)}")
        if cond.all_of:
            parts.append(f"all of {_show(cond.all_of)}")
        if cond.none_of:
            parts.append(f"none of {_show(cond.none_of)}")
        have = _show(ctx.ticket.tags)
        return f"tags {have} {'have' if ok else 'do not have'} {' and '.join(parts)}"
    if isinstance(cond, KeywordTest):
        found = _find_keyword(ctx, cond)
        if found is not None:
            return f'"{found[0]}" appears in the {found[1].replace("_", " ")}'
        listed = ", ".join(f'"{" ".join(p)}"' for p in cond.phrases)
        return f"none of {listed} appears in {', '.join(cond.fields)}"
    return _time_text(cond, ctx, ok)


def _field_text(cond: FieldTest, ctx: Context, ok: bool) -> str:
    actual = field_value(cond, ctx)
    if cond.op == "exists":
        state = "has a value" if actual not in (None, "") else "has no value"
        return f"{cond.field} {state}"
    want = f"{_OP_TEXT[cond.op]} {_show(cond.value)}"
    if actual is None:
        return f"{cond.field} has no value (wanted: {want})"
    if ok:
        return f"{cond.field} {want} ({_show(actual)})"
    text = f"{cond.field} is {_show(actual)}"
    if cond.op in ("gt", "gte", "lt", "lte") and not isinstance(actual, Priority):
        value = number(actual)
        if value is not None:
            text += f", {abs(value - float(cond.value)):g} from the limit"
    return f"{text} (wanted: {want})"


def _find_keyword(ctx: Context, cond: KeywordTest) -> tuple[str, str] | None:
    """(phrase, field) of the first whole-word match."""
    for field in cond.fields:
        text = ctx.text((field,))
        for words in cond.phrases:
            if phrase_pattern(words).search(text):
                return " ".join(words), field
    return None


def _time_text(cond: TimeTest, ctx: Context, ok: bool) -> str:
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

    def shown(length: timedelta) -> str:
        # In the units the admin wrote: in business time d is a working day of this calendar.
        return format_duration(length, calendar if business else None)

    def gap(length: timedelta, what: str) -> str:
        return "exactly the limit" if not length else f"{_near(length, shown)} {what}"

    over, under = ctx.bounds(cond)
    bounds = []
    missed = None
    over_text, under_text = cond.written
    if over is not None:
        bounds.append(f"over {over_text or shown(over)}")
        if value <= over:
            missed = gap(over - value, "to go")
    if under is not None:
        bounds.append(f"under {under_text or shown(under)}")
        if value >= under and missed is None:
            missed = gap(value - under, "too much")
    wanted = " and ".join(bounds)
    text = f"{label} is {_near(value, shown, ((over, over_text), (under, under_text)))} of {mode}"
    return f"{text}, {wanted}" if ok else f"{text}, not {wanted} ({missed})"


def _near(
    length: timedelta,
    shown: Callable[[timedelta], str],
    limits: Iterable[tuple[timedelta | None, str | None]] = (),
) -> str:
    """``length`` as ``shown`` writes it, unless that would read as a limit it is not: a
    positive length under half a second is "under 1s", not "0m", and one that rounds to a
    bound (2h and 0.3 s, against "over 2h") is "just over 2h", never "2h, over 2h"."""
    text = shown(length)
    if text == "0m" and length > timedelta(0):
        return "under 1s"
    for limit, written in limits:
        if limit is not None and length != limit and text == shown(limit):
            return f"just {'over' if length > limit else 'under'} {written or text}"
    return text
