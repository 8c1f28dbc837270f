"""When a notification may go out: quiet hours and digest windows. Pure: time is passed in.

Quiet hours are read on the target's own clock (``zoneinfo``): "22:00 to 07:00 Europe/Berlin"
is that, summer and winter; a window whose end is not after its start ends the next day, and
``days`` names the days a window *begins* on ("22:00 to 07:00, mon-fri" is quiet from Monday
night to Saturday morning). Windows are half-open: at 07:00 sharp sending is allowed again.

A digest collects a target's escalations for a fixed window that opens with the first of them:
everything recorded while it is open goes out together when it closes (then after the quiet
hours, if it closes in them).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from escbridge.calendar import local_instant

if TYPE_CHECKING:
    from escbridge.notify.model import NotifyTarget, QuietWindow

__all__ = ["is_quiet", "next_allowed", "not_before", "quiet_window_at", "window_ends"]

#: More steps than any set of windows that leaves a gap in the week can need (each step leaves
#: one window for good); the loader refuses windows that are quiet all week.
_MAX_STEPS = 64


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"{at.isoformat()} has no time zone")
    return at.astimezone(UTC)


def _bounds(window: QuietWindow, day: datetime) -> tuple[datetime, datetime]:
    """(start, end) in UTC of ``window`` beginning on the local date of ``day``."""
    local = day.date()
    end_day = local if window.end > window.start else local + timedelta(days=1)
    # A time the clocks skip (spring forward) is the moment they jump, as in business calendars.
    return local_instant(local, window.start, window.zone), local_instant(
        end_day, window.end, window.zone
    )


def quiet_window_at(windows: Sequence[QuietWindow], at: datetime) -> datetime | None:
    """The end of the quiet window ``at`` falls in (the latest, when several overlap), or None
    when ``at`` is not quiet."""
    t = _utc(at)
    latest: datetime | None = None
    for window in windows:
        local = t.astimezone(window.zone)
        for back in (1, 0):  # a window that began the day before, or today
            day = local - timedelta(days=back)
            if day.weekday() not in window.days:
                continue
            start, end = _bounds(window, day)
            if start <= t < end and (latest is None or end > latest):
                latest = end
    return latest


def window_ends(windows: Sequence[QuietWindow], first: datetime, days: int) -> list[datetime]:
    """Every end of a window beginning on the ``days`` local dates from ``first`` on: a gap in
    the quiet hours, if there is one, starts at one of them (the loader's all-week check)."""
    ends = []
    for window in windows:
        local = _utc(first).astimezone(window.zone)
        for offset in range(days):
            day = local + timedelta(days=offset)
            if day.weekday() in window.days:
                ends.append(_bounds(window, day)[1])
    return ends


def is_quiet(target: NotifyTarget, at: datetime) -> bool:
    """Whether ``at`` falls in the target's quiet hours."""
    return quiet_window_at(target.quiet_hours, at) is not None


def next_allowed(target: NotifyTarget, at: datetime) -> datetime:
    """``at`` itself when the target may be told then, else the first moment after the quiet
    hours it falls in (windows that touch or overlap are crossed together)."""
    t = _utc(at)
    for _ in range(_MAX_STEPS):
        end = quiet_window_at(target.quiet_hours, t)
        if end is None:
            return t
        t = end
    raise ValueError(f"notification target {target.id}: quiet hours leave no time to send")


def not_before(
    target: NotifyTarget, created_at: datetime, window_open: datetime | None
) -> datetime:
    """When a notification recorded at ``created_at`` may first be sent.

    Without a digest: at once, or after the quiet hours. With one: when its window closes —
    the open window (``window_open``: when the target's oldest notification still waiting was
    recorded, None when none waits) if ``created_at`` falls in it, else a new window opened by
    this one — then after the quiet hours.
    """
    created = _utc(created_at)
    if target.digest is None:
        return next_allowed(target, created)
    if window_open is not None and created < _utc(window_open) + target.digest:
        return next_allowed(target, _utc(window_open) + target.digest)
    return next_allowed(target, created + target.digest)
