"""What every command module of ``escbridge.cli`` shares: exit codes, signals, argument types.

Argument parsing and printing live in ``escbridge.cli`` only; the work happens in the domain
modules, which know nothing of argparse.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import difflib
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from types import FrameType
from typing import Any, NoReturn, TextIO

from escbridge.errors import EscbridgeError, InvalidInputError
from escbridge.secrets import Redactor

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
    """Say why `escbridge COMMAND` could not do its work, on stderr (stdout carries only what
    the command produces, e.g. its JSON): 2 for invalid input, else 1."""
    print(f"escbridge {command}: {error}", file=out or sys.stderr)
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


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line and exit 2, not the usage block.

    ``escbridge serve: unrecognized arguments: --prot 8001 (see escbridge serve --help)``: the
    line names the argument; ``--help`` still shows everything.
    """

    def error(self, message: str) -> NoReturn:
        if message.endswith("required: COMMAND"):  # bare `escbridge`: the commands are the news
            self.print_usage(sys.stderr)
        choice = _INVALID_CHOICE.search(message)
        if choice is not None:  # a misspelt command or value: name the closest one
            given, offered = choice.group(1), re.findall(r"'([^']*)'", choice.group(2))
            close = difflib.get_close_matches(given, offered, n=1)
            if close:
                message += f"; did you mean {close[0]}?"
        self.exit(EXIT_INVALID, f"{self.prog}: {message} (see {self.prog} --help)\n")


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def store_url_arg(text: str) -> str:
    """``--store URL``: refused at once, with the fix, when escbridge could not use it."""
    from escbridge.store.database import url_problem  # SQLAlchemy: only for store commands

    problem = url_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


# --- logging: one choice of format for every long-running command -----------------------

LOG_FORMATS = ("text", "json")
LOG_FORMAT_ENV = "ESCBRIDGE_LOG_FORMAT"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Libraries whose INFO lines say nothing an admin acts on (Alembic's "Context impl SQLiteImpl"
#: at every start): shown from WARNING, or everything with --log-level debug.
CHATTY_LOGGERS = ("alembic",)

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "escbridge_request_id", default=None
)
"""The request being handled, set by the webhook receiver; every log line carries it."""

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_STANDARD = frozenset(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
}


def _log_format(text: str) -> str:
    form = text.strip().lower()
    if form not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(
            f'"{text}" is not a log format (from --log-format or ${LOG_FORMAT_ENV}): '
            f"use {' or '.join(LOG_FORMATS)}"
        )
    return form


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f'"{text}" is not a log level: use {", ".join(n.lower() for n in LOG_LEVELS)}'
        )
    return level


class _AnyCase(tuple[str, ...]):
    """Choices listed in lower case (what shell completion offers and the reference shows),
    matched in any case: ``--log-level`` parses to the upper-case name logging takes."""

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and tuple.__contains__(self, item.lower())


def add_log_options(parser: argparse.ArgumentParser, *, level: str = "INFO") -> None:
    """``--log-format text|json`` and ``--log-level``, the same on every long-running command."""
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-format",
        type=_log_format,
        default=os.environ.get(LOG_FORMAT_ENV) or "text",
        metavar="{text,json}",
        help="text: one readable line per event (default); json: one JSON object per line, "
        f"for a log collector (default: ${LOG_FORMAT_ENV}, else text)",
    )
    group.add_argument(
        "--log-level",
        type=_log_level,
        choices=_AnyCase(name.lower() for name in LOG_LEVELS),
        default=level,
        metavar="LEVEL",
        help=f"debug, info, warning or error (default {level.lower()}); "
        "debug also shows the database migration tool's lines",
    )


class LogFormatter(logging.Formatter):
    """What both formats share: every configured secret masked, whatever the line holds."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)
        self._mask = self._redactor.known

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self._redactor.add(secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._redactor.secrets

    @staticmethod
    def extras(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
        """The ``extra=`` fields of a record, in the order they were given."""
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key[0] != "_":
                yield key, value


class TextFormatter(LogFormatter):
    """``2026-03-11T15:00:00Z INFO escbridge.cli: message key=value …``, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        mask = self._mask
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        parts = [f"{stamp} {record.levelname} {record.name}: {record.getMessage()}"]
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            parts.append(f"request_id={request_id}")
        parts.extend(  # nothing to say is not said ("reason=None", "job_ids=[]")
            f"{key}={value}" for key, value in self.extras(record) if value not in (None, [], ())
        )
        line = mask(" ".join(parts))
        if record.exc_info:
            line += "\n" + mask(self.formatException(record.exc_info))
        return line


class JsonFormatter(LogFormatter):
    """``{"ts", "level", "logger", "msg", "request_id", …extra}`` on one line.

    Secrets are masked in every string field before it is encoded, so JSON escaping cannot
    hide one from the mask. Written for the receiver's one line per delivery: the time stamp's
    seconds are formatted once per second and the JSON encoder is made once.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(secrets)
        self._encode = json.JSONEncoder(
            default=lambda v: self._mask(str(v)), ensure_ascii=False
        ).encode
        self._second: tuple[int, str] = (-1, "")  # (second, its text): one object, no race

    def _timestamp(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond, as ``datetime.isoformat`` writes it."""
        second = int(created)
        cached, text = self._second
        if cached != second:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        return f"{text}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        mask = self._mask
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        if record.threadName and record.threadName != "MainThread":
            entry["thread"] = record.threadName
        for key, value in self.extras(record):
            entry[key] = mask(value) if type(value) is str else value
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        return self._encode(entry)


def setup_logging(
    form: str = "text",
    level: int | str = logging.INFO,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> LogFormatter:
    """Send every logger's lines to ``stream`` (stderr) in ``form``; replaces root handlers.

    Returns the formatter so more secrets can be added once the connectors are known
    (:func:`install_secrets`). The records skip what no line shows: the caller's file and line
    (a stack walk per line) and the process's ids.
    """
    logging._srcfile = None  # the documented way to skip the stack walk
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter: LogFormatter = JsonFormatter(secrets) if form == "json" else TextFormatter(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    debug = root.getEffectiveLevel() <= logging.DEBUG
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
    return formatter


def configure_logging(
    args: argparse.Namespace, *, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> LogFormatter | None:
    """The logging :func:`add_log_options` asked for, set up before the command starts.

    ``args.verbose`` (sync's ``-v``) raises a quieter default level to info. A process whose
    logging is already set up by someone else (a test runner, an application embedding the
    command) keeps it: None then.
    """
    root = logging.getLogger()
    if any(not isinstance(h.formatter, LogFormatter) for h in root.handlers):
        return None
    level = args.log_level
    if getattr(args, "verbose", False) and logging.getLevelName(level) > logging.INFO:
        level = "INFO"
    return setup_logging(args.log_format, level, secrets=secrets, stream=stream)


def install_secrets(secrets: Iterable[str]) -> None:
    """Add ``secrets`` to the mask of every escbridge formatter on the root logger."""
    wanted = tuple(secrets)
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, LogFormatter):
            handler.formatter.add_secrets(wanted)


__all__ = [
    "CHATTY_LOGGERS",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "LOG_FORMATS",
    "LOG_FORMAT_ENV",
    "REQUEST_ID",
    "ArgumentParser",
    "JsonFormatter",
    "LogFormatter",
    "Runner",
    "TextFormatter",
    "add_log_options",
    "configure_logging",
    "failed",
    "install_secrets",
    "invalid",
    "parse_time",
    "run_until_signal",
    "setup_logging",
    "store_url_arg",
]
