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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, NotFound

from escbridge.errors import (
    RequestBodyError,
    StoreSchemaError,
    StoreUnavailableError,
    error_summary,
)
from escbridge.store import PROBE_TIMEOUT, probe_write
from escbridge_webhooks.chain import (
    Clocked,
    Context,
    GroupCommit,
    Reply,
    Step,
    WebhookRequest,
    default_steps,
    refused,
    run_chain,
    unknown_instance,
)
from escbridge_webhooks.logs import (
    bind_request_id,
    install_secrets,
    new_request_id,
    unbind_request_id,
)
from escbridge_webhooks.metrics import (
    BIND_ENV,
    TOKEN_ENV,
    UNKNOWN_INSTANCE,
    WWW_AUTHENTICATE,
    Exposition,
    MetricsAccess,
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
    # Who may read /metrics (metrics.MetricsAccess): the bearer token ESCBRIDGE_METRICS_TOKEN,
    # the listener ESCBRIDGE_METRICS_BIND, or both; neither: /metrics answers 404.
    metrics_token: str | None = field(default=None, repr=False)  # a secret: never printed
    metrics_bind: str | None = None

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
            metrics_token=env.get(TOKEN_ENV) or None,
            metrics_bind=env.get(BIND_ENV) or None,
        )


class Receiver:
    """The app's state: connectors (made once), the store, the chain and the metrics."""

    def __init__(
        self,
        *,
        connectors: Mapping[str, Connector],
        helpdesks: Mapping[str, str],
        enqueuer: Clocked,
        store: Store,
        settings: ReceiverSettings,
        metrics: WebhookMetrics,
    ) -> None:
        self.connectors = dict(connectors)
        self.helpdesks = dict(helpdesks)
        self.store = store
        self.settings = settings
        self.metrics = metrics
        # Events go straight to the store at the processor's time, concurrent deliveries in
        # one transaction and one durable commit.
        self.committer = GroupCommit(store, enqueuer.clock)
        # An embedded worker pool (`escbridge serve`) is woken as soon as an event is kept,
        # instead of at its next poll.
        self._wake: Callable[[], None] | None = getattr(enqueuer, "wake", None)
        self.steps: list[Step] = default_steps(
            self.connectors,
            self.committer,
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
        if ctx.accepted and self._wake is not None:
            self._wake()
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
    """Read until EOF or ``limit`` bytes (a socket may return fewer bytes than asked for).

    Whatever the server raises while reading — gunicorn's InvalidChunkSize, ChunkMissingTerminator
    or NoMoreData, Werkzeug's ClientDisconnected, a reset connection — is a broken request, not a
    bug: RequestBodyError (answered 400), naming the exception type only, since the servers'
    messages quote the bytes that were sent.
    """
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        try:
            chunk = stream.read(min(65536, limit - size))
        except Exception as error:
            raise RequestBodyError(f"broken request body ({type(error).__name__})") from None
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


def _validation(
    connector: Connector | None, instance: str, query: Mapping[str, str]
) -> Reply | None:
    """None when ``connector`` vouches for this URL-validation GET; else the refusal to send."""
    if connector is None:
        return unknown_instance(instance)
    answer = getattr(connector, "answer_validation", None)
    if answer is None:
        return refused("unauthorized", "this helpdesk sends no URL-validation GET")
    try:
        status = answer(query)
    except Exception as error:  # a connector bug fails closed
        log.exception("webhook URL validation failed unexpectedly")
        return refused("unauthorized", f"validation error: {type(error).__name__}")
    if status != 200:
        return refused("unauthorized", "the URL-validation GET lacks the right URL token")
    return None


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
    database is down answers 503 (and /readyz says so) until it is back. Each connector starts
    learning who escbridge writes as in a daemon thread (gunicorn: after the fork, so do not
    ``--preload``).
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
    # Who escbridge writes as is learned in the background (the door never calls a helpdesk:
    # until it is known, events are stored and the worker tells escbridge's own apart).
    for connector in receiver.connectors.values():
        learn = getattr(connector, "learn_identity_in_background", None)
        if learn is not None:
            learn()
    app = Flask(EXTENSION)
    # /webhooks//x must not be answered with a 308 redirect to /webhooks/x: 404 like any path.
    app.url_map.merge_slashes = False
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
        # Reached only through a bug: logged as where it happened (not its message, which
        # may quote the body), answered without details, and never a 2xx, so an event that
        # was not stored is delivered again.
        log.error("unhandled error: %s", error_summary(error))
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
        # Zoho Desk checks a URL with an unsigned GET before saving it and wants a 200. Only a
        # connector that knows such a check (answer_validation) and a URL carrying its token
        # get one; anything else gets the answer of a POST that is not genuine, so a stranger
        # cannot tell a configured instance name from any other.
        connector = receiver.connectors.get(instance)
        reply = _validation(connector, instance, request.args.to_dict())
        if reply is None:
            return jsonify(status="ok")
        known = instance if connector is not None else UNKNOWN_INSTANCE
        log.info(
            "webhook validation %s: %s %s",
            known,
            reply.status,
            reply.outcome,
            extra={
                "instance": known,
                "status": reply.status,
                "outcome": reply.outcome,
                "reason": reply.reason,
            },
        )
        return _reply(reply)

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

    metrics_access = MetricsAccess(
        token=receiver.settings.metrics_token, bind=receiver.settings.metrics_bind
    )
    install_secrets(metrics_access.secrets())
    metrics_access.announce()

    @app.get("/metrics")
    def metrics_route() -> Response:
        refusal = metrics_access.refusal(request.environ)
        if refusal == 404:
            raise NotFound()  # the very answer of a path that does not exist
        if refusal is not None:
            response = jsonify(error="unauthorized")
            response.status_code = refusal
            response.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
            return response
        data, content_type = receiver.exposition.render()
        return Response(data, status=200, content_type=content_type)

    return app


def receiver_of(app: Flask) -> Receiver:
    """The Receiver behind an app made by create_app."""
    found: Any = app.extensions[EXTENSION]
    assert isinstance(found, Receiver)
    return found
