"""What `GET /metrics` shows, in the Prometheus text format (prometheus_client).

Two sources:

- **counters of this process** — webhooks received, accepted, rejected by reason, duplicates,
  ignored, the receiver's latency, and helpdesk API errors seen by an embedded worker. Under
  gunicorn each worker process counts its own; when ``PROMETHEUS_MULTIPROC_DIR`` is set (the
  shipped gunicorn.conf.py sets it) the values live in files there and a scrape, whichever
  worker answers it, adds them all up.
- **the store** — queue depth and escalations by level are facts of the shared database, not of
  one process, so they are read from it at scrape time (at most once per ``cache_seconds``):
  right whichever process escalated, and right with several receivers and workers.

Label values never come from the request: an unknown instance is counted as ``"-"``, so a
scanner trying random URLs cannot grow the number of series.

Who may read it (:class:`MetricsAccess`): a scrape names the instances, their helpdesks, the
escalation counts and the queue depth, so /metrics is nobody's business but the operator's. It
answers only with the bearer token ``ESCBRIDGE_METRICS_TOKEN``, only on the listener
``ESCBRIDGE_METRICS_BIND``, or both; with neither it answers 404, as a path that does not exist.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from escbridge.store import PENDING, PROCESSING, Store, due_counts, escalation_counts

log = logging.getLogger(__name__)

__all__ = [
    "BIND_ENV",
    "CONTENT_TYPE_LATEST",
    "LISTENER_KEY",
    "METRICS_LISTENER",
    "TOKEN_ENV",
    "BindAddress",
    "MetricsAccess",
    "StoreCollector",
    "WebhookMetrics",
    "on_listener",
]

UNKNOWN_INSTANCE = "-"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def multiprocess_dir() -> str | None:
    """The directory of multi-process metric files, when running under it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class WebhookMetrics:
    """The receiver's counters, on a registry of their own (several apps per test process).

    ``count`` records one delivery; the labelled children it needs are looked up once per
    (instance, outcome) and kept, since ``labels()`` costs more than the increment itself.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "escbridge_webhooks_received",
            "Webhook deliveries received (POST /webhooks/<instance>).",
            ["instance"],
            registry=r,
        )
        self.accepted = Counter(
            "escbridge_webhooks_accepted",
            "Ticket events stored in the inbox for a worker.",
            ["instance"],
            registry=r,
        )
        self.rejected = Counter(
            "escbridge_webhooks_rejected",
            "Deliveries refused, by reason (too_large, unknown_instance, unauthorized, "
            "bad_payload, store_unavailable, error).",
            ["instance", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "escbridge_webhooks_duplicates",
            "Ticket events already in the inbox (a redelivery), answered 200 and not stored again.",
            ["instance"],
            registry=r,
        )
        self.ignored = Counter(
            "escbridge_webhooks_ignored",
            "Deliveries answered 200 without storing anything, by reason (own_change, no_events).",
            ["instance", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "escbridge_webhook_duration_seconds",
            "Time to process one webhook delivery, from the first byte read to the answer.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.api_errors = Counter(
            "escbridge_helpdesk_api_errors",
            "Errors from helpdesk APIs seen by this process's embedded workers, by helpdesk.",
            ["helpdesk", "instance", "error"],
            registry=r,
        )
        self._children: dict[tuple[str, str], _Children] = {}

    def count(
        self, instance: str, outcome: str, *, seconds: float, accepted: int, duplicates: int
    ) -> None:
        """One delivery: what it came to (``outcome``), how long it took, what it stored."""
        children = self._children.get((instance, outcome))
        if children is None:
            children = self._children.setdefault((instance, outcome), self._bind(instance, outcome))
        children.received.inc()
        children.latency.observe(seconds)
        if accepted:
            children.accepted.inc(accepted)
        if duplicates:
            children.duplicates.inc(duplicates)
        if children.refused is not None:
            children.refused.inc()

    def _bind(self, instance: str, outcome: str) -> _Children:
        refused: Any = None
        if outcome in IGNORED:
            refused = self.ignored.labels(instance, outcome)
        elif outcome in REJECTED:
            refused = self.rejected.labels(instance, outcome)
        return _Children(
            received=self.received.labels(instance),
            latency=self.latency.labels(outcome),
            accepted=self.accepted.labels(instance),
            duplicates=self.duplicates.labels(instance),
            refused=refused,
        )


IGNORED = frozenset({"own_change", "no_events"})
REJECTED = frozenset(
    {"too_large", "unknown_instance", "unauthorized", "bad_payload", "store_unavailable", "error"}
)


@dataclass(frozen=True)
class _Children:
    received: Any
    latency: Any
    accepted: Any
    duplicates: Any
    refused: Any


@dataclass
class _Snapshot:
    at: float
    up: bool
    jobs: Mapping[str, int] = field(default_factory=dict)
    escalations: Mapping[tuple[str, str], int] = field(default_factory=dict)
    due: Mapping[tuple[str, str], int] = field(default_factory=dict)
    notifications: Mapping[str, int] = field(default_factory=dict)


class StoreCollector(Collector):
    """Queue depth and escalations by level, read from the store at scrape time (cached)."""

    def __init__(
        self,
        store: Store,
        helpdesks: Mapping[str, str],
        *,
        cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self._wall = wall
        self.helpdesks = dict(helpdesks)
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None

    def _read(self) -> _Snapshot:
        with self._lock:
            now = self._clock()
            if self._snapshot is not None and now - self._snapshot.at < self.cache_seconds:
                return self._snapshot
            try:
                snapshot = _Snapshot(
                    now,
                    True,
                    self.store.job_counts(),
                    escalation_counts(self.store),
                    due_counts(self.store, self._wall()),
                    self.store.notification_counts(),
                )
            except Exception as error:  # a scrape must answer even when the database does not
                log.warning("metrics: cannot read the store: %s", type(error).__name__)
                snapshot = _Snapshot(now, False)
            self._snapshot = snapshot
            return snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._read()
        yield GaugeMetricFamily(
            "escbridge_store_up", "1 when the store answered the last scrape.", value=int(snap.up)
        )
        if not snap.up:
            return
        yield GaugeMetricFamily(
            "escbridge_queue_depth",
            "Inbox events waiting for or being processed by a worker.",
            value=snap.jobs.get(PENDING, 0) + snap.jobs.get(PROCESSING, 0),
        )
        jobs = GaugeMetricFamily(
            "escbridge_inbox_jobs",
            "Inbox events by status (failed = dead letters).",
            labels=["status"],
        )
        for status, count in sorted(snap.jobs.items()):
            jobs.add_metric([status], count)
        yield jobs
        escalations = CounterMetricFamily(
            "escbridge_escalations",
            "Escalations recorded, by instance, helpdesk and destination level or team.",
            labels=["instance", "helpdesk", "level"],
        )
        for (instance, level), count in sorted(snap.escalations.items()):
            escalations.add_metric([instance, self.helpdesks.get(instance, ""), level], count)
        yield escalations
        due = GaugeMetricFamily(
            "escbridge_due_tickets",
            "Open tickets with a deadline in the due-queue, by instance and state: overdue "
            "ones mean no worker is acting on it.",
            labels=["instance", "state"],
        )
        for (instance, state), count in sorted(snap.due.items()):
            due.add_metric([instance, state], count)
        yield due
        notifications = GaugeMetricFamily(
            "escbridge_notifications",
            "Notifications in the outbox by state (failed and unknown wait for a person: "
            "`escbridge jobs`).",
            labels=["state"],
        )
        for state, count in sorted(snap.notifications.items()):
            notifications.add_metric([state], count)
        yield notifications


class Exposition:
    """Renders the scrape: this process's counters (or every worker's, multi-process) + store."""

    def __init__(self, metrics: WebhookMetrics, store_collector: Collector | None) -> None:
        if multiprocess_dir() is not None:
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        else:
            self.registry = metrics.registry
        if store_collector is not None:
            self.registry.register(store_collector)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# --- who may read /metrics -------------------------------------------------------------------

TOKEN_ENV = "ESCBRIDGE_METRICS_TOKEN"
BIND_ENV = "ESCBRIDGE_METRICS_BIND"
#: The WSGI environ key a listener of `escbridge serve` sets on its requests. A client cannot
#: set it: its headers reach the environ as ``HTTP_*`` keys only.
LISTENER_KEY = "escbridge.listener"
METRICS_LISTENER = "metrics"
WWW_AUTHENTICATE = 'Bearer realm="escbridge metrics"'
MIN_TOKEN_CHARS = 16
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 b64token: sent verbatim by Prometheus
_BEARER = re.compile(r"Bearer +(\S+) *", re.IGNORECASE)
_ANY_HOST = frozenset({"", "0.0.0.0", "::", "*"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


@dataclass(frozen=True)
class BindAddress:
    """A listening address as gunicorn writes it: ``host:port``, ``[v6]:port``, ``unix:PATH``."""

    host: str = ""
    port: int = 0
    path: str | None = None  # a unix socket

    @classmethod
    def parse(cls, text: str) -> BindAddress:
        text = text.strip()
        if text.startswith("unix:"):
            if not text[5:]:
                raise ValueError(f"{BIND_ENV}={text!r} names no socket path")
            return cls(path=text[5:])
        host, colon, port = text.rpartition(":")
        if not colon or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{BIND_ENV}={text!r} is not host:port or unix:/path")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return cls(host=host, port=int(port))

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _ip(text: str) -> IPAddress:
    """An address as the kernel reports it, IPv4-mapped IPv6 (``::ffff:a.b.c.d``) as IPv4."""
    ip = ipaddress.ip_address(text.split("%", 1)[0])  # without an IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _addresses(host: str) -> frozenset[IPAddress] | None:
    """The addresses a bind host stands for; None for "any address" (0.0.0.0, ::)."""
    if host in _ANY_HOST:
        return None
    try:
        return frozenset({_ip(host)})
    except ValueError:
        pass
    try:  # a name, as gunicorn resolves it when it binds
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        raise ValueError(f"{BIND_ENV}: cannot resolve {host!r}") from None
    return frozenset(_ip(str(info[4][0])) for info in infos)


def on_listener(app: WSGIApp, name: str) -> WSGIApp:
    """``app`` with every request marked as arrived on listener ``name`` (``LISTENER_KEY``)."""

    def marked(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ[LISTENER_KEY] = name
        return app(environ, start_response)

    return marked


class MetricsAccess:
    """Who may read /metrics: whoever has the token, whoever reaches the metrics bind, or both.

    With a token, a scrape must send ``Authorization: Bearer <token>``; it is compared in
    constant time (digests of equal length, so not even its length leaks). With a bind, the
    scrape must have arrived on that listener: under `escbridge serve` its requests are marked
    (:func:`on_listener`); under gunicorn the connection's local address is compared with it.
    With both, both. With neither, /metrics does not exist (404): answering loopback clients
    only is no safe default, since the recommended reverse proxy on the same host makes every
    request a loopback one, and X-Forwarded-For is whatever the client wrote.
    """

    def __init__(self, *, token: str | None = None, bind: str | None = None) -> None:
        token = (token or "").strip() or None
        if token is not None and (len(token) < MIN_TOKEN_CHARS or not _TOKEN.fullmatch(token)):
            raise ValueError(
                f"{TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} characters of A-Z a-z 0-9 "
                "-._~+/ (e.g. the output of `openssl rand -hex 32`)"
            )
        self._token = token
        self._digest = hashlib.sha256(token.encode()).digest() if token is not None else None
        self.bind = BindAddress.parse(bind) if bind and bind.strip() else None
        self._hosts = (
            _addresses(self.bind.host) if self.bind is not None and self.bind.path is None else None
        )

    @property
    def enabled(self) -> bool:
        """False when /metrics answers nobody (neither a token nor a bind is configured)."""
        return self._digest is not None or self.bind is not None

    def secrets(self) -> tuple[str, ...]:
        """What the log Redactor must mask (``logs.install_secrets``)."""
        return (self._token,) if self._token is not None else ()

    def describe(self) -> str:
        """How /metrics is guarded, for the start-up log line (never the token itself)."""
        if not self.enabled:
            return f"off (404): set {TOKEN_ENV} or {BIND_ENV} to serve it"
        parts = [f"only on {self.bind}"] if self.bind is not None else []
        if self._digest is not None:
            parts.append("bearer token required")
        return ", ".join(parts)

    def announce(self) -> None:
        """Say at start-up how /metrics is guarded: a warning when it is off."""
        level = logging.INFO if self.enabled else logging.WARNING
        log.log(level, "/metrics: %s", self.describe())

    def refusal(self, environ: Mapping[str, Any]) -> int | None:
        """404 (not here), 401 (no or wrong token), or None: serve the scrape."""
        if not self.enabled:
            return 404
        if self.bind is not None and not self.arrived_on_bind(environ):
            return 404
        if self._digest is not None and not self.authorized(environ.get("HTTP_AUTHORIZATION")):
            return 401
        return None

    def authorized(self, header: str | None) -> bool:
        """True when ``header`` is ``Bearer <the token>`` (constant time)."""
        if self._digest is None:
            return True
        match = _BEARER.fullmatch(header or "")
        given = match.group(1) if match else ""
        digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
        return hmac.compare_digest(digest, self._digest) and match is not None

    def arrived_on_bind(self, environ: Mapping[str, Any]) -> bool:
        """True when the request came in through the metrics listener."""
        if self.bind is None:
            return True
        if environ.get(LISTENER_KEY) == METRICS_LISTENER:
            return True
        connection = environ.get("gunicorn.socket")
        if connection is None:
            return False
        try:
            local: Any = connection.getsockname()  # where it arrived, whatever Host says
        except (OSError, AttributeError):
            return False
        if self.bind.path is not None:
            if isinstance(local, bytes):
                local = os.fsdecode(local)
            return isinstance(local, str) and local == self.bind.path
        if not isinstance(local, tuple) or len(local) < 2 or local[1] != self.bind.port:
            return False
        if self._hosts is None:
            return True
        try:
            return _ip(str(local[0])) in self._hosts
        except ValueError:
            return False
