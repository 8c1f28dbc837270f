"""`escbridge report`: what the escalation history says about a period, against the one before.

Three layers, so the arithmetic can be tested without a database or a plotting library:

- :func:`load_history` reads the store's escalation rows (one small query; it reads columns a
  newer store adds, such as the ticket's channel or resolution time, when they exist);
- :func:`build_report` turns rows into figures: pure, time is passed in;
- ``render_text`` / ``render_json`` / ``render_csv`` / ``render_html`` print them. Only the HTML
  form imports matplotlib, and only when it is called.

Definitions a support manager can check by hand:

- the period is ``[until - since, until)``; the previous period is as long and ends where it starts;
- *time to escalation* is the calendar time from the ticket's creation to the escalation;
- *time to resolution* at a level runs from the escalation to the ticket's resolution, when the
  ticket was resolved before any further escalation; it is measured the way the level's expected
  resolution is (business or calendar time) and is *within target* when it is at most that;
- a *repeat* is a ticket escalated more than once in the period.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import re
import statistics
import sys
import textwrap
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from escbridge.calendar import parse_duration
from escbridge.errors import InvalidInputError, StoreUnavailableError
from escbridge.matrix import TIME_MEASURES, Matrix, Rung
from escbridge.render import time_condition_text

if TYPE_CHECKING:
    from markupsafe import Markup
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

EXIT_OK, EXIT_PROBLEM, EXIT_INVALID = 0, 1, 2
Unit = Literal["day", "week"]
UNKNOWN = "(not recorded)"

# --- the rows the report is computed from --------------------------------------------------


@dataclass(frozen=True)
class EscalationRow:
    """One recorded escalation, with what the report needs and nothing of the store's types.

    Fields after ``ticket_created_at`` are optional: an older store or an escalation recorded
    without them leaves them None, and the report says what it could not show.
    """

    instance: str
    ticket_id: str
    from_level: str | None
    to_level: str
    rule_id: str | None
    kind: str | None
    decided_at: datetime
    reasons: tuple[str, ...] = ()
    ticket_created_at: datetime | None = None
    helpdesk: str | None = None
    channel: str | None = None
    source_group: str | None = None
    resolved_at: datetime | None = None
    to_group: str | None = None


#: Optional facts, by the name the report uses, and where a store may keep them. A store
#: without the column simply leaves the fact out; the report notes it.
OPTIONAL_FACTS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "channel": (("escalations", ("channel", "ticket_channel")),),
    "source_group": (("escalations", ("from_group", "source_group", "ticket_group")),),
    "helpdesk": (("escalations", ("helpdesk", "connector", "helpdesk_type")),),
    "resolved_at": (("escalations", ("resolved_at",)), ("ticket_state", ("resolved_at",))),
}


@dataclass(frozen=True)
class History:
    """Rows read from the store, and which optional facts the store records at all."""

    rows: tuple[EscalationRow, ...]
    recorded: frozenset[str]
    instances: frozenset[str]


def _column(table: sa.Table, names: Sequence[str]) -> sa.Column[Any] | None:
    for name in names:
        if name in table.c:
            return table.c[name]
    return None


def load_history(
    connection: sa.Connection,
    start: datetime,
    end: datetime,
    *,
    instances: Sequence[str] = (),
    helpdesks: Mapping[str, str] | None = None,
) -> History:
    """Escalations decided in ``[start, end)`` (oldest first), for some instances or all.

    ``helpdesks`` maps instance names to connector types (from escbridge.yaml) for stores that
    do not record the type themselves.
    """
    from escbridge.store.schema import escalations, ticket_state

    tables = {"escalations": escalations, "ticket_state": ticket_state}
    columns: list[sa.ColumnElement[Any]] = [
        escalations.c.instance,
        escalations.c.ticket_id,
        escalations.c.from_level,
        escalations.c.to_level,
        escalations.c.rule_id,
        escalations.c.kind,
        escalations.c.decided_at,
        escalations.c.reasons,
        escalations.c.ticket_created_at,
        escalations.c.to_group,
    ]
    recorded: set[str] = set()
    join_state = False
    for fact, places in OPTIONAL_FACTS.items():
        for table_name, names in places:
            column = _column(tables[table_name], names)
            if column is not None:
                columns.append(column.label(fact))
                recorded.add(fact)
                join_state = join_state or table_name == "ticket_state"
                break
    source: sa.FromClause = escalations
    if join_state:
        source = escalations.outerjoin(
            ticket_state,
            sa.and_(
                ticket_state.c.instance == escalations.c.instance,
                ticket_state.c.ticket_id == escalations.c.ticket_id,
            ),
        )
    query = (
        sa.select(*columns)
        .select_from(source)
        .where(escalations.c.decided_at >= start, escalations.c.decided_at < end)
        .order_by(escalations.c.decided_at, escalations.c.id)
    )
    if instances:
        query = query.where(escalations.c.instance.in_(list(instances)))
    types = dict(helpdesks or {})
    if types:
        recorded.add("helpdesk")
    rows = []
    for r in connection.execute(query).mappings():
        reasons = r["reasons"] if isinstance(r["reasons"], list) else []
        rows.append(
            EscalationRow(
                instance=r["instance"],
                ticket_id=r["ticket_id"],
                from_level=r["from_level"],
                to_level=r["to_level"],
                rule_id=r["rule_id"],
                kind=r["kind"],
                decided_at=r["decided_at"],
                reasons=tuple(str(x) for x in reasons),
                ticket_created_at=r["ticket_created_at"],
                helpdesk=r.get("helpdesk") or types.get(r["instance"]),
                channel=r.get("channel"),
                source_group=r.get("source_group"),
                resolved_at=r.get("resolved_at"),
                to_group=r["to_group"],
            )
        )
    known = sa.union(
        sa.select(escalations.c.instance), sa.select(ticket_state.c.instance)
    ).subquery()
    seen = frozenset(str(i) for i in connection.execute(sa.select(known.c[0])).scalars())
    return History(tuple(rows), frozenset(recorded), seen)


# --- the figures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A half-open period ``[start, end)``."""

    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def previous(self) -> Window:
        return Window(self.start - self.length, self.start)

    def __contains__(self, at: object) -> bool:
        return isinstance(at, datetime) and self.start <= at < self.end


@dataclass(frozen=True)
class Change:
    """A count against the previous period's."""

    count: int
    previous: int

    @property
    def delta(self) -> int:
        return self.count - self.previous

    @property
    def ratio(self) -> float | None:
        """Relative change (0.25 for +25 %); None when there was nothing to compare with."""
        return None if self.previous == 0 else self.delta / self.previous


@dataclass(frozen=True)
class Share:
    """One value of a breakdown: how many escalations, their share of all, and the change."""

    key: str | None
    label: str
    count: int
    share: float
    previous: int

    @property
    def change(self) -> Change:
        return Change(self.count, self.previous)


@dataclass(frozen=True)
class Breakdown:
    name: str
    title: str
    items: tuple[Share, ...]
    recorded: bool = True


@dataclass(frozen=True)
class Durations:
    """Summary of some durations: how many, median and 90th percentile (nearest rank)."""

    n: int
    median: timedelta | None
    p90: timedelta | None

    @classmethod
    def of(cls, values: Iterable[timedelta]) -> Durations:
        ordered = sorted(values)
        if not ordered:
            return cls(0, None, None)
        seconds = statistics.median(v.total_seconds() for v in ordered)
        p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]
        return cls(len(ordered), timedelta(seconds=seconds), p90)


@dataclass(frozen=True)
class RungTiming:
    """How fast tickets reached one level or team, and how fast they were resolved there."""

    id: str
    label: str
    kind: str
    expected: timedelta | None
    business: bool
    escalations: int
    to_escalate: Durations
    to_resolve: Durations
    resolved: int
    within_target: int
    moved_on: int
    open: int
    open_past_target: int
    resolution_recorded: bool = True

    @property
    def within_share(self) -> float | None:
        """Resolved within the expected time, as a share of those resolved here (with a target)."""
        if self.expected is None or self.resolved == 0 or not self.resolution_recorded:
            return None
        return self.within_target / self.resolved


@dataclass(frozen=True)
class TrendPoint:
    start: date
    label: str
    count: int
    previous: int


@dataclass(frozen=True)
class Trend:
    unit: Unit
    points: tuple[TrendPoint, ...]


@dataclass(frozen=True)
class RepeatTicket:
    instance: str
    ticket_id: str
    count: int
    path: tuple[str, ...]
    last: datetime


@dataclass(frozen=True)
class Repeats:
    tickets: int
    repeated: int
    escalations_on_repeated: int
    distribution: tuple[tuple[int, int], ...]  # (escalations per ticket, tickets)
    top: tuple[RepeatTicket, ...]
    previous_repeated: int

    @property
    def share(self) -> float | None:
        return None if self.tickets == 0 else self.repeated / self.tickets


@dataclass(frozen=True)
class Reason:
    text: str
    count: int
    share: float
    rules: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    title: str
    window: Window
    timezone: str
    generated_at: datetime
    instances: tuple[str, ...]
    escalations: Change
    tickets: Change
    breakdowns: tuple[Breakdown, ...]
    timings: tuple[RungTiming, ...]
    trend: Trend
    repeats: Repeats
    reasons: tuple[Reason, ...]
    time_to_escalate: Durations
    notes: tuple[str, ...] = ()

    def breakdown(self, name: str) -> Breakdown:
        return next(b for b in self.breakdowns if b.name == name)

    def timing(self, rung_id: str) -> RungTiming:
        return next(t for t in self.timings if t.id == rung_id)

    @property
    def within_target(self) -> tuple[int, int]:
        """(resolved within target, resolved with a target) over every level and team."""
        measured = [t for t in self.timings if t.expected is not None]
        return sum(t.within_target for t in measured), sum(t.resolved for t in measured)


def _ticket(row: EscalationRow) -> tuple[str, str]:
    return row.instance, row.ticket_id


def _rung_label(matrix: Matrix | None, rung_id: str | None) -> str:
    if rung_id is None:
        return UNKNOWN
    rung = matrix.rung(rung_id) if matrix else None
    if rung is None:
        return rung_id
    rank = f"L{rung.rank + 1}" if rung.kind == "level" else "team"
    return f"{rank} · {rung.name}"


def _infer_helpdesk(row: EscalationRow, matrix: Matrix | None) -> str | None:
    """The helpdesk type, from the group the escalation assigned when only one type has it."""
    rung = matrix.rung(row.to_level) if matrix else None
    if rung is None or row.to_group is None:
        return None
    types = {key for key, group in rung.groups.items() if group == row.to_group} - {"*"}
    return types.pop() if len(types) == 1 else None


def _fill_in(rows: Sequence[EscalationRow], matrix: Matrix | None) -> list[EscalationRow]:
    """Facts the store left out, where the history itself tells them (rows oldest first).

    An instance's helpdesk type follows from the groups its escalations assigned (when only
    one type has them); the group a ticket left is the group its previous escalation assigned,
    else the responsible group of the level it left.
    """
    seen: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        found = row.helpdesk or _infer_helpdesk(row, matrix)
        if found:
            seen[row.instance].add(found)
    types = {instance: found.pop() for instance, found in seen.items() if len(found) == 1}
    last_group: dict[tuple[str, str], str | None] = {}
    out = []
    for row in rows:
        helpdesk = row.helpdesk or types.get(row.instance)
        source = row.source_group or last_group.get(_ticket(row))
        if source is None and matrix is not None:
            rung = matrix.rung(row.from_level)
            source = rung.group_for(row.instance, helpdesk) if rung else None
        last_group[_ticket(row)] = row.to_group
        if (helpdesk, source) != (row.helpdesk, row.source_group):
            row = dataclasses.replace(row, helpdesk=helpdesk, source_group=source)
        out.append(row)
    return out


def _breakdown(
    name: str,
    title: str,
    current: Sequence[EscalationRow],
    previous: Sequence[EscalationRow],
    key: Callable[[EscalationRow], str | None],
    label: Callable[[str | None], str] = lambda k: UNKNOWN if k is None else k,
    order: Sequence[str] = (),
    recorded: bool = True,
) -> Breakdown:
    """Counts per key, now and before. ``order`` fixes the order (and lists keys never seen);
    otherwise the most frequent come first."""
    now = Counter(key(r) for r in current)
    before = Counter(key(r) for r in previous)
    total = len(current)
    keys: list[str | None] = list(order)
    rest = [k for k in {*now, *before} if k not in keys]
    rest.sort(key=lambda k: (-now[k], -before[k], k is None, k or ""))
    keys += rest
    items = tuple(
        Share(k, label(k), now[k], now[k] / total if total else 0.0, before[k]) for k in keys
    )
    return Breakdown(name, title, items, recorded)


def _elapsed(rung: Rung | None, start: datetime, end: datetime) -> timedelta:
    if rung is not None and rung.business:
        return rung.calendar.elapsed(start, end)
    return end - start


def _timings(
    current: Sequence[EscalationRow],
    by_ticket: Mapping[tuple[str, str], Sequence[EscalationRow]],
    matrix: Matrix | None,
    until: datetime,
    resolution_recorded: bool,
) -> tuple[RungTiming, ...]:
    """Per level or team; without recorded resolutions, only what later escalations tell."""
    order = [r.id for r in matrix.rungs] if matrix else []
    seen = order + sorted({r.to_level for r in current} - set(order))
    out = []
    for rung_id in seen:
        rung = matrix.rung(rung_id) if matrix else None
        rows = [r for r in current if r.to_level == rung_id]
        expected = rung.resolution if rung else None
        to_escalate = [
            r.decided_at - r.ticket_created_at
            for r in rows
            if r.ticket_created_at is not None and r.ticket_created_at <= r.decided_at
        ]
        to_resolve: list[timedelta] = []
        within = moved_on = still_open = past_target = 0
        for row in rows:
            later = [e for e in by_ticket[_ticket(row)] if e.decided_at > row.decided_at]
            following = later[0].decided_at if later else None
            resolved = row.resolved_at
            if resolved is not None and resolved >= until:
                resolved = None  # resolved after the report's end: still open as of then
            if (
                resolved is not None
                and resolved >= row.decided_at
                and (following is None or resolved <= following)
            ):
                took = _elapsed(rung, row.decided_at, resolved)
                to_resolve.append(took)
                within += expected is not None and took <= expected
            elif following is not None:
                moved_on += 1
            else:
                still_open += 1
                age = _elapsed(rung, row.decided_at, until)
                past_target += resolution_recorded and expected is not None and age > expected
        out.append(
            RungTiming(
                id=rung_id,
                label=_rung_label(matrix, rung_id),
                kind=rung.kind if rung else "level",
                expected=expected,
                business=rung.business if rung else False,
                escalations=len(rows),
                to_escalate=Durations.of(to_escalate),
                to_resolve=Durations.of(to_resolve),
                resolved=len(to_resolve),
                within_target=within,
                moved_on=moved_on,
                open=still_open,
                open_past_target=past_target,
                resolution_recorded=resolution_recorded,
            )
        )
    return tuple(out)


def _bucket(at: datetime, tz: tzinfo, unit: Unit) -> date:
    day = at.astimezone(tz).date()
    return day - timedelta(days=day.weekday()) if unit == "week" else day


def _trend(
    current: Sequence[EscalationRow],
    previous: Sequence[EscalationRow],
    window: Window,
    tz: tzinfo,
    unit: Unit,
) -> Trend:
    first = _bucket(window.start, tz, unit)
    last = _bucket(window.end - timedelta(microseconds=1), tz, unit)
    step = timedelta(days=7 if unit == "week" else 1)
    now = Counter(_bucket(r.decided_at, tz, unit) for r in current)
    shift = window.length
    before = Counter(_bucket(r.decided_at + shift, tz, unit) for r in previous)
    points = []
    day = first
    while day <= last:
        label = day.isoformat() if unit == "day" else f"week of {day.isoformat()}"
        points.append(TrendPoint(day, label, now[day], before[day]))
        day += step
    return Trend(unit, tuple(points))


def _path(rows: Sequence[EscalationRow]) -> tuple[str, ...]:
    start = rows[0].from_level or "?"
    return (start, *(r.to_level for r in rows))


def _repeats(
    current: Sequence[EscalationRow], previous: Sequence[EscalationRow], top: int
) -> Repeats:
    tickets: dict[tuple[str, str], list[EscalationRow]] = defaultdict(list)
    for row in current:
        tickets[_ticket(row)].append(row)
    repeated = {k: v for k, v in tickets.items() if len(v) > 1}
    distribution = Counter(len(v) for v in tickets.values())
    ranked = sorted(
        repeated.items(), key=lambda kv: (-len(kv[1]), -kv[1][-1].decided_at.timestamp(), kv[0])
    )
    before = Counter(_ticket(r) for r in previous)
    return Repeats(
        tickets=len(tickets),
        repeated=len(repeated),
        escalations_on_repeated=sum(len(v) for v in repeated.values()),
        distribution=tuple(sorted(distribution.items())),
        top=tuple(
            RepeatTicket(k[0], k[1], len(v), _path(v), v[-1].decided_at) for k, v in ranked[:top]
        ),
        previous_repeated=sum(1 for n in before.values() if n > 1),
    )


_DURATION = r"-?\d+[dhms](?: \d+[dhms])*"
_TIME_REASON = re.compile(
    rf"^(?P<label>.+?) is {_DURATION} of (?P<mode>business time \([^)]*\)|calendar time), "
    r"(?P<wanted>.+)$"
)
_MEASURES = {label: measure for measure, label in TIME_MEASURES.items()}
_TAG_REASON = re.compile(r"^tags \[[^\]]*\] have (?P<rest>.+)$")
_FIELD_REASON = re.compile(
    r"^(?P<claim>[a-z_]+(?:\.[\w-]+)? (?:is|contains|matches)\b.*?) \([^()]*\)$"
)


def reason_key(reason: str) -> str:
    """A reason without the ticket's own values, so that like reasons count together.

    ``time since the ticket was last updated is 3h 12m of business time (office), over 2h``
    → ``time since the ticket was last updated over 2h``; ``priority is at least high (urgent)``
    → ``priority is at least high``; tags lists drop the ticket's own tags.
    """
    text = " ".join(reason.split())
    if text.startswith("not: "):
        return "not: " + reason_key(text[5:])
    if (m := _TIME_REASON.match(text)) and m["label"] in _MEASURES:
        over = under = None
        for bound in m["wanted"].split(" and "):
            word, _, amount = bound.partition(" ")
            try:
                value = parse_duration(amount)
            except ValueError:
                return f"{m['label']} {m['wanted']}"
            over, under = (value, under) if word == "over" else (over, value)
        business = m["mode"] != "calendar time"
        return time_condition_text(_MEASURES[m["label"]], over, under, business=business)
    if m := _TAG_REASON.match(text):
        return f"tags have {m['rest']}"
    if m := _FIELD_REASON.match(text):
        return m["claim"]
    return text


def _reasons(current: Sequence[EscalationRow], top: int) -> tuple[Reason, ...]:
    counts: Counter[str] = Counter()
    rules: dict[str, set[str]] = defaultdict(set)
    for row in current:
        for key in dict.fromkeys(reason_key(r) for r in row.reasons):
            counts[key] += 1
            if row.rule_id:
                rules[key].add(row.rule_id)
    total = len(current)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return tuple(Reason(text, n, n / total, tuple(sorted(rules[text]))) for text, n in ranked)


def choose_unit(window: Window) -> Unit:
    """Days up to a month, weeks beyond: a trend of 30 bars, or of 13 for a quarter."""
    return "day" if window.length <= timedelta(days=31) else "week"


def build_report(
    rows: Iterable[EscalationRow],
    window: Window,
    *,
    matrix: Matrix | None = None,
    tz: tzinfo = UTC,
    unit: Unit | None = None,
    top: int = 10,
    instances: Sequence[str] = (),
    recorded: Iterable[str] | None = None,
    generated_at: datetime | None = None,
    title: str | None = None,
) -> Report:
    """The figures for ``window`` (rows of the previous window give the comparison).

    Pure: rows outside both windows are ignored, and a later escalation or resolution after
    ``window.end`` is not known yet (the report is as of its end).
    """
    all_rows = _fill_in(
        sorted(
            (r for r in rows if window.previous.start <= r.decided_at < window.end),
            key=lambda r: r.decided_at,
        ),
        matrix,
    )
    current = [r for r in all_rows if r.decided_at in window]
    previous = [r for r in all_rows if r.decided_at in window.previous]
    facts = set(OPTIONAL_FACTS) if recorded is None else set(recorded)
    by_ticket: dict[tuple[str, str], list[EscalationRow]] = defaultdict(list)
    for row in all_rows:
        by_ticket[_ticket(row)].append(row)

    levels = [r.id for r in matrix.rungs] if matrix else []
    rules = [r.id for r in matrix.rules] if matrix else []
    rule_names = {r.id: r.name for r in matrix.rules} if matrix else {}
    breakdowns = (
        _breakdown(
            "level",
            "Destination (level or team)",
            current,
            previous,
            lambda r: r.to_level,
            lambda k: _rung_label(matrix, k),
            order=levels,
        ),
        _breakdown(
            "rule",
            "Rule",
            current,
            previous,
            lambda r: r.rule_id,
            lambda k: UNKNOWN if k is None else rule_names.get(k, k),
            order=[],
        ),
        _breakdown(
            "kind",
            "Kind",
            current,
            previous,
            lambda r: r.kind,
            order=["hierarchical", "functional"],
        ),
        _breakdown(
            "source_group",
            "Source group",
            current,
            previous,
            lambda r: r.source_group,
            recorded="source_group" in facts or matrix is not None,
        ),
        _breakdown(
            "helpdesk",
            "Helpdesk",
            current,
            previous,
            lambda r: r.instance,
            lambda k: _helpdesk_label(k, current, previous),
        ),
        _breakdown(
            "channel",
            "Channel",
            current,
            previous,
            lambda r: r.channel,
            recorded="channel" in facts,
        ),
    )
    # Rules of the matrix that never fired are worth seeing: list them last, at zero.
    rule_breakdown = breakdowns[1]
    missing = [
        Share(rid, rule_names[rid], 0, 0.0, 0)
        for rid in rules
        if rid not in {s.key for s in rule_breakdown.items}
    ]
    breakdowns = (
        breakdowns[0],
        Breakdown("rule", "Rule", rule_breakdown.items + tuple(missing)),
        *breakdowns[2:],
    )
    everyone = [
        r.decided_at - r.ticket_created_at
        for r in current
        if r.ticket_created_at is not None and r.ticket_created_at <= r.decided_at
    ]
    report = Report(
        title=title or ("Escalation report" + (f" — {matrix.name}" if matrix else "")),
        window=window,
        timezone=getattr(tz, "key", None) or str(tz),
        generated_at=generated_at or window.end,
        instances=tuple(instances),
        escalations=Change(len(current), len(previous)),
        tickets=Change(len({_ticket(r) for r in current}), len({_ticket(r) for r in previous})),
        breakdowns=breakdowns,
        timings=_timings(current, by_ticket, matrix, window.end, "resolved_at" in facts),
        trend=_trend(current, previous, window, tz, unit or choose_unit(window)),
        repeats=_repeats(current, previous, top),
        reasons=_reasons(current, top),
        notes=_notes(facts, current, matrix),
        time_to_escalate=Durations.of(everyone),
    )
    return report


def _helpdesk_label(instance: str | None, *groups: Sequence[EscalationRow]) -> str:
    if instance is None:
        return UNKNOWN
    for rows in groups:
        for row in rows:
            if row.instance == instance and row.helpdesk:
                return f"{instance} ({row.helpdesk})"
    return instance


def _notes(
    facts: set[str], current: Sequence[EscalationRow], matrix: Matrix | None
) -> tuple[str, ...]:
    notes = []
    if "channel" not in facts:
        notes.append(
            "The store does not record the ticket's channel, so escalations by channel are "
            "not shown."
        )
    if "source_group" not in facts:
        notes.append(
            "The store does not record the group a ticket was in before it escalated; the "
            "source group shown is the group its previous escalation assigned, else the "
            "responsible group of the level it left."
        )
    if "resolved_at" not in facts:
        notes.append(
            "The store does not record when tickets were resolved, so time to resolution and "
            "the share resolved within target cannot be shown yet."
        )
    unknown = sorted({r.instance for r in current if not r.helpdesk})
    if unknown:
        notes.append(
            f"The helpdesk type of {', '.join(unknown)} is unknown (give --config with the "
            "instances): shown by instance name, and their source groups may be missing."
        )
    if matrix is None:
        notes.append("No matrix was loaded: levels are shown by id, without expected times.")
    missing_created = sum(1 for r in current if r.ticket_created_at is None)
    if missing_created:
        notes.append(
            f"{missing_created} escalation(s) have no ticket creation time and are left out of "
            "the time to escalation."
        )
    return tuple(notes)


# --- formatting ------------------------------------------------------------------------------


def pct(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f}%"


def human(delta: timedelta | None) -> str:
    """A duration for a report: the two largest units, to the minute ("1d 4h", "3h 20m")."""
    if delta is None:
        return "—"
    minutes = round(delta.total_seconds() / 60)
    if minutes < 1:
        return "<1m" if delta.total_seconds() > 0 else "0m"
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (mins, "m")) if n]
    return " ".join(parts[:2])


def change_text(change: Change) -> str:
    """``+3 (+25.0%)``, ``−2 (−10.0%)``, ``+4 (new)``, ``no change``."""
    if change.delta == 0:
        return "no change"
    sign = "+" if change.delta > 0 else "−"
    ratio = change.ratio
    rel = "new" if ratio is None else f"{sign}{abs(ratio) * 100:.1f}%"
    return f"{sign}{abs(change.delta)} ({rel})"


def period_text(report: Report) -> str:
    tz = _zone(report.timezone)
    start = report.window.start.astimezone(tz)
    end = report.window.end.astimezone(tz)
    return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} ({report.timezone})"


def length_text(window: Window) -> str:
    days = window.length / timedelta(days=1)
    if days >= 1 and days == int(days):
        return f"{int(days)} day{'s' if days != 1 else ''}"
    return human(window.length)


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


# --- JSON -------------------------------------------------------------------------------------


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else round(delta.total_seconds(), 3)


def _share(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _change_json(change: Change) -> dict[str, Any]:
    return {
        "count": change.count,
        "previous": change.previous,
        "change": change.delta,
        "change_ratio": _share(change.ratio),
    }


def _durations_json(d: Durations) -> dict[str, Any]:
    return {"n": d.n, "median_seconds": _seconds(d.median), "p90_seconds": _seconds(d.p90)}


def _known(timing: RungTiming, value: int) -> int | None:
    return value if timing.resolution_recorded else None


def report_data(report: Report) -> dict[str, Any]:
    """The report as plain data (what ``--format json`` prints)."""
    within, measured = report.within_target
    return {
        "title": report.title,
        "period": {
            "start": report.window.start.isoformat(),
            "end": report.window.end.isoformat(),
            "previous_start": report.window.previous.start.isoformat(),
            "timezone": report.timezone,
        },
        "generated_at": report.generated_at.isoformat(),
        "instances": list(report.instances),
        "escalations": _change_json(report.escalations),
        "tickets": _change_json(report.tickets),
        "time_to_escalation": _durations_json(report.time_to_escalate),
        "within_target": {
            "within": within,
            "resolved": measured,
            "share": _share(within / measured if measured else None),
        },
        "breakdowns": {
            b.name: {
                "title": b.title,
                "recorded": b.recorded,
                "items": [
                    {
                        "key": s.key,
                        "label": s.label,
                        "count": s.count,
                        "share": _share(s.share),
                        "previous": s.previous,
                        "change": s.change.delta,
                        "change_ratio": _share(s.change.ratio),
                    }
                    for s in b.items
                ],
            }
            for b in report.breakdowns
        },
        "levels": [
            {
                "id": t.id,
                "label": t.label,
                "kind": t.kind,
                "expected_resolution_seconds": _seconds(t.expected),
                "time": "business" if t.business else "calendar",
                "escalations": t.escalations,
                "time_to_escalation": _durations_json(t.to_escalate),
                "moved_on": t.moved_on,
                "resolution_recorded": t.resolution_recorded,
                # Unknown (null) when the store does not record resolutions.
                "time_to_resolution": _durations_json(t.to_resolve),
                "resolved": _known(t, t.resolved),
                "within_target": _known(t, t.within_target),
                "within_target_share": _share(t.within_share),
                "open": _known(t, t.open),
                "open_past_target": _known(t, t.open_past_target),
            }
            for t in report.timings
        ],
        "trend": {
            "unit": report.trend.unit,
            "points": [
                {"start": p.start.isoformat(), "count": p.count, "previous": p.previous}
                for p in report.trend.points
            ],
        },
        "repeats": {
            "tickets": report.repeats.tickets,
            "repeated": report.repeats.repeated,
            "share": _share(report.repeats.share),
            "escalations_on_repeated": report.repeats.escalations_on_repeated,
            "previous_repeated": report.repeats.previous_repeated,
            "distribution": {str(k): v for k, v in report.repeats.distribution},
            "top": [
                {
                    "instance": t.instance,
                    "ticket_id": t.ticket_id,
                    "escalations": t.count,
                    "path": list(t.path),
                    "last": t.last.isoformat(),
                }
                for t in report.repeats.top
            ],
        },
        "reasons": [
            {"reason": r.text, "count": r.count, "share": _share(r.share), "rules": list(r.rules)}
            for r in report.reasons
        ],
        "notes": list(report.notes),
    }


def render_json(report: Report) -> str:
    return json.dumps(report_data(report), indent=2, ensure_ascii=False) + "\n"


# --- CSV --------------------------------------------------------------------------------------

CSV_HEADER = ("section", "key", "label", "metric", "value")


def _csv_rows(report: Report) -> Iterator[tuple[str, str, str, str, str | int | float]]:
    """One figure per line (section, key, label, metric, value): pivot it in a spreadsheet."""

    def num(value: float | None) -> str | float:
        return "" if value is None else round(value, 6)

    def secs(value: timedelta | None) -> str | float:
        return "" if value is None else round(value.total_seconds(), 3)

    for name, change in (("escalations", report.escalations), ("tickets", report.tickets)):
        yield "total", name, name, "count", change.count
        yield "total", name, name, "previous", change.previous
        yield "total", name, name, "change_ratio", num(change.ratio)
    for b in report.breakdowns:
        if not b.recorded:
            continue
        for s in b.items:
            key = "" if s.key is None else s.key
            yield b.name, key, s.label, "count", s.count
            yield b.name, key, s.label, "share", num(s.share)
            yield b.name, key, s.label, "previous", s.previous
            yield b.name, key, s.label, "change_ratio", num(s.change.ratio)
    for t in report.timings:
        values: list[tuple[str, str | int | float]] = [
            ("escalations", t.escalations),
            ("time_to_escalation_median_seconds", secs(t.to_escalate.median)),
            ("time_to_escalation_p90_seconds", secs(t.to_escalate.p90)),
            ("expected_resolution_seconds", secs(t.expected)),
            ("moved_on", t.moved_on),
        ]
        if t.resolution_recorded:
            values += [
                ("resolved", t.resolved),
                ("time_to_resolution_median_seconds", secs(t.to_resolve.median)),
                ("time_to_resolution_p90_seconds", secs(t.to_resolve.p90)),
                ("within_target", t.within_target),
                ("within_target_share", num(t.within_share)),
                ("open", t.open),
                ("open_past_target", t.open_past_target),
            ]
        for metric, value in values:
            yield "level_timing", t.id, t.label, metric, value
    for p in report.trend.points:
        yield f"trend_{report.trend.unit}", p.start.isoformat(), p.label, "count", p.count
        yield f"trend_{report.trend.unit}", p.start.isoformat(), p.label, "previous", p.previous
    r = report.repeats
    yield "repeats", "tickets", "tickets escalated", "count", r.tickets
    yield "repeats", "repeated", "tickets escalated more than once", "count", r.repeated
    yield "repeats", "repeated", "tickets escalated more than once", "share", num(r.share)
    yield "repeats", "repeated", "tickets escalated more than once", "previous", r.previous_repeated
    for ticket in r.top:
        key = f"{ticket.instance}/{ticket.ticket_id}"
        yield "repeat_ticket", key, " → ".join(ticket.path), "escalations", ticket.count
    for i, reason in enumerate(report.reasons, 1):
        yield "reason", str(i), reason.text, "count", reason.count
        yield "reason", str(i), reason.text, "share", num(reason.share)


def render_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(_csv_rows(report))
    return buffer.getvalue()


# --- text -------------------------------------------------------------------------------------


def render_text(report: Report) -> str:
    from escbridge.render import _table

    out = io.StringIO()

    def w(line: str = "") -> None:
        out.write(line + "\n")

    w(report.title)
    w(
        f"{period_text(report)}, {length_text(report.window)}, against the previous "
        f"{length_text(report.window)}"
    )
    if report.instances:
        w(f"Instances: {', '.join(report.instances)}")
    w()
    within, measured = report.within_target
    w(f"Escalations           {report.escalations.count}  ({change_text(report.escalations)})")
    w(f"Tickets escalated     {report.tickets.count}  ({change_text(report.tickets)})")
    w(
        f"Time to escalation    median {human(report.time_to_escalate.median)}, "
        f"90% within {human(report.time_to_escalate.p90)}"
    )
    if measured:
        w(f"Resolved within target  {within} of {measured} ({pct(within / measured)})")
    r = report.repeats
    w(f"Repeat escalations    {r.repeated} of {r.tickets} tickets ({pct(r.share)})")
    for b in report.breakdowns:
        w()
        w(f"By {b.title.lower()}")
        if not b.recorded:
            w("  not recorded by the store")
            continue
        shares = [
            (s.label, str(s.count), pct(s.share), str(s.previous), change_text(s.change))
            for s in b.items
        ]
        w(_table(("", "count", "share", "previous", "change"), shares).rstrip())
    w()
    w("Time at each level")
    rows = [
        (
            t.label,
            str(t.escalations),
            human(t.to_escalate.median),
            human(t.expected) + (" (business)" if t.business and t.expected else ""),
            str(t.resolved) if t.resolution_recorded else "—",
            human(t.to_resolve.median),
            pct(t.within_share),
            str(t.moved_on),
            f"{t.open} ({t.open_past_target} late)" if t.resolution_recorded else "—",
        )
        for t in report.timings
    ]
    headers = (
        "",
        "escalations",
        "to escalate (median)",
        "expected",
        "resolved",
        "to resolve (median)",
        "within target",
        "moved on",
        "open",
    )
    w(_table(headers, rows).rstrip())
    w()
    w(f"Trend per {report.trend.unit} (previous period in brackets)")
    w(
        _table(
            ("", "count", "previous"),
            [(p.label, str(p.count), str(p.previous)) for p in report.trend.points],
        ).rstrip()
    )
    w()
    w(
        f"Repeat escalations: {r.repeated} ticket(s) escalated more than once "
        f"(previous period {r.previous_repeated})"
    )
    if r.top:
        w(
            _table(
                ("ticket", "escalations", "path", "last"),
                [
                    (
                        f"{t.instance}/{t.ticket_id}",
                        str(t.count),
                        " → ".join(t.path),
                        f"{t.last:%Y-%m-%d %H:%M}",
                    )
                    for t in r.top
                ],
            ).rstrip()
        )
    w()
    w("Top reasons")
    w(
        _table(
            ("reason", "count", "share", "rules"),
            [(x.text, str(x.count), pct(x.share), ", ".join(x.rules)) for x in report.reasons],
        ).rstrip()
    )
    if report.notes:
        w()
        for note in report.notes:
            w(f"Note: {note}")
    return out.getvalue()


# --- HTML -------------------------------------------------------------------------------------

PALETTE = {
    "current": "#1d4ed8",
    "previous": "#94a3b8",
    "within": "#15803d",
    "over": "#dc2626",
    "moved": "#f59e0b",
    "open": "#cbd5e1",
    "late": "#7c2d12",
    "untimed": "#60a5fa",
}


def _plt_rc() -> dict[RcKeyType, Any]:
    return {
        "svg.fonttype": "none",  # text stays text: no embedded glyphs, readable and small
        "svg.hashsalt": "escbridge",  # stable ids, so the same report renders the same file
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],  # ships with matplotlib: the same layout everywhere
        "font.size": 10.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.edgecolor": "#94a3b8",
        "axes.titleweight": "bold",
        "axes.titlesize": 11,
        "axes.titlelocation": "left",
        "xtick.color": "#334155",
        "ytick.color": "#334155",
        "legend.frameon": False,
    }


_FONTS = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"
_SVG_ID = re.compile(r'\bid="([^"]+)"')


def _svg(fig: Figure, name: str, label: str) -> Markup:
    """The figure as inline SVG: no XML prolog, ids made unique to this chart. It keeps its
    natural size on a wide screen; CSS shrinks it (viewBox) to the width of a phone."""
    from markupsafe import Markup

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    ids = set(_SVG_ID.findall(text))
    for old in sorted(ids, key=len, reverse=True):
        new = f"{name}-{old}"
        text = text.replace(f'id="{old}"', f'id="{new}"')
        text = text.replace(f'href="#{old}"', f'href="#{new}"')
        text = text.replace(f"url(#{old})", f"url(#{new})")
    text = text.replace("<svg", f'<svg role="img" aria-label="{_attr(label)}"', 1)
    # Metadata blocks name the generator's URLs; they are not needed to draw the chart.
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)
    # Laid out with DejaVu Sans (shipped with matplotlib); shown in the page's own font.
    text = text.replace("font-family: 'DejaVu Sans', sans-serif", f"font-family: {_FONTS}")
    return Markup(text.strip())


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


CHART_WIDTH = 5.6  # inches: small enough that the text stays legible when a phone shrinks it


def _figure(height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(CHART_WIDTH, height), layout="constrained")


def _whole_numbers(axis: Axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _legend(fig: Figure, columns: int) -> None:
    """The legend above the plot, outside it: never over a bar, whatever the data; bars first."""
    handles, labels = fig.axes[0].get_legend_handles_labels()
    pairs = sorted(
        zip(handles, labels, strict=True),
        key=lambda p: labels.index(p[1]) + (100 if p[1] == "previous period" else 0),
    )
    fig.legend(
        [h for h, _ in pairs],
        [lbl for _, lbl in pairs],
        loc="outside upper left",
        ncols=columns,
        fontsize=9.5,
        handlelength=1.5,
    )


def _trend_chart(report: Report) -> Markup | None:
    points = report.trend.points
    if not points or not any(p.count or p.previous for p in points):
        return None
    fig = _figure(3.0)
    ax = fig.subplots()
    xs = list(range(len(points)))
    ax.bar(xs, [p.count for p in points], color=PALETTE["current"], label="this period", width=0.8)
    ax.plot(
        xs,
        [p.previous for p in points],
        color=PALETTE["previous"],
        linewidth=2,
        linestyle="--",
        marker="o",
        markersize=3,
        label="previous period",
    )
    step = max(1, math.ceil(len(points) / 7))
    ticks = xs[::step]
    fmt = "%b %d" if report.trend.unit == "day" else "w/c %b %d"
    ax.set_xticks(ticks, [points[i].start.strftime(fmt) for i in ticks])
    _whole_numbers(ax.yaxis)
    ax.set_ylabel("escalations")
    ax.grid(axis="y", color="#e2e8f0")
    ax.set_axisbelow(True)
    _legend(fig, 2)
    return _svg(
        fig, "trend", f"Escalations per {report.trend.unit}, this period against the previous"
    )


def _wrap(text: str, width: int = 24) -> str:
    """A long label on at most two lines."""
    lines = textwrap.wrap(text, width) or [""]
    if len(lines) > 2:
        lines = [lines[0], _short(" ".join(lines[1:]), width)]
    return "\n".join(lines)


def _bars_chart(b: Breakdown, name: str, limit: int = 12) -> Markup | None:
    items = [s for s in b.items if s.count or s.previous][:limit]
    if not items:
        return None
    fig = _figure(0.7 + 0.5 * len(items))
    ax = fig.subplots()
    ys = list(range(len(items)))
    height = 0.4
    ax.barh(
        [y - height / 2 for y in ys],
        [s.count for s in items],
        height=height,
        color=PALETTE["current"],
        label="this period",
    )
    ax.barh(
        [y + height / 2 for y in ys],
        [s.previous for s in items],
        height=height,
        color=PALETTE["previous"],
        label="previous period",
    )
    ax.set_yticks(ys, [_wrap(s.label) for s in items])
    ax.invert_yaxis()
    _whole_numbers(ax.xaxis)
    ax.margins(x=0.08)
    for y, s in zip(ys, items, strict=True):
        if s.count:
            ax.annotate(
                str(s.count),
                (s.count, y - height / 2),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=9,
            )
    ax.grid(axis="x", color="#e2e8f0")
    ax.set_axisbelow(True)
    _legend(fig, 2)
    return _svg(fig, name, f"Escalations by {b.title.lower()}, this period against the previous")


def _target_chart(report: Report) -> Markup | None:
    rows = [t for t in report.timings if t.escalations]
    if not rows:
        return None
    fig = _figure(1.0 + 0.5 * len(rows))
    ax = fig.subplots()
    ys = list(range(len(rows)))
    timed = [t.expected is not None for t in rows]
    parts = (
        ("resolved within target", PALETTE["within"], [t.within_target for t in rows]),
        (
            "resolved late",
            PALETTE["over"],
            [t.resolved - t.within_target if ok else 0 for t, ok in zip(rows, timed, strict=True)],
        ),
        (
            "resolved (no target)",
            PALETTE["untimed"],
            [0 if ok else t.resolved for t, ok in zip(rows, timed, strict=True)],
        ),
        ("moved on", PALETTE["moved"], [t.moved_on for t in rows]),
        ("open, late", PALETTE["late"], [t.open_past_target for t in rows]),
        (
            "open" if all(t.resolution_recorded for t in rows) else "not escalated further",
            PALETTE["open"],
            [t.open - t.open_past_target for t in rows],
        ),
    )
    left = [0] * len(rows)
    shown = 0
    for label, color, values in parts:
        if any(values):
            ax.barh(ys, values, left=left, color=color, label=label, height=0.6)
            left = [a + b for a, b in zip(left, values, strict=True)]
            shown += 1
    ax.set_yticks(ys, [_wrap(t.label) for t in rows])
    ax.invert_yaxis()
    _whole_numbers(ax.xaxis)
    ax.set_xlabel("escalations in the period")
    _legend(fig, min(3, shown))
    return _svg(fig, "target", "What became of each escalation, by level or team")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_html(report: Report) -> str:
    """One self-contained page: figures, charts (inline SVG) and tables, readable on a phone."""
    # The object API only (Figure, no pyplot): no GUI backend, no global figure list; SVG
    # output needs no raster backend at all.
    import matplotlib

    from escbridge.render import html_environment

    with matplotlib.rc_context(_plt_rc()):
        charts = {
            "trend": _trend_chart(report),
            "level": _bars_chart(report.breakdown("level"), "level"),
            "rule": _bars_chart(report.breakdown("rule"), "rule"),
            "target": _target_chart(report),
        }
    within, measured = report.within_target
    template = html_environment().get_template("report.html.j2")
    return template.render(
        title=report.title,
        r=report,
        charts=charts,
        period=period_text(report),
        length=length_text(report.window),
        within=within,
        measured=measured,
        pct=pct,
        human=human,
        change_text=change_text,
        small=[b for b in report.breakdowns if b.name not in ("level", "rule")],
    )


RENDERERS: dict[str, Callable[[Report], str]] = {
    "text": render_text,
    "json": render_json,
    "csv": render_csv,
    "html": render_html,
}


# --- the command ------------------------------------------------------------------------------

_DATE_HINT = "a duration back from --until (30d, 12w, 48h) or a date (2026-03-01)"


def parse_since(text: str, until: datetime, tz: tzinfo) -> datetime:
    """``--since``: a duration before ``until`` or a local date/time; ValueError says why not."""
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", value):
        start = parse_instant(value, tz)
    else:
        try:
            length = parse_duration(value)
        except ValueError:
            raise ValueError(f'--since "{text}" is not {_DATE_HINT}') from None
        if length <= timedelta(0):
            raise ValueError(f'--since "{text}" must be longer than nothing')
        start = until - length
    if start >= until:
        raise ValueError(
            f"--since {text} is not before the end of the period ({until:%Y-%m-%d %H:%M})"
        )
    return start


def parse_instant(text: str, tz: tzinfo) -> datetime:
    """An ISO date (local midnight) or date-time (local unless it names a zone)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f'"{text}" is not a date (2026-03-01) or a time (2026-03-01T09:00)'
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def configure_report_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `escbridge report`."""
    parser.description = (
        "Escalation trends from the store: by level, rule, kind, source group, helpdesk and "
        "channel; time to escalation and to resolution against each level's expected time; "
        "repeat escalations; the trend against the previous period; top reasons."
    )
    parser.add_argument(
        "--config",
        help="escbridge.yaml naming the store, the matrix and the helpdesk instances (default: "
        "escbridge.yaml; with --store, read only if it exists); API tokens need not be set",
    )
    parser.add_argument("--store", metavar="URL", help="store URL, instead of the one in --config")
    parser.add_argument(
        "--matrix", help="matrix file, for level names and expected times (default: the config's)"
    )
    parser.add_argument(
        "--since", default="30d", help=f"start of the period: {_DATE_HINT}; default 30d"
    )
    parser.add_argument(
        "--until",
        help="end of the period (ISO date or time, local unless a zone is given; default now)",
    )
    parser.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="NAME",
        help="only this helpdesk instance; repeatable",
    )
    parser.add_argument(
        "--by",
        choices=("auto", "day", "week"),
        default="auto",
        help="trend per day or per week (default: days up to a month, weeks beyond)",
    )
    parser.add_argument(
        "--timezone", help="time zone for days and weeks (default: the matrix's calendar, else UTC)"
    )
    parser.add_argument("--top", type=int, default=10, help="how many reasons and repeat tickets")
    parser.add_argument("--format", choices=tuple(RENDERERS), default="text")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


def _fail(message: str, code: int = EXIT_INVALID) -> int:
    print(f"escbridge report: {message}", file=sys.stderr)
    return code


def run_report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`escbridge report`: 0 written, 1 store unavailable, 2 invalid input."""
    from escbridge.config import load_config
    from escbridge.matrix import load_matrix

    config = None
    config_path = args.config or (
        "escbridge.yaml" if not args.store or Path("escbridge.yaml").exists() else None
    )
    try:
        if config_path is not None:
            config = load_config(config_path, helpdesk_secrets=False)
        matrix_path = Path(args.matrix) if args.matrix else (config.matrix_path if config else None)
        matrix = None
        if matrix_path is not None and (args.matrix or matrix_path.exists()):
            matrix = load_matrix(matrix_path)
    except InvalidInputError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    url = args.store or (config.store_url if config else None)
    assert url is not None
    tz: tzinfo = matrix.default_calendar.tz if matrix else UTC
    if args.timezone:
        try:
            tz = ZoneInfo(args.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return _fail(
                f'--timezone "{args.timezone}" is not a time zone (e.g. Europe/Berlin, UTC)'
            )
    if args.top < 1:
        return _fail("--top must be at least 1")
    try:
        until = parse_instant(args.until, tz) if args.until else datetime.now(UTC)
        start = parse_since(args.since, until, tz)
    except ValueError as exc:
        return _fail(str(exc))
    window = Window(start.astimezone(UTC), until.astimezone(UTC))
    helpdesks = {name: inst.type for name, inst in config.instances.items()} if config else {}

    from escbridge.store import Store
    from escbridge.store.database import unavailable_as_typed

    try:
        with Store(url) as store:
            store.check_schema()
            with unavailable_as_typed(url), store.engine.connect() as connection:
                history = load_history(
                    connection,
                    window.previous.start,
                    window.end,
                    instances=args.instance,
                    helpdesks=helpdesks,
                )
    except StoreUnavailableError as exc:
        return _fail(str(exc), EXIT_PROBLEM)
    except (ValueError, sa.exc.ArgumentError) as exc:  # an unusable store URL
        return _fail(f"--store: {exc}" if args.store else str(exc))
    known = history.instances | set(helpdesks)
    unknown = [i for i in args.instance if i not in known]
    if unknown:
        listed = ", ".join(sorted(known)) or "none yet"
        return _fail(f"unknown instance {', '.join(unknown)} (known: {listed})")
    report = build_report(
        history.rows,
        window,
        matrix=matrix,
        tz=tz,
        unit=None if args.by == "auto" else args.by,
        top=args.top,
        instances=args.instance,
        recorded=history.recorded,
        generated_at=datetime.now(UTC),
    )
    text = RENDERERS[args.format](report)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            return _fail(f"cannot write {args.output}: {exc.strerror}")
        print(f"wrote {args.output}", file=sys.stderr)
        return EXIT_OK
    (out or sys.stdout).write(text)
    return EXIT_OK
