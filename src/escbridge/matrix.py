"""The escalation matrix an admin writes in YAML: schema, loading and every check that can be
made before a ticket is touched.

Pure: the loader takes text (``parse_matrix``); only ``load_matrix`` reads a file. Every error
names the file, the line and the key path, and says what was expected. The structure is checked
by pydantic; conditions are parsed by hand because their YAML form (one key per condition)
gives better messages that way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from escbridge.calendar import (
    BusinessCalendar,
    build_holidays,
    format_duration,
    parse_duration,
    parse_weekly_hours,
)
from escbridge.errors import InvalidInputError, MatrixError, Problem
from escbridge.model import Channel, Priority, Status
from escbridge.yamlfile import YamlDocument, format_path, parse_yaml, problems_from_validation

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PriorityName = Annotated[Priority, BeforeValidator(Priority.parse)]
TimeMode = Literal["business", "calendar"]
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
MARKER_PREFIX = "escbridge_"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HolidaysSpec(_Spec):
    country: str | None = None
    subdivision: str | None = None
    dates: list[date] = Field(default_factory=list)


def _office_hours() -> dict[str, str | list[str]]:
    return {"mon-fri": "09:00-17:00"}


class CalendarSpec(_Spec):
    timezone: str = "UTC"
    hours: dict[str, str | list[str]] = Field(default_factory=lambda: _office_hours())
    holidays: HolidaysSpec = Field(default_factory=HolidaysSpec)


class DefaultsSpec(_Spec):
    time: TimeMode = "business"
    calendar: str | None = None


class LimitsSpec(_Spec):
    cooldown: Duration = timedelta(minutes=30)
    daily_cap: int = Field(default=3, ge=1)


class LevelSpec(_Spec):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    groups: dict[str, str]
    min_priority: PriorityName | None = None
    response: Duration | None = None
    resolution: Duration | None = None
    time: TimeMode | None = None
    calendar: str | None = None
    description: str = ""


class TeamSpec(_Spec):
    name: str
    groups: dict[str, str]
    level: str | None = None
    min_priority: PriorityName | None = None
    resolution: Duration | None = None
    time: TimeMode | None = None
    calendar: str | None = None
    description: str = ""


class ActionsSpec(_Spec):
    priority: PriorityName | None = None
    note: str | None = None
    tags: list[str] = Field(default_factory=list)
    customer_update: str | None = None
    unassign: bool = False


class RuleSpec(_Spec):
    id: str = Field(pattern=ID_PATTERN)
    name: str | None = None
    kind: Literal["hierarchical", "functional"]
    description: str = ""
    enabled: bool = True
    when: Any
    to: str | dict[str, str]
    actions: ActionsSpec = Field(default_factory=ActionsSpec)
    repeat: bool | None = None


def _none_as_empty(kind: type) -> BeforeValidator:
    """`rules:` with every rule commented out is YAML null: read it as an empty collection."""
    return BeforeValidator(lambda value: kind() if value is None else value)


class MatrixSpec(_Spec):
    version: Literal[1] = 1
    name: str = "escalation matrix"
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    calendars: Annotated[dict[str, CalendarSpec], _none_as_empty(dict)] = Field(
        default_factory=dict
    )
    levels: list[LevelSpec] = Field(min_length=1)
    teams: Annotated[dict[str, TeamSpec], _none_as_empty(dict)] = Field(default_factory=dict)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    rules: Annotated[list[RuleSpec], _none_as_empty(list)] = Field(default_factory=list)


# --- the compiled matrix: what the engine works with --------------------------------------


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

    @property
    def marker(self) -> str:
        """The tag a ticket carries while it sits here (the level marker of ARCHITECTURE.md)."""
        return MARKER_PREFIX + self.id

    def group_for(self, instance: str, helpdesk: str | None = None) -> str | None:
        """The responsible group on one helpdesk: by instance name, then helpdesk type, then '*'."""
        for key in (instance, helpdesk, "*"):
            if key is not None and key in self.groups:
                return self.groups[key]
        return None


# Conditions: small frozen records; the engine compiles them into fast tests.

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


Condition = AllOf | AnyOf | NotOf | FieldTest | TagTest | KeywordTest | TimeTest


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


LEVEL_RELATIVE = frozenset({"at_level", "level_overdue", "response_overdue"})


def is_level_relative(cond: Condition) -> bool:
    """Whether a condition measures time at the current level, so it starts afresh after each
    escalation (and its rule may fire again at the next level)."""
    if isinstance(cond, AllOf | AnyOf):
        return any(is_level_relative(c) for c in cond.items)
    if isinstance(cond, NotOf):
        return is_level_relative(cond.item)
    return isinstance(cond, TimeTest) and cond.measure in LEVEL_RELATIVE


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


# --- templates --------------------------------------------------------------------------

TEMPLATE_VARIABLES = frozenset({"ticket", "rule", "destination", "from_level", "reasons", "now"})

DEFAULT_NOTE = """\
escbridge escalated this ticket to {{ destination.name }}\
{% if destination.group %} ({{ destination.group }}){% endif %}.
Rule: {{ rule.name }} [{{ rule.id }}]
Why:
{% for reason in reasons %}- {{ reason }}
{% endfor %}"""

_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
)


class _AnyFields(dict[str, Any]):
    """Custom fields in the load-time trial render: every name exists (tenants define their own)."""

    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def _sample_context() -> dict[str, Any]:
    when = datetime(2026, 1, 5, 9, 0)
    ticket = {
        "id": "12345",
        "instance": "support",
        "subject": "Sample subject",
        "description": "Sample description",
        "latest_comment": "Sample comment",
        "requester": {"id": "1", "name": "Sam Customer", "email": "sam@example.com"},
        "organization": {"id": "2", "name": "Example Ltd", "email": None},
        "tags": ["vip"],
        "custom_fields": _AnyFields(),
        "channel": "email",
        "status": "open",
        "priority": "normal",
        "group": "Support",
        "assignee": "Alex Agent",
        "created_at": when,
        "updated_at": when,
        "first_response_at": None,
        "last_customer_reply_at": when,
        "due_at": when,
        "reopen_count": 0,
        "level": "l1",
        "version": None,
    }
    return {
        "ticket": ticket,
        "rule": {"id": "rule", "name": "Rule", "kind": "hierarchical"},
        "destination": {"id": "l2", "name": "Level 2", "kind": "level", "group": "Tier 2"},
        "from_level": {"id": "l1", "name": "Level 1", "kind": "level", "group": "Tier 1"},
        "reasons": ["a reason"],
        "now": when,
    }


def compile_template(text: str) -> jinja2.Template:
    """Compile and trial-render a note template; ValueError says what is wrong with it."""
    try:
        ast = _ENV.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on its line {exc.lineno}: {exc.message}") from None
    unknown = sorted(jinja2.meta.find_undeclared_variables(ast) - TEMPLATE_VARIABLES)
    if unknown:
        known = ", ".join(sorted(TEMPLATE_VARIABLES))
        raise ValueError(f"template uses unknown variable {', '.join(unknown)} (known: {known})")
    template = _ENV.from_string(text)
    try:
        template.render(_sample_context())
    except jinja2.exceptions.SecurityError as exc:
        raise ValueError(f"template does something unsafe: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise ValueError(f"template refers to something that does not exist: {exc}") from None
    except Exception as exc:  # any other render failure is still the admin's template
        raise ValueError(f"template fails to render: {exc}") from None
    return template


# --- loading ----------------------------------------------------------------------------


def load_matrix(path: str | Path) -> Matrix:
    """Read and validate a matrix file (the only function here that does I/O)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise MatrixError([Problem(str(p), None, "", f"cannot read: {exc.strerror}")]) from None
    return parse_matrix(text, p.name if p.parent == Path() else str(p))


def parse_matrix(text: str, source: str = "<string>") -> Matrix:
    """Validate matrix YAML; raises MatrixError listing every problem with file:line."""
    try:
        doc = parse_yaml(text, source)
    except InvalidInputError as exc:
        raise MatrixError(exc.problems) from None
    if not isinstance(doc.data, dict):
        raise MatrixError([doc.problem((), "a matrix is a mapping with levels, teams and rules")])
    try:
        spec = MatrixSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise MatrixError(problems_from_validation(doc, exc)) from None
    return _Compiler(doc, spec).compile()


class _Compiler:
    """Cross-checks and compiles a structurally valid spec, collecting every problem."""

    def __init__(self, doc: YamlDocument, spec: MatrixSpec) -> None:
        self.doc = doc
        self.spec = spec
        self.problems: list[Problem] = []

    def fail(self, path: Sequence[str | int], message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def compile(self) -> Matrix:
        spec = self.spec
        calendars = self._calendars()
        default_cal = self._calendar_ref(
            spec.defaults.calendar, ("defaults", "calendar"), calendars
        )
        business_default = spec.defaults.time == "business"
        levels = tuple(
            self._rung(
                "level", lv.id, lv, i, calendars, default_cal, business_default, ("levels", i)
            )
            for i, lv in enumerate(spec.levels)
        )
        ids = [lv.id for lv in spec.levels]
        for i, lv in enumerate(spec.levels):
            if ids.index(lv.id) != i:
                self.fail(("levels", i, "id"), f'"{lv.id}" is used by another level already')
        teams: dict[str, Rung] = {}
        for team_id, team in spec.teams.items():
            path: tuple[str | int, ...] = ("teams", team_id)
            if not re.match(ID_PATTERN, team_id):
                self.fail(
                    path, f'"{team_id}" is not a valid id (lower-case letters, digits, _ and -)'
                )
            if team_id in ids:
                self.fail(path, f'"{team_id}" is also a level id; ids must be unique')
            rank = min(1, len(levels) - 1)
            if team.level is not None:
                if team.level in ids:
                    rank = ids.index(team.level)
                else:
                    self.fail((*path, "level"), self._unknown_level(team.level))
            teams[team_id] = self._rung(
                "team", team_id, team, rank, calendars, default_cal, business_default, path
            )
        # Disabled rules are checked too: enabling one later must not break a running matrix.
        compiled = [
            (spec_rule.enabled, self._rule(i, spec_rule, levels, teams, calendars, default_cal))
            for i, spec_rule in enumerate(spec.rules)
        ]
        rules = tuple(r for enabled, r in compiled if enabled and r is not None)
        seen: set[str] = set()
        for i, spec_rule in enumerate(spec.rules):
            if spec_rule.id in seen:
                self.fail(("rules", i, "id"), f'"{spec_rule.id}" is used by another rule already')
            seen.add(spec_rule.id)
        if self.problems:
            raise MatrixError(self.problems)
        return Matrix(
            name=spec.name,
            source=self.doc.source,
            levels=levels,
            teams=teams,
            rules=rules,
            cooldown=spec.limits.cooldown,
            daily_cap=spec.limits.daily_cap,
            default_calendar=default_cal,
            default_note=_ENV.from_string(DEFAULT_NOTE),
            calendars=calendars,
        )

    def _unknown_level(self, name: str) -> str:
        known = ", ".join(lv.id for lv in self.spec.levels)
        return f'"{name}" is not a level (levels: {known})'

    def _calendars(self) -> dict[str, BusinessCalendar]:
        out: dict[str, BusinessCalendar] = {}
        for name, cal in self.spec.calendars.items():
            path: tuple[str | int, ...] = ("calendars", name)
            try:
                hours = parse_weekly_hours(cal.hours)
            except ValueError as exc:
                self.fail((*path, "hours"), str(exc))
                continue
            try:
                days = build_holidays(
                    cal.holidays.country, cal.holidays.subdivision, cal.holidays.dates
                )
            except ValueError as exc:
                self.fail((*path, "holidays"), str(exc))
                continue
            try:
                out[name] = BusinessCalendar(name, cal.timezone, hours, days)
            except ValueError as exc:
                self.fail((*path, "timezone"), str(exc))
        return out

    def _calendar_ref(
        self,
        name: str | None,
        path: Sequence[str | int],
        calendars: Mapping[str, BusinessCalendar],
    ) -> BusinessCalendar:
        """A named calendar; None means the default (the only calendar, or always open)."""
        if name is None:
            if self.spec.defaults.calendar is not None and self.spec.defaults.calendar in calendars:
                return calendars[self.spec.defaults.calendar]
            if len(calendars) == 1:
                return next(iter(calendars.values()))
            return BusinessCalendar.always_open()
        if name not in calendars:
            known = ", ".join(calendars) or "none defined"
            self.fail(path, f'"{name}" is not a calendar (calendars: {known})')
            return BusinessCalendar.always_open()
        return calendars[name]

    def _rung(
        self,
        kind: Literal["level", "team"],
        rung_id: str,
        spec: LevelSpec | TeamSpec,
        rank: int,
        calendars: Mapping[str, BusinessCalendar],
        default_cal: BusinessCalendar,
        business_default: bool,
        path: tuple[str | int, ...],
    ) -> Rung:
        if not spec.groups:
            self.fail((*path, "groups"), "needs a responsible group for at least one helpdesk")
        cal = (
            self._calendar_ref(spec.calendar, (*path, "calendar"), calendars)
            if spec.calendar
            else default_cal
        )
        business = business_default if spec.time is None else spec.time == "business"
        return Rung(
            kind=kind,
            id=rung_id,
            name=spec.name,
            rank=rank,
            groups=dict(spec.groups),
            min_priority=spec.min_priority,
            response=spec.response if isinstance(spec, LevelSpec) else None,
            resolution=spec.resolution,
            calendar=cal,
            business=business,
        )

    def _rule(
        self,
        index: int,
        spec: RuleSpec,
        levels: Sequence[Rung],
        teams: Mapping[str, Rung],
        calendars: Mapping[str, BusinessCalendar],
        default_cal: BusinessCalendar,
    ) -> Rule | None:
        path: tuple[str | int, ...] = ("rules", index)
        before = len(self.problems)
        parser = _ConditionParser(self, calendars, default_cal)
        condition = parser.parse(spec.when, (*path, "when"))
        target = self._target(spec, levels, teams, (*path, "to"))
        actions = self._actions(spec.actions, (*path, "actions"))
        if len(self.problems) > before or condition is None or target is None:
            return None
        return Rule(
            id=spec.id,
            name=spec.name or spec.id,
            kind=spec.kind,
            description=spec.description,
            condition=condition,
            target=target,
            actions=actions,
            line=self.doc.line_of(path),
            repeat=spec.repeat if spec.repeat is not None else is_level_relative(condition),
        )

    def _target(
        self,
        spec: RuleSpec,
        levels: Sequence[Rung],
        teams: Mapping[str, Rung],
        path: tuple[str | int, ...],
    ) -> Target | None:
        raw = spec.to
        level_ids = {lv.id: lv for lv in levels}
        if isinstance(raw, dict):
            if len(raw) != 1 or next(iter(raw)) not in ("level", "team"):
                self.fail(path, "expected next, a level id, {level: ID} or {team: ID}")
                return None
            key, value = next(iter(raw.items()))
            wanted = key
        else:
            value, wanted = raw, ""
        if value == "next" and wanted in ("", "level"):
            if spec.kind != "hierarchical":
                self.fail(path, "next climbs the ladder: only hierarchical rules can use it")
                return None
            return Target(next=True, rung=None)
        if wanted in ("", "level") and value in level_ids:
            if spec.kind != "hierarchical":
                self.fail(path, f'"{value}" is a level: functional rules route to teams')
                return None
            return Target(next=False, rung=level_ids[value])
        if wanted in ("", "team") and value in teams:
            if spec.kind != "functional":
                self.fail(path, f'"{value}" is a team: hierarchical rules route to levels or next')
                return None
            return Target(next=False, rung=teams[value])
        choices = ["next", *level_ids, *(f"team {t}" for t in teams)]
        self.fail(path, f'"{value}" is not a destination (one of {", ".join(choices)})')
        return None

    def _actions(self, spec: ActionsSpec, path: tuple[str | int, ...]) -> RuleActions:
        note = customer = None
        if spec.note is not None:
            note = self._template(spec.note, (*path, "note"))
        if spec.customer_update is not None:
            customer = self._template(spec.customer_update, (*path, "customer_update"))
        tags = []
        for i, tag in enumerate(spec.tags):
            clean = tag.strip().lower()
            if not clean or " " in clean:
                self.fail((*path, "tags", i), f'"{tag}" is not a tag (no spaces, not empty)')
            elif clean.startswith(MARKER_PREFIX):
                self.fail((*path, "tags", i), f"tags starting {MARKER_PREFIX} are escbridge's own")
            tags.append(clean)
        return RuleActions(
            priority=spec.priority,
            note=note,
            tags=tuple(tags),
            customer_update=customer,
            unassign=spec.unassign,
            note_source=spec.note,
        )

    def _template(self, text: str, path: tuple[str | int, ...]) -> jinja2.Template | None:
        try:
            return compile_template(text)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None


class _ConditionParser:
    """Turns the admin's condition YAML into Condition records, reporting problems by path."""

    def __init__(
        self,
        compiler: _Compiler,
        calendars: Mapping[str, BusinessCalendar],
        default_cal: BusinessCalendar,
    ) -> None:
        self.c = compiler
        self.calendars = calendars
        self.default_cal = default_cal

    def fail(self, path: Sequence[str | int], message: str) -> None:
        self.c.fail(path, message)

    def parse(self, raw: Any, path: tuple[str | int, ...]) -> Condition | None:
        if isinstance(raw, list):
            return self._group(AllOf, raw, path)
        if not isinstance(raw, dict) or not raw:
            self.fail(path, "a condition is a mapping such as {keywords: [supervisor]}")
            return None
        if "field" in raw:
            return self._field(raw, path)
        if len(raw) != 1:
            keys = ", ".join(str(k) for k in raw)
            self.fail(path, f"one condition per list item (found {keys}); combine with all/any")
            return None
        key, value = next(iter(raw.items()))
        sub = (*path, key)
        if key == "all":
            return self._group(AllOf, value, sub)
        if key == "any":
            return self._group(AnyOf, value, sub)
        if key == "not":
            inner = self.parse(value, sub)
            return None if inner is None else NotOf(inner, format_path(sub))
        if key == "tags":
            return self._tags(value, sub)
        if key == "keywords":
            return self._keywords(value, sub)
        if key in TIME_MEASURES:
            return self._time(key, value, sub)
        if key == "priority":
            return self._priority(value, sub)
        if key in ("channel", "status"):
            return self._enum_in(key, value, sub)
        if key in ("requester", "organization"):
            return self._party(key, value, sub)
        if key == "reopens":
            return self._numeric_shorthand("reopen_count", value, sub)
        if key in ("group", "level"):
            return self._shorthand_in(key, value, sub)
        known = ["all", "any", "not", "field", "tags", "keywords", "priority", "channel"]
        known += ["status", "requester", "organization", "reopens", "group", "level"]
        known += list(TIME_MEASURES)
        self.fail(sub, f'"{key}" is not a condition (one of {", ".join(known)})')
        return None

    def _group(
        self, cls: type[AllOf] | type[AnyOf], raw: Any, path: tuple[str | int, ...]
    ) -> Condition | None:
        if not isinstance(raw, list) or not raw:
            self.fail(path, "expected a non-empty list of conditions")
            return None
        items = [self.parse(item, (*path, i)) for i, item in enumerate(raw)]
        if any(item is None for item in items):
            return None
        return cls(tuple(i for i in items if i is not None), format_path(path))

    def _field(self, raw: dict[str, Any], path: tuple[str | int, ...]) -> Condition | None:
        name = raw["field"]
        if not isinstance(name, str) or not (
            name in FIELD_NAMES or (name.startswith("custom_fields.") and len(name) > 14)
        ):
            known = ", ".join(FIELD_NAMES)
            self.fail(
                (*path, "field"),
                f'"{name}" is not a ticket field (one of {known}, or custom_fields.NAME)',
            )
            return None
        ops = {k: v for k, v in raw.items() if k != "field"}
        if not ops:
            self.fail(path, f"say how to compare {name}: one of {', '.join(FIELD_OPS_ALL)}")
            return None
        tests: list[Condition] = []
        for op, value in ops.items():
            test = self._field_test(name, str(op), value, (*path, op))
            if test is None:
                return None
            tests.append(test)
        return tests[0] if len(tests) == 1 else AllOf(tuple(tests), format_path(path))

    def _field_test(
        self, name: str, op: str, value: Any, path: tuple[str | int, ...]
    ) -> FieldTest | None:
        if op in PRIORITY_OPS and name == "priority":
            op = PRIORITY_OPS[op]
        if op not in FIELD_OPS_ALL:
            self.fail(path, f'"{op}" is not a comparison (one of {", ".join(FIELD_OPS_ALL)})')
            return None
        shown = format_path(path)
        if op == "exists":
            if not isinstance(value, bool):
                self.fail(path, "exists takes true or false")
                return None
            return FieldTest(name, op, value, shown)
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                self.fail(path, f"{op} takes a non-empty list")
                return None
            values = [self._value(name, v, path) for v in value]
            if any(v is _BAD for v in values):
                return None
            return FieldTest(name, op, frozenset(values), shown)
        if op == "regex":
            if not isinstance(value, str):
                self.fail(path, "regex takes a string")
                return None
            try:
                return FieldTest(name, op, re.compile(value, re.IGNORECASE), shown)
            except re.error as exc:
                self.fail(path, f'"{value}" is not a valid regular expression: {exc}')
                return None
        if op == "contains":
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                self.fail(path, "contains takes a text or a number")
                return None
            return FieldTest(name, op, str(value).lower(), shown)
        converted = self._value(name, value, path)
        if converted is _BAD:
            return None
        if op in ("gt", "gte", "lt", "lte") and not isinstance(converted, int | float):
            self.fail(path, f"{op} compares numbers or priorities; got {value!r}")
            return None
        return FieldTest(name, op, converted, shown)

    def _value(self, name: str, value: Any, path: tuple[str | int, ...]) -> Any:
        """Normalise a literal the way the ticket's own value is normalised."""
        try:
            if name == "priority":
                return Priority.parse(value)
            if name == "channel":
                return Channel(str(value).lower()).value
            if name == "status":
                return Status(str(value).lower()).value
        except ValueError:
            choices = {
                "priority": ", ".join(p.label for p in Priority),
                "channel": ", ".join(c.value for c in Channel),
                "status": ", ".join(s.value for s in Status),
            }[name]
            self.fail(path, f"{value!r} is not a {name} (one of {choices})")
            return _BAD
        if name == "reopen_count" and (not isinstance(value, int) or isinstance(value, bool)):
            self.fail(path, f"{value!r} is not a whole number")
            return _BAD
        if isinstance(value, str):
            return value.lower()
        if isinstance(value, bool) or value is None or isinstance(value, int | float):
            return value
        self.fail(path, f"{value!r} is not a text, a number or true/false")
        return _BAD

    def _tags(self, raw: Any, path: tuple[str | int, ...]) -> Condition | None:
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list):
            raw = {"any": raw}
        if not isinstance(raw, dict) or not raw or set(raw) - {"any", "all", "none"}:
            self.fail(path, "expected a list of tags or {any: [...], all: [...], none: [...]}")
            return None
        sets: dict[str, frozenset[str]] = {}
        for key in ("any", "all", "none"):
            value = raw.get(key, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                self.fail((*path, key), "expected a list of tags")
                return None
            sets[key] = frozenset(t.strip().lower() for t in value)
        return TagTest(sets["any"], sets["all"], sets["none"], format_path(path))

    def _keywords(self, raw: Any, path: tuple[str | int, ...]) -> Condition | None:
        fields: Sequence[str] = TEXT_FIELDS
        if isinstance(raw, dict):
            unknown = set(raw) - {"words", "in"}
            if unknown or "words" not in raw:
                self.fail(path, "expected a list of words, or {words: [...], in: [subject, ...]}")
                return None
            fields = raw.get("in", TEXT_FIELDS)
            if isinstance(fields, str):
                fields = [fields]
            bad = [f for f in fields if f not in TEXT_FIELDS]
            if bad or not fields:
                self.fail((*path, "in"), f"keywords look in {', '.join(TEXT_FIELDS)}")
                return None
            raw = raw["words"]
            path = (*path, "words")
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            self.fail(path, "expected a non-empty list of words or phrases")
            return None
        phrases = []
        for i, word in enumerate(raw):
            parts = tuple(re.findall(r"\w+", str(word).lower()))
            if not isinstance(word, str) or not parts:
                self.fail((*path, i), f"{word!r} is not a word or phrase")
                return None
            phrases.append(parts)
        return KeywordTest(tuple(phrases), tuple(fields), format_path(path))

    def _time(self, measure: str, raw: Any, path: tuple[str | int, ...]) -> Condition | None:
        if isinstance(raw, str | int):
            raw = {"under" if measure == "until_due" else "over": raw}
        if not isinstance(raw, dict):
            self.fail(path, "expected a duration such as 4h, or {over: 4h, time: business}")
            return None
        unknown = set(raw) - {"over", "under", "time", "calendar"}
        if unknown:
            self.fail(
                (*path, sorted(unknown)[0]), "is not a known key here (over, under, time, calendar)"
            )
            return None
        bounds: dict[str, timedelta | None] = {"over": None, "under": None}
        for key in ("over", "under"):
            if key in raw:
                try:
                    bounds[key] = parse_duration(raw[key])
                except ValueError as exc:
                    self.fail((*path, key), str(exc))
                    return None
        if bounds["over"] is None and bounds["under"] is None:
            self.fail(path, "needs over or under (e.g. over: 4h)")
            return None
        time_mode = raw.get("time", self.c.spec.defaults.time)
        if time_mode not in ("business", "calendar"):
            self.fail((*path, "time"), f"{time_mode!r} is not business or calendar")
            return None
        calendar = self.default_cal
        if "calendar" in raw:
            calendar = self.c._calendar_ref(
                str(raw["calendar"]), (*path, "calendar"), self.calendars
            )
        return TimeTest(
            measure=measure,
            over=bounds["over"],
            under=bounds["under"],
            calendar=calendar,
            business=time_mode == "business",
            path=format_path(path),
            follow_level=measure in LEVEL_MEASURES and not {"time", "calendar"} & set(raw),
        )

    def _priority(self, raw: Any, path: tuple[str | int, ...]) -> Condition | None:
        if isinstance(raw, str | int):
            raw = {"equals": raw}
        elif isinstance(raw, list):
            raw = {"in": raw}
        if not isinstance(raw, dict):
            self.fail(path, "expected a priority, a list, or {at_least: high}")
            return None
        return self._field({"field": "priority", **raw}, path)

    def _enum_in(self, name: str, raw: Any, path: tuple[str | int, ...]) -> Condition | None:
        return self._shorthand_in(name, raw, path)

    def _shorthand_in(self, name: str, raw: Any, path: tuple[str | int, ...]) -> Condition | None:
        values = raw if isinstance(raw, list) else [raw]
        test = self._field_test(name, "in", values, path)
        return test

    def _party(self, name: str, raw: Any, path: tuple[str | int, ...]) -> Condition | None:
        """Requester/organisation by e-mail, @domain, name or id (any of them, case-insensitive)."""
        values = raw if isinstance(raw, list) else [raw]
        if not values or not all(isinstance(v, str | int) for v in values):
            self.fail(path, f"expected a list of {name} e-mails, @domains, names or ids")
            return None
        options: list[Condition] = []
        shown = format_path(path)
        for v in values:
            text = str(v).strip().lower()
            if name == "requester" and text.startswith("@"):
                options.append(FieldTest("requester.email", "regex", _domain(text), shown))
            elif name == "requester" and "@" in text:
                options.append(FieldTest("requester.email", "equals", text, shown))
            else:
                options.append(FieldTest(f"{name}.name", "equals", text, shown))
                options.append(FieldTest(f"{name}.id", "equals", text, shown))
        return AnyOf(tuple(options), shown)

    def _numeric_shorthand(
        self, name: str, raw: Any, path: tuple[str | int, ...]
    ) -> Condition | None:
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = {"gte": raw}
        if not isinstance(raw, dict):
            self.fail(path, "expected a number (at least) or {gte: 2}")
            return None
        return self._field({"field": name, **raw}, path)


def _domain(text: str) -> re.Pattern[str]:
    return re.compile(re.escape(text) + r"$", re.IGNORECASE)


class _Bad:
    pass


_BAD: Any = _Bad()


def describe_target(rule: Rule) -> str:
    """A short text for tables: where the rule sends a ticket."""
    if rule.target.next or rule.target.rung is None:
        return "next level"
    return f"{rule.target.rung.kind} {rule.target.rung.id}"


def describe_expected(rung: Rung) -> str:
    """The expected times of a rung, as shown in tables and charts."""
    parts = []
    if rung.response is not None:
        parts.append(f"response {format_duration(rung.response)}")
    if rung.resolution is not None:
        parts.append(f"resolution {format_duration(rung.resolution)}")
    mode = "business" if rung.business else "calendar"
    return f"{', '.join(parts)} ({mode} time)" if parts else "—"
