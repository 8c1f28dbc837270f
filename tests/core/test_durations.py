"""Durations as an admin writes them in a matrix, and as escbridge writes them back.

A number without a unit and a negative duration are refused at load with file:line and the fix.
In business time ``d`` is a working day and ``w`` a working week of the calendar that measures
the duration; in calendar time they are 24h and 7 days. What ``explain``, the matrix views and
the rule descriptions print reads back to the same length in the same calendar.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matrix_helpers import LADDER, decide, engine, matrix, outcome, record, rule_yaml, ticket

from escbridge.calendar import (
    BusinessCalendar,
    format_duration,
    parse_duration,
    parse_weekly_hours,
    read_duration,
)
from escbridge.conditions.describe import describe_condition
from escbridge.errors import MatrixError
from escbridge.matrix import describe_expected, parse_matrix
from escbridge.views.chart import matrix_html

H = timedelta(hours=1)
REPO = Path(__file__).resolve().parents[2]


def calendar(**hours: str) -> BusinessCalendar:
    return BusinessCalendar(
        "office", "UTC", parse_weekly_hours(hours or {"mon-fri": "09:00-17:00"})
    )


def problems(text: str) -> list[str]:
    with pytest.raises(MatrixError) as caught:
        parse_matrix(text, "matrix.yaml")
    return [str(p) for p in caught.value.problems]


def with_level_times(response: str, resolution: str = "8h", extra: str = "") -> str:
    """The test ladder with l1's expected times replaced."""
    text = LADDER.replace("    response: 4h\n    resolution: 1d\n", "", 1)
    text = text.replace(
        "    groups: {zendesk: Support, freshdesk: Frontline}\n",
        "    groups: {zendesk: Support, freshdesk: Frontline}\n"
        f"    response: {response}\n    resolution: {resolution}\n{extra}",
        1,
    )
    return text + "rules: []\n"


# --- refused at load, with the fix ------------------------------------------------------------


class TestRefused:
    def test_a_bare_number_is_refused_with_the_units_to_choose_from(self) -> None:
        assert problems(with_level_times("4")) == [
            "matrix.yaml:14 levels[0].response: 4 has no unit — write 4h, 4m or 4s"
        ]

    def test_a_quoted_number_and_a_decimal_are_refused_the_same_way(self) -> None:
        assert problems(with_level_times('"4"', "1.5")) == [
            "matrix.yaml:14 levels[0].response: 4 has no unit — write 4h, 4m or 4s",
            "matrix.yaml:15 levels[0].resolution: 1.5 has no unit — write 1.5h, 1.5m or 1.5s",
        ]

    def test_a_negative_duration_is_refused(self) -> None:
        assert problems(with_level_times("-1h")) == [
            "matrix.yaml:14 levels[0].response: -1h must not be negative"
        ]

    def test_the_cooldown_is_refused_alike(self) -> None:
        text = LADDER.replace("cooldown: 30m", "cooldown: 4") + "rules: []\n"
        assert problems(text) == [
            "matrix.yaml:36 limits.cooldown: 4 has no unit — write 4h, 4m or 4s"
        ]

    def test_time_conditions_are_refused_alike(self) -> None:
        text = LADDER + "rules:\n"
        text += rule_yaml("{idle: {over: 4}}") + rule_yaml("{age: -2h}", rule_id="r2")
        assert problems(text) == [
            "matrix.yaml:42 rules[0].when.idle.over: 4 has no unit — write 4h, 4m or 4s",
            "matrix.yaml:46 rules[1].when.age.over: -2h must not be negative",
        ]

    def test_zero_needs_no_unit(self) -> None:
        text = LADDER.replace("cooldown: 30m", "cooldown: 0") + "rules:\n"
        m = parse_matrix(text + rule_yaml("{overdue: 0}"), "matrix.yaml")
        assert m.cooldown == timedelta(0)

    def test_command_line_durations_get_the_same_message(self) -> None:
        with pytest.raises(ValueError) as caught:
            parse_duration("60")
        assert str(caught.value) == "60 has no unit — write 60h, 60m or 60s"


# --- what d and w mean --------------------------------------------------------------------------


class TestBusinessDays:
    def test_a_business_day_is_a_working_day_of_the_calendar(self) -> None:
        office = calendar()  # 09:00-17:00 Mon-Fri
        assert parse_duration("2d", office) == 16 * H
        assert parse_duration("1w", office) == 40 * H
        assert parse_duration("1d 4h", office) == 12 * H
        assert parse_duration("1.5d", office) == 12 * H

    def test_in_calendar_time_a_day_is_24_hours(self) -> None:
        assert parse_duration("2d") == 48 * H
        assert parse_duration("1w") == 168 * H

    def test_a_level_counts_its_expected_times_in_working_days(self) -> None:
        m = parse_matrix(with_level_times("1d", "1w"), "matrix.yaml")  # 09:00-17:00 Mon-Fri
        assert (m.levels[0].response, m.levels[0].resolution) == (8 * H, 40 * H)

    def test_in_calendar_time_a_level_counts_24_hour_days(self) -> None:
        m = parse_matrix(with_level_times("1d", "1w", "    time: calendar\n"), "matrix.yaml")
        assert (m.levels[0].response, m.levels[0].resolution) == (24 * H, 168 * H)

    def test_the_cooldown_is_elapsed_time(self) -> None:
        text = LADDER.replace("cooldown: 30m", "cooldown: 1d") + "rules: []\n"
        assert parse_matrix(text, "matrix.yaml").cooldown == 24 * H

    def test_a_condition_counts_days_of_its_own_calendar(self) -> None:
        m = matrix(
            rule_yaml("{idle: {over: 2d}}"),
            rule_yaml("{idle: {over: 2d, time: calendar}}", rule_id="r2"),
        )
        assert [r.condition.over for r in m.rules] == [16 * H, 48 * H]  # type: ignore[union-attr]

    def test_a_day_is_ambiguous_when_working_days_differ_and_the_message_says_why(self) -> None:
        short_friday = LADDER.replace(
            'hours: {mon-fri: "09:00-17:00"}',
            'hours: {mon-thu: "09:00-17:00", fri: "09:00-14:00"}',
        )
        text = short_friday.replace("resolution: 1d", "resolution: 2d") + "rules:\n"
        text += rule_yaml("{idle: 1d}")
        assert problems(text) == [
            "matrix.yaml:15 levels[0].resolution: 2d of business time is ambiguous — write "
            "hours: calendar office's working days are 8h Mon–Thu and 5h Fri",
            "matrix.yaml:42 rules[0].when.idle.over: 1d of business time is ambiguous — write "
            "hours: calendar office's working days are 8h Mon–Thu and 5h Fri",
        ]

    def test_a_week_is_one_week_of_hours_even_when_days_differ(self) -> None:
        short_friday = calendar(**{"mon-thu": "09:00-17:00", "fri": "09:00-14:00"})
        assert parse_duration("1w", short_friday) == 37 * H
        # One week of business time from a Wednesday ends the next Wednesday, same time.
        start = datetime(2026, 3, 11, 10, tzinfo=UTC)
        assert short_friday.add(start, 37 * H) == start + timedelta(days=7)

    def test_level_overdue_counts_days_of_the_ladder_level_it_measures(self) -> None:
        # l1 counts office time (8h days); l2 the berlin calendar (10h days); l3 calendar time.
        head = LADDER.replace(
            "    min_priority: high\n    resolution: 8h\n",
            "    min_priority: high\n    resolution: 8h\n    calendar: berlin\n",
            1,
        ).replace(
            "    min_priority: urgent\n    resolution: 4h\n",
            "    min_priority: urgent\n    resolution: 4h\n    time: calendar\n",
            1,
        )
        head = head.replace(
            "calendars:\n",
            "calendars:\n  berlin:\n    timezone: Europe/Berlin\n"
            '    hours: {mon-fri: "08:00-18:00"}\n',
            1,
        )
        m = matrix(rule_yaml("{level_overdue: 1d}", to="next"), head=head)
        # The ticket reached l2 on Tuesday 10 March 09:00 UTC; berlin is open 07:00-17:00 UTC.
        # Its resolution (8h) runs out at 17:00 that day; one berlin day (10h) more is Wednesday
        # 17:00 (closing time), so "over 1d" first holds when Thursday opens. Counted in the
        # office's 8h days it would have held on Wednesday afternoon.
        reached = datetime(2026, 3, 10, 9, tzinfo=UTC)
        t = ticket(priority="high", group="Senior Support", tags=["escbridge_l2"])
        history = [record(reached, "l2")]
        due = engine(m).next_due(t, history, reached)
        assert due == datetime(2026, 3, 12, 7, 0, 0, 1, tzinfo=UTC)
        lines = outcome(decide(m, t, history, now=due), "r").details
        assert lines == (
            "✓ time at the current level beyond its expected resolution is just over 1d of "
            "business time (berlin), over 1d",
        )


# --- written back in the units the admin wrote ----------------------------------------------------


class TestOutput:
    def test_explain_prints_working_days(self) -> None:
        m = matrix(rule_yaml("{idle: {over: 2d}}"))
        # Idle since Monday 9 March 09:00: Mon 8h + Tue 8h + Wed 09-15 6h = 2 working days 6h.
        t = ticket(updated_at=datetime(2026, 3, 9, 9, tzinfo=UTC))
        (line,) = outcome(decide(m, t), "r").details
        assert line == (
            "✓ time since the ticket was last updated is 2d 6h of business time (office), over 2d"
        )

    def test_explain_says_what_is_left_in_working_days(self) -> None:
        m = matrix(rule_yaml("{idle: {over: 1w}}"))
        t = ticket(updated_at=datetime(2026, 3, 9, 9, tzinfo=UTC))
        (line,) = outcome(decide(m, t), "r").details
        assert line.endswith("is 2d 6h of business time (office), not over 1w (2d 2h to go)")

    def test_a_bound_reads_as_written_and_the_value_in_working_days(self) -> None:
        m = matrix(rule_yaml("{idle: {over: 8h}}"))  # 8h is one working day here
        t = ticket(updated_at=datetime(2026, 3, 9, 9, tzinfo=UTC))
        (line,) = outcome(decide(m, t), "r").details
        assert line.endswith("is 2d 6h of business time (office), over 8h")

    def test_levels_and_descriptions_print_what_was_written(self) -> None:
        m = parse_matrix(with_level_times("1d", "2d 3h"), "matrix.yaml")
        assert describe_expected(m.levels[0]) == "response 1d, resolution 2d 3h (business time)"
        page = matrix_html(m)
        assert "2d 3h" in page
        assert "1d = a working day of 8h" in page  # the chart says what a day is there
        l2 = m.levels[1]  # resolution: 8h, one working day of the office calendar
        assert describe_expected(l2) == "resolution 8h (business time)"
        rule = matrix(rule_yaml("{idle: {over: 2d}}")).rules[0]
        assert (
            describe_condition(rule.condition) == "time since the ticket was last updated over 2d"
        )

    def test_a_calendar_with_uneven_days_prints_hours(self) -> None:
        short_friday = calendar(**{"mon-thu": "09:00-17:00", "fri": "09:00-14:00"})
        assert format_duration(30 * H, short_friday) == "30h"
        assert format_duration(30 * H) == "1d 6h"

    @settings(max_examples=200, deadline=None)
    @given(
        st.integers(min_value=-(10**8), max_value=10**8),
        st.sampled_from(
            [
                None,
                {"mon-fri": "09:00-17:00"},
                {"mon-fri": "09:00-17:30"},
                {"mon-sat": ["08:00-12:00", "13:00-17:45"]},
                {"daily": "24h"},
                {"mon-thu": "09:00-17:00", "fri": "09:00-14:00"},
            ]
        ),
    )
    def test_format_and_parse_round_trip_in_every_calendar(
        self, seconds: int, hours: dict[str, str] | None
    ) -> None:
        cal = None if hours is None else calendar(**hours)
        delta = timedelta(seconds=seconds)
        assert parse_duration(format_duration(delta, cal), cal) == delta


# --- the matrices escbridge ships -------------------------------------------------------------


def test_the_starter_matrix_means_two_working_days() -> None:
    text = (REPO / "src/escbridge/templates/matrix.yaml").read_text(encoding="utf-8")
    assert "resolution: 2d" in text
    l1 = parse_matrix(text, "matrix.yaml").levels[0]
    assert l1.resolution == 17 * H  # two days of 09:00-17:30


def test_read_duration_keeps_days_apart_until_a_calendar_measures_them() -> None:
    written = read_duration("1w 2d 3h")
    assert (written.weeks, written.days, written.seconds) == (
        Fraction(1),
        Fraction(2),
        Fraction(10800),
    )
    assert written.measured() == timedelta(days=9, hours=3)
    assert written.measured(calendar()) == 59 * H
