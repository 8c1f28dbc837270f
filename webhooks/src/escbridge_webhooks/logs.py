"""Structured logs: one JSON object per line, a request id on each, secrets masked.

The request id lives in a context variable set by the receiver for the duration of one
request, so every line logged while handling it — by the receiver, a connector or the store —
carries it without anyone passing it along. Lines logged outside a request (start-up, the
embedded worker threads) carry ``"request_id": null``.

The formatter masks every configured secret in the message and in a formatted traceback, as a
last line of defence: the receiver itself never logs a body, a header value or a secret.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

from escbridge.secrets import Redactor

__all__ = [
    "JsonFormatter",
    "bind_request_id",
    "configure_logging",
    "current_request_id",
    "new_request_id",
    "request_context",
    "unbind_request_id",
]

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "escbridge_request_id", default=None
)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_STANDARD = frozenset(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
}


def new_request_id(offered: str | None = None) -> str:
    """The id of one request: the caller's ``X-Request-Id`` when it is a sane token, else new."""
    if offered and _SAFE_ID.match(offered):
        return offered
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return _request_id.get()


def bind_request_id(request_id: str) -> contextvars.Token[str | None]:
    """Tag every line logged from here on (in this context) with ``request_id``."""
    return _request_id.set(request_id)


def unbind_request_id(token: contextvars.Token[str | None]) -> None:
    _request_id.reset(token)


@contextmanager
def request_context(request_id: str) -> Iterator[str]:
    """Every line logged inside the ``with`` (in this thread) carries ``request_id``."""
    token = _request_id.set(request_id)
    try:
        yield request_id
    finally:
        _request_id.reset(token)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id", …extra}`` on one line.

    Secrets are masked in every string field before it is encoded, so JSON escaping cannot
    hide one from the mask. Written for the receiver's one line per delivery: the time stamp's
    seconds are formatted once per second and the JSON encoder is made once.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)
        self._mask = self._redactor.known
        self._encode = json.JSONEncoder(
            default=lambda v: self._mask(str(v)), ensure_ascii=False
        ).encode
        self._second: tuple[int, str] = (-1, "")  # (second, its text): one object, no race

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self._redactor.add(secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._redactor.secrets

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
            "request_id": getattr(record, "request_id", None) or _request_id.get(),
        }
        if record.threadName and record.threadName != "MainThread":
            entry["thread"] = record.threadName
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key[0] != "_":
                entry[key] = mask(value) if type(value) is str else value
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        return self._encode(entry)


def configure_logging(
    level: int | str = logging.INFO,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> JsonFormatter:
    """Send every logger's lines to ``stream`` (stderr) as JSON lines; replaces root handlers.

    Returns the formatter so more secrets can be added once the connectors are known.

    The log records skip what no line shows: the caller's file and line (a stack walk per
    line) and the process's ids and names (the JSON line has none of them).
    """
    logging._srcfile = None  # the documented way to skip the stack walk
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter = JsonFormatter(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return formatter


def install_secrets(secrets: Iterable[str]) -> None:
    """Add ``secrets`` to every JsonFormatter on the root logger's handlers."""
    wanted = tuple(secrets)
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter):
            handler.formatter.add_secrets(wanted)
