"""`escbridge sync`: the time path. Scan each helpdesk for tickets a time limit has caught up with.

A webhook says a ticket *changed*; nothing says a ticket *stayed the same* for two hours. So a
scheduled scan looks at tickets, and hands each to the one decide -> apply -> record step every
path shares (:meth:`escbridge.processing.Processor.process_ticket`). Two passes per instance:

``changes``
    open tickets changed since the stored cursor (``iter_tickets(since, cursor)``); catches what
    a lost webhook missed. The cursor is saved after each page, once every ticket of the page is
    recorded, so a run that dies resumes where it stopped: no ticket is missed, and none is
    escalated twice (the processing layer's intent + level marker see to an apply that landed
    but was not recorded).
``sweep``
    open tickets updated within ``lookback`` (default 14 days), whether they changed or not:
    this is what makes "idle for 2h" and "SLA due within 1h" fire. Its own cursor lets an
    interrupted sweep resume; a finished sweep clears it.

Writes are batched where the connector has a bulk API: the tickets of a page are processed
concurrently, and their ``apply`` calls are gathered into one ``apply_many`` (see
:class:`_BatchingConnector`), so a page of 100 escalations costs a few calls, not a hundred.

Two runs for one instance never overlap: each holds a lease in the store (the store's
per-ticket lock on a reserved ticket id, renewed while the run lasts). A run that finds the
lease held skips the instance and says who holds it.

A helpdesk that throttles past what the HTTP layer's retries absorb (429 storms, Zoho's daily
credits: ``RateLimited`` and its subclasses), or refuses the credentials, stops that instance's
run cleanly: the page in hand is not committed, so the next run starts there. A ticket that
fails on its own (a 404, a refused update) does not stop the run: it is counted, logged and put
in the inbox, where a worker retries it with backoff or dead-letters it (`escbridge jobs`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO, cast

import requests

from escbridge.connector import CAP_BULK_UPDATE, ApplyResult, Registry
from escbridge.errors import EscbridgeError, InvalidInputError, StoreUnavailableError
from escbridge.http import AuthError, RateLimited
from escbridge.model import Actions, Ticket, TicketEvent
from escbridge.processing import Outcome, Processor
from escbridge.secrets import redact
from escbridge.store import Store, TicketLock

if TYPE_CHECKING:
    from escbridge.config import Config, InstanceConfig
    from escbridge.connector import ConflictHandler, Connector, TicketPage

log = logging.getLogger(__name__)

__all__ = [
    "CHANGES",
    "LEASE_TICKET_ID",
    "SWEEP",
    "CallCounter",
    "InstanceResult",
    "LeaseLostError",
    "SyncLease",
    "SyncOptions",
    "SyncReport",
    "Syncer",
    "build_sync_processor",
    "configure_sync_parser",
    "run_sync",
]

CHANGES, SWEEP = "changes", "sweep"
#: The store's cursor streams of the two passes.
STREAMS = {CHANGES: "tickets", SWEEP: "sweep"}
#: The reserved ticket id whose per-ticket lock is an instance's sync lease.
LEASE_TICKET_ID = "~escbridge-sync"
EXIT_OK, EXIT_PROBLEM, EXIT_INVALID = 0, 1, 2


class LeaseLostError(EscbridgeError):
    """The run's lease expired and another run took the instance over: this run stops."""


# --- options and results -------------------------------------------------------------------


@dataclass(frozen=True)
class SyncOptions:
    """What one run does. ``since`` replaces the stored cursor of the changes pass."""

    dry_run: bool = False
    since: datetime | None = None
    lookback: timedelta = timedelta(days=14)
    sweep: bool = True
    batch_size: int = 50
    lease: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class Escalation:
    """One escalation a run made (or, in a dry run, would make)."""

    instance: str
    ticket_id: str
    subject: str
    destination: str
    group: str | None
    rule_id: str | None
    summary: str
    status: str  # escalated | recovered | would_escalate

    def as_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "ticket": self.ticket_id,
            "to": self.destination,
            "group": self.group,
            "rule": self.rule_id,
            "status": self.status,
            "summary": self.summary,
        }


@dataclass
class InstanceResult:
    """What one run did on one instance."""

    instance: str
    scanned: int = 0
    escalated: Counter[str] = field(default_factory=Counter)  # by destination (level or team)
    recovered: int = 0
    skipped: int = 0
    failed: int = 0
    api_calls: int = 0
    pages: int = 0
    batches: int = 0
    stopped: str | None = None  # why the run stopped before the end (cursor kept)
    resume_at: datetime | None = None
    locked_by: str | None = None  # another run holds this instance's lease
    escalations: list[Escalation] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (ticket id, reason)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.locked_by is None

    def count(self, outcome: Outcome, dry_run: bool) -> None:
        with self._lock:
            self.scanned += 1
            decision = outcome.decision
            if outcome.status in ("escalated", "recovered", "dry_run") and decision is not None:
                destination = decision.destination
                dest = destination.id if destination is not None else "?"
                self.escalated[dest] += 1
                if outcome.status == "recovered":
                    self.recovered += 1
                status = "would_escalate" if dry_run else outcome.status
                ticket = outcome.ticket
                self.escalations.append(
                    Escalation(
                        outcome.instance,
                        outcome.ticket_id,
                        ticket.subject if ticket is not None else "",
                        dest,
                        destination.group if destination is not None else None,
                        decision.rule_id,
                        decision.summary,
                        status,
                    )
                )
            else:
                self.skipped += 1

    def fail(self, ticket_id: str, reason: str) -> None:
        with self._lock:
            self.scanned += 1
            self.failed += 1
            self.failures.append((ticket_id, reason))

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "scanned": self.scanned,
            "escalated": dict(sorted(self.escalated.items())),
            "recovered": self.recovered,
            "skipped": self.skipped,
            "failed": self.failed,
            "api_calls": self.api_calls,
            "pages": self.pages,
        }
        if self.stopped:
            data["stopped"] = self.stopped
        if self.resume_at:
            data["resume_at"] = self.resume_at.isoformat()
        if self.locked_by:
            data["locked_by"] = self.locked_by
        if self.failures:
            data["failures"] = [{"ticket": t, "reason": r} for t, r in self.failures[:20]]
        return data


@dataclass
class SyncReport:
    """One run over one or more instances."""

    started_at: datetime
    dry_run: bool
    instances: dict[str, InstanceResult] = field(default_factory=dict)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """Every instance scanned to the end (or held by another run) with no failed ticket."""
        return all(r.stopped is None and r.failed == 0 for r in self.instances.values())

    @property
    def escalations(self) -> list[Escalation]:
        return [e for r in self.instances.values() for e in r.escalations]

    def totals(self) -> dict[str, Any]:
        escalated: Counter[str] = Counter()
        for r in self.instances.values():
            escalated.update(r.escalated)
        return {
            "scanned": sum(r.scanned for r in self.instances.values()),
            "escalated": dict(sorted(escalated.items())),
            "skipped": sum(r.skipped for r in self.instances.values()),
            "failed": sum(r.failed for r in self.instances.values()),
            "api_calls": sum(r.api_calls for r in self.instances.values()),
        }

    def as_json(self) -> dict[str, Any]:
        """The one summary line of a non-interactive run."""
        data: dict[str, Any] = {
            "event": "sync",
            "started_at": self.started_at.isoformat(),
            "dry_run": self.dry_run,
            **self.totals(),
            "duration_s": round(self.duration, 3),
            "ok": self.ok,
            "instances": {name: r.as_json() for name, r in self.instances.items()},
        }
        if self.dry_run:
            data["would_escalate"] = [e.as_json() for e in self.escalations]
        return data


@dataclass(frozen=True)
class ProgressEvent:
    """Where a run is, for a progress bar."""

    instance: str
    stage: str
    page: int
    done: int  # tickets of this page finished
    size: int  # tickets in this page
    result: InstanceResult


Progress = Callable[[ProgressEvent], None]


# --- the lease ---------------------------------------------------------------------------------


class SyncLease:
    """An instance's sync lease: the store's per-ticket lock, taken on a reserved ticket id.

    Taking it is one atomic statement on both SQLite and PostgreSQL; it expires on its own when
    the holder dies, and a heartbeat renews it while the holder lives.
    """

    def __init__(
        self,
        store: Store,
        lock: TicketLock,
        duration: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.lock = lock
        self.duration = duration
        self.clock = clock
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(
        cls,
        store: Store,
        instance: str,
        owner: str,
        *,
        duration: timedelta,
        clock: Callable[[], datetime],
    ) -> SyncLease | None:
        """The lease, or None when another live run holds it."""
        lock = store.lock_ticket(instance, LEASE_TICKET_ID, owner, clock(), duration)
        return None if lock is None else cls(store, lock, duration, clock)

    @staticmethod
    def holder(store: Store, instance: str) -> str | None:
        """Who holds an instance's lease and until when (None when nobody does)."""
        state = store.ticket_state(instance, LEASE_TICKET_ID)
        if state is None or state.lock_owner is None or state.lock_expires_at is None:
            return None
        return f"{state.lock_owner} until {state.lock_expires_at.isoformat(timespec='seconds')}"

    def renew(self) -> None:
        """Extend the lease; LeaseLostError when another run has taken it over."""
        if self.lost or not self.store.renew_lock(self.lock, self.clock(), self.duration):
            self.lost = True
            raise LeaseLostError(
                f"{self.lock.instance}: the sync lease expired and another run took over"
            )

    @contextlib.contextmanager
    def kept(self) -> Iterator[SyncLease]:
        """Hold the lease for the block: renewed every third of its duration, then released."""
        interval = max(1.0, self.duration.total_seconds() / 3)

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    self.renew()
                except LeaseLostError:
                    log.error("%s: sync lease lost", self.lock.instance)
                    return
                except StoreUnavailableError as error:
                    log.warning("%s: could not renew the sync lease: %s", self.lock.instance, error)

        self._thread = threading.Thread(
            target=beat, name=f"sync-lease-{self.lock.instance}", daemon=True
        )
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            try:
                self.store.release(self.lock)
            except StoreUnavailableError as error:  # it expires by itself
                log.warning("%s: could not release the sync lease: %s", self.lock.instance, error)


# --- batching writes through the one processing path -------------------------------------------


@dataclass
class _Parked:
    ticket: Ticket
    actions: Actions
    on_conflict: ConflictHandler | None
    done: threading.Event = field(default_factory=threading.Event)
    result: ApplyResult | None = None
    error: BaseException | None = None


class _BatchingConnector:
    """A connector whose ``apply`` joins those of concurrent ``process_ticket`` calls into one
    ``apply_many``.

    Sync processes the tickets of a page on several threads, each inside :meth:`working`. A
    thread that reaches ``apply`` parks its write; when every thread still working is parked
    (or ``max_batch`` writes wait), the parked writes go out as one bulk call and each thread
    gets its own result back. Deciding, the intent written before the call, and recording
    after it stay in ``Processor.process_ticket``: nothing about them is written twice.
    Everything else is the wrapped connector's.
    """

    def __init__(self, inner: Connector, max_batch: int) -> None:
        self.inner = inner
        self.instance = inner.instance
        self.info = inner.info
        self.max_batch = max(1, max_batch)
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()
        self._active = 0
        self._parked = 0
        self._queue: list[_Parked] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                batch = self._take_ready()
            if batch:
                self._flush(batch)

    def apply(
        self, ticket: Ticket, actions: Actions, *, on_conflict: ConflictHandler | None = None
    ) -> ApplyResult:
        item = _Parked(ticket, actions, on_conflict)
        with self._lock:
            self._queue.append(item)
            self._parked += 1
            batch = self._take_ready()
        if batch:
            self._flush(batch)
        item.done.wait()
        with self._lock:
            self._parked -= 1
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _take_ready(self) -> list[_Parked]:
        """The parked writes, when they should go now (call with the lock held)."""
        if self._queue and (len(self._queue) >= self.max_batch or self._parked >= self._active):
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            return batch
        return []

    def _flush(self, batch: list[_Parked]) -> None:
        self.batch_sizes.append(len(batch))
        handlers = {p.ticket.id: p.on_conflict for p in batch if p.on_conflict is not None}

        def on_conflict(fresh: Ticket) -> Actions | None:
            handler = handlers.get(fresh.id)
            return handler(fresh) if handler is not None else None

        try:
            if len(batch) == 1:
                only = batch[0]
                results = [
                    self.inner.apply(only.ticket, only.actions, on_conflict=only.on_conflict)
                ]
            else:
                results = self.inner.apply_many(
                    [(p.ticket, p.actions) for p in batch], on_conflict=on_conflict
                )
            by_id = {r.ticket_id: r for r in results}
            for index, parked in enumerate(batch):
                found = results[index] if index < len(results) else None
                if found is None or found.ticket_id != parked.ticket.id:
                    found = by_id.get(parked.ticket.id)
                parked.result = found or ApplyResult(
                    parked.ticket.id,
                    ok=False,
                    retryable=True,
                    error="the bulk update returned no result for this ticket",
                )
        except BaseException as error:  # handed to every thread of the batch, which raises it
            for parked in batch:
                parked.error = error
        finally:
            for parked in batch:
                parked.done.set()


# --- the run -----------------------------------------------------------------------------------

#: Errors that concern the whole instance, not one ticket: the run of that instance stops and
#: its cursor stays where it is.
_STOPS_THE_RUN: tuple[type[BaseException], ...] = (
    RateLimited,
    AuthError,
    StoreUnavailableError,
    LeaseLostError,
)


class _Stop(Exception):
    """Internal: a run-stopping error happened on another thread; this ticket was not started."""


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:sync"


class Syncer:
    """Runs sync passes over a Processor's instances.

    ``api_calls(instance)`` returns how many HTTP calls an instance's connector has made so far
    (see :class:`CallCounter`); ``progress`` is called as tickets finish.
    """

    def __init__(
        self,
        processor: Processor,
        options: SyncOptions | None = None,
        *,
        api_calls: Callable[[str], int] | None = None,
        progress: Progress | None = None,
        owner: str | None = None,
    ) -> None:
        self.processor = processor
        self.options = options or SyncOptions()
        self.api_calls = api_calls
        self.progress = progress
        self.owner = owner or default_owner()

    @property
    def store(self) -> Store:
        return self.processor.store

    def run(self, instances: Sequence[str] | None = None) -> SyncReport:
        """One pass over each instance (all the processor serves when None)."""
        names = list(instances) if instances else sorted(self.processor.connectors)
        started = time.monotonic()
        report = SyncReport(self.processor.clock(), self.options.dry_run)
        for name in names:
            report.instances[name] = self.sync_instance(name)
        report.duration = time.monotonic() - started
        return report

    def sync_instance(self, instance: str) -> InstanceResult:
        result = InstanceResult(instance)
        calls_before = self.api_calls(instance) if self.api_calls else 0
        try:
            if self.options.dry_run:
                self._passes(instance, result, None)
            else:
                lease = SyncLease.acquire(
                    self.store,
                    instance,
                    self.owner,
                    duration=self.options.lease,
                    clock=self.processor.clock,
                )
                if lease is None:
                    result.locked_by = SyncLease.holder(self.store, instance) or "another run"
                    log.info("%s: skipped, another sync holds it (%s)", instance, result.locked_by)
                    return result
                with lease.kept():
                    self._passes(instance, result, lease)
        except RateLimited as error:
            resume = getattr(error, "resume_at", None)
            if not isinstance(resume, datetime) and error.retry_after:
                resume = self.processor.clock() + timedelta(seconds=float(error.retry_after))
            result.resume_at = resume if isinstance(resume, datetime) else None
            result.stopped = f"throttled: {self._safe(error)}"
            log.warning("%s: sync stopped, cursor kept: %s", instance, result.stopped)
        except (AuthError, StoreUnavailableError, LeaseLostError) as error:
            result.stopped = self._safe(error)
            log.error("%s: sync stopped, cursor kept: %s", instance, result.stopped)
        except EscbridgeError as error:  # the helpdesk failed the scan itself (5xx, 404, …)
            result.stopped = self._safe(error)
            log.error("%s: sync stopped, cursor kept: %s", instance, result.stopped)
        except ValueError as error:  # e.g. a stored cursor this connector cannot read
            result.stopped = self._safe(error)
            log.exception("%s: sync stopped, cursor kept", instance)
        finally:
            if self.api_calls:
                result.api_calls = self.api_calls(instance) - calls_before
        return result

    def _safe(self, error: BaseException) -> str:
        return redact(f"{type(error).__name__}: {error}", self.processor.secrets)

    def _passes(self, instance: str, result: InstanceResult, lease: SyncLease | None) -> None:
        seen: set[str] = set()  # tickets processed in this run (the sweep skips them)
        stages = [CHANGES, SWEEP] if self.options.sweep else [CHANGES]
        for stage in stages:
            self._scan(instance, stage, result, lease, seen)

    def _scan(
        self,
        instance: str,
        stage: str,
        result: InstanceResult,
        lease: SyncLease | None,
        seen: set[str],
    ) -> None:
        connector = self.processor.connectors[instance]
        stream = STREAMS[stage]
        started = self.processor.clock()
        stored = self.store.get_cursor(instance, stream)
        since: datetime | None
        cursor: str | None
        if stage == CHANGES:
            if self.options.since is not None:
                since, cursor = self.options.since, None
            else:
                since = stored.since if stored else None
                cursor = stored.cursor if stored else None
            covered: datetime | None = started
        else:
            resuming = stored is not None and stored.cursor is not None
            since = stored.since if resuming and stored else started - self.options.lookback
            cursor = stored.cursor if resuming and stored else None
            covered = since
        pages = connector.iter_tickets(since, cursor)
        try:
            for number, page in enumerate(pages, 1):
                if lease is not None:
                    lease.renew()
                tickets = [t for t in page.tickets if t.id not in seen]
                seen.update(t.id for t in tickets)
                self._process_page(instance, stage, number, tickets, result)
                result.pages += 1
                if lease is not None:
                    lease.renew()  # committing a page is for the holder only
                    self._commit(instance, stream, page, covered)
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        if lease is not None and stage == SWEEP:
            # A finished sweep forgets its cursor: the next one starts afresh.
            self.store.save_cursor(instance, None, started, self.processor.clock(), stream)

    def _commit(
        self, instance: str, stream: str, page: TicketPage, covered: datetime | None
    ) -> None:
        """Save where the pass resumes, now that every ticket of ``page`` is recorded."""
        self.store.save_cursor(instance, page.cursor, covered, self.processor.clock(), stream)

    # -- one page ------------------------------------------------------------------------

    def _process_page(
        self,
        instance: str,
        stage: str,
        number: int,
        tickets: Sequence[Ticket],
        result: InstanceResult,
    ) -> None:
        connector = self.processor.connectors[instance]
        bulk = CAP_BULK_UPDATE in connector.info.capabilities
        batch = self.options.batch_size
        done = 0

        def tick() -> None:
            if self.progress is not None:
                self.progress(ProgressEvent(instance, stage, number, done, len(tickets), result))

        tick()
        if self.options.dry_run or not bulk or batch <= 1 or len(tickets) <= 1:
            for ticket in tickets:
                self._one(self.processor, instance, ticket, result)
                done += 1
                tick()
            return

        batcher = _BatchingConnector(connector, batch)
        processor = self._with_connector(instance, batcher)
        stop = threading.Event()
        first_error: list[BaseException] = []
        lock = threading.Lock()

        def work(ticket: Ticket) -> None:
            nonlocal done
            if stop.is_set():
                raise _Stop()
            try:
                with batcher.working():
                    self._one(processor, instance, ticket, result)
            except BaseException as error:
                stop.set()
                with lock:
                    first_error.append(error)
                raise
            finally:
                with lock:
                    done += 1
                tick()

        workers = min(batch, len(tickets))
        with ThreadPoolExecutor(workers, thread_name_prefix=f"sync-{instance}") as pool:
            futures: list[Future[None]] = [pool.submit(work, t) for t in tickets]
        for future in futures:
            future.exception()  # all finished: the pool is shut down
        result.batches += len(batcher.batch_sizes)
        if first_error:
            raise first_error[0]

    def _with_connector(self, instance: str, connector: _BatchingConnector) -> Processor:
        """The same processor (store, engine, clock, settings), writing through ``connector``."""
        p = self.processor
        return Processor(
            p.store,
            p.engine,
            {**p.connectors, instance: cast("Connector", connector)},
            settings=p.settings,
            clock=p.clock,
            rng=p.rng,
            secrets=p.secrets,
            worker_id=p.worker_id,
            cooldown=p.cooldown,
        )

    def _one(
        self, processor: Processor, instance: str, ticket: Ticket, result: InstanceResult
    ) -> None:
        """Process one ticket; a failure of this ticket alone is counted and handed to the inbox."""
        try:
            outcome = processor.process_ticket(instance, ticket, dry_run=self.options.dry_run)
        except _STOPS_THE_RUN:
            raise
        except Exception as error:  # one ticket's failure: counted, kept for a worker, not fatal
            reason = self._safe(error)
            log.warning("%s/%s: %s", instance, ticket.id, reason)
            result.fail(ticket.id, reason)
            if not self.options.dry_run:
                self._hand_to_worker(instance, ticket, reason)
            return
        result.count(outcome, self.options.dry_run)

    def _hand_to_worker(self, instance: str, ticket: Ticket, reason: str) -> None:
        """Keep a failed ticket in the inbox: a worker retries it with backoff, or dead-letters
        it where `escbridge jobs` shows it. One job per ticket version, however many runs fail."""
        version = ticket.version or ticket.updated_at.isoformat()
        digest = hashlib.sha256(f"{ticket.id}\0{version}".encode()).hexdigest()[:32]
        event = TicketEvent(
            instance=instance,
            ticket_id=ticket.id,
            dedupe_key=f"sync:{digest}",
            kind="sync.failed",
            occurred_at=ticket.updated_at,
        )
        try:
            self.processor.enqueue(event)
        except StoreUnavailableError as error:
            log.error(
                "%s/%s: could not keep the failure for a worker: %s", instance, ticket.id, error
            )


# --- building the processor: counting API calls --------------------------------------------------


class CallCounter:
    """HTTP calls per instance, counted where every request passes: the requests Session."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []

    def bump(self, instance: str) -> None:
        with self._lock:
            self._counts[instance] += 1

    def __call__(self, instance: str) -> int:
        with self._lock:
            return self._counts[instance]

    def session(self, instance: str) -> requests.Session:
        session = _CountingSession(lambda: self.bump(instance))
        with self._lock:
            self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close the sessions handed out (their keep-alive connections with them)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


class _CountingSession(requests.Session):
    def __init__(self, count: Callable[[], None]) -> None:
        super().__init__()
        self._count = count

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self._count()
        return super().send(request, **kwargs)


def _accepts(cls: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


class _InstrumentedRegistry(Registry):
    """The installed plugins, built with a counting session and any extra constructor
    arguments (``utcnow=``, ``sleep=``, …) their constructors accept."""

    def __init__(self, counter: CallCounter, overrides: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.counter = counter
        self.overrides = dict(overrides or {})

    def create(self, instance: InstanceConfig, **overrides: Any) -> Connector:
        plugin = self.load(instance.type)
        extra = {k: v for k, v in self.overrides.items() if _accepts(plugin.cls, k)}
        if _accepts(plugin.cls, "session"):
            extra["session"] = self.counter.session(instance.name)
        return plugin.create(instance, **{**extra, **overrides})


def build_sync_processor(
    config: Config,
    counter: CallCounter,
    *,
    overrides: Mapping[str, Any] | None = None,
    store: Store | None = None,
) -> Processor:
    """``build_processor`` for escbridge.yaml, with connectors whose HTTP calls are counted."""
    from escbridge.processing import build_processor

    return build_processor(config, registry=_InstrumentedRegistry(counter, overrides), store=store)


# --- output --------------------------------------------------------------------------------------


class ProgressBar:
    """One line on a terminal, redrawn as tickets finish."""

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        final = event.done >= event.size
        with self._lock:
            if not final and now - self._last < 0.1:
                return
            self._last = now
            filled = self.WIDTH if not event.size else self.WIDTH * event.done // event.size
            bar = "█" * filled + "░" * (self.WIDTH - filled)
            r = event.result
            escalated = sum(r.escalated.values())
            line = (
                f"\r{event.instance} {event.stage} page {event.page} {bar} "
                f"{event.done}/{event.size}  scanned {r.scanned}  escalated {escalated}  "
                f"failed {r.failed}"
            )
            self.stream.write(line[: self._columns()] + "\x1b[K")
            self.stream.flush()

    def finish(self) -> None:
        with self._lock:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    @staticmethod
    def _columns() -> int:
        import shutil

        return shutil.get_terminal_size((100, 20)).columns + 1


def format_report(report: SyncReport) -> str:
    """The summary a person reads at a terminal."""
    lines: list[str] = []
    mode = " (dry run: nothing was changed)" if report.dry_run else ""
    for name, r in report.instances.items():
        if r.locked_by:
            lines.append(f"{name}: skipped — another sync is running ({r.locked_by})")
            continue
        levels = ", ".join(f"{n} to {dest}" for dest, n in sorted(r.escalated.items())) or "none"
        verb = "would escalate" if report.dry_run else "escalated"
        lines.append(
            f"{name}: scanned {r.scanned}, {verb} {sum(r.escalated.values())} ({levels}), "
            f"skipped {r.skipped}, failed {r.failed}, {r.api_calls} API calls"
        )
        if r.recovered:
            lines.append(f"  {r.recovered} recorded after an earlier run stopped mid-way")
        if r.stopped:
            when = (
                f"; resume after {r.resume_at.isoformat(timespec='seconds')}" if r.resume_at else ""
            )
            lines.append(f"  stopped early, the cursor is kept: {r.stopped}{when}")
        for ticket_id, reason in r.failures[:10]:
            lines.append(f"  failed #{ticket_id}: {reason}")
    if report.dry_run and report.escalations:
        lines.append("")
        lines.append("would escalate:")
        for e in report.escalations:
            where = f" ({e.group})" if e.group else ""
            lines.append(f"  {e.instance} #{e.ticket_id} → {e.destination}{where}: {e.summary}")
    lines.append(f"done in {report.duration:.1f}s{mode}")
    return "\n".join(lines) + "\n"


# --- `escbridge sync` ----------------------------------------------------------------------------


def _parse_since(text: str) -> datetime:
    """An ISO time (UTC unless a zone is given), or a duration meaning "that long ago"."""
    from escbridge.calendar import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'"{text}" is neither a time (2026-03-11T15:00:00Z) nor a duration (2h, 3d)'
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _parse_duration(text: str) -> timedelta:
    from escbridge.calendar import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f'"{text}" must be longer than zero')
    return value


def configure_sync_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Scan the helpdesks for tickets a time limit has caught up with (idle, SLA, time at "
        "level) and for changes a webhook missed; escalate them exactly as a webhook would. "
        "On a terminal it shows progress; otherwise it prints one JSON summary line per run."
    )
    parser.add_argument("--config", default="escbridge.yaml", help="escbridge.yaml to use")
    parser.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="NAME",
        help="only this instance (repeatable; default: every instance)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="change nothing (no update, no record, no cursor) and print what would escalate",
    )
    parser.add_argument(
        "--since",
        type=_parse_since,
        metavar="TIME",
        help="scan changes since TIME (ISO 8601, or a duration such as 2h: that long ago) "
        "instead of the stored cursor",
    )
    parser.add_argument(
        "--lookback",
        type=_parse_duration,
        default=timedelta(days=14),
        metavar="DURATION",
        help="the sweep re-checks open tickets updated within this (default 14d)",
    )
    parser.add_argument(
        "--no-sweep",
        action="store_true",
        help="only scan changes since the cursor (time-based rules then fire only on webhooks)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=50,
        metavar="N",
        help="tickets processed together, writes joined into bulk calls (default 50)",
    )
    parser.add_argument("--loop", action="store_true", help="run again every --interval")
    parser.add_argument(
        "--interval",
        type=_parse_duration,
        default=timedelta(seconds=60),
        metavar="DURATION",
        help="time between runs with --loop (default 60s)",
    )
    parser.add_argument("--json", action="store_true", help="JSON summary even on a terminal")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each escalation")


def run_sync(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`escbridge sync`: 0 all scanned, 1 a ticket failed or an instance stopped early,
    2 invalid input."""
    from escbridge.config import load_config

    out = out or sys.stdout
    err = err or sys.stderr
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(message)s",
            stream=err,
        )
    if args.batch_size < 1:
        print("escbridge sync: --batch-size must be at least 1", file=err)
        return EXIT_INVALID
    counter = CallCounter()
    try:
        config = load_config(args.config)
        unknown = [name for name in args.instance if name not in config.instances]
        if unknown:
            known = ", ".join(sorted(config.instances)) or "none"
            print(
                f"escbridge sync: unknown instance {', '.join(unknown)} (configured: {known})",
                file=err,
            )
            return EXIT_INVALID
        processor = build_sync_processor(config, counter)
        processor.store.check_schema()
    except InvalidInputError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=err)
        return EXIT_INVALID
    except EscbridgeError as error:
        print(f"escbridge sync: {error}", file=err)
        return EXIT_PROBLEM
    interactive = not args.json and out.isatty()
    bar = ProgressBar(err) if interactive and err.isatty() else None
    options = SyncOptions(
        dry_run=args.dry_run,
        since=args.since,
        lookback=args.lookback,
        sweep=not args.no_sweep,
        batch_size=args.batch_size,
    )
    syncer = Syncer(processor, options, api_calls=counter, progress=bar)
    instances = args.instance or sorted(config.instances)
    try:
        if not args.loop:
            report = syncer.run(instances)
            _emit(report, out, bar, interactive)
            return EXIT_OK if report.ok else EXIT_PROBLEM
        return _loop(syncer, instances, args.interval, out, bar, interactive)
    finally:
        processor.store.close()
        counter.close()


def _emit(report: SyncReport, out: TextIO, bar: ProgressBar | None, interactive: bool) -> None:
    if bar is not None:
        bar.finish()
    if interactive:
        out.write(format_report(report))
    else:
        out.write(json.dumps(report.as_json(), default=str) + "\n")
    out.flush()


def _loop(
    syncer: Syncer,
    instances: Sequence[str],
    interval: timedelta,
    out: TextIO,
    bar: ProgressBar | None,
    interactive: bool,
) -> int:
    """Run until SIGTERM/SIGINT. An instance that ran out of API budget waits until it is back."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after this run", signal.Signals(signum).name)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    not_before: dict[str, datetime] = {}
    try:
        while not stop.is_set():
            now = syncer.processor.clock()
            due = [n for n in instances if not_before.get(n, now) <= now]
            report = syncer.run(due) if due else SyncReport(now, syncer.options.dry_run)
            for name, result in report.instances.items():
                if result.resume_at is not None:
                    not_before[name] = result.resume_at
                else:
                    not_before.pop(name, None)
            _emit(report, out, bar, interactive)
            stop.wait(interval.total_seconds())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK
