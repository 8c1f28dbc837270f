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
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from escbridge.store import PENDING, PROCESSING, Store, escalation_counts

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE_LATEST", "StoreCollector", "WebhookMetrics"]

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


class StoreCollector(Collector):
    """Queue depth and escalations by level, read from the store at scrape time (cached)."""

    def __init__(
        self,
        store: Store,
        helpdesks: Mapping[str, str],
        *,
        cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
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
                    now, True, self.store.job_counts(), escalation_counts(self.store)
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
