"""The one place where an event or a ticket becomes an escalation, exactly once in effect.

Both paths meet in :meth:`Processor.process_ticket`: a webhook event (through the inbox and a
worker) and a scheduled scan (``escbridge sync``) lock the ticket, fetch it, let the engine
decide, write an *intent*, apply, and record. Deciding and applying are written only here.

Why each step is there (ARCHITECTURE.md, "Exactly-once in effect"):

- the inbox's unique dedupe key drops a redelivered webhook at the door;
- a per-ticket lock stops two workers, handling two events of one ticket, from both seeing it
  un-escalated and both applying;
- the intent is written before the connector is called. A worker that dies between apply and
  record leaves it behind; the retry re-fetches the ticket, finds the level marker of the
  intent on it, and *records* the escalation (outcome ``recovered``, with the intent's rule and
  reasons) instead of applying it again. An apply that landed only in part (the group or tags
  of the intent there, its marker not: Zoho Desk's bulk writes stopped by its daily credits)
  is completed through the connector's idempotent re-apply and recorded the same way. No
  trace at all means the apply never landed: the intent is dropped and the ticket decided
  afresh;
- failures are retried with exponential backoff and jitter; permanent ones (and those that
  keep failing) are dead-lettered with a redacted reason, listed by `escbridge jobs` and
  replayed by `escbridge jobs retry`.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from escbridge.errors import (
    ConfigError,
    EscbridgeError,
    InvalidInputError,
    StoreUnavailableError,
)
from escbridge.http import (
    AuthError,
    Conflict,
    NotFound,
    PermissionDeniedError,
    RateLimited,
    TransientError,
    ValidationError,
)
from escbridge.matrix import MARKER_PREFIX
from escbridge.model import Actions, Decision, EscalationRecord, Status, Ticket, TicketEvent
from escbridge.secrets import redact
from escbridge.store import (
    APPLIED,
    RECOVERED,
    Enqueued,
    Intent,
    Job,
    LockLostError,
    Store,
    StoredEscalation,
    TicketLock,
)

if TYPE_CHECKING:
    import argparse

    from escbridge.config import Config
    from escbridge.connector import ApplyResult, Connector, Registry

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_worker_id() -> str:
    """host:pid — unique among live workers, readable in `escbridge jobs`."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- settings: the `processing:` section of escbridge.yaml --------------------------------


class ProcessingConfig(BaseModel):
    """How workers retry and share work. Every key is optional::

    processing:
      max_attempts: 8          # tries per event before it is dead-lettered
      backoff_seconds: 2       # first retry delay; doubles each attempt, with jitter
      max_backoff_seconds: 900 # cap on one retry delay (15 minutes)
      lease_seconds: 300       # a worker silent this long is presumed dead; its events return
      batch_size: 10           # events one worker claims at a time
      poll_seconds: 1          # how often an idle worker looks for new events
      concurrency: 1           # worker threads per `escbridge worker` (--concurrency wins)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=8, ge=1, le=1000)
    backoff_seconds: float = Field(default=2.0, gt=0)
    max_backoff_seconds: float = Field(default=900.0, gt=0)
    lease_seconds: float = Field(default=300.0, gt=0)
    batch_size: int = Field(default=10, ge=1, le=1000)
    poll_seconds: float = Field(default=1.0, gt=0)
    concurrency: int = Field(default=1, ge=1, le=256)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    @classmethod
    def from_config(cls, config: Config) -> ProcessingConfig:
        """The section of a loaded escbridge.yaml; errors point at its file:line."""
        try:
            return cls.model_validate(config.processing)
        except PydanticValidationError as error:
            from escbridge.yamlfile import YamlDocument, problems_from_validation

            doc = config.source or YamlDocument(str(config.path), None, {})
            raise ConfigError(
                problems_from_validation(doc, error, prefix=("processing",))
            ) from None


# --- what comes out ----------------------------------------------------------------------

OutcomeStatus = Literal["escalated", "recovered", "unchanged", "dry_run", "busy", "own_change"]


@dataclass(frozen=True)
class Outcome:
    """What processing one ticket came to.

    ``escalated``: applied and recorded now. ``recovered``: an earlier apply had landed but was
    not recorded (the worker died); recorded now. ``unchanged``: the engine found nothing to
    do (``decision.summary`` says why). ``dry_run``: the decision, with nothing written.
    ``busy``: another worker holds the ticket; it will see the same state.
    """

    status: OutcomeStatus
    instance: str
    ticket_id: str
    decision: Decision | None = None
    ticket: Ticket | None = None
    escalation: StoredEscalation | None = None

    @property
    def summary(self) -> str:
        if self.status == "busy":
            return "another worker is processing this ticket"
        if self.status == "own_change":
            return "escbridge's own change: ignored"
        return self.decision.summary if self.decision is not None else self.status


@dataclass
class RunReport:
    """What one pass over the inbox did, for logs, tests and the benchmark."""

    claimed: int = 0
    done: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, other: RunReport) -> None:
        self.claimed += other.claimed
        self.done += other.done
        self.retried += other.retried
        self.dead += other.dead
        self.deferred += other.deferred
        for key, count in other.outcomes.items():
            self.outcomes[key] = self.outcomes.get(key, 0) + count


# --- errors and how they are retried --------------------------------------------------------


class ProcessingError(EscbridgeError):
    """Processing one ticket failed; ``retryable`` says whether trying later may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        self.retryable = retryable
        super().__init__(message)


class ApplyFailedError(ProcessingError):
    """The connector answered the apply with a failure instead of raising."""


class UnknownInstanceError(ProcessingError):
    """The event names an instance this worker has no connector for."""

    def __init__(self, instance: str, known: Collection[str]) -> None:
        names = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"no connector for instance '{instance}' (configured: {names})", retryable=False
        )


_PERMANENT: tuple[type[BaseException], ...] = (
    AuthError,
    PermissionDeniedError,
    NotFound,
    ValidationError,
    InvalidInputError,
)


@dataclass(frozen=True)
class Failure:
    """How a failed attempt continues: retried (not before ``min_delay``) or dead-lettered."""

    retryable: bool
    reason: str
    min_delay: float = 0.0


def classify(error: BaseException) -> Failure:
    """Retry what time can cure (5xx, timeouts, 429, conflicts, outages); not what it can't."""
    reason = f"{type(error).__name__}: {error}"
    if isinstance(error, RateLimited):
        return Failure(True, reason, float(error.retry_after or 0.0))
    if isinstance(error, TransientError | Conflict | StoreUnavailableError | LockLostError):
        return Failure(True, reason)
    if isinstance(error, ProcessingError):
        return Failure(error.retryable, reason)
    if isinstance(error, _PERMANENT):
        return Failure(False, reason)
    # Anything unforeseen (a network error a connector let through, a bug): retried, and
    # dead-lettered after max_attempts, so it is never dropped and never loops forever.
    return Failure(True, reason)


def backoff_delay(attempt: int, settings: ProcessingConfig, rng: random.Random) -> float:
    """Seconds before retry ``attempt`` (1-based): exponential, capped, with "equal jitter"."""
    growth: float = 2.0 ** (attempt - 1)
    ceiling = min(settings.max_backoff_seconds, settings.backoff_seconds * growth)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def landed(ticket: Ticket, actions: Actions) -> bool:
    """Whether ``actions`` are visible on ``ticket``: the level marker, or failing that its effects.

    The marker is authoritative. Without one (a decision that sets no level), the group and
    the added tags must all be there.
    """
    if actions.level:
        return ticket.level == actions.level or f"{MARKER_PREFIX}{actions.level}" in ticket.tags
    checks: list[bool] = []
    if actions.group:
        checks.append((ticket.group or "").lower() == actions.group.lower())
    if actions.tags_add:
        checks.append(all(tag.lower() in ticket.tags for tag in actions.tags_add))
    return bool(checks) and all(checks)


def partly_landed(ticket: Ticket, actions: Actions) -> bool:
    """Whether some of ``actions`` but not their level marker are on ``ticket``.

    A connector that writes one escalation in several calls and the marker last (Zoho Desk's
    ``updateMany``: department and team first, the level field last) can be stopped in between;
    the ticket then sits in the target group without the marker, and the engine, reading the
    level off the group, would find nothing left to do.
    """
    if not actions.level or landed(ticket, actions):
        return False
    if actions.group and (ticket.group or "").lower() == actions.group.lower():
        return True
    return bool(actions.tags_add) and all(tag.lower() in ticket.tags for tag in actions.tags_add)


def _resume(connector: Connector, ticket: Ticket, actions: Actions) -> bool:
    """Re-apply an escalation that landed in part (see :func:`partly_landed`); whether it did.

    Only for a connector that declares ``CAP_RESUMABLE_APPLY``: its ``apply`` is idempotent on
    a re-apply and never writes a second note. Others write an escalation in one call, so a
    partial one is a person's change, and the ticket is decided afresh.
    """
    from escbridge.connector import CAP_RESUMABLE_APPLY

    if CAP_RESUMABLE_APPLY not in connector.info.capabilities:
        return False
    result = connector.apply(ticket, actions)
    if not result.ok or result.skipped:
        raise ApplyFailedError(
            f"completing an escalation that landed in part failed: "
            f"{result.error or 'the connector skipped it'}",
            retryable=result.retryable if not result.ok else True,
        )
    return True


def _complete(connector: Connector, ticket: Ticket, actions: Actions) -> None:
    """Finish an escalation that landed only in part before a crash.

    A connector that writes one escalation in several calls (Freshdesk: the ticket, then the
    note) declares ``CAP_RESUMABLE_APPLY``: its ``apply`` on a ticket that already carries the
    marker writes only what is missing and never a second note. Others wrote it all at once.
    """
    from escbridge.connector import CAP_RESUMABLE_APPLY

    if CAP_RESUMABLE_APPLY not in connector.info.capabilities:
        return
    result = connector.apply(ticket, actions)
    if not result.ok:
        raise ApplyFailedError(
            f"completing an escalation that landed in part failed: "
            f"{result.error or 'no reason given'}",
            retryable=result.retryable,
        )


# --- the processor ---------------------------------------------------------------------------


class DecisionEngine(Protocol):
    """What processing needs of ``escbridge.policy.Engine``."""

    def decide(
        self, ticket: Ticket, history: Sequence[EscalationRecord], now: datetime
    ) -> Decision: ...


class Processor:
    """Turns events and tickets into recorded escalations.

    Thread-safe: one Processor may serve several worker threads (each with its own id).
    ``clock`` and ``rng`` are injectable so tests and benchmarks control time and jitter.
    """

    def __init__(
        self,
        store: Store,
        engine: DecisionEngine,
        connectors: Mapping[str, Connector],
        *,
        settings: ProcessingConfig | None = None,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        secrets: Collection[str] = (),
        worker_id: str | None = None,
        cooldown: timedelta | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.connectors = dict(connectors)
        self.settings = settings or ProcessingConfig()
        self.clock = clock
        self.rng = rng or random.Random()
        self.secrets = tuple(secrets)
        self.worker_id = worker_id or default_worker_id()
        matrix = getattr(engine, "matrix", None)
        self.cooldown = cooldown if cooldown is not None else getattr(matrix, "cooldown", None)
        self._rng_lock = threading.Lock()

    # --- the event path: in through the inbox ---------------------------------------------

    def enqueue(self, event: TicketEvent) -> Enqueued:
        """Keep a webhook event for a worker; a redelivery comes back as a duplicate.

        Raises StoreUnavailableError when the database cannot take it: the receiver answers
        503 so the helpdesk delivers again later. Nothing is ever dropped silently.
        """
        return self.store.enqueue(event, self.clock())

    def run_once(self, worker_id: str | None = None, limit: int | None = None) -> RunReport:
        """Claim a batch of due events and process each; what happened, counted."""
        worker = worker_id or self.worker_id
        report = RunReport()
        jobs = self.store.claim(
            worker,
            self.clock(),
            limit=limit or self.settings.batch_size,
            lease=self.settings.lease,
            max_attempts=self.settings.max_attempts,
        )
        report.claimed = len(jobs)
        for job in jobs:
            self._handle(job, worker, report)
        return report

    def _handle(self, job: Job, worker: str, report: RunReport) -> None:
        try:
            outcome = self._process_job(job, worker)
        except Exception as error:  # every failure is retried or dead-lettered, never lost
            self._fail(job, error, report)
            return
        if outcome.status == "busy":
            # Not an attempt: the other worker sees the same ticket. Try again shortly.
            delay = min(self.settings.lease_seconds, 0.5 + self._uniform(0, 1.5))
            self.store.defer(job, self.clock() + timedelta(seconds=delay))
            report.deferred += 1
            return
        report.done += 1
        report.outcomes[outcome.status] = report.outcomes.get(outcome.status, 0) + 1

    def _process_job(self, job: Job, worker: str) -> Outcome:
        """Process a claimed job; unless the ticket is busy, the job is done when this returns."""
        connector = self._connector(job.instance)
        event = TicketEvent(
            instance=job.instance,
            ticket_id=job.ticket_id,
            dedupe_key=job.dedupe_key,
            kind=job.kind,
            actor=job.actor,
            occurred_at=job.occurred_at,
        )
        if connector.is_own_change(event):
            self._completed(self.store.complete(job, self.clock(), "own_change"), job)
            return Outcome("own_change", job.instance, job.ticket_id)
        return self._process(job.instance, job.ticket_id, self.clock(), worker=worker, job=job)

    @staticmethod
    def _completed(ok: bool, job: Job | None) -> None:
        if not ok and job is not None:
            log.warning("job %s: lease lost before completion (another worker has it)", job.id)

    def _fail(self, job: Job, error: BaseException, report: RunReport) -> None:
        failure = classify(error)
        reason = redact(failure.reason, self.secrets)
        now = self.clock()
        where = f"job {job.id} ({job.instance}/{job.ticket_id}, attempt {job.attempts})"
        try:
            if not failure.retryable or job.attempts >= self.settings.max_attempts:
                why = (
                    reason
                    if not failure.retryable
                    else f"gave up after {job.attempts} attempts: {reason}"
                )
                self.store.dead_letter(job, now, why)
                report.dead += 1
                log.error("%s dead-lettered: %s", where, why)
                return
            with self._rng_lock:
                delay = max(failure.min_delay, backoff_delay(job.attempts, self.settings, self.rng))
            self.store.retry_later(job, now + timedelta(seconds=delay), reason)
            report.retried += 1
            log.warning("%s failed, retrying in %.1fs: %s", where, delay, reason)
        except StoreUnavailableError as store_error:
            # The row keeps its lease and comes back when it expires: still not lost.
            log.error("%s failed (%s) and could not be rescheduled: %s", where, reason, store_error)

    def _uniform(self, low: float, high: float) -> float:
        with self._rng_lock:
            return self.rng.uniform(low, high)

    # --- the shared path: one ticket --------------------------------------------------------

    def process_ticket(
        self,
        instance: str,
        ticket: str | Ticket,
        now: datetime | None = None,
        *,
        dry_run: bool = False,
    ) -> Outcome:
        """Decide one ticket and, unless ``dry_run``, apply and record the escalation.

        The sync path calls this with the tickets of a scan (a Ticket is used as given unless
        a pending intent needs a fresh look); connector errors propagate, typed, to the caller.
        """
        return self._process(
            instance, ticket, now or self.clock(), worker=self.worker_id, dry_run=dry_run
        )

    def _connector(self, instance: str) -> Connector:
        try:
            return self.connectors[instance]
        except KeyError:
            raise UnknownInstanceError(instance, self.connectors) from None

    def _process(
        self,
        instance: str,
        ticket: str | Ticket,
        now: datetime,
        *,
        worker: str,
        job: Job | None = None,
        dry_run: bool = False,
    ) -> Outcome:
        connector = self._connector(instance)
        ticket_id = ticket.id if isinstance(ticket, Ticket) else str(ticket)
        if dry_run:
            fresh = self._fetch(connector, instance, ticket)
            decision = self.engine.decide(fresh, self.store.history(instance, ticket_id), now)
            status: OutcomeStatus = "dry_run" if decision.escalate else "unchanged"
            return Outcome(status, instance, ticket_id, decision, fresh)

        lock = self.store.lock_ticket(instance, ticket_id, worker, now, self.settings.lease)
        if lock is None:
            return Outcome("busy", instance, ticket_id)
        finished = False  # lock released (and job completed) by a store call below
        try:
            pending = lock.state.intent
            current = self._fetch(connector, instance, ticket_id if pending else ticket)
            self._note_resolution(lock, current, now)
            if pending is not None:
                assert pending.decision.actions is not None
                actions = pending.decision.actions
                if landed(current, actions):
                    _complete(connector, current, actions)
                    recovered = True
                else:
                    recovered = partly_landed(current, actions) and _resume(
                        connector, current, actions
                    )
                if recovered:
                    escalation = self._record(lock, pending, RECOVERED, job, connector)
                    finished = True
                    log.warning(
                        "%s/%s: recorded an escalation applied before a crash: %s",
                        instance,
                        ticket_id,
                        pending.decision.summary,
                    )
                    return Outcome(
                        "recovered", instance, ticket_id, pending.decision, current, escalation
                    )
                self.store.clear_intent(lock, now)  # it never reached the helpdesk
            decision = self.engine.decide(current, lock.history, now)
            if decision.escalate and decision.actions is not None:
                intent = Intent(
                    decision,
                    current.created_at,
                    job.id if job else None,
                    from_group=current.group,
                    channel=current.channel.value,
                )
                applied = self._apply(connector, lock, current, intent, lock.history, now)
                if applied is not None:
                    escalation = self._record(lock, applied, APPLIED, job, connector)
                    finished = True
                    log.info("%s/%s: %s", instance, ticket_id, applied.decision.summary)
                    return Outcome(
                        "escalated", instance, ticket_id, applied.decision, current, escalation
                    )
                self.store.clear_intent(lock, now)  # a re-decision found nothing left to do
            done = self.store.release(lock, job=job, outcome="unchanged", now=self.clock())
            finished = True
            self._completed(done, job)
            return Outcome("unchanged", instance, ticket_id, decision, current)
        finally:
            if not finished:
                try:
                    self.store.release(lock)
                except StoreUnavailableError as error:  # the lock expires by itself
                    log.warning("%s/%s: could not release lock: %s", instance, ticket_id, error)

    def _fetch(self, connector: Connector, instance: str, ticket: str | Ticket) -> Ticket:
        fetched = ticket if isinstance(ticket, Ticket) else connector.fetch_ticket(ticket)
        if fetched.instance != instance:
            fetched = fetched.model_copy(update={"instance": instance})
        return fetched

    def _apply(
        self,
        connector: Connector,
        lock: TicketLock,
        ticket: Ticket,
        intent: Intent,
        history: Sequence[EscalationRecord],
        now: datetime,
    ) -> Intent | None:
        """Write the intent, then apply; the intent actually applied, or None when a conflict
        re-decision found nothing left to do."""
        self.store.write_intent(lock, intent, now, lease=self.settings.lease)
        latest = intent

        def redecide(fresh: Ticket) -> Actions | None:
            # The ticket changed under us (409): decide again on what it is now, and make the
            # intent say so before the connector writes it.
            nonlocal latest
            fresh = fresh.model_copy(update={"instance": lock.instance})
            decision = self.engine.decide(fresh, history, now)
            if not decision.escalate or decision.actions is None:
                return None
            latest = Intent(
                decision,
                fresh.created_at,
                intent.job_id,
                from_group=intent.from_group,
                channel=intent.channel,
            )
            self.store.write_intent(lock, latest, now, lease=self.settings.lease)
            return decision.actions

        assert intent.decision.actions is not None
        result: ApplyResult = connector.apply(ticket, intent.decision.actions, on_conflict=redecide)
        if result.ok and result.skipped:
            return None
        if not result.ok:
            raise ApplyFailedError(
                f"apply failed: {result.error or 'no reason given'}", retryable=result.retryable
            )
        return latest

    def _note_resolution(self, lock: TicketLock, ticket: Ticket, now: datetime) -> None:
        """Keep ``resolved_at`` in step with the ticket: set the first time it is seen solved
        or closed (at its last change, else now), cleared when it is open again."""
        resolved = ticket.status in (Status.SOLVED, Status.CLOSED)
        if resolved and lock.state.resolved_at is None:
            at = ticket.updated_at if ticket.updated_at <= now else now
            self.store.set_resolved(lock, at, now)
        elif not resolved and lock.state.resolved_at is not None:
            self.store.set_resolved(lock, None, now)

    def _record(
        self,
        lock: TicketLock,
        intent: Intent,
        outcome: str,
        job: Job | None,
        connector: Connector,
    ) -> StoredEscalation:
        job_outcome = "escalated" if outcome == APPLIED else outcome
        return self.store.record_escalation(
            lock,
            intent,
            outcome=outcome,
            now=self.clock(),
            cooldown=self.cooldown,
            job=job,
            job_outcome=job_outcome,
            helpdesk=connector.info.name,
        )

    # --- the worker loop ------------------------------------------------------------------

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        concurrency: int | None = None,
        drain: bool = False,
    ) -> RunReport:
        """Process the inbox until ``stop`` is set (or, with ``drain``, until it is empty).

        ``concurrency`` threads each claim their own batches. A database outage does not end
        the loop: it is logged and retried with backoff.
        """
        stop = stop or threading.Event()
        count = concurrency or self.settings.concurrency
        total = RunReport()
        total_lock = threading.Lock()

        def loop(worker: str) -> None:
            pause = self.settings.poll_seconds
            while not stop.is_set():
                try:
                    report = self.run_once(worker)
                except StoreUnavailableError as error:
                    log.error("%s: %s; retrying in %.0fs", worker, error, pause)
                    stop.wait(pause)
                    pause = min(pause * 2, 60.0)
                    continue
                except Exception:  # a bug must not silently end a worker thread
                    log.exception("%s: unexpected error; carrying on in %.0fs", worker, pause)
                    stop.wait(pause)
                    pause = min(pause * 2, 60.0)
                    continue
                pause = self.settings.poll_seconds
                with total_lock:
                    total.add(report)
                if report.claimed:
                    continue
                if drain and self._drained():
                    return
                stop.wait(self.settings.poll_seconds)

        if count == 1:
            loop(self.worker_id)
            return total
        threads = [
            threading.Thread(target=loop, args=(f"{self.worker_id}/{i}",), name=f"worker-{i}")
            for i in range(count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return total

    def _drained(self) -> bool:
        counts = self.store.job_counts()
        return counts["pending"] == 0 and counts["processing"] == 0


# --- building a processor from escbridge.yaml --------------------------------------------------


def build_processor(
    config: Config,
    *,
    registry: Registry | None = None,
    store: Store | None = None,
    settings: ProcessingConfig | None = None,
) -> Processor:
    """The Processor escbridge.yaml describes: its store, matrix, and one connector per instance."""
    from escbridge.connector import create_connector
    from escbridge.matrix import load_matrix
    from escbridge.policy import Engine

    matrix = load_matrix(config.matrix_path)
    engine = Engine(matrix, helpdesks={name: i.type for name, i in config.instances.items()})
    connectors = {
        name: create_connector(instance, registry=registry)
        for name, instance in config.instances.items()
    }
    secrets = {value for i in config.instances.values() for value in i.secret_values}
    return Processor(
        store or Store(config.store_url),
        engine,
        connectors,
        settings=settings or ProcessingConfig.from_config(config),
        secrets=secrets,
    )


# --- `escbridge worker` ------------------------------------------------------------------------


def configure_worker_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Process the inbox: claim received events, decide, apply and record escalations. "
        "Run several (on one machine or many, sharing a PostgreSQL store) to share the work."
    )
    parser.add_argument("--config", default="escbridge.yaml", help="escbridge.yaml to use")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help="worker threads in this process (default: processing.concurrency, else 1)",
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="stop when no event is pending or in progress instead of waiting for more",
    )


def run_worker(args: argparse.Namespace) -> int:
    """`escbridge worker`: runs until SIGTERM/SIGINT, finishing the events in hand."""
    from escbridge.config import load_config

    if args.concurrency is not None and args.concurrency < 1:
        print("escbridge worker: --concurrency must be at least 1")
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        processor = build_processor(load_config(args.config))
        processor.store.check_schema()
    except InvalidInputError as error:
        print(f"escbridge worker: {error}")
        return 2
    except (StoreUnavailableError, EscbridgeError) as error:
        print(f"escbridge worker: {error}")
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the events in hand", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    concurrency = args.concurrency or processor.settings.concurrency
    log.info("worker %s: %d thread(s) on %r", processor.worker_id, concurrency, processor.store)
    try:
        report = processor.run(stop=stop, concurrency=concurrency, drain=args.drain)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        processor.store.close()
    print(
        f"processed {report.done} event(s): {_counts(report.outcomes)}; "
        f"{report.retried} retried, {report.dead} dead-lettered"
    )
    return 0


def _counts(outcomes: Mapping[str, Any]) -> str:
    return ", ".join(f"{count} {name}" for name, count in sorted(outcomes.items())) or "none"
