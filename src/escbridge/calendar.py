"""Business hours, holidays and business-time arithmetic.

Escalation rules say things like "idle over 4h of business time", so the engine needs to know how
much *open* time lies between two instants, and when a limit measured in open time runs out. This
module answers both, for a weekly schedule of local wall-clock hours in one time zone, minus
holidays. It is pure: no I/O, no clock reads; every instant is passed in and must be aware.

Local wall-clock times are turned into instants by one rule, used everywhere (it keeps the
mapping monotonic, so no interval can come out negative):

    a local time maps to the first instant at which the calendar's wall clock shows that time
    or a later one.

So an ambiguous time (the repeated hour when clocks go back) means its *first* occurrence, and a
nonexistent time (skipped when clocks go forward) means the moment the clocks jump. On a
spring-forward day in Europe/Berlin, 01:00-04:00 is therefore 2h of business time and
02:15-02:45 is none; 09:00-17:00 stays 8h on both DST-change days.

``elapsed`` is amortised constant time: the calendar keeps a table of open intervals (as UTC
instants) with the business time accumulated before each, extended lazily in both directions,
so ``elapsed(a, b)`` is ``B(b) - B(a)`` with ``B`` one binary search away, however long the span.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Container, Iterable, Mapping, Sequence, Sized
from datetime import UTC, date, datetime, time, timedelta, timezone
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "BusinessCalendar",
    "HolidaySet",
    "build_holidays",
    "format_duration",
    "parse_duration",
    "parse_weekly_hours",
]

_UTC = UTC
_ZERO = timedelta(0)
_US = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)
_MIDNIGHT = time(0)
_FULL_DAY = ((_MIDNIGHT, _MIDNIGHT),)

# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------

_UNIT_SECONDS: dict[str, int] = {}
for _names, _seconds in (
    (("w", "wk", "wks", "week", "weeks"), 7 * 86400),
    (("d", "day", "days"), 86400),
    (("h", "hr", "hrs", "hour", "hours"), 3600),
    (("m", "min", "mins", "minute", "minutes"), 60),
    (("s", "sec", "secs", "second", "seconds"), 1),
):
    for _name in _names:
        _UNIT_SECONDS[_name] = _seconds

_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]+)")


def _not_a_duration(text: object) -> ValueError:
    return ValueError(f'"{text}" is not a duration (e.g. 90m, 2h, 1d 4h)')


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Read a duration an admin wrote: "90m", "2h", "1d 4h", "1h30m", "45s", "1w", "0m".

    Units are w, d, h, m, s (or their words: "2 hours", "30 min"), largest first, each at most
    once, so a typo such as "1h 30h" is an error rather than 31h. Numbers may be decimal ("1.5h")
    and a leading "-" negates the whole duration (what ``format_duration`` writes). A bare int
    or float is a number of seconds, the way YAML hands over ``idle: 90``; a timedelta is
    returned unchanged, so the function is safe to use as a (re-run) pydantic validator.

    d is exactly 24h and w exactly 7d of *elapsed* time: "1d" is not "one business day". Business
    semantics come from measuring the duration with a ``BusinessCalendar``.
    """
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise _not_a_duration(text)
    if isinstance(text, int | float):
        try:
            return timedelta(seconds=text)
        except (OverflowError, ValueError):  # inf, nan, or beyond timedelta's range
            raise _not_a_duration(text) from None
    if not isinstance(text, str):
        raise _not_a_duration(text)

    body = text.strip().lower()
    negative = body.startswith("-")
    if body.startswith(("-", "+")):
        body = body[1:]
    total = Fraction(0)
    previous_unit = 10**9  # units must strictly decrease
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise _not_a_duration(text)
        unit = _UNIT_SECONDS.get(match.group(2))
        if unit is None or unit >= previous_unit:
            raise _not_a_duration(text)
        previous_unit = unit
        total += Fraction(match.group(1)) * unit
        pos = match.end()
    if previous_unit == 10**9:  # nothing but whitespace or a sign
        raise _not_a_duration(text)
    microseconds = round(total * 1_000_000)
    try:
        return timedelta(microseconds=-microseconds if negative else microseconds)
    except OverflowError:
        raise _not_a_duration(text) from None


def format_duration(delta: timedelta) -> str:
    """Write a duration the way an admin reads it: "1d 4h 30m", "45m", "30s", "0m", "-2h".

    Rounds to the nearest second (halves away from zero) and shows every non-zero unit from days
    down to seconds, so ``parse_duration(format_duration(x)) == x`` for any whole-second ``x``.
    Weeks are not used: "10d" reads better than "1w 3d" in an SLA.
    """
    micro = delta // _US
    seconds = (abs(micro) + 500_000) // 1_000_000
    if seconds == 0:
        return "0m"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return ("-" if micro < 0 else "") + " ".join(parts)


# --------------------------------------------------------------------------------------------
# Weekly hours
# --------------------------------------------------------------------------------------------

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NUMBERS: dict[str, int] = {name: i for i, name in enumerate(_DAY_NAMES)}
_DAY_NUMBERS.update(
    {
        name: i
        for i, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    }
)
_DAY_GROUPS: dict[str, tuple[int, ...]] = {
    "daily": tuple(range(7)),
    "everyday": tuple(range(7)),
    "weekdays": (0, 1, 2, 3, 4),
    "weekend": (5, 6),
    "weekends": (5, 6),
}
_TIME_RANGE = re.compile(r"(\d{1,2}):(\d\d)\s*[-–]\s*(\d{1,2}):(\d\d)")
_EXPECTED_DAYS = (
    "expected mon, tue, wed, thu, fri, sat, sun, a range such as mon-fri, "
    "a list such as sat,sun, or daily"
)


def _parse_days(key: str) -> list[int]:
    """Days named by one hours key, in the order written; wrap-around ranges (fri-mon) allowed."""
    days: list[int] = []
    for raw in key.split(","):
        item = raw.strip().lower()
        if item in _DAY_GROUPS:
            days.extend(_DAY_GROUPS[item])
            continue
        first, dash, last = item.partition("-")
        first, last = first.strip(), last.strip()
        if first not in _DAY_NUMBERS or (dash and last not in _DAY_NUMBERS):
            raise ValueError(f'hours "{key}": "{raw.strip()}" is not a day ({_EXPECTED_DAYS})')
        start = _DAY_NUMBERS[first]
        stop = _DAY_NUMBERS[last] if dash else start
        days.extend((start + k) % 7 for k in range((stop - start) % 7 + 1))
    return days


def _parse_range(key: str, value: str) -> tuple[time, time]:
    """One "HH:MM-HH:MM"; an end of 24:00 (or 00:00) is midnight at the end of the day."""
    match = _TIME_RANGE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f'hours "{key}": "{value}" is not a time range (e.g. "09:00-17:00")')
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em != 0):
        raise ValueError(f'hours "{key}": "{value}" is not a time range (e.g. "09:00-17:00")')
    start = time(sh, sm)
    end = _MIDNIGHT if eh == 24 else time(eh, em)
    if start == end:
        raise ValueError(
            f'hours "{key}": "{value}" is empty (write "closed" for no hours, "24h" for all day)'
        )
    if end != _MIDNIGHT and end < start:
        raise ValueError(
            f'hours "{key}": "{value}" ends before it starts; split hours that run past '
            f'midnight over two days, e.g. "22:00-24:00" and "00:00-06:00" on the next day'
        )
    return start, end


def _parse_day_value(key: str, value: object) -> list[tuple[time, time]]:
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "closed":
            return []
        if word == "24h":
            return list(_FULL_DAY)
        return [_parse_range(key, value)]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        if len(value) > 1 and any(v.strip().lower() == "closed" for v in value):
            raise ValueError(f'hours "{key}": "closed" cannot be listed together with hours')
        ranges: list[tuple[time, time]] = []
        for item in value:
            ranges.extend(_parse_day_value(key, item))
        return ranges
    raise ValueError(
        f'hours "{key}": expected a time range such as "09:00-17:00", a list of them, '
        f'"closed" or "24h", got {value!r}'
    )


def _end_key(interval: tuple[time, time]) -> tuple[int, time]:
    """Sort key for an interval end, with 00:00 meaning the end of the day."""
    return (1, _MIDNIGHT) if interval[1] == _MIDNIGHT else (0, interval[1])


def _overlap(intervals: Sequence[tuple[time, time]]) -> tuple[int, int] | None:
    """Indices of two overlapping intervals (sorted by start), or None. Touching is fine."""
    for i in range(1, len(intervals)):
        if _end_key(intervals[i - 1]) > (0, intervals[i][0]):
            return i - 1, i
    return None


def _hhmm(t: time, end: bool = False) -> str:
    if end and t == _MIDNIGHT:
        return "24:00"
    return t.strftime("%H:%M") if not t.second else t.isoformat()


def parse_weekly_hours(
    spec: Mapping[str, str | Sequence[str]],
) -> dict[int, tuple[tuple[time, time], ...]]:
    """Turn the admin's YAML hours into intervals per weekday (0=Mon .. 6=Sun).

    Keys: mon..sun (or full names), ranges "mon-fri", lists "sat,sun", "daily"/"everyday",
    "weekdays", "weekend(s)". Values: "HH:MM-HH:MM", a list of them, "closed" or "24h". Days not
    mentioned are closed. An interval ending at 24:00 is returned with end ``time(0)``, which is
    how ``BusinessCalendar`` spells "until midnight". Hours never cross midnight: an overnight
    shift is two entries, one per day, so each day's hours are read on that day's own clock.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(
            f'hours: expected a mapping of days to hours, e.g. {{"mon-fri": "09:00-17:00"}}, '
            f"got {spec!r}"
        )
    given_by: dict[int, str] = {}
    week: dict[int, list[tuple[time, time]]] = {day: [] for day in range(7)}
    for key, value in spec.items():
        if not isinstance(key, str):
            raise ValueError(f"hours {key!r}: {_EXPECTED_DAYS}")
        days = _parse_days(key)
        ranges = sorted(_parse_day_value(key, value))
        clash = _overlap(ranges)
        if clash is not None:
            a, b = (ranges[i] for i in clash)
            raise ValueError(
                f'hours "{key}": "{_hhmm(a[0])}-{_hhmm(a[1], end=True)}" overlaps '
                f'"{_hhmm(b[0])}-{_hhmm(b[1], end=True)}"'
            )
        for day in days:
            if given_by.get(day) == key:
                raise ValueError(f'hours "{key}": {_DAY_NAMES[day]} is named twice')
            if day in given_by:
                raise ValueError(
                    f'hours "{key}": {_DAY_NAMES[day]} already has hours from "{given_by[day]}"'
                )
            given_by[day] = key
            week[day] = ranges
    return {day: tuple(ranges) for day, ranges in week.items()}


# --------------------------------------------------------------------------------------------
# Holidays
# --------------------------------------------------------------------------------------------


class HolidaySet:
    """Explicit dates plus a country's public holidays, as one read-only ``Container[date]``.

    The country part is a ``holidays`` object that fills in a year the first time a date in it is
    asked about, so any year works and nothing is computed up front.
    """

    __slots__ = ("_country_days", "_dates", "country", "subdivision")

    def __init__(
        self,
        dates: Iterable[date] = (),
        country: str | None = None,
        subdivision: str | None = None,
        country_days: Any = None,
    ) -> None:
        self._dates = frozenset(d.date() if isinstance(d, datetime) else d for d in dates)
        self._country_days = country_days
        self.country = country
        self.subdivision = subdivision

    @property
    def is_empty(self) -> bool:
        """True when nothing is a holiday, which lets a 24x7 calendar take its fast path."""
        return not self._dates and self._country_days is None

    def __contains__(self, day: object) -> bool:
        if not isinstance(day, date):
            return False
        if isinstance(day, datetime):
            day = day.date()
        if day in self._dates:
            return True
        return self._country_days is not None and day in self._country_days

    def name(self, day: date) -> str | None:
        """What the day is called (for explanations), or None when it is not a holiday."""
        if isinstance(day, datetime):
            day = day.date()
        if self._country_days is not None and day in self._country_days:
            return str(self._country_days.get(day))
        return "holiday" if day in self._dates else None

    def __repr__(self) -> str:
        where = self.country if self.subdivision is None else f"{self.country}-{self.subdivision}"
        return f"HolidaySet(country={where!r}, dates={len(self._dates)})"


def build_holidays(
    country: str | None, subdivision: str | None, dates: Iterable[date]
) -> Container[date]:
    """Holidays of a calendar: the explicit ``dates`` plus the country's (and region's) public
    holidays from the ``holidays`` package, observed days included (US 2026-07-03)."""
    explicit = list(dates)
    for day in explicit:
        if not isinstance(day, date):
            raise ValueError(f"holiday {day!r} is not a date (e.g. 2026-12-24)")
    if country is None:
        if subdivision is not None:
            raise ValueError(f'holiday subdivision "{subdivision}" needs a country')
        return HolidaySet(explicit)

    import holidays as holidays_package  # deferred: only calendars with a country pay for it

    code = country.strip().upper()
    try:
        national = holidays_package.country_holidays(code)
    except NotImplementedError:
        raise ValueError(
            f'holiday country "{country}" is not known (an ISO 3166 code, e.g. "DE", "US")'
        ) from None
    if subdivision is None:
        return HolidaySet(explicit, code, None, national)
    for subdiv in dict.fromkeys((subdivision.strip(), subdivision.strip().upper())):
        try:
            days = holidays_package.country_holidays(code, subdiv=subdiv)
        except NotImplementedError:
            continue
        return HolidaySet(explicit, code, subdiv, days)
    known = holidays_package.list_supported_countries().get(code, [])
    shown = ", ".join(known[:20]) + (", …" if len(known) > 20 else "")
    raise ValueError(
        f'holiday subdivision "{subdivision}" is not known for country "{code}"'
        + (f" (one of {shown})" if known else " (it has none)")
    )


# --------------------------------------------------------------------------------------------
# Business calendar
# --------------------------------------------------------------------------------------------


class _Table:
    """A snapshot of the open intervals covering local days [lo_day, hi_day).

    ``starts``/``ends`` are UTC instants; ``cum[i]``/``cend[i]`` is the business time accumulated
    (from an arbitrary origin) at ``starts[i]``/``ends[i]``. Replaced whole, never mutated, so
    readers on other threads always see a consistent table.
    """

    __slots__ = ("base", "cend", "cum", "ends", "hi", "hi_day", "lo", "lo_day", "starts")

    def __init__(
        self,
        lo_day: int,
        hi_day: int,
        lo: datetime,
        hi: datetime,
        starts: list[datetime],
        ends: list[datetime],
        cum: list[timedelta],
        cend: list[timedelta],
    ) -> None:
        self.lo_day, self.hi_day, self.lo, self.hi = lo_day, hi_day, lo, hi
        self.starts, self.ends, self.cum, self.cend = starts, ends, cum, cend
        self.base = cum[0] if cum else _ZERO  # business time at `lo` and before the first start


_MAX_IDLE_DAYS = 3660  # give up looking for open time after ten closed years
_MIN_GROWTH_DAYS = 31
_MAX_GROWTH_DAYS = 366


class BusinessCalendar:
    """Weekly local business hours in one time zone, minus holidays, with business-time arithmetic.

    Intervals are half-open: open at 09:00, closed at 17:00. The calendar caches what it has
    computed; it assumes ``holidays`` never changes afterwards. Safe to share between threads.
    """

    def __init__(
        self,
        name: str,
        timezone: str,
        hours: Mapping[int, Sequence[tuple[time, time]]],
        holidays: Container[date] = frozenset(),
    ) -> None:
        self.name = name
        try:
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f'calendar {name}: time zone "{timezone}" is not known '
                f'(an IANA name, e.g. "Europe/Berlin", "America/New_York", "UTC")'
            ) from None
        self.hours = self._check_hours(name, hours)
        self.holidays = holidays
        self._has_hours = any(self.hours.values())
        no_holidays = (isinstance(holidays, Sized) and len(holidays) == 0) or (
            isinstance(holidays, HolidaySet) and holidays.is_empty
        )
        self._always = no_holidays and all(r == _FULL_DAY for r in self.hours.values())
        self._table: _Table | None = None
        self._lock = threading.Lock()

    @classmethod
    def always_open(cls, name: str = "24x7") -> BusinessCalendar:
        """Open around the clock with no holidays: business time is wall-clock time."""
        return cls(name, "UTC", {day: _FULL_DAY for day in range(7)})

    @staticmethod
    def _check_hours(
        name: str, hours: Mapping[int, Sequence[tuple[time, time]]]
    ) -> dict[int, tuple[tuple[time, time], ...]]:
        week: dict[int, tuple[tuple[time, time], ...]] = {day: () for day in range(7)}
        for day, ranges in hours.items():
            if day not in week:
                raise ValueError(f"calendar {name}: weekday {day!r} is not 0 (Mon) .. 6 (Sun)")
            checked = []
            for interval in ranges:
                if not (
                    isinstance(interval, tuple | list)
                    and len(interval) == 2
                    and all(isinstance(t, time) for t in interval)
                ):
                    raise ValueError(f"calendar {name}: {interval!r} is not a (time, time) pair")
                start, end = interval
                if start.tzinfo is not None or end.tzinfo is not None:
                    raise ValueError(f"calendar {name}: hours are local times, without a zone")
                if end != _MIDNIGHT and end <= start:
                    raise ValueError(
                        f"calendar {name}: {_DAY_NAMES[day]} {_hhmm(start)}-{_hhmm(end, True)} "
                        f"ends before it starts (an end of 00:00 means midnight)"
                    )
                checked.append((start, end))
            checked.sort()
            clash = _overlap(checked)
            if clash is not None:
                a, b = (checked[i] for i in clash)
                raise ValueError(
                    f"calendar {name}: {_DAY_NAMES[day]} {_hhmm(a[0])}-{_hhmm(a[1], True)} "
                    f"overlaps {_hhmm(b[0])}-{_hhmm(b[1], True)}"
                )
            week[day] = tuple(checked)
        return week

    def __repr__(self) -> str:
        return f"BusinessCalendar({self.name!r}, {self.tz.key!r})"

    # -- public arithmetic --------------------------------------------------------------------

    def is_open(self, at: datetime) -> bool:
        """Whether business time is accruing at this instant."""
        x = at if at.tzinfo is _UTC else _to_utc(at)
        if self._always:
            return True
        t = self._table
        if t is None or not (t.lo <= x < t.hi):
            t = self._cover(x)
        i = bisect_right(t.starts, x) - 1
        return i >= 0 and x < t.ends[i]

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Business time in [start, end); negative (``-elapsed(end, start)``) when end < start."""
        a = start if start.tzinfo is _UTC else _to_utc(start)
        b = end if end.tzinfo is _UTC else _to_utc(end)
        if self._always:
            return b - a
        t = self._table
        if t is None or not (t.lo <= a < t.hi and t.lo <= b < t.hi):
            t = self._cover(a, b)
        # Inlined B(x) twice: this is the engine's hot path.
        starts = t.starts
        i = bisect_right(starts, a) - 1
        if i < 0:
            ba = t.base
        elif a < t.ends[i]:
            ba = t.cum[i] + (a - starts[i])
        else:
            ba = t.cend[i]
        i = bisect_right(starts, b) - 1
        if i < 0:
            return t.base - ba
        if b < t.ends[i]:
            return t.cum[i] + (b - starts[i]) - ba
        return t.cend[i] - ba

    def add(self, start: datetime, delta: timedelta) -> datetime:
        """The instant ``delta`` of business time after ``start`` (before it, if negative), in UTC.

        For delta >= 0 this is the earliest t with ``elapsed(start, t) == delta``, so a limit that
        runs out exactly at closing time falls due at closing time, not next morning. For delta < 0
        it is the latest t <= start with ``elapsed(t, start) == -delta``.
        """
        x = start if start.tzinfo is _UTC else _to_utc(start)
        if not isinstance(delta, timedelta):
            raise TypeError(f"delta must be a timedelta, got {delta!r}")
        if self._always:
            return x + delta
        if not delta:
            return x
        if not self._has_hours:
            raise ValueError(f"calendar {self.name} has no business hours")
        target = self._business_at(self._cover(x), x) + delta
        idle = 0
        while True:
            t = self._table
            assert t is not None
            if delta > _ZERO:
                i = bisect_left(t.cend, target)
                if i < len(t.cend):
                    return t.starts[i] + (target - t.cum[i])
            else:
                j = bisect_right(t.cum, target) - 1
                if j >= 0:
                    return t.starts[j] + (target - t.cum[j])
            idle = self._grow(t, forward=delta > _ZERO, idle=idle)

    def next_open(self, at: datetime) -> datetime:
        """``at`` itself if open, else the instant business time next starts accruing (UTC)."""
        x = at if at.tzinfo is _UTC else _to_utc(at)
        if self._always:
            return x
        if not self._has_hours:
            raise ValueError(f"calendar {self.name} has no business hours")
        t = self._cover(x)
        idle = 0
        while True:
            i = bisect_right(t.starts, x)
            if i > 0 and x < t.ends[i - 1]:
                return x
            if i < len(t.starts):
                return t.starts[i]
            idle = self._grow(t, forward=True, idle=idle)
            t = self._cover(x)

    # -- the interval table ---------------------------------------------------------------------

    @staticmethod
    def _business_at(t: _Table, x: datetime) -> timedelta:
        """B(x): business time accumulated at x, on the table's arbitrary origin."""
        i = bisect_right(t.starts, x) - 1
        if i < 0:
            return t.base
        if x < t.ends[i]:
            return t.cum[i] + (x - t.starts[i])
        return t.cend[i]

    def _cover(self, *xs: datetime) -> _Table:
        """A table whose range contains every x, growing the cached one when needed."""
        t = self._table
        while t is None or not all(t.lo <= x < t.hi for x in xs):
            days = [x.astimezone(self.tz).toordinal() for x in xs]
            lo_day, hi_day = min(days) - 1, max(days) + 2  # margins absorb midnight DST shifts
            if t is None:
                t = self._extend(lo_day - 7, hi_day + _MIN_GROWTH_DAYS)
                continue
            # Grow geometrically (up to a year at a time) so extension cost is amortised.
            step = min(max(t.hi_day - t.lo_day, _MIN_GROWTH_DAYS), _MAX_GROWTH_DAYS)
            if any(x < t.lo for x in xs):
                lo_day = min(lo_day, t.lo_day - step)
            if any(x >= t.hi for x in xs):
                hi_day = max(hi_day, t.hi_day + step)
            t = self._extend(lo_day, hi_day)
        return t

    def _grow(self, t: _Table, *, forward: bool, idle: int) -> int:
        """Extend the table one step in one direction; returns updated count of closed days seen."""
        step = min(max(t.hi_day - t.lo_day, _MIN_GROWTH_DAYS), _MAX_GROWTH_DAYS)
        if forward:
            new = self._extend(t.lo_day, t.hi_day + step)
        else:
            new = self._extend(t.lo_day - step, t.hi_day)
        idle = 0 if len(new.starts) > len(t.starts) else idle + step
        if idle > _MAX_IDLE_DAYS:
            raise ValueError(
                f"calendar {self.name} has no business hours "
                f"(every day for {_MAX_IDLE_DAYS} days is a holiday)"
            )
        return idle

    def _extend(self, lo_day: int, hi_day: int) -> _Table:
        """Replace the table with one covering at least [lo_day, hi_day) (date ordinals)."""
        with self._lock:
            t = self._table
            try:
                if t is None:
                    starts, ends = self._intervals(lo_day, hi_day)
                    cum, cend = _accumulate(starts, ends, _ZERO)
                else:
                    lo_day, hi_day = min(lo_day, t.lo_day), max(hi_day, t.hi_day)
                    left_s, left_e = self._intervals(lo_day, t.lo_day)
                    right_s, right_e = self._intervals(t.hi_day, hi_day)
                    left_total = sum((e - s for s, e in zip(left_s, left_e, strict=True)), _ZERO)
                    left_cum, left_cend = _accumulate(left_s, left_e, t.base - left_total)
                    end_base = t.cend[-1] if t.cend else t.base
                    right_cum, right_cend = _accumulate(right_s, right_e, end_base)
                    starts = left_s + t.starts + right_s
                    ends = left_e + t.ends + right_e
                    cum = left_cum + t.cum + right_cum
                    cend = left_cend + t.cend + right_cend
                lo = self._instant(date.fromordinal(lo_day), _MIDNIGHT)
                hi = self._instant(date.fromordinal(hi_day), _MIDNIGHT)
            except (OverflowError, ValueError):
                raise ValueError(
                    f"calendar {self.name}: business time is only computed for dates well "
                    f"inside the years 1 to 9999"
                ) from None
            self._table = _Table(lo_day, hi_day, lo, hi, starts, ends, cum, cend)
            return self._table

    def _intervals(self, lo_day: int, hi_day: int) -> tuple[list[datetime], list[datetime]]:
        """Open intervals, as UTC instants, of the local days [lo_day, hi_day)."""
        starts: list[datetime] = []
        ends: list[datetime] = []
        for ordinal in range(lo_day, hi_day):
            day = date.fromordinal(ordinal)
            ranges = self.hours[day.weekday()]
            if not ranges or day in self.holidays:
                continue
            for start, end in ranges:
                s = self._instant(day, start)
                e = self._instant(day + _ONE_DAY if end == _MIDNIGHT else day, end)
                if e > s:  # a range inside a DST gap has no length
                    starts.append(s)
                    ends.append(e)
        return starts, ends

    def _instant(self, day: date, at: time) -> datetime:
        """The first instant at which the local wall clock shows ``day at`` or later (UTC)."""
        wall = datetime.combine(day, at, self.tz)  # fold=0: the first occurrence if repeated
        first = wall.astimezone(_UTC)
        # Datetimes sharing a tzinfo compare by wall clock, so this asks "does `wall` exist?"
        if first.astimezone(self.tz) == wall:
            return first
        # `wall` was skipped by a forward jump: find the jump by bisection between the
        # readings under the offsets before and after it.
        lo, hi = sorted((first, wall.replace(fold=1).astimezone(_UTC)))
        if lo.astimezone(self.tz) >= wall:
            return lo
        while hi - lo > _US:
            mid = lo + (hi - lo) // 2
            if mid.astimezone(self.tz) >= wall:
                hi = mid
            else:
                lo = mid
        return hi


_ALWAYS_AWARE = (ZoneInfo, timezone)  # tzinfo types whose utcoffset() is never None


def _to_utc(at: datetime) -> datetime:
    """The same instant in UTC; naive datetimes are refused rather than guessed at.

    (``astimezone`` would silently read a naive datetime as the host's local time.)
    """
    if not isinstance(at, datetime):
        raise TypeError(f"expected an aware datetime, got {at!r}")
    if type(at.tzinfo) not in _ALWAYS_AWARE and at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; business time needs aware datetimes")
    return at.astimezone(_UTC)


def _accumulate(
    starts: list[datetime], ends: list[datetime], base: timedelta
) -> tuple[list[timedelta], list[timedelta]]:
    """Running business time at each interval's start and end, from ``base``."""
    cum: list[timedelta] = []
    cend: list[timedelta] = []
    running = base
    for s, e in zip(starts, ends, strict=True):
        cum.append(running)
        running += e - s
        cend.append(running)
    return cum, cend
