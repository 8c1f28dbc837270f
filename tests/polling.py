"""One bounded wait for tests that watch another process or thread reach a state."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll ``check`` until it holds; AssertionError naming ``what`` after ``timeout`` seconds
    (a bound on a hang, not a guess at how long the work takes)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
