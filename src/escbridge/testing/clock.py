"""FakeClock: the one clock tests move by hand (wall and monotonic time, recorded sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["FakeClock"]


class FakeClock:
    """A wall clock and a monotonic clock that move only when a test says so.

    Pass the instance where code takes ``clock`` (it is callable: an aware UTC datetime) and
    ``clock.sleep`` where it takes ``sleep``: sleeping returns at once, moves both clocks and is
    recorded in ``sleeps``, so a test asserts on the waits instead of spending them. The
    monotonic clock starts at 1000.0 (not 0.0, which code may read as "never"). Thread-safe.
    """

    def __init__(self, start: datetime = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware start (e.g. tzinfo=UTC)")
        self._lock = threading.Lock()
        self._now = start.astimezone(UTC)
        self._monotonic = 1000.0
        self.sleeps: list[float] = []
        self._listeners: list[Callable[[float], None]] = []

    def on_move(self, listener: Callable[[float], None]) -> None:
        """Call ``listener(monotonic)`` after every sleep or advance, outside the clock's lock.

        For what time makes happen in a test's world (an emulator's held write landing after
        ten simulated seconds), so it happens exactly when the code under test waits.
        """
        self._listeners.append(listener)

    def _moved(self) -> None:
        now = self.monotonic()
        for listener in list(self._listeners):
            listener(now)

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    @property
    def now(self) -> datetime:
        """The current wall-clock time (as ``clock()``); assign to jump there."""
        return self()

    @now.setter
    def now(self, value: datetime) -> None:
        if value.tzinfo is None:
            raise ValueError("FakeClock needs an aware time (e.g. tzinfo=UTC)")
        with self._lock:
            self._now = value.astimezone(UTC)

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (as ``time.monotonic``)."""
        with self._lock:
            return self._monotonic

    def sleep(self, seconds: float) -> None:
        """Record the wait and move both clocks by it, without waiting."""
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        with self._lock:
            self.sleeps.append(seconds)
            self._now += timedelta(seconds=seconds)
            self._monotonic += seconds
        self._moved()

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move time on by ``delta`` and/or timedelta keywords (``minutes=5``); the new now.

        A negative step moves the wall clock back (as an NTP correction would) and leaves the
        monotonic clock where it is.
        """
        step = (delta or timedelta()) + timedelta(**kwargs)
        with self._lock:
            self._now += step
            self._monotonic += max(step.total_seconds(), 0.0)
            now = self._now
        self._moved()
        return now

    def __repr__(self) -> str:
        return f"FakeClock({self().isoformat()})"
