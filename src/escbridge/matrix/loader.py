"""Loading a matrix: YAML text -> a validated ``Matrix``, with every problem found at once.

Pure: ``parse_matrix`` takes text; only ``load_matrix`` reads a file. Every error names the file,
the line and the key path, and says what was expected. The structure is checked by pydantic
(``spec``); this module cross-checks ids, ranks, destinations, templates and conditions.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import jinja2
from pydantic import ValidationError

from escbridge.calendar import (
    BusinessCalendar,
    WrittenDuration,
    build_holidays,
    parse_weekly_hours,
)
from escbridge.conditions.ast import is_level_relative
from escbridge.conditions.parse import ConditionParser
from escbridge.errors import InvalidInputError, MatrixError, Problem
from escbridge.matrix.model import Matrix, Rule, RuleActions, Rung, Target
from escbridge.matrix.spec import (
    ID_PATTERN,
    ActionsSpec,
    LevelSpec,
    MatrixSpec,
    RuleSpec,
    TeamSpec,
)
from escbridge.matrix.templates import compile_template, default_note
from escbridge.model import LevelMarker
from escbridge.yamlfile import YamlDocument, parse_yaml, problems_from_validation, with_suggestions

if TYPE_CHECKING:
    from escbridge.notify.model import NotifyTarget


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
        raise MatrixError(
            with_suggestions(problems_from_validation(doc, exc), exc, MatrixSpec)
        ) from None
    compiled = _Compiler(doc, spec).compile()
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return dataclasses.replace(compiled, digest=digest)


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
        modes = {(r.business, r.calendar.name): r.calendar for r in (*levels, *teams.values())}
        compiled = [
            (
                spec_rule.enabled,
                self._rule(i, spec_rule, levels, teams, calendars, default_cal, modes),
            )
            for i, spec_rule in enumerate(spec.rules)
        ]
        rules = tuple(r for enabled, r in compiled if enabled and r is not None)
        seen: set[str] = set()
        for i, spec_rule in enumerate(spec.rules):
            if spec_rule.id in seen:
                self.fail(("rules", i, "id"), f'"{spec_rule.id}" is used by another rule already')
            seen.add(spec_rule.id)
        notify = self._notify()
        if self.problems:
            raise MatrixError(self.problems)
        return Matrix(
            name=spec.name,
            source=self.doc.source,
            levels=levels,
            teams=teams,
            rules=rules,
            cooldown=spec.limits.cooldown.measured(),  # elapsed time since the last escalation
            daily_cap=spec.limits.daily_cap,
            default_calendar=default_cal,
            default_note=default_note(),
            calendars=calendars,
            notify=notify,
        )

    def _notify(self) -> dict[str, NotifyTarget]:
        """The notification targets, checked, each with the line it is defined on."""
        # Imported here: escbridge.notify.model uses the matrix's templates and ids, so the
        # matrix package must be loaded before it.
        from escbridge.notify.model import compile_targets

        targets = compile_targets(self.spec.notify.targets, self.fail)
        return {
            target_id: dataclasses.replace(
                target, line=self.doc.line_of(("notify", "targets", target_id))
            )
            for target_id, target in targets.items()
        }

    def _notify_refs(self, names: Sequence[str], path: tuple[str | int, ...]) -> tuple[str, ...]:
        """A level's or team's ``notify:`` list: ids of targets the matrix defines, once each."""
        known = list(self.spec.notify.targets)
        seen: list[str] = []
        for i, name in enumerate(names):
            if name in seen:
                self.fail((*path, i), f'"{name}" is listed twice')
            elif name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f" — did you mean {close[0]}?" if close else ""
                defined = ", ".join(known) or "none defined under notify.targets"
                self.fail((*path, i), f'"{name}" is not a notification target{hint} ({defined})')
            else:
                seen.append(name)
        return tuple(seen)

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
            if name not in self.spec.calendars:  # a calendar that failed is said once, there
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
        written = {"resolution": spec.resolution}
        if isinstance(spec, LevelSpec):
            written["response"] = spec.response
        # In business time a day is a working day of the rung's calendar.
        measure = cal if business else None
        lengths = {
            key: self._length(value, measure, (*path, key)) for key, value in written.items()
        }
        return Rung(
            kind=kind,
            id=rung_id,
            name=spec.name,
            rank=rank,
            groups=dict(spec.groups),
            min_priority=spec.min_priority,
            response=lengths.get("response"),
            resolution=lengths["resolution"],
            written={key: str(value) for key, value in written.items() if value is not None},
            calendar=cal,
            business=business,
            notify=self._notify_refs(spec.notify, (*path, "notify")),
        )

    def _length(
        self,
        written: WrittenDuration | None,
        calendar: BusinessCalendar | None,
        path: tuple[str | int, ...],
    ) -> timedelta | None:
        """An expected time measured by ``calendar`` (None: elapsed time), or None if invalid."""
        if written is None:
            return None
        try:
            return written.measured(calendar)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None

    def _rule(
        self,
        index: int,
        spec: RuleSpec,
        levels: Sequence[Rung],
        teams: Mapping[str, Rung],
        calendars: Mapping[str, BusinessCalendar],
        default_cal: BusinessCalendar,
        modes: Mapping[tuple[bool, str], BusinessCalendar],
    ) -> Rule | None:
        path: tuple[str | int, ...] = ("rules", index)
        before = len(self.problems)
        parser = ConditionParser(
            self.fail,
            lambda name, at: self._calendar_ref(name, at, calendars),
            default_cal,
            business=self.spec.defaults.time == "business",
            level_modes=[(business, cal) for (business, _), cal in modes.items()],
        )
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
            elif clean.startswith(LevelMarker.PREFIX):
                prefix = LevelMarker.PREFIX
                self.fail((*path, "tags", i), f"tags starting {prefix} are escbridge's own")
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
