"""The compiled matrix: what the engine and the views work with.

Frozen records built by the loader from a valid spec. ``Matrix.resolve`` is the one place that
says where a rule may take a ticket (never down, never to the rung it is on): the engine decides
with it and the chart draws its routes with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import jinja2

from escbridge.calendar import BusinessCalendar, format_duration
from escbridge.conditions.ast import Condition
from escbridge.model import LevelMarker, Priority

if TYPE_CHECKING:
    from escbridge.notify.model import NotifyTarget


@dataclass(frozen=True)
class Rung:
    """A destination: a level of the ladder or a functional team, with its rank on the ladder."""

    kind: Literal["level", "team"]
    id: str
    name: str
    rank: int
    groups: Mapping[str, str]
    min_priority: Priority | None
    response: timedelta | None
    resolution: timedelta | None
    calendar: BusinessCalendar
    business: bool
    #: response and resolution as the admin wrote them ("1d", "8h"), for tables and charts
    written: Mapping[str, str] = field(default_factory=dict)
    #: the notification targets told when a ticket escalates to this rung (``Matrix.notify``)
    notify: tuple[str, ...] = ()

    @property
    def marker(self) -> str:
        """The tag a ticket carries while it sits here (``LevelMarker``)."""
        return LevelMarker.tag(self.id)

    def group_for(self, instance: str, helpdesk: str | None = None) -> str | None:
        """The responsible group on one helpdesk: by instance name, then helpdesk type, then '*'."""
        for key in (instance, helpdesk, "*"):
            if key is not None and key in self.groups:
                return self.groups[key]
        return None


@dataclass(frozen=True)
class Target:
    """Where a rule sends a ticket: ``next`` (one rung up) or a fixed rung."""

    next: bool
    rung: Rung | None

    @property
    def label(self) -> str:
        return "next level" if self.next or self.rung is None else self.rung.id


@dataclass(frozen=True)
class RuleActions:
    priority: Priority | None
    note: jinja2.Template | None
    tags: tuple[str, ...]
    customer_update: jinja2.Template | None
    unassign: bool
    note_source: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    kind: Literal["hierarchical", "functional"]
    description: str
    condition: Condition
    target: Target
    actions: RuleActions
    line: int | None
    repeat: bool = False  # may escalate the same ticket again (at a later level)


@dataclass(frozen=True)
class Matrix:
    """A validated matrix: the ladder, the teams, the rules, the limits."""

    name: str
    source: str
    levels: tuple[Rung, ...]
    teams: Mapping[str, Rung]
    rules: tuple[Rule, ...]
    cooldown: timedelta
    daily_cap: int
    default_calendar: BusinessCalendar
    default_note: jinja2.Template
    calendars: Mapping[str, BusinessCalendar] = field(default_factory=dict)
    #: Identifies the text the matrix was read from: the due times stored with the shadow of
    #: open tickets were computed under one matrix, and are computed again under another.
    digest: str = ""
    #: the notification targets by id (``escbridge.notify``); rungs name theirs in ``notify``
    notify: Mapping[str, NotifyTarget] = field(default_factory=dict)

    def rung(self, rung_id: str | None) -> Rung | None:
        """A level or team by id (None when unknown)."""
        if rung_id is None:
            return None
        for level in self.levels:
            if level.id == rung_id:
                return level
        return self.teams.get(rung_id)

    @property
    def rungs(self) -> tuple[Rung, ...]:
        return (*self.levels, *self.teams.values())

    def resolve(self, rule: Rule, current: Rung) -> Rung | str:
        """The rung ``rule`` takes a ticket sitting at ``current`` to, or why it may not move.

        The invariant of ARCHITECTURE.md "Exactly-once in effect": never de-escalate, never
        re-apply the rung a ticket is on; a team is a side step at its rank, so a level may hand
        over to a team of its rank but not the other way round, and a team never to a team.
        """
        if rule.target.next or rule.target.rung is None:
            above = current.rank + 1
            if above >= len(self.levels):
                return f"already at the top level ({current.id})"
            return self.levels[above]
        target = rule.target.rung
        if target.id == current.id:
            return f"the ticket is already at {target.id}"
        if target.rank < current.rank:
            return f"{target.id} is below the current {current.id}: escbridge never de-escalates"
        if target.rank == current.rank and (target.kind == "level" or current.kind == "team"):
            return f"{target.id} is at the same rank as the current {current.id}"
        return target


def describe_target(rule: Rule) -> str:
    """A short text for tables: where the rule sends a ticket."""
    if rule.target.next or rule.target.rung is None:
        return "next level"
    return f"{rule.target.rung.kind} {rule.target.rung.id}"


def expected_text(rung: Rung, which: Literal["response", "resolution"]) -> str:
    """A rung's expected time as the admin wrote it (a business "1d" is a working day)."""
    if which in rung.written:
        return rung.written[which]
    value = rung.response if which == "response" else rung.resolution
    if value is None:
        return "—"
    return format_duration(value, rung.calendar if rung.business else None)


def describe_expected(rung: Rung) -> str:
    """The expected times of a rung, as shown in tables and charts."""
    parts = []
    if rung.response is not None:
        parts.append(f"response {expected_text(rung, 'response')}")
    if rung.resolution is not None:
        parts.append(f"resolution {expected_text(rung, 'resolution')}")
    mode = "business" if rung.business else "calendar"
    return f"{', '.join(parts)} ({mode} time)" if parts else "—"
