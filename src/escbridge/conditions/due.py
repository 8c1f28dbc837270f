"""When a ticket's time conditions can next change: the instants ``Engine.next_due`` checks.

Pure: no I/O, no clock; the ticket, its history and ``now`` are passed in (as a
``Context``). Every time measure of the condition language is monotone in ``now`` (age, idle and
the rest grow, ``until_due`` shrinks), so each bound of a ``TimeTest`` flips its truth value at
most once, at an instant computed here exactly, in business time where the test counts it
(``BusinessCalendar.add``: holidays, weekends and DST included). A time test whose bounds never
flip after ``now`` is a constant for this ticket, like every non-time test (fields, tags,
keywords): ``instants`` folds constants out of a rule's condition so only the time tests that
can still change the rule's verdict give instants.

The measures' anchors (``ANCHORS``) mirror ``Context._measure``: ``tests/core/test_next_due.py``
checks on random tickets and matrices that the decision is constant between the instants found
here and changes at the one ``next_due`` returns.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from escbridge.calendar import BusinessCalendar
from escbridge.conditions.ast import AllOf, AnyOf, Condition, NotOf, TimeTest
from escbridge.conditions.evaluate import Context, leaf_test

__all__ = ["first_at_least", "flips", "instants"]

_US = timedelta(microseconds=1)
_ZERO = timedelta(0)


def first_at_least(
    calendar: BusinessCalendar, business: bool, anchor: datetime, x: timedelta
) -> datetime | None:
    """The earliest instant t with ``elapsed(anchor, t) >= x``, or None when there is none.

    ``elapsed`` is wall-clock time, or business time when ``business``. Business time is
    continuous and flat while closed, so for x > 0 the earliest such t is where the limit runs
    out (``add``: at closing time, not next morning). For x <= 0 it can lie before ``anchor``
    (the flat stretch before it); ``add`` going backwards gives the *latest* t at a value, so
    this asks for the latest t one microsecond short and steps one microsecond on.
    None when the calendar has no business hours (business time never grows) or the instant
    is beyond what datetimes and calendars compute (years 1..9999).
    """
    try:
        if not business:
            return anchor + x
        if x > _ZERO:
            return calendar.add(anchor, x)
        return calendar.add(anchor, x - _US) + _US
    except (OverflowError, ValueError):
        return None


def _anchor(test: TimeTest, ctx: Context) -> tuple[datetime, timedelta, int] | None:
    """(anchor, offset, sign) with ``measure(t) = sign * elapsed(anchor, t) - offset``, or None
    when the measure does not apply to the ticket (it is then None at every instant)."""
    t, m = ctx.ticket, test.measure
    if m == "age":
        return t.created_at, _ZERO, 1
    if m == "idle":
        return t.updated_at, _ZERO, 1
    if m == "since_customer_reply":
        return None if t.last_customer_reply_at is None else (t.last_customer_reply_at, _ZERO, 1)
    if m == "until_due":
        return None if t.due_at is None else (t.due_at, _ZERO, -1)
    if m == "overdue":
        return None if t.due_at is None else (t.due_at, _ZERO, 1)
    if m == "at_level":
        return ctx.level_since(), _ZERO, 1
    if m == "level_overdue":
        resolution = ctx.rung.resolution
        return None if resolution is None else (ctx.level_since(), resolution, 1)
    if m == "response_overdue":
        response = ctx.rung.response
        if t.first_response_at is not None or response is None:
            return None
        return ctx.level_since(), response, 1
    raise AssertionError(f"unknown measure {m}")  # the parser rejects these


def flips(test: TimeTest, ctx: Context) -> list[datetime]:
    """The instants after ``ctx.now`` at which ``test`` changes its truth value (0, 1 or 2).

    With ``E(t) = elapsed(anchor, t)`` non-decreasing, each bound holds on one side of a
    threshold of E: ``value > over`` and ``value < under`` are strict, so a threshold reached
    exactly does not count yet ("idle over 20d" holds from 20d + 1µs on).
    """
    found = _anchor(test, ctx)
    if found is None:
        return []
    anchor, offset, sign = found
    over, under = ctx.bounds(test)
    if over is not None and under is not None and under - over <= _US:
        return []  # no value lies strictly between the bounds: false at every instant
    business, calendar = ctx.mode(test)
    thresholds = []  # values x of E at which the test flips, as "E >= x" starts to hold
    if over is not None:
        # +1: E - offset > over <=> E >= over + offset + 1µs;  -1: -E > over <=> E < -over
        thresholds.append(over + offset + _US if sign > 0 else -over)
    if under is not None:
        # +1: E - offset < under <=> E < under + offset;  -1: -E < under <=> E >= 1µs - under
        thresholds.append(under + offset if sign > 0 else _US - under)
    out = []
    for x in thresholds:
        at = first_at_least(calendar, business, anchor, x)
        if at is not None and at > ctx.now:
            out.append(at)
    return out


def instants(cond: Condition, ctx: Context) -> list[datetime]:
    """The flips after ``ctx.now`` of the time tests ``cond``'s verdict can still depend on.

    Constants are folded out first: non-time tests, and time tests with no flip ahead, keep
    their value at ``ctx.now`` for good, and a constant that decides an ``all``/``any``
    silences its siblings. Why: a rule "VIP and idle over 4h" must not make every non-VIP
    ticket due at 4h idle.
    """
    folded = _fold(cond, ctx)
    return [] if isinstance(folded, bool) else folded


def _fold(cond: Condition, ctx: Context) -> bool | list[datetime]:
    """The condition as a constant from ``ctx.now`` on, or the (non-empty) flips it hangs on."""
    if isinstance(cond, AllOf | AnyOf):
        absorbing = isinstance(cond, AnyOf)  # True decides an any, False an all
        live: list[datetime] = []
        for item in cond.items:
            part = _fold(item, ctx)
            if part is absorbing:
                return absorbing
            if not isinstance(part, bool):
                live.extend(part)
        return live or (not absorbing)
    if isinstance(cond, NotOf):
        part = _fold(cond.item, ctx)
        return (not part) if isinstance(part, bool) else part
    if isinstance(cond, TimeTest):
        ahead = flips(cond, ctx)
        if ahead:
            return ahead
    return leaf_test(cond)(ctx)
