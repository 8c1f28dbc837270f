"""The Flask adapter: HTTP in, the chain (chain.py) in the middle, JSON out.

Routes: ``POST /webhooks/<instance>`` (and ``GET``, which helpdesks such as Zoho Desk send to
validate a URL before they save it), ``GET /healthz``, ``GET /readyz`` and ``GET /metrics``.
Every answer is JSON (Prometheus text for /metrics) and carries ``X-Request-Id``; every log
line written while handling a request carries the same id.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from escbridge.errors import StoreSchemaError, StoreUnavailableError
from escbridge.store import PROBE_TIMEOUT, probe_write
from escbridge_webhooks.chain import (
    Context,
    Enqueuer,
    OneWriterAtATime,
    Reply,
    Step,
    WebhookRequest,
    default_steps,
    run_chain,
)
from escbridge_webhooks.logs import bind_request_id, new_request_id, unbind_request_id
from escbridge_webhooks.metrics import (
    UNKNOWN_INSTANCE,
    Exposition,
    StoreCollector,
    WebhookMetrics,
)

if TYPE_CHECKING:
    from escbridge.config import Config
    from escbridge.connector import Connector
    from escbridge.processing import Processor
    from escbridge.store import Store

log = logging.getLogger("escbridge_webhooks")

__all__ = ["EXTENSION", "Receiver", "ReceiverSettings", "create_app"]

EXTENSION = "escbridge_webhooks"
MiB = 1024 * 1024


@dataclass(frozen=True)
class ReceiverSettings:
    """Knobs of the receiver. ``from_env`` reads ``ESCBRIDGE_WEBHOOK_*`` (gunicorn deployments)."""

    max_body_bytes: int = 1 * MiB  # helpdesk payloads are a few KiB; ids only, see connectors
    retry_after_seconds: int = 30  # what a 503 asks the helpdesk to wait
    metrics_cache_seconds: float = 10.0  # how stale store-derived metrics may be
    ready_timeout_seconds: float = PROBE_TIMEOUT  # how long /readyz's write may wait for a lock

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReceiverSettings:
        env = os.environ if env is None else env
        defaults = cls()

        def number(name: str, default: float, *, zero_ok: bool = False) -> float:
            raw = env.get(f"ESCBRIDGE_WEBHOOK_{name}")
            if raw is None or raw.strip() == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"ESCBRIDGE_WEBHOOK_{name}={raw!r} is not a number") from None
            if value < 0 or (value == 0 and not zero_ok):
                raise ValueError(f"ESCBRIDGE_WEBHOOK_{name} must be positive")
            return value

        return cls(
            max_body_bytes=int(number("MAX_BODY_BYTES", defaults.max_body_bytes)),
            retry_after_seconds=int(number("RETRY_AFTER", defaults.retry_after_seconds)),
            metrics_cache_seconds=number(
                "METRICS_CACHE_SECONDS", defaults.metrics_cache_seconds, zero_ok=True
            ),
            ready_timeout_seconds=number("READY_TIMEOUT", defaults.ready_timeout_seconds),
        )


class Receiver:
    """The app's state: connectors (made once), the store, the chain and the metrics."""

    def __init__(
        self,
        *,
        connectors: Mapping[str, Connector],
        helpdesks: Mapping[str, str],
        enqueuer: Enqueuer,
        store: Store,
        settings: ReceiverSettings,
        metrics: WebhookMetrics,
    ) -> None:
        self.connectors = dict(connectors)
        self.helpdesks = dict(helpdesks)
        self.store = store
        self.settings = settings
        self.metrics = metrics
        if store.dialect == "sqlite":
            enqueuer = OneWriterAtATime(enqueuer)
        self.steps: list[Step] = default_steps(
            self.connectors,
            enqueuer,
            max_bytes=settings.max_body_bytes,
            retry_after=settings.retry_after_seconds,
        )
        self.exposition = Exposition(
            metrics,
            StoreCollector(store, self.helpdesks, cache_seconds=settings.metrics_cache_seconds),
        )

    def handle(self, req: WebhookRequest) -> Reply:
        """Run the chain, then count and log what it came to (one line per delivery)."""
        started = time.perf_counter()
        ctx = Context(req)
        try:
            reply = run_chain(self.steps, ctx)
        except Exception:  # a bug: answered 500 by the app's error handler, counted here
            self.metrics.count(
                ctx.known_instance or UNKNOWN_INSTANCE,
                "error",
                seconds=time.perf_counter() - started,
                accepted=len(ctx.accepted),
                duplicates=len(ctx.duplicates),
            )
            raise
        elapsed = time.perf_counter() - started
        instance = ctx.known_instance or UNKNOWN_INSTANCE
        self.metrics.count(
            instance,
            reply.outcome,
            seconds=elapsed,
            accepted=len(ctx.accepted),
            duplicates=len(ctx.duplicates),
        )
        level = logging.WARNING if reply.status >= 500 else logging.INFO
        log.log(
            level,
            "webhook %s: %s %s",
            instance,
            reply.status,
            reply.outcome,
            extra={
                "instance": instance,
                "status": reply.status,
                "outcome": reply.outcome,
                "reason": reply.reason,
                "bytes": len(ctx.body),
                "events": len(ctx.accepted) + len(ctx.duplicates),
                "job_ids": ctx.accepted,  # what `escbridge jobs` shows, to follow an event
                "ticket_ids": [e.ticket_id for e in ctx.events][:10],
                "own_changes": ctx.own_changes,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )
        return reply

    def readiness(self) -> list[str]:
        """What stops this receiver from taking events; empty when ready.

        Asked of the database each time, never of what the pool remembers: the schema, then a
        write that is rolled back (``probe_write``), so "ready" means the next delivery's
        write would get in. A connection that fails either is discarded, so the answer turns
        back to "ready" as soon as the database takes writes again, without a restart.
        """
        try:
            self.store.check_schema()
        except StoreSchemaError as error:
            log.warning("not ready: %s", error)
            return ["store schema is not current: run `escbridge db upgrade`"]
        except StoreUnavailableError as error:
            log.warning("not ready: %s", error)
            return ["store unreachable"]
        try:
            probe_write(
                self.store.engine, self.store.url, timeout=self.settings.ready_timeout_seconds
            )
        except StoreUnavailableError as error:
            log.warning("not ready: %s", error)
            return ["store does not take writes"]
        return []


def _read_limited(stream: IO[bytes], limit: int) -> bytes:
    """Read until EOF or ``limit`` bytes (a socket may return fewer bytes than asked for)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = stream.read(min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _reply(reply: Reply) -> Response:
    response = jsonify(dict(reply.body))
    response.status_code = reply.status
    for name, value in reply.headers.items():
        response.headers[name] = value
    return response


def create_app(
    config: Config,
    *,
    processor: Processor | None = None,
    settings: ReceiverSettings | None = None,
    metrics: WebhookMetrics | None = None,
) -> Flask:
    """The webhook receiver for escbridge.yaml.

    Connectors and the store are made once, here (a broken connector plugin or invalid
    instance settings fail start-up with the config error). ``processor`` defaults to
    ``build_processor(config)``; pass one to share it with an embedded worker or in tests.
    The database is not touched until the first request: a receiver started while its
    database is down answers 503 (and /readyz says so) until it is back.
    """
    if processor is None:
        from escbridge.processing import build_processor

        processor = build_processor(config)
    receiver = Receiver(
        connectors=processor.connectors,
        helpdesks={name: instance.type for name, instance in config.instances.items()},
        enqueuer=processor,
        store=processor.store,
        settings=settings or ReceiverSettings(),
        metrics=metrics or WebhookMetrics(),
    )
    app = Flask(EXTENSION)
    app.extensions[EXTENSION] = receiver
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.before_request
    def _open_request() -> None:
        rid = new_request_id(request.headers.get("X-Request-Id"))
        g.request_id = rid
        g.request_token = bind_request_id(rid)

    @app.after_request
    def _stamp(response: Response) -> Response:
        rid = g.get("request_id")
        if rid:
            response.headers["X-Request-Id"] = rid
        return response

    @app.teardown_request
    def _close_request(_error: BaseException | None) -> None:
        token = g.pop("request_token", None)
        if token is not None:
            unbind_request_id(token)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        # Werkzeug's own answers (unknown path, wrong method) as JSON like everything else.
        response = jsonify(error=(error.description or error.name))
        response.status_code = error.code or 500
        if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        # Reached only through a bug: logged with its traceback, answered without details,
        # and never a 2xx, so an event that was not stored is delivered again.
        log.exception("unhandled error")
        response = jsonify(error="internal error", request_id=g.get("request_id"))
        response.status_code = 500
        return response

    @app.post("/webhooks/<instance>")
    def webhook(instance: str) -> Response:
        req = WebhookRequest(
            instance=instance,
            headers=dict(request.headers.items()),
            query=request.args.to_dict(),
            content_length=request.content_length,
            read_body=lambda limit: _read_limited(request.stream, limit),
        )
        return _reply(receiver.handle(req))

    @app.get("/webhooks/<instance>")
    def webhook_validation(instance: str) -> Response:
        # Zoho Desk checks a URL with an unsigned GET before saving it and wants a 200.
        # Nothing is read or stored, so answering it needs no credentials.
        if instance not in receiver.connectors:
            return _reply(Reply(404, {"error": "no webhook endpoint for this instance"}, ""))
        return jsonify(status="ok")

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Response:
        problems = receiver.readiness()
        if problems:
            response = jsonify(status="not ready", problems=problems)
            response.status_code = 503
            return response
        return jsonify(status="ready")

    @app.get("/metrics")
    def metrics_route() -> Response:
        data, content_type = receiver.exposition.render()
        return Response(data, status=200, content_type=content_type)

    return app


def receiver_of(app: Flask) -> Receiver:
    """The Receiver behind an app made by create_app."""
    found: Any = app.extensions[EXTENSION]
    assert isinstance(found, Receiver)
    return found
