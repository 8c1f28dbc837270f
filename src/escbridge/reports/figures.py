"""The report's figures: escalation rows in, figures out. Pure: no database, no clock, no I/O.

Definitions a support manager can check by hand:

- the period is ``[until - since, until)``; the previous period is as long and ends where it starts;
- *time to escalation* is the calendar time from the ticket's creation to the escalation;
- *time to resolution* at a level runs from the escalation to the ticket's resolution, when the
  ticket was resolved before any further escalation; it is measured the way the level's expected
  resolution is (business or calendar time) and is *within target* when it is at most that;
- a *repeat* is a ticket escalated more than once in the period;
- the share *resolved within target* is a headline figure only from
  :data:`WITHIN_TARGET_MIN_RESOLVED` resolutions on: "100%" of 2 says nothing about a team;
- the *top reasons* are the conditions that fired the rules, with a matrix: each stored reason
  is mapped back to its rule's condition (:mod:`~escbridge.reports.causes`), and what a rule
  is only scoped to (``status: [new, open]`` beside ``idle: {over: 2h}``) is listed per rule
  as what it *applies to*, not as a reason;
- a *background* reason is a condition that held for at least :data:`BACKGROUND_SHARE` of all
  escalations in the period (it appears among their reasons, or the recorded fact satisfies
  it: ``channel is one of [...]`` against each escalation's channel), when it is no time,
  text or count trigger (or is not mapped to one). It does not tell the escalated tickets
  apart, so the top reasons list it after the others.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Literal

from escbridge.calendar import parse_duration
from escbridge.conditions.describe import time_condition_text
from escbridge.matrix import TIME_MEASURES, Matrix, Rung
from escbridge.reports.causes import Role, RuleLeaf, role_of, rule_leaves

Unit = Literal["day", "week"]
UNKNOWN = "(not recorded)"
#: Fewer resolutions than this and "resolved within target" is shown with its n, not as a
#: headline: one late ticket of 5 moves it by 20 points, so it says nothing about a team yet.
WITHIN_TARGET_MIN_RESOLVED = 20
#: A reason that held for at least this share of all escalations is background, not a reason.
BACKGROUND_SHARE = 0.9

#: ``(instance, ticket id) -> URL`` of the ticket in the helpdesk's agent view, or None.
TicketUrl = Callable[[str, str], str | None]

# --- the rows the report is computed from --------------------------------------------------


@dataclass(frozen=True)
class EscalationRow:
    """One recorded escalation, with what the report needs and nothing of the store's types.

    Fields after ``ticket_created_at`` are optional: an escalation recorded before the store
    kept them leaves them None, and the report says what it could not show.
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


#: The optional facts of a row, by field name. The store records all of them (revision 0003);
#: ``build_report(recorded=...)`` names fewer for a history that lacks some, and the report
#: says what it could not show.
FACTS = frozenset({"channel", "source_group", "helpdesk", "resolved_at"})


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
    url: str | None = None  # the ticket in the helpdesk's agent view, when the connector knows


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
    """One condition that made rules fire; ``holds`` is the share of all escalations in the
    period it held for (``background`` from :data:`BACKGROUND_SHARE` on). ``role``: a time,
    text or count ``trigger``, an ``attribute`` that fired a rule with no such condition, or
    None when it could not be mapped to its rule's condition (no matrix, a changed rule)."""

    text: str
    count: int
    share: float
    rules: tuple[str, ...]
    holds: float = 0.0
    role: Role | None = None

    @property
    def background(self) -> bool:
        """True of almost every escalation, and no trigger: it tells none apart."""
        return self.role != "trigger" and self.holds >= BACKGROUND_SHARE


@dataclass(frozen=True)
class Applied:
    """A condition a rule is scoped to, and how many of its escalations listed it."""

    text: str
    count: int


@dataclass(frozen=True)
class RuleScope:
    """What one rule applies to: conditions beside its trigger that say which tickets it looks
    at (true of every ticket it fired on), not why they went up."""

    rule_id: str
    name: str
    escalations: int
    conditions: tuple[Applied, ...]


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
    scopes: tuple[RuleScope, ...] = ()
    #: Whether reasons were mapped to their rules' conditions (a matrix was given and named
    #: the rules): then the reasons are triggers and ``scopes`` holds the rest.
    reasons_by_rule: bool = False

    def breakdown(self, name: str) -> Breakdown:
        return next(b for b in self.breakdowns if b.name == name)

    def timing(self, rung_id: str) -> RungTiming:
        return next(t for t in self.timings if t.id == rung_id)

    @property
    def within_target(self) -> tuple[int, int]:
        """(resolved within target, resolved with a target) over every level and team."""
        measured = [t for t in self.timings if t.expected is not None]
        return sum(t.within_target for t in measured), sum(t.resolved for t in measured)

    @property
    def within_target_headline(self) -> bool:
        """Whether enough tickets were resolved for the share within target to lead the page."""
        return self.within_target[1] >= WITHIN_TARGET_MIN_RESOLVED


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
    current: Sequence[EscalationRow],
    previous: Sequence[EscalationRow],
    top: int,
    ticket_url: TicketUrl | None = None,
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
            RepeatTicket(
                k[0],
                k[1],
                len(v),
                _path(v),
                v[-1].decided_at,
                ticket_url(*k) if ticket_url else None,
            )
            for k, v in ranked[:top]
        ),
        previous_repeated=sum(1 for n in before.values() if n > 1),
    )


_DURATION = r"-?\d+[dhms](?: \d+[dhms])*"
_TIME_REASON = re.compile(
    rf"^(?P<label>.+?) is {_DURATION} of (?P<mode>business time \([^)]*\)|calendar time), "
    r"(?P<wanted>.+)$"
)
_MEASURES = {label: measure for measure, label in TIME_MEASURES.items()}
_TAG_REASON = re.compile(r"^tags \[[^\]]*\] (?P<rest>(?:do not )?have .+)$")
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
        return f"tags {m['rest']}"
    if m := _FIELD_REASON.match(text):
        return m["claim"]
    return text


_CHANNEL_REASON = re.compile(r"^channel (?P<op>is not one of|is one of|is not|is) (?P<values>.+)$")


def _channel_test(key: str) -> Callable[[str], bool] | None:
    """A ``channel is one of [...]`` reason as a test of a recorded channel; None for others."""
    m = _CHANNEL_REASON.match(key)
    if m is None:
        return None
    values = set(re.findall(r'"([^"]*)"', m["values"])) or {
        v.strip() for v in m["values"].strip("[]").split(",")
    }
    negated = "not" in m["op"]
    return lambda channel: (channel in values) != negated


def _holds(key: str, rows: Sequence[EscalationRow], found: Sequence[set[str]]) -> float:
    """The share of ``rows`` ``key`` held for: among their reasons, or by the recorded fact."""
    test = _channel_test(key)
    held = sum(
        1
        for row, keys in zip(rows, found, strict=True)
        if key in keys or (test is not None and row.channel is not None and test(row.channel))
    )
    return held / len(rows) if rows else 0.0


_ROLE_ORDER: dict[Role | None, int] = {"trigger": 0, "attribute": 1, None: 2}


def _reasons(
    current: Sequence[EscalationRow], top: int, matrix: Matrix | None
) -> tuple[tuple[Reason, ...], tuple[RuleScope, ...], bool]:
    """The most frequent conditions that fired rules, background ones (true of almost every
    escalation) last; what each rule is scoped to; whether any reason was mapped to its rule.

    Without a matrix, or for a reason no leaf of its rule could have written, the reason
    counts as it is (and may be background).
    """
    leaves: dict[str, tuple[RuleLeaf, ...]] = (
        {r.id: rule_leaves(r.condition) for r in matrix.rules} if matrix else {}
    )
    counts: Counter[str] = Counter()
    rules: dict[str, set[str]] = defaultdict(set)
    roles: dict[str, Counter[Role | None]] = defaultdict(Counter)
    applied: dict[str, Counter[str]] = defaultdict(Counter)
    fired: Counter[str] = Counter()
    found: list[set[str]] = []
    mapped = False
    for row in current:
        rule = leaves.get(row.rule_id) if row.rule_id else None
        keys: dict[str, Role | None] = {}
        for reason in row.reasons:
            key = reason_key(reason)
            role = role_of(rule, reason) if rule is not None else None
            mapped |= role is not None
            if keys.get(key) != "scope":  # one line of a rule both ways: it is scope
                keys[key] = role
        found.append(set(keys))
        if row.rule_id:
            fired[row.rule_id] += 1
        for key, role in keys.items():
            if role == "scope" and row.rule_id:
                applied[row.rule_id][key] += 1
                continue
            counts[key] += 1
            roles[key][role] += 1
            if row.rule_id:
                rules[key].add(row.rule_id)
    total = len(current)
    reasons = [
        Reason(
            text,
            n,
            n / total,
            tuple(sorted(rules[text])),
            _holds(text, current, found),
            min(roles[text], key=lambda role: (-roles[text][role], _ROLE_ORDER[role])),
        )
        for text, n in counts.items()
    ]
    reasons.sort(key=lambda r: (r.background, -r.count, r.text))
    names = {r.id: r.name for r in matrix.rules} if matrix else {}
    scopes = [
        RuleScope(
            rule_id,
            names.get(rule_id, rule_id),
            fired[rule_id],
            tuple(
                Applied(text, n)
                for text, n in sorted(conditions.items(), key=lambda kv: (-kv[1], kv[0]))
            ),
        )
        for rule_id, conditions in applied.items()
    ]
    scopes.sort(key=lambda s: (-s.escalations, s.rule_id))
    return tuple(reasons[:top]), tuple(scopes), mapped


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
    ticket_url: TicketUrl | None = None,
) -> Report:
    """The figures for ``window`` (rows of the previous window give the comparison).

    Pure: rows outside both windows are ignored, and a later escalation or resolution after
    ``window.end`` is not known yet (the report is as of its end). ``ticket_url`` links the
    tickets the report names to the helpdesk (the connectors' ``agent_url``).
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
    facts = set(FACTS) if recorded is None else set(recorded)
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
    reasons, scopes, by_rule = _reasons(current, top, matrix)
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
        repeats=_repeats(current, previous, top, ticket_url),
        reasons=reasons,
        notes=_notes(facts, current, matrix),
        time_to_escalate=Durations.of(everyone),
        scopes=scopes,
        reasons_by_rule=by_rule,
    )
    return report


def _helpdesk_label(instance: str | None, *groups: Sequence[EscalationRow]) -> str:
    """The instance's name, and its helpdesk type only when the name does not already say it
    ("zohodesk", not "zohodesk (zohodesk)")."""
    if instance is None:
        return UNKNOWN
    for rows in groups:
        for row in rows:
            if row.instance == instance and row.helpdesk and row.helpdesk != instance:
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
            "Escalations without a ticket creation time are left out of the time to "
            f"escalation: {missing_created}."
        )
    return tuple(notes)
