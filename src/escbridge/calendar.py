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
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "BusinessCalendar",
    "HolidaySet",
    "WrittenDuration",
    "build_holidays",
    "format_duration",
    "parse_duration",
    "parse_weekly_hours",
    "read_duration",
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

_UNITS: dict[str, str] = {}
for _names in (
    ("w", "wk", "wks", "week", "weeks"),
    ("d", "day", "days"),
    ("h", "hr", "hrs", "hour", "hours"),
    ("m", "min", "mins", "minute", "minutes"),
    ("s", "sec", "secs", "second", "seconds"),
):
    for _name in _names:
        _UNITS[_name] = _names[0]
_UNIT_ORDER = {"w": 4, "d": 3, "h": 2, "m": 1, "s": 0}
_CLOCK_SECONDS = {"h": 3600, "m": 60, "s": 1}

_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]+)")
_BARE_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")


def _not_a_duration(text: object) -> ValueError:
    return ValueError(f'"{text}" is not a duration (e.g. 90m, 2h, 1d 4h)')


def _no_unit(number: str) -> ValueError:
    return ValueError(f"{number} has no unit — write {number}h, {number}m or {number}s")


@dataclass(frozen=True)
class WrittenDuration:
    """A duration as the admin wrote it, weeks and days kept apart from hours, minutes, seconds.

    How long a day is depends on what measures the duration: in elapsed (calendar) time a day is
    24h and a week 7 days; in business time a day is one working day of the calendar and a week
    one week of its hours. So a matrix keeps this until the calendar is known (``measured``).
    """

    text: str
    weeks: Fraction = Fraction(0)
    days: Fraction = Fraction(0)
    seconds: Fraction = Fraction(0)  # the h/m/s part

    def __str__(self) -> str:
        """The duration in the admin's units, tidied: "1 day 2 hours" -> "1d 2h", "0" -> "0m"."""
        h, rest = divmod(self.seconds, 3600)
        m, sec = divmod(rest, 60)
        parts = [
            f"{_number(n)}{u}"
            for n, u in ((self.weeks, "w"), (self.days, "d"), (h, "h"), (m, "m"), (sec, "s"))
            if n
        ]
        return " ".join(parts) or "0m"

    @property
    def has_days(self) -> bool:
        """Whether the length depends on how long a day is (it names days or weeks)."""
        return bool(self.weeks or self.days)

    def measured(self, calendar: BusinessCalendar | None = None) -> timedelta:
        """The length in elapsed time (``calendar`` None) or in ``calendar``'s business time.

        ValueError when the calendar cannot say how long its day is (working days of different
        lengths) and a day was written: the message names the fix.
        """
        day, week = Fraction(86400), Fraction(7 * 86400)
        if calendar is not None and self.weeks:
            week = _seconds(calendar.working_week(self.text.strip()))
        if calendar is not None and self.days:
            day = _seconds(calendar.working_day(self.text.strip()))
        total = self.weeks * week + self.days * day + self.seconds
        try:
            return timedelta(microseconds=round(total * 1_000_000))
        except OverflowError:
            raise _not_a_duration(self.text) from None


def _number(value: Fraction | int) -> str:
    """1 -> "1", 3/2 -> "1.5": the decimals an admin wrote (their denominators divide 10**k)."""
    if isinstance(value, int) or value.denominator == 1:
        return str(int(value))
    return f"{float(value):.6f}".rstrip("0").rstrip(".")


def _seconds(delta: timedelta) -> Fraction:
    return Fraction(delta // _US, 1_000_000)


def read_duration(value: object) -> WrittenDuration:
    """Read a duration an admin wrote in a matrix: "90m", "2h", "1d 4h", "1h30m", "1w", "0m".

    Units are w, d, h, m, s (or their words: "2 hours", "30 min"), largest first, each at most
    once, so a typo such as "1h 30h" is an error rather than 31h. Numbers may be decimal
    ("1.5h"). A number without a unit is refused with the fix ("4 has no unit — write 4h, 4m or
    4s"): YAML hands over ``response: 4`` as a number, and nobody means seconds there. Only 0
    needs no unit. Negative durations are refused: no limit or threshold is below zero.
    """
    if isinstance(value, WrittenDuration):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _not_a_duration(value)
    if not isinstance(value, str):
        if value != value or value in (float("inf"), float("-inf")):
            raise _not_a_duration(value)
        if value == 0:
            return WrittenDuration("0")
        if value < 0:
            raise ValueError(f"{value:g} must not be negative")
        raise _no_unit(f"{value:g}" if isinstance(value, float) else str(value))
    body = value.strip().lower()
    if body.startswith("-") and body != "-":
        try:
            read_duration(body[1:])
        except ValueError:
            raise _not_a_duration(value) from None
        raise ValueError(f"{value.strip()} must not be negative")
    body = body.removeprefix("+")
    if _BARE_NUMBER.fullmatch(body):
        if Fraction(body) == 0:
            return WrittenDuration(value)
        raise _no_unit(body)
    parts = {"w": Fraction(0), "d": Fraction(0), "seconds": Fraction(0)}
    previous = 10  # units must strictly decrease
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise _not_a_duration(value)
        unit = _UNITS.get(match.group(2))
        if unit is None or _UNIT_ORDER[unit] >= previous:
            raise _not_a_duration(value)
        previous = _UNIT_ORDER[unit]
        amount = Fraction(match.group(1))
        if unit in _CLOCK_SECONDS:
            parts["seconds"] += amount * _CLOCK_SECONDS[unit]
        else:
            parts[unit] = amount
        pos = match.end()
    if previous == 10:  # nothing but whitespace or a sign
        raise _not_a_duration(value)
    written = WrittenDuration(value, parts["w"], parts["d"], parts["seconds"])
    written.measured()  # refuse now what no timedelta can hold
    return written


def parse_duration(
    text: str | int | float | timedelta, calendar: BusinessCalendar | None = None
) -> timedelta:
    """A duration as a timedelta: elapsed time, or ``calendar``'s business time when given.

    Reads what ``read_duration`` reads, and also a leading "-" (which ``format_duration``
    writes), so that ``parse_duration(format_duration(x, cal), cal) == x``. With a calendar, d
    is one working day of it and w one week of its hours (``BusinessCalendar.working_day``);
    without, d is 24h and w 7 days. A timedelta is returned unchanged. Used for command-line
    flags too, so "--interval 60" gets the same "60 has no unit" message as the matrix.
    """
    if isinstance(text, timedelta):
        return text
    negative = isinstance(text, str) and text.strip().startswith("-") and text.strip() != "-"
    try:
        written = read_duration(text.strip()[1:] if negative and isinstance(text, str) else text)
    except ValueError as exc:
        if negative or (isinstance(text, int | float) and text < 0):
            raise _not_a_duration(text) from None
        raise exc from None
    length = written.measured(calendar)
    return -length if negative else length


def format_duration(delta: timedelta, calendar: BusinessCalendar | None = None) -> str:
    """Write a duration the way an admin reads it: "1d 4h 30m", "45m", "30s", "0m", "-2h".

    Rounds to the nearest second (halves away from zero) and shows every non-zero unit from days
    down to seconds. Days are 24h, or with ``calendar`` (business time) working days of that
    calendar, so "2d 3h" is two working days and three hours, in the units an admin writes; a
    calendar whose working days differ in length gets hours only. Either way
    ``parse_duration(format_duration(x, cal), cal) == x`` for any whole-second ``x``. Weeks are
    not used: "10d" reads better than "1w 3d" in an SLA.
    """
    micro = delta // _US
    seconds = (abs(micro) + 500_000) // 1_000_000
    if seconds == 0:
        return "0m"
    day_seconds: int | None = 86400
    if calendar is not None:
        day_seconds = calendar.day_seconds()
    days = 0
    if day_seconds:
        days, seconds = divmod(seconds, day_seconds)
    hours, rest = divmod(seconds, 3600)
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

    # -- how long a working day is -------------------------------------------------------------

    def day_lengths(self) -> dict[int, timedelta]:
        """Nominal open hours of each working weekday (0=Mon), holidays and DST aside."""
        lengths: dict[int, timedelta] = {}
        for day, ranges in self.hours.items():
            total = sum((_clock(end, True) - _clock(start) for start, end in ranges), start=_ZERO)
            if total:
                lengths[day] = total
        return lengths

    def day_seconds(self) -> int | None:
        """A working day in whole seconds when every working day is that long, else None."""
        lengths = set(self.day_lengths().values())
        if len(lengths) != 1:
            return None
        (length,) = lengths
        return None if length % timedelta(seconds=1) else length // timedelta(seconds=1)

    def working_day(self, written: str = "1d") -> timedelta:
        """What "1d" of business time means here: one working day, when all are equally long.

        ValueError otherwise, naming the fix: with 8h Mon-Thu and 5h Fri, "2d" from a Thursday
        and from a Friday would be different lengths of business time, so the admin writes hours.
        """
        lengths = self.day_lengths()
        if not lengths:
            raise ValueError(f"{written}: calendar {self.name} has no business hours")
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"{written} of business time is ambiguous — write hours: calendar {self.name}'s "
                f"working days are {_describe_lengths(lengths)}"
            )
        return next(iter(lengths.values()))

    def working_week(self, written: str = "1w") -> timedelta:
        """What "1w" of business time means here: the open hours of one whole week."""
        lengths = self.day_lengths()
        if not lengths:
            raise ValueError(f"{written}: calendar {self.name} has no business hours")
        return sum(lengths.values(), start=_ZERO)

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
        return local_instant(day, at, self.tz)


def local_instant(day: date, at: time, tz: tzinfo) -> datetime:
    """The first instant (UTC) at which the wall clock of ``tz`` shows ``day at`` or later: the
    first occurrence of a repeated time, the moment of the jump for a skipped one."""
    wall = datetime.combine(day, at, tz)  # fold=0: the first occurrence if repeated
    first = wall.astimezone(_UTC)
    # Datetimes sharing a tzinfo compare by wall clock, so this asks "does `wall` exist?"
    if first.astimezone(tz) == wall:
        return first
    # `wall` was skipped by a forward jump: find the jump by bisection between the
    # readings under the offsets before and after it.
    lo, hi = sorted((first, wall.replace(fold=1).astimezone(_UTC)))
    if lo.astimezone(tz) >= wall:
        return lo
    while hi - lo > _US:
        mid = lo + (hi - lo) // 2
        if mid.astimezone(tz) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def _clock(at: time, end: bool = False) -> timedelta:
    """A wall-clock time as the time since midnight; an end of 00:00 is the day's end."""
    if end and at == _MIDNIGHT:
        return _ONE_DAY
    return timedelta(
        hours=at.hour, minutes=at.minute, seconds=at.second, microseconds=at.microsecond
    )


def _describe_lengths(lengths: Mapping[int, timedelta]) -> str:
    """ "8h Mon–Thu and 5h Fri": each length with the weekdays (runs joined) that have it."""
    by_length: dict[timedelta, list[int]] = {}
    for day in sorted(lengths):
        by_length.setdefault(lengths[day], []).append(day)
    groups = []
    for length, days in by_length.items():
        runs: list[list[int]] = []
        for day in days:
            if runs and runs[-1][-1] == day - 1:
                runs[-1].append(day)
            else:
                runs.append([day])
        names = ", ".join(
            _DAY_NAMES[r[0]].title() + (f"–{_DAY_NAMES[r[-1]].title()}" if len(r) > 1 else "")
            for r in runs
        )
        groups.append(f"{format_duration(length)} {names}")
    return " and ".join(groups) if len(groups) <= 2 else "; ".join(groups)


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
