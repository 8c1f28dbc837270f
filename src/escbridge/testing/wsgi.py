"""Two loopback WSGI helpers for tests that drive a helpdesk emulator over real HTTP.

- ``WebhookCatcher`` records every webhook an emulator posts, exactly as a receiver gets it
  (headers, raw body, query), so a test hands the same request to ``verify_webhook`` and
  ``parse_webhook`` — genuine ones, replayed ones and tampered ones.
- ``Outage`` wraps an emulator's app so that, inside ``with outage.during(500):``, every API request
  is answered with that status (the emulator itself needs no fault switch for it).

Plain WSGI: no web framework is imported here; werkzeug serves them (``escbridge.sandbox``).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

from escbridge.connector import WebhookRequest

__all__ = ["Outage", "WebhookCatcher"]

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_REASONS = {200: "OK", 401: "Unauthorized", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


def _status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Status')}"


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request headers with their usual spelling (WSGI upper-cases them)."""
    out: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key
        else:
            continue
        if value:
            out["-".join(part.capitalize() for part in name.split("_"))] = str(value)
    return out


class WebhookCatcher:
    """A WSGI app that records each POST as a ``WebhookRequest`` and answers ``status``.

    ``validate`` answers GET requests (Zoho Desk's validation call) with the status it returns
    for the query. Serve it with ``escbridge.sandbox.serve(catcher)``; read with ``take()``.
    """

    def __init__(
        self,
        status: int = 200,
        validate: Callable[[Mapping[str, str]], int] | None = None,
    ) -> None:
        self.status = status
        self.validate = validate
        self._requests: list[WebhookRequest] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = dict(parse_qsl(str(environ.get("QUERY_STRING") or ""), keep_blank_values=True))
        if environ.get("REQUEST_METHOD") == "GET":
            status = self.validate(query) if self.validate is not None else 405
            start_response(_status_line(status), [("Content-Length", "0")])
            return [b""]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        with self._lock:
            self._requests.append(WebhookRequest.of(_headers(environ), body, query))
        start_response(_status_line(self.status), [("Content-Length", "0")])
        return [b""]

    def take(self) -> list[WebhookRequest]:
        """The requests received since the last call, oldest first."""
        with self._lock:
            taken, self._requests = self._requests, []
        return taken


class Outage:
    """Wraps a WSGI app; inside ``with outage.during(status):`` every request gets ``status``.

    The error body echoes the path and query, as some gateways' error pages do, so a test can
    check that a connector's errors and logs do not pass on what a server echoes back.
    """

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.failures = 0
        self._status: int | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            status = self._status
            if status is not None:
                self.failures += 1
        if status is None:
            return self.app(environ, start_response)
        body = json.dumps(
            {
                "error": "sandbox outage",
                "path": environ.get("PATH_INFO", ""),
                "query": environ.get("QUERY_STRING", ""),
            }
        ).encode()
        start_response(
            _status_line(status),
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    @contextlib.contextmanager
    def during(self, status: int = 500) -> Iterator[None]:
        """Every request is answered with ``status`` until the block ends."""
        with self._lock:
            self._status = status
        try:
            yield
        finally:
            with self._lock:
                self._status = None
