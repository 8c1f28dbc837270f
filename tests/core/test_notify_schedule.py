"""When a notification may go: quiet hours on the target's own clock (across midnight, DST,
chosen days) and digest windows. Examples first, then properties over random windows."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from escbridge.matrix import parse_matrix
from escbridge.notify.model import NotifyTarget, QuietWindow, TeamsWebhook
from escbridge.notify.schedule import (
    is_quiet,
    next_allowed,
    not_before,
    quiet_window_at,
    window_ends,
)

BERLIN = ZoneInfo("Europe/Berlin")
PROPERTY = settings(max_examples=200, deadline=None)


def loaded(body: str) -> NotifyTarget:
    text = (
        "levels: [{id: l1, name: One, groups: {zendesk: S}}]\n"
        "notify:\n  targets:\n    t:\n      teams: {url: 'https://example.com/t'}\n" + body
    )
    return parse_matrix(text, "matrix.yaml").notify["t"]


NIGHTS = loaded(
    "      quiet_hours: {from: '22:00', to: '07:00', timezone: Europe/Berlin, days: mon-fri}\n"
)


def berlin(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


class TestQuietHours:
    def test_outside_the_quiet_hours_now_is_fine(self) -> None:
        at = berlin(2026, 3, 11, 15, 0)  # a Wednesday afternoon
        assert not is_quiet(NIGHTS, at)
        assert next_allowed(NIGHTS, at) == at

    def test_late_evening_waits_for_the_morning(self) -> None:
        assert next_allowed(NIGHTS, berlin(2026, 3, 11, 23, 30)) == berlin(2026, 3, 12, 7, 0)

    def test_after_midnight_is_the_same_night(self) -> None:
        assert next_allowed(NIGHTS, berlin(2026, 3, 12, 3, 0)) == berlin(2026, 3, 12, 7, 0)

    def test_an_end_the_clocks_skip_is_the_moment_they_jump(self) -> None:
        # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 never shows.
        night = loaded("      quiet_hours: {from: '22:00', to: '02:30', timezone: Europe/Berlin}\n")
        jump = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
        assert next_allowed(night, berlin(2026, 3, 28, 23, 0)) == jump
        assert is_quiet(night, jump - timedelta(microseconds=1))
        assert not is_quiet(night, jump)

    def test_the_window_is_half_open(self) -> None:
        assert is_quiet(NIGHTS, berlin(2026, 3, 11, 22, 0))
        assert not is_quiet(NIGHTS, berlin(2026, 3, 12, 7, 0))

    def test_days_are_the_days_a_night_begins(self) -> None:
        # Friday night is quiet until Saturday 07:00; Saturday night is not quiet at all.
        assert next_allowed(NIGHTS, berlin(2026, 3, 14, 2, 0)) == berlin(2026, 3, 14, 7, 0)
        assert not is_quiet(NIGHTS, berlin(2026, 3, 14, 23, 0))
        assert not is_quiet(NIGHTS, berlin(2026, 3, 16, 3, 0))  # Sunday night into Monday

    def test_the_local_clock_across_a_dst_change(self) -> None:
        # Berlin moves to summer time on 29 March 2026: 07:00 CEST is 05:00 UTC, not 06:00.
        got = next_allowed(NIGHTS, datetime(2026, 3, 26, 23, 0, tzinfo=UTC))  # Friday 00:00
        assert got == datetime(2026, 3, 27, 6, 0, tzinfo=UTC)
        got = next_allowed(NIGHTS, datetime(2026, 3, 30, 23, 0, tzinfo=UTC))  # Tuesday 01:00
        assert got == datetime(2026, 3, 31, 5, 0, tzinfo=UTC)

    def test_touching_windows_are_crossed_together(self) -> None:
        target = loaded(
            "      quiet_hours:\n"
            "        - {from: '22:00', to: '07:00'}\n"
            "        - {from: '00:00', to: '24:00', days: weekends}\n"
        )
        # Friday 23:00 UTC: the night runs into a quiet Saturday, then Saturday night into
        # a quiet Sunday, then Sunday night until Monday 07:00.
        friday = datetime(2026, 3, 13, 23, 0, tzinfo=UTC)
        assert next_allowed(target, friday) == datetime(2026, 3, 16, 7, 0, tzinfo=UTC)

    def test_no_quiet_hours(self) -> None:
        target = loaded("")
        at = datetime(2026, 3, 13, 23, 0, tzinfo=UTC)
        assert next_allowed(target, at) == at


class TestDigest:
    target = loaded("      digest: 15m\n      quiet_hours: {from: '22:00', to: '07:00'}\n")
    at = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)

    def test_the_first_escalation_opens_a_window(self) -> None:
        assert not_before(self.target, self.at, None) == self.at + timedelta(minutes=15)

    def test_later_ones_join_it(self) -> None:
        later = self.at + timedelta(minutes=14)
        assert not_before(self.target, later, self.at) == self.at + timedelta(minutes=15)

    def test_after_it_closed_a_new_one_opens(self) -> None:
        later = self.at + timedelta(minutes=20)
        assert not_before(self.target, later, self.at) == later + timedelta(minutes=15)

    def test_a_window_closing_in_the_quiet_hours_waits_for_them_to_end(self) -> None:
        evening = datetime(2026, 3, 11, 21, 50, tzinfo=UTC)
        assert not_before(self.target, evening, None) == datetime(2026, 3, 12, 7, 0, tzinfo=UTC)

    def test_without_a_digest_only_quiet_hours_count(self) -> None:
        assert not_before(NIGHTS, berlin(2026, 3, 11, 15, 0), None) == berlin(2026, 3, 11, 15, 0)
        night = berlin(2026, 3, 11, 23, 0)
        assert not_before(NIGHTS, night, None) == berlin(2026, 3, 12, 7, 0)


# --- properties ----------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
clock = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
window = st.builds(
    QuietWindow,
    start=clock,
    end=clock,
    zone=st.sampled_from(ZONES).map(ZoneInfo),
    days=st.frozensets(st.integers(0, 6), min_size=1, max_size=6),  # never every day: a gap
).filter(lambda w: w.start != w.end)
instant = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)


def with_windows(windows: list[QuietWindow]) -> NotifyTarget:
    return NotifyTarget(
        "t", "teams", TeamsWebhook("https://example.com/t"), quiet_hours=tuple(windows)
    )


@PROPERTY
@given(st.lists(window, min_size=1, max_size=3), instant)
def test_next_allowed_is_the_first_moment_out_of_the_quiet_hours(
    windows: list[QuietWindow], at: datetime
) -> None:
    target = with_windows(windows)
    try:
        allowed = next_allowed(target, at)
    except ValueError:
        # only when the windows leave no gap in the week: the loader refuses those
        ends = window_ends(windows, at - timedelta(days=1), 10)
        assert all(quiet_window_at(windows, end) is not None for end in ends)
        return
    assert allowed >= at
    assert not is_quiet(target, allowed)
    if not is_quiet(target, at):
        assert allowed == at
    else:
        # every moment from ``at`` up to ``allowed`` is quiet: nothing earlier was possible
        span = allowed - at
        assert all(is_quiet(target, at + span * k / 16) for k in range(16))
        assert is_quiet(target, allowed - timedelta(microseconds=1))
    assert allowed - at <= timedelta(days=8)


@PROPERTY
@given(window, instant)
def test_a_window_is_quiet_for_its_length_on_its_own_clock(w: QuietWindow, at: datetime) -> None:
    """Started on one of its days, a window is quiet from its start to its end, local time."""
    local = at.astimezone(w.zone)
    start = datetime.combine(local.date(), w.start, tzinfo=w.zone)
    target = with_windows([w])
    if local.weekday() in w.days and start.utcoffset() == (start + w.length).utcoffset():
        assert is_quiet(target, start)
        assert is_quiet(target, start + w.length - timedelta(minutes=1))
        assert next_allowed(target, start) >= start + w.length


@PROPERTY
@given(instant, st.integers(1, 120), st.integers(0, 240))
def test_a_digest_never_sends_before_its_window_closes(
    opened: datetime, minutes: int, later: int
) -> None:
    target = NotifyTarget(
        "t", "teams", TeamsWebhook("https://example.com/t"), digest=timedelta(minutes=minutes)
    )
    created = opened + timedelta(minutes=later)
    due = not_before(target, created, opened)
    assert due >= created
    assert due in (opened + target.digest, created + target.digest)  # type: ignore[operator]
