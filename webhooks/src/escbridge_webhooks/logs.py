"""Structured logs: one JSON object per line, a request id on each, secrets masked.

The request id lives in a context variable set by the receiver for the duration of one
request, so every line logged while handling it — by the receiver, a connector or the store —
carries it without anyone passing it along. Lines logged outside a request (start-up, the
embedded worker threads) carry ``"request_id": null``.

The formatter masks every configured secret in the message and in a formatted traceback, as a
last line of defence: the receiver itself never logs a body, a header value or a secret.

The formatters are escbridge's own (``escbridge.cli._common``: the same ``--log-format
text|json`` on every long-running command); gunicorn's deployment always logs JSON.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TextIO

from escbridge.cli._common import REQUEST_ID as _request_id
from escbridge.cli._common import JsonFormatter, install_secrets, setup_logging

__all__ = [
    "JsonFormatter",
    "bind_request_id",
    "configure_logging",
    "current_request_id",
    "install_secrets",
    "new_request_id",
    "request_context",
    "unbind_request_id",
]

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


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


def configure_logging(
    level: int | str = logging.INFO,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> JsonFormatter:
    """JSON lines on ``stream`` (stderr) for every logger, as gunicorn's deployment logs them."""
    formatter = setup_logging("json", level, secrets=secrets, stream=stream)
    assert isinstance(formatter, JsonFormatter)
    return formatter
