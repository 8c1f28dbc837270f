"""The condition language as data: the one tree every other module of this package walks.

A rule's ``when:`` is parsed once (``parse``) into these frozen records; ``evaluate`` turns a tree
into fast tests, ``explain`` says why it held or not for one ticket, ``describe`` says what it
asks for in words. Literals are stored already normalised (lower-case text, ``Priority``
members, enum values), so the walkers compare without converting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from escbridge.calendar import BusinessCalendar

FIELD_NAMES = (
    "subject",
    "description",
    "latest_comment",
    "requester.id",
    "requester.name",
    "requester.email",
    "organization.id",
    "organization.name",
    "channel",
    "status",
    "priority",
    "group",
    "assignee",
    "reopen_count",
    "level",
    "instance",
)
FIELD_OPS = ("equals", "not_equals", "in", "not_in", "contains", "regex", "gt", "gte", "lt", "lte")
FIELD_OPS_ALL = (*FIELD_OPS, "exists")
TEXT_FIELDS = ("subject", "description", "latest_comment")
PRIORITY_OPS = {"at_least": "gte", "at_most": "lte", "above": "gt", "below": "lt"}
TIME_MEASURES = {
    "age": "time since the ticket was created",
    "idle": "time since the ticket was last updated",
    "since_customer_reply": "time since the customer's last reply",
    "until_due": "time left until the ticket is due",
    "overdue": "time since the ticket became due",
    "at_level": "time at the current level",
    "level_overdue": "time at the current level beyond its expected resolution",
    "response_overdue": "time at the level without a first response beyond its expected response",
}
LEVEL_MEASURES = frozenset({"level_overdue", "response_overdue"})
LEVEL_RELATIVE = frozenset({"at_level", "level_overdue", "response_overdue"})


@dataclass(frozen=True)
class AllOf:
    items: tuple[Condition, ...]
    path: str


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]
    path: str


@dataclass(frozen=True)
class NotOf:
    item: Condition
    path: str


@dataclass(frozen=True)
class FieldTest:
    """``field`` compared with ``op``; priority and channel values are already normalised."""

    field: str
    op: str
    value: Any
    path: str


@dataclass(frozen=True)
class TagTest:
    any_of: frozenset[str]
    all_of: frozenset[str]
    none_of: frozenset[str]
    path: str


@dataclass(frozen=True)
class KeywordTest:
    """Whole-word, case-insensitive phrases in some text fields."""

    phrases: tuple[tuple[str, ...], ...]  # each phrase as its lower-case words
    fields: tuple[str, ...]
    path: str


@dataclass(frozen=True)
class TimeTest:
    measure: str
    over: timedelta | None
    under: timedelta | None
    calendar: BusinessCalendar
    business: bool
    path: str
    # level_overdue/response_overdue without their own time/calendar count the way the level's
    # expected times are written (the level's `time` and `calendar`), not the matrix default.
    follow_level: bool = False
    # For such a test with days written ("over: 1d"): the bounds in each way levels count time,
    # as (business?, calendar name or "" for calendar time, over, under), since a working day
    # is as long as the level's calendar says. Empty: ``over``/``under`` hold everywhere.
    level_bounds: tuple[tuple[bool, str, timedelta | None, timedelta | None], ...] = ()
    # over/under as the admin wrote them ("1d", "8h"), for explanations and descriptions.
    written: tuple[str | None, str | None] = (None, None)


Condition = AllOf | AnyOf | NotOf | FieldTest | TagTest | KeywordTest | TimeTest
Leaf = FieldTest | TagTest | KeywordTest | TimeTest


def children(cond: Condition) -> tuple[Condition, ...]:
    """The direct sub-conditions of a group or a ``not``; none for a leaf."""
    if isinstance(cond, AllOf | AnyOf):
        return cond.items
    if isinstance(cond, NotOf):
        return (cond.item,)
    return ()


def walk(cond: Condition) -> Iterator[Condition]:
    """The condition and every condition inside it, depth first."""
    yield cond
    for child in children(cond):
        yield from walk(child)


def is_level_relative(cond: Condition) -> bool:
    """Whether a condition measures time at the current level, so it starts afresh after each
    escalation (and its rule may fire again at the next level)."""
    return any(isinstance(c, TimeTest) and c.measure in LEVEL_RELATIVE for c in walk(cond))
