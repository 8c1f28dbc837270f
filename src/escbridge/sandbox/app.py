"""The Flask side of a helpdesk emulator: what every connector's sandbox app shares.

An emulator answers like its helpdesk: JSON bodies, the odd text/plain 429 or empty 404. A route
raises :class:`HttpError` for any refusal and :func:`install` turns it into that answer;
:func:`basic_credentials` is the auth hook for helpdesks that take HTTP Basic auth; and
:func:`add_control_routes` adds the ``/__sandbox/`` endpoints through which tests and the demo
act as customers and agents over HTTP (``/__sandbox/faults`` scripts network faults, see
:mod:`escbridge.sandbox.faults`). :class:`Emulator` puts these together with the state
every emulator keeps (tickets, request counts, the webhook sender); the rate limits are
:class:`escbridge.connector.kit.SlidingWindow`.

Flask is imported here, so only the connectors' sandboxes import this module (behind their
``[sandbox]`` extra); the core never does.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, has_request_context, request

from escbridge.sandbox.emulator import RecordStore, SandboxStats, WebhookDispatcher
from escbridge.sandbox.faults import FaultPlan
from escbridge.sandbox.faults import install as install_faults

__all__ = [
    "Emulator",
    "HttpError",
    "add_control_routes",
    "basic_credentials",
    "in_request",
    "install",
    "public",
    "respond",
]


class HttpError(Exception):
    """A refusal in the helpdesk's own shape: status, body (see :func:`respond`), headers."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def respond(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """An answer as helpdesks send them: JSON, a ``str`` as text/plain, ``None`` as no body."""
    if body is None:
        response = Response(b"", status=status)
    elif isinstance(body, str):
        response = Response(body, status=status, content_type="text/plain")
    else:
        response = Response(json.dumps(body), status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def install(app: Flask) -> None:
    """Answer every :class:`HttpError` a route raises with :func:`respond`."""

    def http_error(exc: HttpError) -> Response:
        return respond(exc.body, exc.status, exc.headers)

    app.register_error_handler(HttpError, http_error)


def basic_credentials() -> tuple[str, str] | None:
    """The (login, password) of the request's HTTP Basic auth; None without one or when garbled."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, _, password = decoded.partition(":")
    return login, password


def add_control_routes(
    app: Flask,
    *,
    create: Callable[[dict[str, Any]], Any],
    update: Callable[[int, dict[str, Any]], Any],
    stats: Callable[[], Mapping[str, Any]],
) -> None:
    """``POST /__sandbox/tickets`` (a customer opens one: ``create(body)`` is the 201 answer),
    ``PATCH /__sandbox/tickets/<id>`` (an agent edits it: ``update(id, body)``) and
    ``GET /__sandbox/stats``."""

    def control_create() -> Response:
        return respond(create(_body()), 201)

    def control_update(ticket_id: int) -> Response:
        return respond(update(ticket_id, _body()))

    def control_stats() -> Response:
        return respond(dict(stats()))

    app.add_url_rule("/__sandbox/tickets", view_func=control_create, methods=["POST"])
    app.add_url_rule(
        "/__sandbox/tickets/<int:ticket_id>", view_func=control_update, methods=["PATCH"]
    )
    app.add_url_rule("/__sandbox/stats", view_func=control_stats, methods=["GET"])


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def in_request() -> bool:
    """Whether this runs inside an HTTP request (or was called directly, by a test or driver)."""
    return has_request_context()


def public(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record as the API shows it: without the emulator's private ``_`` keys."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


class Emulator:
    """The state every helpdesk emulator keeps, and its Flask app with the shared parts in place.

    A subclass adds the helpdesk: its routes on :meth:`new_app`'s app, and what the control
    routes do (:meth:`control_create`, :meth:`control_update`, :meth:`control_stats`).
    """

    def __init__(self, *, first_id: int = 1, fault_seed: int = 0) -> None:
        self.tickets = RecordStore(first_id=first_id)
        self.stats = SandboxStats()
        self.webhooks = WebhookDispatcher()
        #: network faults in front of the app (:mod:`escbridge.sandbox.faults`)
        self.faults = FaultPlan(seed=fault_seed)

    def new_app(self, name: str) -> Flask:
        """A Flask app answering :class:`HttpError` and serving the ``/__sandbox/`` routes,
        behind this emulator's :attr:`faults`."""
        app = Flask(name)
        install(app)
        install_faults(app, self.faults)
        add_control_routes(
            app, create=self.control_create, update=self.control_update, stats=self.control_stats
        )
        app.extensions["escbridge_sandbox"] = self
        return app

    def ticket(self, ticket_id: Any) -> dict[str, Any]:
        """A copy of the stored ticket, private keys included; KeyError when there is none."""
        record = self.tickets.get(ticket_id)
        if record is None:
            raise KeyError(ticket_id)
        return record

    def control_create(self, body: dict[str, Any]) -> Any:
        """The answer of ``POST /__sandbox/tickets``: a customer opens a ticket."""
        raise NotImplementedError

    def control_update(self, ticket_id: int, body: dict[str, Any]) -> Any:
        """The answer of ``PATCH /__sandbox/tickets/<id>``: an agent edits it."""
        raise NotImplementedError

    def control_stats(self) -> dict[str, Any]:
        """The answer of ``GET /__sandbox/stats``: what the emulator has seen."""
        return {
            "requests": self.stats.requests,
            "throttled": self.stats.throttled,
            "by_endpoint": dict(self.stats.by_endpoint),
            "webhooks": len(self.webhooks.deliveries),
        }
