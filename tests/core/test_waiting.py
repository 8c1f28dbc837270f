"""A signal the kernel hands to another thread still stops a command (the sandbox's lost
SIGTERM): the main thread's waits are sliced so the Python handler runs."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from escbridge.waiting import join, wait_for


@pytest.fixture
def stop_on_usr1() -> Iterator[threading.Event]:
    stop = threading.Event()
    previous = signal.signal(signal.SIGUSR1, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGUSR1, previous)


def _signal_from_another_thread(until: threading.Event) -> tuple[threading.Thread, list[bool]]:
    """A thread that sends SIGUSR1 to itself (so the kernel delivers it there, not to the main
    thread), then lives until ``until`` is set; what its wait returned (False: nobody stopped
    it within 60 s) is in the list."""
    seen: list[bool] = []

    def run() -> None:
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        seen.append(until.wait(60))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, seen


def test_a_signal_delivered_to_another_thread_ends_the_wait(
    stop_on_usr1: threading.Event,
) -> None:
    other, _ = _signal_from_another_thread(stop_on_usr1)
    # an untimed Event.wait() here would block until the other thread ends (60 s) and only
    # then run the handler; the sliced wait sees the stop within a slice
    assert wait_for(stop_on_usr1, timeout=50) is True
    join(other)


def test_a_join_lets_the_handler_run(stop_on_usr1: threading.Event) -> None:
    other, seen = _signal_from_another_thread(stop_on_usr1)
    join(other)  # returns once the handler (in this thread) set the event the thread waits on
    assert seen == [True]  # stopped by the handler, not by its own 60 s timeout


def test_the_timeout_still_ends_a_wait_nobody_stops() -> None:
    assert wait_for(threading.Event(), timeout=0.05) is False
