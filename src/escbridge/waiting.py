"""Waits a signal can interrupt: for whatever blocks the main thread of a command.

The kernel may deliver SIGTERM to any thread of the process. CPython then only flags the main
thread, which runs the Python handler when it next runs bytecode; a main thread blocked in one
long ``Event.wait()`` or ``Thread.join()`` does not, so a stop request was sometimes lost until
that wait ended (never, for an untimed one). Waiting in short slices lets the handler run.
"""

from __future__ import annotations

import threading
import time

__all__ = ["SLICE", "join", "wait_for"]

#: The longest a pending signal handler waits for the main thread.
SLICE = 0.2


def wait_for(event: threading.Event, timeout: float | None = None) -> bool:
    """``event.wait(timeout)``, in slices of :data:`SLICE`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
        if left <= 0:
            return event.is_set()
        if event.wait(left):
            return True


def join(thread: threading.Thread) -> None:
    """``thread.join()``, in slices of :data:`SLICE`."""
    while thread.is_alive():
        thread.join(SLICE)
