"""Shared machinery for helpdesk emulators (the connectors' ``sandbox()`` apps).

Each connector's sandbox is a Flask app that speaks its helpdesk's API; what they all need is
here, so three emulators do not grow three different versions of it (their rate limits are
:class:`escbridge.connector.kit.SlidingWindow`, the window the connectors pace themselves with;
the Flask side — JSON errors, auth, control routes — is :mod:`escbridge.sandbox.app`):

- ``RecordStore``: thread-safe in-memory records (tickets, groups, …) with change sequence
  numbers and change listeners (to fire webhooks when a ticket changes);
- ``WebhookDispatcher``: posts signed webhook bodies from a background thread;
- ``ServerThread`` / ``serve``: runs a WSGI app on 127.0.0.1 (port 0 = any free port) in a
  background thread and gives back its URL, for end-to-end tests, benchmarks and the demo.

Nothing here imports Flask; werkzeug is imported only when a server is started, so
``import escbridge`` (and even this module) works without the web stack installed.
"""

from __future__ import annotations

import copy
import itertools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

log = logging.getLogger(__name__)

__all__ = [
    "Change",
    "Delivery",
    "RecordStore",
    "SandboxStats",
    "ServerThread",
    "WebhookDispatcher",
    "quiet_werkzeug",
    "serve",
]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Change:
    """One change to a record, handed to listeners (deep copies: listeners cannot mutate)."""

    kind: str  # "created" | "updated"
    id: Any
    before: Mapping[str, Any] | None
    after: Mapping[str, Any]
    actor: Any = None
    seq: int = 0


class RecordStore:
    """Thread-safe in-memory records keyed by id, with a change sequence and listeners.

    Records are plain dicts in the helpdesk's own JSON shape; the store adds nothing to them.
    ``seq`` orders changes (cursor exports); listeners run after the lock is released.
    """

    def __init__(self, first_id: int = 1) -> None:
        self._records: dict[Any, dict[str, Any]] = {}
        self._seq_of: dict[Any, int] = {}
        self._ids = itertools.count(first_id)
        self._seq = 0
        self._lock = threading.RLock()
        self._listeners: list[Callable[[Change], None]] = []

    def subscribe(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def add(
        self, record: dict[str, Any], *, actor: Any = None, notify: bool = True
    ) -> dict[str, Any]:
        """Store a new record (``id`` assigned when missing); returns a copy."""
        with self._lock:
            if record.get("id") is None:
                record = {**record, "id": next(self._ids)}
            self._seq += 1
            self._records[record["id"]] = copy.deepcopy(record)
            self._seq_of[record["id"]] = self._seq
            change = Change("created", record["id"], None, copy.deepcopy(record), actor, self._seq)
        if notify:
            self._notify(change)
        return copy.deepcopy(record)

    def get(self, record_id: Any) -> dict[str, Any] | None:
        with self._lock:
            rec = self._records.get(record_id)
            return copy.deepcopy(rec) if rec is not None else None

    def update(
        self,
        record_id: Any,
        mutate: Callable[[dict[str, Any]], None],
        *,
        actor: Any = None,
        notify: bool = True,
    ) -> dict[str, Any]:
        """Apply ``mutate`` to the record atomically; KeyError when it does not exist.

        ``mutate`` may raise to abort (nothing is changed then).
        """
        with self._lock:
            current = self._records[record_id]
            before = copy.deepcopy(current)
            draft = copy.deepcopy(current)
            mutate(draft)
            self._records[record_id] = draft
            self._seq += 1
            self._seq_of[record_id] = self._seq
            change = Change("updated", record_id, before, copy.deepcopy(draft), actor, self._seq)
        if notify:
            self._notify(change)
        return copy.deepcopy(draft)

    def values(self) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for r in self._records.values()]

    def ordered_by_change(
        self,
        *,
        start: Callable[[int, Mapping[str, Any]], bool] | None = None,
        stop: Callable[[Mapping[str, Any]], bool] | None = None,
        limit: int | None = None,
    ) -> list[tuple[int, dict[str, Any]]]:
        """(seq, record), oldest change first: from the first record ``start`` accepts, up to
        (not including) the first one ``stop`` accepts, at most ``limit``. Only the records
        returned are copied, so paging through a large store stays cheap."""
        out: list[tuple[int, dict[str, Any]]] = []
        with self._lock:
            items = sorted(self._seq_of.items(), key=lambda kv: kv[1])
            for record_id, seq in items:
                record = self._records[record_id]
                if start is not None and not start(seq, record):
                    continue
                if stop is not None and stop(record):
                    break
                if limit is not None and len(out) >= limit:
                    break
                out.append((seq, copy.deepcopy(record)))
        return out

    def last_seq(self, where: Callable[[int, Mapping[str, Any]], bool]) -> int:
        """The highest change sequence among records ``where`` accepts (0 if none)."""
        with self._lock:
            seqs = [s for i, s in self._seq_of.items() if where(s, self._records[i])]
        return max(seqs, default=0)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __contains__(self, record_id: object) -> bool:
        with self._lock:
            return record_id in self._records

    def _notify(self, change: Change) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # an emulator's webhook bug must not break its API
                log.exception("sandbox change listener failed")


# --------------------------------------------------------------------------- stats


@dataclass
class SandboxStats:
    """What the emulator saw: requests by endpoint and how many it throttled."""

    requests: int = 0
    throttled: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, endpoint: str, *, throttled: bool = False) -> None:
        with self._lock:
            self.requests += 1
            self.by_endpoint[endpoint] += 1
            if throttled:
                self.throttled += 1


# --------------------------------------------------------------------------- webhooks


@dataclass(frozen=True)
class Delivery:
    """One webhook POST the emulator made, and how the receiver answered."""

    url: str
    body: bytes
    headers: Mapping[str, str]
    status: int | None
    error: str | None = None


class WebhookDispatcher:
    """Posts webhooks from one background thread, in order, like a helpdesk's sender.

    ``flush()`` waits until everything queued has been delivered (tests use it instead of sleeps).
    """

    def __init__(self, timeout: float = 10.0, session: requests.Session | None = None) -> None:
        self.timeout = timeout
        self.deliveries: list[Delivery] = []
        self._session = session or requests.Session()
        self._queue: queue.Queue[tuple[str, bytes, dict[str, str]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="sandbox-webhooks", daemon=True
                )
                self._thread.start()
        self._queue.put((url, body, dict(headers)))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is drained; False if it is not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=self.timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                url, body, headers = item
                try:
                    resp = self._session.post(url, data=body, headers=headers, timeout=self.timeout)
                    delivery = Delivery(url, body, headers, resp.status_code)
                except requests.RequestException as exc:
                    delivery = Delivery(url, body, headers, None, type(exc).__name__)
                with self._lock:
                    self.deliveries.append(delivery)
            finally:
                self._queue.task_done()


# --------------------------------------------------------------------------- server


def _request_handler() -> Any:
    """werkzeug's request handler, able to reset a connection for real (see ``faults``).

    A fault that resets calls ``environ[RESET_HOOK]`` and raises a ConnectionResetError; the
    handler writes nothing, and once werkzeug has closed its files it closes the socket with
    ``SO_LINGER`` 0 — a TCP RST, before any FIN — so the client sees ECONNRESET.
    """
    import socket
    import struct

    from werkzeug.serving import WSGIRequestHandler

    from escbridge.sandbox.faults import RESET_HOOK

    class ResettingHandler(WSGIRequestHandler):
        _reset = False

        def make_environ(self) -> Any:
            environ = super().make_environ()
            environ[RESET_HOOK] = self._arrange_reset
            return environ

        def _arrange_reset(self) -> None:
            self._reset = True
            self.close_connection = True

        def finish(self) -> None:
            super().finish()
            if self._reset:
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()

    return ResettingHandler


class ServerThread:
    """A WSGI app served on a loopback port from a background thread (threaded server)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        from werkzeug.serving import make_server

        self._server = make_server(
            host, port, app, threaded=True, request_handler=_request_handler()
        )
        self.host = host
        self.port = self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(  # a short poll: stop() returns at once, not in 0.5 s
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self.port}",
            daemon=True,
        )

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def __enter__(self) -> ServerThread:
        return self.start() if not self._thread.is_alive() else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
    """Start ``app`` on ``host:port`` (0 = any free port) and return the running server."""
    return ServerThread(app, host, port).start()


def quiet_werkzeug(loggers: Iterable[str] = ("werkzeug",)) -> Callable[[], None]:
    """Silence per-request access logs of the dev server (benchmarks make thousands).

    Returns a function that puts the levels back, for callers that run inside a longer-lived
    process (the demo run in-process must leave logging as it found it).
    """
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in saved:  # quieter only: a process at ERROR stays at ERROR
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))

    def restore() -> None:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)

    return restore
