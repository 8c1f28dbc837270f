"""The admin's ``when:`` YAML -> a condition tree (``escbridge.conditions.ast``).

Parsed by hand rather than by pydantic because the YAML form (one key per condition, many
shorthands) gives better messages that way. Problems are reported through the matrix loader's
``fail(path, message)``, so each names the file, the line and the key path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from escbridge.calendar import BusinessCalendar, read_duration
from escbridge.conditions.ast import (
    FIELD_NAMES,
    FIELD_OPS_ALL,
    LEVEL_MEASURES,
    PRIORITY_OPS,
    TEXT_FIELDS,
    TIME_MEASURES,
    AllOf,
    AnyOf,
    Condition,
    FieldTest,
    KeywordTest,
    NotOf,
    TagTest,
    TimeTest,
)
from escbridge.model import Channel, Priority, Status
from escbridge.yamlfile import format_path

KeyPath = tuple[str | int, ...]
Fail = Callable[[Sequence[str | int], str], None]
CalendarRef = Callable[[str, KeyPath], BusinessCalendar]


class ConditionParser:
    """Turns condition YAML into a condition tree, reporting every problem by key path.

    ``calendar`` resolves a calendar named in a time condition (reporting unknown names
    itself); ``default_calendar`` and ``business`` are what a time condition without its own
    ``calendar``/``time`` counts in. ``level_modes`` are the (business?, calendar) pairs the
    levels and teams count in, which ``level_overdue``/``response_overdue`` follow: a day
    written there must be equally long in each of them.
    """

    def __init__(
        self,
        fail: Fail,
        calendar: CalendarRef,
        default_calendar: BusinessCalendar,
        business: bool,
        level_modes: Sequence[tuple[bool, BusinessCalendar]] = (),
    ) -> None:
        self.fail = fail
        self.calendar = calendar
        self.default_calendar = default_calendar
        self.business = business
        self.level_modes = tuple(level_modes)

    def parse(self, raw: Any, path: KeyPath) -> Condition | None:
        """The tree for ``raw`` at ``path``, or None after reporting why it is not one."""
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
        if key in ("channel", "status", "group", "level"):
            return self._shorthand_in(key, value, sub)
        if key in ("requester", "organization"):
            return self._party(key, value, sub)
        if key == "reopens":
            return self._numeric_shorthand("reopen_count", value, sub)
        known = ["all", "any", "not", "field", "tags", "keywords", "priority", "channel"]
        known += ["status", "requester", "organization", "reopens", "group", "level"]
        known += list(TIME_MEASURES)
        self.fail(sub, f'"{key}" is not a condition (one of {", ".join(known)})')
        return None

    def _group(self, cls: type[AllOf] | type[AnyOf], raw: Any, path: KeyPath) -> Condition | None:
        if not isinstance(raw, list) or not raw:
            self.fail(path, "expected a non-empty list of conditions")
            return None
        items = [self.parse(item, (*path, i)) for i, item in enumerate(raw)]
        if any(item is None for item in items):
            return None
        return cls(tuple(i for i in items if i is not None), format_path(path))

    def _field(self, raw: dict[str, Any], path: KeyPath) -> Condition | None:
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

    def _field_test(self, name: str, op: str, value: Any, path: KeyPath) -> FieldTest | None:
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

    def _value(self, name: str, value: Any, path: KeyPath) -> Any:
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

    def _tags(self, raw: Any, path: KeyPath) -> Condition | None:
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
        if not any(sets.values()):
            # With nothing to look for the test would mean "always" (or "never"): refuse it.
            self.fail(
                path, "name at least one tag: [vip], or {any: [...], all: [...], none: [...]}"
            )
            return None
        return TagTest(sets["any"], sets["all"], sets["none"], format_path(path))

    def _keywords(self, raw: Any, path: KeyPath) -> Condition | None:
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

    def _time(self, measure: str, raw: Any, path: KeyPath) -> Condition | None:
        if isinstance(raw, str | int | float):
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
        if "over" not in raw and "under" not in raw:
            self.fail(path, "needs over or under (e.g. over: 4h)")
            return None
        time_mode = raw.get("time", "business" if self.business else "calendar")
        if time_mode not in ("business", "calendar"):
            self.fail((*path, "time"), f"{time_mode!r} is not business or calendar")
            return None
        calendar = self.default_calendar
        if "calendar" in raw:
            calendar = self.calendar(str(raw["calendar"]), (*path, "calendar"))
        follow_level = measure in LEVEL_MEASURES and not {"time", "calendar"} & set(raw)
        business = time_mode == "business"
        # level_overdue/response_overdue count in each level's own time: a day written there is
        # a working day of the level's calendar, so the bounds are worked out for each of them.
        modes = {(business, calendar.name if business else ""): (business, calendar)}
        if follow_level and self.level_modes:
            modes = {(b, cal.name if b else ""): (b, cal) for b, cal in self.level_modes}
        per_mode: dict[tuple[bool, str], list[timedelta | None]] = {key: [] for key in modes}
        own: list[timedelta | None] = []
        shown: list[str | None] = []
        for key in ("over", "under"):
            if key not in raw:
                own.append(None)
                shown.append(None)
                for bounds in per_mode.values():
                    bounds.append(None)
                continue
            try:
                written = read_duration(raw[key])
                for mode_key, (b, cal) in modes.items():
                    per_mode[mode_key].append(written.measured(cal if b else None))
            except ValueError as exc:
                self.fail((*path, key), str(exc))
                return None
            shown.append(str(written))
            try:
                own.append(written.measured(calendar if business else None))
            except ValueError:  # the matrix default does not measure this test: a level does
                own.append(next(iter(per_mode.values()))[-1])
        distinct = {tuple(bounds) for bounds in per_mode.values()}
        level_bounds: tuple[tuple[bool, str, timedelta | None, timedelta | None], ...] = ()
        if follow_level and distinct != {tuple(own)}:
            level_bounds = tuple((b, n, lo, hi) for (b, n), (lo, hi) in per_mode.items())
        return TimeTest(
            measure=measure,
            over=own[0],
            under=own[1],
            calendar=calendar,
            business=business,
            path=format_path(path),
            follow_level=follow_level,
            level_bounds=level_bounds,
            written=(shown[0], shown[1]),
        )

    def _priority(self, raw: Any, path: KeyPath) -> Condition | None:
        if isinstance(raw, str | int):
            raw = {"equals": raw}
        elif isinstance(raw, list):
            raw = {"in": raw}
        if not isinstance(raw, dict):
            self.fail(path, "expected a priority, a list, or {at_least: high}")
            return None
        return self._field({"field": "priority", **raw}, path)

    def _shorthand_in(self, name: str, raw: Any, path: KeyPath) -> Condition | None:
        values = raw if isinstance(raw, list) else [raw]
        return self._field_test(name, "in", values, path)

    def _party(self, name: str, raw: Any, path: KeyPath) -> Condition | None:
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

    def _numeric_shorthand(self, name: str, raw: Any, path: KeyPath) -> Condition | None:
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = {"gte": raw}
        if not isinstance(raw, dict):
            self.fail(path, "expected a number (at least) or {gte: 2}")
            return None
        return self._field({"field": name, **raw}, path)


def _domain(text: str) -> re.Pattern[str]:
    return re.compile(re.escape(text) + r"$", re.IGNORECASE)


class _Bad:
    """A literal that failed to normalise (its problem is reported already)."""


_BAD: Any = _Bad()
