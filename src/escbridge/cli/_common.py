"""What every command module of ``escbridge.cli`` shares: exit codes, signals, argument types.

Argument parsing and printing live in ``escbridge.cli`` only; the work happens in the domain
modules, which know nothing of argparse.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import FrameType
from typing import TextIO

from escbridge.errors import EscbridgeError, InvalidInputError

EXIT_OK, EXIT_PROBLEM, EXIT_INVALID = 0, 1, 2
"""0 ok; 1 the command ran and found a rule, ticket or readiness problem; 2 invalid input."""

Runner = Callable[[argparse.Namespace], int]

log = logging.getLogger("escbridge.cli")


@contextlib.contextmanager
def run_until_signal(
    what: str = "stopping", *, on_stop: Callable[[], None] | None = None
) -> Iterator[threading.Event]:
    """An event set by SIGTERM/SIGINT while the block runs; the previous handlers come back after.

    Outside the main thread (tests, embedded use) no handler is installed and the event is only
    set by the caller.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: %s", signal.Signals(signum).name, what)
        stop.set()
        if on_stop is not None:
            on_stop()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def invalid(error: InvalidInputError) -> int:
    """Print every problem of invalid input on stderr, one ``error: file:line …`` a line."""
    for problem in error.problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_INVALID


def failed(command: str, error: EscbridgeError, out: TextIO | None = None) -> int:
    """Say why `escbridge COMMAND` could not do its work: 2 for invalid input, else 1."""
    print(f"escbridge {command}: {error}", file=out or sys.stdout)
    return EXIT_INVALID if isinstance(error, InvalidInputError) else EXIT_PROBLEM


def parse_time(text: str) -> datetime:
    """An ISO 8601 instant for ``--at``/``--since``; without a zone it is UTC (said in --help)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'"{text}" is not a time (e.g. 2026-03-11T15:00:00Z)'
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


__all__ = [
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "Runner",
    "failed",
    "invalid",
    "parse_time",
    "run_until_signal",
]
