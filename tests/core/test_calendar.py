"""Business calendars, read as the admin's specification of what business time means."""

from __future__ import annotations

import re
from collections.abc import Container
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from escbridge.calendar import (
    BusinessCalendar,
    build_holidays,
    format_duration,
    parse_duration,
    parse_weekly_hours,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
H = timedelta(hours=1)
M = timedelta(minutes=1)
S = timedelta(seconds=1)
US = timedelta(microseconds=1)


def office(
    tz: str = "Europe/Berlin", holidays: Container[date] = frozenset(), **spec: str
) -> BusinessCalendar:
    """A calendar from the admin's YAML form; Mon-Fri 09:00-17:00 unless told otherwise."""
    hours = parse_weekly_hours(spec or {"mon-fri": "09:00-17:00"})
    return BusinessCalendar("office", tz, hours, holidays)


def at(tz: tzinfo, *fields: int) -> datetime:
    return datetime(*fields, tzinfo=tz)  # type: ignore[arg-type, misc]


def real(later: datetime, earlier: datetime) -> timedelta:
    """Real time between two instants. (Python subtracts datetimes that share a ZoneInfo by
    their wall clocks, ignoring DST, so convert to UTC first.)"""
    return later.astimezone(UTC) - earlier.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("2h", timedelta(hours=2)),
        ("1d 4h", timedelta(hours=28)),
        ("1d4h", timedelta(hours=28)),
        ("45s", timedelta(seconds=45)),
        ("1w", timedelta(days=7)),
        ("1h30m", timedelta(minutes=90)),
        ("1h 30m", timedelta(minutes=90)),
        ("0m", timedelta(0)),
        ("2H", timedelta(hours=2)),
        ("  1D  4H ", timedelta(hours=28)),
        ("2 hours", timedelta(hours=2)),
        ("30 min", timedelta(minutes=30)),
        ("1 day 2 hours", timedelta(hours=26)),
        ("1.5h", timedelta(minutes=90)),
        ("1w 2d 3h 4m 5s", timedelta(days=9, hours=3, minutes=4, seconds=5)),
        ("-2h", timedelta(hours=-2)),
        ("-1h 30m", -timedelta(minutes=90)),
        (0, timedelta(0)),  # nothing needs no unit
        ("0", timedelta(0)),
        (timedelta(hours=3), timedelta(hours=3)),  # already parsed: unchanged
    ],
)
def test_parse_duration_reads_what_admins_write(
    text: str | int | float | timedelta, expected: timedelta
) -> None:
    assert parse_duration(text) == expected


def test_a_day_is_24_hours_and_a_week_7_days_in_elapsed_time() -> None:
    assert parse_duration("1d") == timedelta(hours=24)
    assert parse_duration("1w") == timedelta(hours=24 * 7)


@pytest.mark.parametrize(
    "text",
    [
        "2 hourss",  # typo in the unit
        "",  # nothing
        "   ",
        "h",  # a unit without a number
        "2x",  # unknown unit
        "1mo",  # months are not a fixed length
        "1h30",  # trailing number without a unit
        "1h 1h",  # a unit twice
        "30m 1h",  # units out of order
        "1h, 30m",  # separators other than spaces
        "1.h",
        "-",
        "--2h",
        "2h-",
        "1e3s",
        "9999999999w",  # beyond what a timedelta holds
    ],
)
def test_parse_duration_refuses_anything_else_with_one_clear_message(text: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_duration(text)
    assert str(excinfo.value) == f'"{text}" is not a duration (e.g. 90m, 2h, 1d 4h)'


@pytest.mark.parametrize("value", [True, None, float("nan"), float("inf"), [1]])
def test_parse_duration_refuses_values_that_are_not_durations(value: object) -> None:
    with pytest.raises(ValueError, match=r"is not a duration \(e\.g\. 90m, 2h, 1d 4h\)$"):
        parse_duration(value)  # type: ignore[arg-type]


def test_the_error_message_quotes_the_admins_text_exactly() -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_duration("2 hourss")
    assert str(excinfo.value) == '"2 hourss" is not a duration (e.g. 90m, 2h, 1d 4h)'


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(days=1, hours=4, minutes=30), "1d 4h 30m"),
        (timedelta(minutes=45), "45m"),
        (timedelta(seconds=30), "30s"),
        (timedelta(0), "0m"),
        (timedelta(hours=-2), "-2h"),
        (-timedelta(hours=1, minutes=30), "-1h 30m"),
        (timedelta(hours=1, seconds=5), "1h 5s"),  # seconds kept so it reads back exactly
        (timedelta(days=10), "10d"),  # no weeks: "10d" reads better in an SLA
        (timedelta(seconds=29, microseconds=500_000), "30s"),  # rounds to the second
        (timedelta(seconds=29, microseconds=499_999), "29s"),
        (timedelta(microseconds=400_000), "0m"),
        (-timedelta(microseconds=500_000), "-1s"),  # halves away from zero, symmetrically
    ],
)
def test_format_duration_is_human_and_compact(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_format_then_parse_gives_back_any_whole_second_duration(seconds: int) -> None:
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta


# --------------------------------------------------------------------------------------------
# Weekly hours
# --------------------------------------------------------------------------------------------

NINE_TO_FIVE = ((time(9), time(17)),)


def test_weekly_hours_example_from_the_admin_guide() -> None:
    hours = parse_weekly_hours(
        {"mon-fri": "09:00-17:00", "sat": ["10:00-12:00", "13:00-15:00"], "sun": "closed"}
    )
    assert hours == {
        0: NINE_TO_FIVE,
        1: NINE_TO_FIVE,
        2: NINE_TO_FIVE,
        3: NINE_TO_FIVE,
        4: NINE_TO_FIVE,
        5: ((time(10), time(12)), (time(13), time(15))),
        6: (),
    }


@pytest.mark.parametrize(
    ("spec", "open_days"),
    [
        ({"mon-fri": "09:00-17:00"}, {0, 1, 2, 3, 4}),
        ({"sat-sun": "09:00-17:00"}, {5, 6}),
        ({"mon,wed": "09:00-17:00"}, {0, 2}),
        ({"mon-tue, fri": "09:00-17:00"}, {0, 1, 4}),
        ({"daily": "09:00-17:00"}, set(range(7))),
        ({"everyday": "09:00-17:00"}, set(range(7))),
        ({"weekdays": "09:00-17:00"}, {0, 1, 2, 3, 4}),
        ({"weekend": "09:00-17:00"}, {5, 6}),
        ({"Monday": "09:00-17:00", "FRI": "09:00-17:00"}, {0, 4}),
        ({"fri-mon": "09:00-17:00"}, {4, 5, 6, 0}),  # ranges may wrap over the weekend
    ],
)
def test_weekly_hours_day_keys(spec: dict[str, str], open_days: set[int]) -> None:
    hours = parse_weekly_hours(spec)
    assert {day for day, ranges in hours.items() if ranges} == open_days
    assert set(hours) == set(range(7)), "every weekday is present; unnamed days are closed"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("09:00-17:00", NINE_TO_FIVE),
        ("9:00 - 17:00", NINE_TO_FIVE),
        ("22:00-24:00", ((time(22), time(0)),)),  # 24:00 is midnight at the end of the day
        ("22:00-00:00", ((time(22), time(0)),)),
        ("24h", ((time(0), time(0)),)),
        ("closed", ()),
        ("Closed", ()),
        ([], ()),
        (["13:00-17:00", "08:00-12:00"], ((time(8), time(12)), (time(13), time(17)))),
        (["08:00-12:00", "12:00-16:00"], ((time(8), time(12)), (time(12), time(16)))),  # touching
    ],
)
def test_weekly_hours_values(
    value: str | list[str], expected: tuple[tuple[time, time], ...]
) -> None:
    assert parse_weekly_hours({"mon": value})[0] == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mon-fri": "9-17"}, 'hours "mon-fri": "9-17" is not a time range (e.g. "09:00-17:00")'),
        (
            {"mon": "25:00-26:00"},
            'hours "mon": "25:00-26:00" is not a time range (e.g. "09:00-17:00")',
        ),
        (
            {"mon": "09:60-17:00"},
            'hours "mon": "09:60-17:00" is not a time range (e.g. "09:00-17:00")',
        ),
        (
            {"mon": "24:00-24:00"},
            'hours "mon": "24:00-24:00" is not a time range (e.g. "09:00-17:00")',
        ),
        ({"mon": "open"}, 'hours "mon": "open" is not a time range (e.g. "09:00-17:00")'),
        (
            {"mon": ["09:00-12:00", "lunch"]},
            'hours "mon": "lunch" is not a time range (e.g. "09:00-17:00")',
        ),
        (
            {"mon": "17:00-09:00"},
            'hours "mon": "17:00-09:00" ends before it starts; split hours that run past midnight '
            'over two days, e.g. "22:00-24:00" and "00:00-06:00" on the next day',
        ),
        (
            {"mon": "09:00-09:00"},
            'hours "mon": "09:00-09:00" is empty (write "closed" for no hours, "24h" for all day)',
        ),
        (
            {"mon": ["09:00-12:00", "11:00-13:00"]},
            'hours "mon": "09:00-12:00" overlaps "11:00-13:00"',
        ),
        ({"mon": ["24h", "09:00-10:00"]}, 'hours "mon": "00:00-24:00" overlaps "09:00-10:00"'),
        (
            {"mon-fri": "09:00-17:00", "fri": "10:00-12:00"},
            'hours "fri": fri already has hours from "mon-fri"',
        ),
        ({"mon,mon": "09:00-17:00"}, 'hours "mon,mon": mon is named twice'),
        (
            {"sat": ["closed", "10:00-12:00"]},
            'hours "sat": "closed" cannot be listed together with hours',
        ),
        (
            {"mon-fry": "09:00-17:00"},
            'hours "mon-fry": "mon-fry" is not a day (expected mon, tue, wed, thu, fri, sat, sun, '
            "a range such as mon-fri, a list such as sat,sun, or daily)",
        ),
        (
            {"mon,": "09:00-17:00"},
            'hours "mon,": "" is not a day (expected mon, tue, wed, thu, fri, sat, sun, '
            "a range such as mon-fri, a list such as sat,sun, or daily)",
        ),
        (
            {"mon": 9},
            'hours "mon": expected a time range such as "09:00-17:00", a list of them, '
            '"closed" or "24h", got 9',
        ),
        (
            {"sun": None},
            'hours "sun": expected a time range such as "09:00-17:00", a list of them, '
            '"closed" or "24h", got None',
        ),
    ],
)
def test_weekly_hours_errors_name_the_key_the_value_and_what_is_expected(
    spec: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_weekly_hours(spec)  # type: ignore[arg-type]
    assert str(excinfo.value) == message


def test_weekly_hours_must_be_a_mapping() -> None:
    with pytest.raises(ValueError, match=r"^hours: expected a mapping of days to hours"):
        parse_weekly_hours(["mon-fri", "09:00-17:00"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Holidays
# --------------------------------------------------------------------------------------------


def test_holidays_combine_explicit_dates_and_the_country() -> None:
    holidays = build_holidays("DE", None, [date(2026, 12, 24)])
    assert date(2026, 12, 24) in holidays  # explicit: Christmas Eve is not a public holiday
    assert date(2026, 12, 25) in holidays  # Christmas Day
    assert date(2026, 12, 26) in holidays  # Second Day of Christmas
    assert date(2026, 12, 23) not in holidays


def test_us_holidays_include_the_observed_independence_day() -> None:
    holidays = build_holidays("US", None, [])
    assert date(2026, 7, 3) in holidays  # Friday, observed for Saturday the 4th
    assert date(2026, 7, 4) in holidays


def test_holidays_work_for_any_year() -> None:
    holidays = build_holidays("DE", None, [])
    assert date(1999, 12, 25) in holidays
    assert date(2087, 12, 25) in holidays


def test_subdivision_adds_regional_holidays() -> None:
    epiphany = date(2026, 1, 6)
    assert epiphany not in build_holidays("DE", None, [])
    assert epiphany in build_holidays("DE", "BY", [])
    assert epiphany in build_holidays("de", "by", [])  # codes are not case-sensitive


def test_explicit_dates_alone_need_no_country() -> None:
    holidays = build_holidays(None, None, [date(2026, 5, 1)])
    assert date(2026, 5, 1) in holidays
    assert date(2026, 12, 25) not in holidays


def test_unknown_country_is_named() -> None:
    with pytest.raises(ValueError, match=r'^holiday country "XX" is not known'):
        build_holidays("XX", None, [])


def test_unknown_subdivision_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ValueError) as excinfo:
        build_holidays("DE", "ZZ", [])
    message = str(excinfo.value)
    assert message.startswith('holiday subdivision "ZZ" is not known for country "DE" (one of ')
    assert "BY" in message


def test_subdivision_without_country_is_an_error() -> None:
    with pytest.raises(ValueError, match=r'^holiday subdivision "BY" needs a country$'):
        build_holidays(None, "BY", [])


# --------------------------------------------------------------------------------------------
# Building a calendar
# --------------------------------------------------------------------------------------------


def test_unknown_time_zone_is_named() -> None:
    for zone in ("Mars/Olympus_Mons", "", "../etc/passwd", "Europe"):
        with pytest.raises(ValueError, match=f'time zone "{re.escape(zone)}" is not known'):
            BusinessCalendar("support", zone, {})


def test_calendar_exposes_name_and_zone() -> None:
    calendar = office("Asia/Tokyo")
    assert calendar.name == "office"
    assert calendar.tz == TOKYO


def test_calendar_refuses_overlapping_or_backwards_hours() -> None:
    with pytest.raises(ValueError, match="mon 09:00-12:00 overlaps 11:00-13:00"):
        BusinessCalendar("c", "UTC", {0: [(time(9), time(12)), (time(11), time(13))]})
    with pytest.raises(ValueError, match="mon 17:00-09:00 ends before it starts"):
        BusinessCalendar("c", "UTC", {0: [(time(17), time(9))]})
    with pytest.raises(ValueError, match="weekday 7 is not 0"):
        BusinessCalendar("c", "UTC", {7: [(time(9), time(17))]})


def test_naive_datetimes_are_refused() -> None:
    calendar = office()
    naive = datetime(2026, 3, 2, 10)
    aware = at(BERLIN, 2026, 3, 2, 10)
    with pytest.raises(ValueError, match="has no time zone"):
        calendar.elapsed(naive, aware)
    with pytest.raises(ValueError, match="has no time zone"):
        calendar.elapsed(aware, naive)
    with pytest.raises(ValueError, match="has no time zone"):
        calendar.add(naive, H)
    with pytest.raises(ValueError, match="has no time zone"):
        calendar.is_open(naive)
    with pytest.raises(ValueError, match="has no time zone"):
        calendar.next_open(naive)
    with pytest.raises(ValueError, match="has no time zone"):
        BusinessCalendar.always_open().elapsed(naive, aware)


# --------------------------------------------------------------------------------------------
# Known cases an admin would check
# --------------------------------------------------------------------------------------------


def test_friday_afternoon_to_monday_morning_is_two_business_hours() -> None:
    calendar = office()
    assert calendar.elapsed(at(BERLIN, 2026, 3, 6, 16), at(BERLIN, 2026, 3, 9, 10)) == 2 * H


def test_a_ticket_opened_on_saturday_accrues_nothing_until_monday_nine() -> None:
    calendar = office()
    opened = at(BERLIN, 2026, 3, 7, 11)  # Saturday
    assert calendar.elapsed(opened, at(BERLIN, 2026, 3, 8, 23, 59)) == timedelta(0)
    assert calendar.elapsed(opened, at(BERLIN, 2026, 3, 9, 9)) == timedelta(0)
    assert calendar.elapsed(opened, at(BERLIN, 2026, 3, 9, 9, 30)) == 30 * M
    assert calendar.next_open(opened) == at(BERLIN, 2026, 3, 9, 9)
    assert calendar.add(opened, 4 * H) == at(BERLIN, 2026, 3, 9, 13)


def test_hours_are_half_open_open_at_nine_closed_at_five() -> None:
    calendar = office()
    assert not calendar.is_open(at(BERLIN, 2026, 3, 2, 8, 59, 59))
    assert calendar.is_open(at(BERLIN, 2026, 3, 2, 9))
    assert calendar.is_open(at(BERLIN, 2026, 3, 2, 16, 59, 59, 999_999))
    assert not calendar.is_open(at(BERLIN, 2026, 3, 2, 17))
    assert not calendar.is_open(at(BERLIN, 2026, 3, 7, 12))  # Saturday


def test_elapsed_backwards_is_negative() -> None:
    calendar = office()
    friday, monday = at(BERLIN, 2026, 3, 6, 16), at(BERLIN, 2026, 3, 9, 10)
    assert calendar.elapsed(monday, friday) == -2 * H
    assert calendar.elapsed(monday, monday) == timedelta(0)


def test_explicit_holiday_counts_zero() -> None:
    calendar = office(holidays=build_holidays(None, None, [date(2026, 3, 9)]))
    # Fri 16:00 -> Tue 10:00 with Monday off: 1h Friday + 1h Tuesday.
    assert calendar.elapsed(at(BERLIN, 2026, 3, 6, 16), at(BERLIN, 2026, 3, 10, 10)) == 2 * H
    assert not calendar.is_open(at(BERLIN, 2026, 3, 9, 12))


def test_german_christmas_counts_zero() -> None:
    calendar = office(holidays=build_holidays("DE", None, []))
    # Thu 24 Dec 16:00 -> Mon 28 Dec 10:00: 25th (Fri) is Christmas Day, then the weekend.
    assert calendar.elapsed(at(BERLIN, 2026, 12, 24, 16), at(BERLIN, 2026, 12, 28, 10)) == 2 * H


def test_us_observed_independence_day_counts_zero() -> None:
    calendar = office("America/New_York", holidays=build_holidays("US", None, []))
    # Thu 2 Jul 16:00 -> Mon 6 Jul 10:00: Friday the 3rd is the observed holiday.
    start, end = at(NEW_YORK, 2026, 7, 2, 16), at(NEW_YORK, 2026, 7, 6, 10)
    assert calendar.elapsed(start, end) == 2 * H
    assert calendar.next_open(at(NEW_YORK, 2026, 7, 2, 17)) == at(NEW_YORK, 2026, 7, 6, 9)


def test_a_holiday_closes_the_whole_local_day_even_on_a_24h_calendar() -> None:
    calendar = office(holidays=build_holidays(None, None, [date(2026, 3, 4)]), daily="24h")
    start = at(BERLIN, 2026, 3, 3, 12)
    assert calendar.elapsed(start, at(BERLIN, 2026, 3, 5, 12)) == 24 * H


def test_add_across_weekend_and_holiday_lands_on_the_right_local_time() -> None:
    calendar = office(holidays=build_holidays("DE", None, []))
    # Thu 24 Dec 15:00 + 4h: 2h on Thursday, Fri 25 holiday, weekend, 2h on Monday.
    due = calendar.add(at(BERLIN, 2026, 12, 24, 15), 4 * H)
    assert due == at(BERLIN, 2026, 12, 28, 11)
    assert due.utcoffset() == timedelta(0), "results are in UTC"
    # And backwards: 4h before Monday 11:00 is Thursday 15:00.
    assert calendar.add(at(BERLIN, 2026, 12, 28, 11), -4 * H) == at(BERLIN, 2026, 12, 24, 15)


def test_a_limit_that_runs_out_at_closing_time_falls_due_at_closing_time() -> None:
    calendar = office()
    assert calendar.add(at(BERLIN, 2026, 3, 2, 13), 4 * H) == at(BERLIN, 2026, 3, 2, 17)
    # ... and backwards the latest instant: Tuesday 09:00, not Monday 17:00.
    assert calendar.add(at(BERLIN, 2026, 3, 3, 10), -H) == at(BERLIN, 2026, 3, 3, 9)


def test_add_zero_is_the_start_itself() -> None:
    calendar = office()
    saturday = at(BERLIN, 2026, 3, 7, 12)
    assert calendar.add(saturday, timedelta(0)) == saturday


def test_a_calendar_with_no_hours_terminates_with_a_clear_error() -> None:
    calendar = BusinessCalendar("never", "UTC", parse_weekly_hours({"daily": "closed"}))
    start = at(UTC, 2026, 3, 2)
    assert calendar.elapsed(start, start + timedelta(days=400)) == timedelta(0)
    assert not calendar.is_open(start)
    with pytest.raises(ValueError) as excinfo:
        calendar.add(start, H)
    assert str(excinfo.value) == "calendar never has no business hours"
    with pytest.raises(ValueError, match=r"^calendar never has no business hours$"):
        calendar.add(start, -H)
    with pytest.raises(ValueError, match=r"^calendar never has no business hours$"):
        calendar.next_open(start)


def test_hours_but_every_day_a_holiday_also_terminates() -> None:
    class EveryDay:
        def __contains__(self, day: object) -> bool:
            return True

    calendar = BusinessCalendar(
        "blocked", "UTC", parse_weekly_hours({}) | {0: NINE_TO_FIVE}, EveryDay()
    )
    with pytest.raises(ValueError, match=r"^calendar blocked has no business hours"):
        calendar.add(at(UTC, 2026, 3, 2), H)


# DST: Europe/Berlin springs forward 2026-03-29 02:00->03:00 and falls back 2026-10-25 03:00->02:00;
# America/New_York springs forward 2026-03-08 02:00->03:00 and falls back 2026-11-01 02:00->01:00.
DST_DAYS = [
    (BERLIN, date(2026, 3, 29), 23),
    (BERLIN, date(2026, 10, 25), 25),
    (NEW_YORK, date(2026, 3, 8), 23),
    (NEW_YORK, date(2026, 11, 1), 25),
]


@pytest.mark.parametrize(("zone", "day", "hours"), DST_DAYS)
def test_dst_day_on_a_24h_calendar_accrues_its_real_length(
    zone: ZoneInfo, day: date, hours: int
) -> None:
    calendar = office(zone.key, daily="24h")
    start = datetime.combine(day, time(0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0), zone)
    assert calendar.elapsed(start, end) == hours * H


@pytest.mark.parametrize(("zone", "day", "hours"), DST_DAYS)
def test_dst_day_keeps_nine_to_five_at_eight_hours(zone: ZoneInfo, day: date, hours: int) -> None:
    calendar = office(zone.key, daily="09:00-17:00")
    start = datetime.combine(day, time(0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0), zone)
    assert calendar.elapsed(start, end) == 8 * H
    assert calendar.add(datetime.combine(day, time(9), zone), 8 * H) == datetime.combine(
        day, time(17), zone
    )


def test_hours_spanning_the_skipped_hour_count_real_time() -> None:
    calendar = office(daily="01:00-04:00")
    spring = calendar.elapsed(at(BERLIN, 2026, 3, 29), at(BERLIN, 2026, 3, 30))
    autumn = calendar.elapsed(at(BERLIN, 2026, 10, 25), at(BERLIN, 2026, 10, 26))
    assert (spring, autumn) == (2 * H, 4 * H)


def test_a_skipped_local_time_means_the_moment_the_clocks_jump() -> None:
    # 02:30 does not exist on 29 March in Berlin; opening "at 02:30" means opening at 03:00 CEST.
    calendar = office(daily="02:30-05:00")
    assert calendar.next_open(at(BERLIN, 2026, 3, 29, 0)) == datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert calendar.elapsed(at(BERLIN, 2026, 3, 29), at(BERLIN, 2026, 3, 30)) == 2 * H
    # Hours entirely inside the skipped hour never happen that day.
    inside = office(daily="02:15-02:45")
    assert inside.elapsed(at(BERLIN, 2026, 3, 29), at(BERLIN, 2026, 3, 30)) == timedelta(0)


def test_a_repeated_local_time_means_its_first_occurrence() -> None:
    # 02:00-02:30 happens twice on 25 October in Berlin; only the first (CEST) one is open.
    calendar = office(daily="02:00-02:30")
    assert calendar.elapsed(at(BERLIN, 2026, 10, 25), at(BERLIN, 2026, 10, 26)) == 30 * M
    assert calendar.is_open(datetime(2026, 10, 25, 0, 15, tzinfo=UTC))  # 02:15 CEST
    assert not calendar.is_open(datetime(2026, 10, 25, 1, 15, tzinfo=UTC))  # 02:15 CET


def test_same_instants_give_different_business_time_in_tokyo_and_los_angeles() -> None:
    # Monday 2 March 2026, 00:00-24:00 UTC.
    start, end = at(UTC, 2026, 3, 2), at(UTC, 2026, 3, 3)
    tokyo = office("Asia/Tokyo")  # 09:00-17:00 JST = 00:00-08:00 UTC: all of it
    los_angeles = office("America/Los_Angeles")  # 09:00 PST = 17:00 UTC: 7h before midnight UTC
    assert tokyo.elapsed(start, end) == 8 * H
    assert los_angeles.elapsed(start, end) == 7 * H
    assert tokyo.is_open(at(TOKYO, 2026, 3, 2, 10))
    assert not los_angeles.is_open(at(TOKYO, 2026, 3, 2, 10))  # Sunday 17:00 in Los Angeles
    assert los_angeles.add(start, H) == at(LOS_ANGELES, 2026, 3, 2, 10)


def test_always_open_is_wall_clock_time() -> None:
    calendar = BusinessCalendar.always_open()
    start, end = at(BERLIN, 2026, 3, 29), at(BERLIN, 2026, 3, 30)
    assert calendar.name == "24x7"
    assert calendar.elapsed(start, end) == 23 * H
    assert calendar.elapsed(end, start) == -23 * H
    assert calendar.add(start, 23 * H) == end
    assert calendar.is_open(start)
    assert calendar.next_open(start) == start


def test_spans_of_years_in_either_direction_agree_however_the_cache_was_filled() -> None:
    holidays = build_holidays("DE", "BY", [])
    forward, backward = office(holidays=holidays), office(holidays=holidays)
    points = [at(BERLIN, year, 6, 15, 12) for year in range(2020, 2031)]
    forward_results = [forward.elapsed(points[0], p) for p in points]
    backward_results = [backward.elapsed(points[0], p) for p in reversed(points)][::-1]
    assert forward_results == backward_results
    # About 250 working days of 8 hours a year in Bavaria.
    per_year = forward_results[-1] / 10
    assert 240 * 8 * H < per_year < 255 * 8 * H


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
ZONE_INFOS = [ZoneInfo(key) for key in ZONES]


def _transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """UTC instants in `year` at which `zone` changes its offset (found by bisection)."""
    found = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    while day.year == year:
        lo, hi = 0, 86400  # seconds into the day: offset differs at hi, not at lo
        if day.astimezone(zone).utcoffset() != (day + hi * S).astimezone(zone).utcoffset():
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if (day + mid * S).astimezone(zone).utcoffset() == day.astimezone(zone).utcoffset():
                    lo = mid
                else:
                    hi = mid
            found.append(day + hi * S)
        day += timedelta(days=1)
    return found


TRANSITIONS = [t for zone in ZONE_INFOS for t in _transitions(zone, 2026)]


@st.composite
def weekly_schedules(
    draw: st.DrawFn, minutes: tuple[int, ...] = tuple(range(0, 24 * 60 + 1, 30))
) -> dict[int, tuple[tuple[time, time], ...]]:
    """Random weekly hours: each day closed or up to three intervals on the given minute grid."""
    week = {}
    for day in range(7):
        points = sorted(draw(st.lists(st.sampled_from(minutes), max_size=6, unique=True)))
        points = points[: len(points) // 2 * 2]
        week[day] = tuple(
            (time(s // 60, s % 60), time(0) if e == 24 * 60 else time(e // 60, e % 60))
            for s, e in zip(points[::2], points[1::2], strict=True)
        )
    return week


@st.composite
def calendars(draw: st.DrawFn, minutes: tuple[int, ...] | None = None) -> BusinessCalendar:
    zone = draw(st.sampled_from(ZONES))
    hours = draw(weekly_schedules() if minutes is None else weekly_schedules(minutes))
    holidays = draw(st.sets(st.dates(date(2025, 12, 1), date(2027, 1, 31)), max_size=8))
    return BusinessCalendar("random", zone, hours, frozenset(holidays))


def _instants(window_days: int = 14) -> st.SearchStrategy[datetime]:
    """Aware instants in a random zone: anywhere in 2026, or close to a DST change."""
    anywhere = st.datetimes(
        min_value=datetime(2026, 1, 1),
        max_value=datetime(2026, 12, 31),
        timezones=st.sampled_from(ZONE_INFOS),
    )
    near_dst = st.builds(
        lambda base, offset, zone: (base + offset).astimezone(zone),
        st.sampled_from(TRANSITIONS),
        st.timedeltas(-timedelta(days=window_days), timedelta(days=window_days)),
        st.sampled_from(ZONE_INFOS),
    )
    return st.one_of(anywhere, near_dst)


instants = _instants()
PROPERTY = settings(max_examples=100, deadline=None)


@PROPERTY
@given(calendars(), instants, instants, instants)
def test_elapsed_is_additive(
    calendar: BusinessCalendar, a: datetime, b: datetime, c: datetime
) -> None:
    assert calendar.elapsed(a, b) + calendar.elapsed(b, c) == calendar.elapsed(a, c)


@PROPERTY
@given(calendars(), instants, instants)
def test_elapsed_is_antisymmetric(calendar: BusinessCalendar, a: datetime, b: datetime) -> None:
    assert calendar.elapsed(a, b) == -calendar.elapsed(b, a)


@PROPERTY
@given(calendars(), instants, instants)
def test_elapsed_is_between_zero_and_wall_clock(
    calendar: BusinessCalendar, a: datetime, b: datetime
) -> None:
    a, b = sorted((a.astimezone(UTC), b.astimezone(UTC)))
    assert timedelta(0) <= calendar.elapsed(a, b) <= b - a


@PROPERTY
@given(calendars(), instants, instants, st.sampled_from(ZONE_INFOS), st.sampled_from(ZONE_INFOS))
def test_results_do_not_depend_on_the_zone_inputs_are_written_in(
    calendar: BusinessCalendar, a: datetime, b: datetime, zone_a: ZoneInfo, zone_b: ZoneInfo
) -> None:
    assert calendar.elapsed(a.astimezone(zone_a), b.astimezone(zone_b)) == calendar.elapsed(a, b)
    assert calendar.is_open(a.astimezone(zone_a)) == calendar.is_open(a)
    if any(calendar.hours.values()):
        assert calendar.add(a.astimezone(zone_a), H) == calendar.add(a, H)


@PROPERTY
@given(calendars(), instants, st.timedeltas(timedelta(0), timedelta(days=20)))
def test_add_is_the_earliest_instant_with_that_much_business_time(
    calendar: BusinessCalendar, start: datetime, delta: timedelta
) -> None:
    assume(any(calendar.hours.values()))
    due = calendar.add(start, delta)
    assert due.utcoffset() == timedelta(0)
    assert calendar.elapsed(start, due) == delta
    if delta:
        assert calendar.elapsed(start, due - US) < delta, "nothing earlier will do"
        assert calendar.is_open(due) or calendar.is_open(due - US), (
            "open, or the end of an interval"
        )


@PROPERTY
@given(calendars(), instants, st.timedeltas(timedelta(0), timedelta(days=20)))
def test_add_backwards_is_the_latest_instant_with_that_much_business_time(
    calendar: BusinessCalendar, start: datetime, delta: timedelta
) -> None:
    assume(any(calendar.hours.values()))
    since = calendar.add(start, -delta)
    assert since <= start
    assert calendar.elapsed(since, start) == delta
    if delta:
        assert calendar.elapsed(since + US, start) < delta, "nothing later will do"
        assert calendar.is_open(since)


@PROPERTY
@given(calendars(), instants)
def test_next_open_is_the_first_open_instant(calendar: BusinessCalendar, start: datetime) -> None:
    assume(any(calendar.hours.values()))
    opens = calendar.next_open(start)
    assert opens >= start
    assert calendar.is_open(opens)
    assert calendar.elapsed(start, opens) == timedelta(0)


@PROPERTY
@given(instants, instants)
def test_always_open_equals_wall_clock(a: datetime, b: datetime) -> None:
    calendar = BusinessCalendar.always_open()
    assert calendar.elapsed(a, b) == real(b, a)
    # (compared in UTC: Python never calls a skipped or repeated local time equal across zones)
    assert calendar.add(a, real(b, a)) == b.astimezone(UTC)


# An independent oracle: count minutes whose local wall-clock time falls in the day's hours.
# Hours avoid 00:30-03:00, where these zones skip or repeat local times, so the wall-clock
# reading and the instant-based intervals must agree exactly.
SAFE_MINUTES = (0, *range(3 * 60, 24 * 60 + 1, 30))


def _open_by_wall_clock(calendar: BusinessCalendar, instant: datetime) -> bool:
    local = instant.astimezone(calendar.tz)
    if local.date() in calendar.holidays:
        return False
    clock = local.time()
    return any(
        start <= clock and (end == time(0) or clock < end)
        for start, end in calendar.hours[local.weekday()]
    )


@settings(max_examples=60, deadline=None)
@given(
    calendars(SAFE_MINUTES),
    st.sampled_from(TRANSITIONS),
    st.integers(-3 * 24 * 60, 3 * 24 * 60),
    st.integers(0, 4 * 24 * 60),
)
def test_elapsed_matches_counting_open_minutes_on_the_wall_clock(
    calendar: BusinessCalendar, transition: datetime, offset: int, length: int
) -> None:
    start = transition.replace(second=0) + offset * M
    open_minutes = sum(_open_by_wall_clock(calendar, start + k * M) for k in range(length))
    assert calendar.elapsed(start, start + length * M) == open_minutes * M
    assert calendar.is_open(start) == _open_by_wall_clock(calendar, start)
