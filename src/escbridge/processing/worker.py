"""The Processor: the inbox's worker loop, and one ticket through plan -> apply -> record.

Both paths meet here. A webhook event (through the inbox and a worker) and a scheduled scan
(``escbridge sync``, which runs the same phases a page at a time) lock the ticket, fetch it,
let the engine decide, write an *intent*, apply, and record.

Why each step is there (ARCHITECTURE.md, "Exactly-once in effect"):

- the inbox's unique dedupe key drops a redelivered webhook at the door;
- a per-ticket lock stops two workers, handling two events of one ticket, from both seeing it
  un-escalated and both applying;
- the intent is written before the connector is called; a worker that dies between apply and
  record leaves it behind, and the retry records what landed instead of applying it again
  (:mod:`escbridge.processing.plan`);
- failures are retried with exponential backoff and jitter; permanent ones (and those that
  keep failing) are dead-lettered with a redacted reason, listed by `escbridge jobs` and
  replayed by `escbridge jobs retry`.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from escbridge.errors import (
    AuthError,
    Conflict,
    InvalidInputError,
    LockLostError,
    NotFound,
    PermissionDeniedError,
    ProcessingError,
    RateLimited,
    StoreUnavailableError,
    TransientError,
    UnknownInstanceError,
    ValidationError,
)
from escbridge.model import Actions, Ticket, TicketEvent
from escbridge.processing.apply import apply_plan, apply_plans, check
from escbridge.processing.plan import DecisionEngine, Plan, Planner, as_instance
from escbridge.processing.record import Outcome, OutcomeStatus, Recorder
from escbridge.processing.settings import Clock, ProcessingConfig, default_worker_id, utcnow
from escbridge.processing.shadow import Shadower, text_fields_read
from escbridge.secrets import redact
from escbridge.store import DUE_KIND, Enqueued, Job, ShadowWrite, Store, TicketLock

if TYPE_CHECKING:
    from escbridge.config import Config
    from escbridge.connector import ApplyResult, Connector, Registry
    from escbridge.notify.deliver import Notifier, NotifyReport

from escbridge.waiting import join, wait_for

log = logging.getLogger("escbridge.processing")

#: Inbox kinds escbridge makes itself (a due deadline, a ticket a sync run handed over): no
#: change on the helpdesk behind them, so never taken for escbridge's own change.
INTERNAL_KINDS = frozenset({DUE_KIND, "sync.failed"})

#: How an idle worker waits: ``wait(event, seconds)`` returns when the event is set or the
#: time is up (an accelerated clock replaces it in benchmarks).
Wait = Callable[[threading.Event, float], bool]


def _real_wait(event: threading.Event, seconds: float) -> bool:
    return wait_for(event, seconds)  # interruptible: the loop may be the main thread


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


#: The first backoff step of a notification, at least (seconds; the wait is half to all of a
#: step): see ``Processor._notify_backoff``.
NOTIFY_FIRST_RETRY = 30.0


def backoff_delay(attempt: int, settings: ProcessingConfig, rng: random.Random) -> float:
    """Seconds before retry ``attempt`` (1-based): exponential, capped, with "equal jitter"."""
    growth: float = 2.0 ** (attempt - 1)
    ceiling = min(settings.max_backoff_seconds, settings.backoff_seconds * growth)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


# --- escbridge's own writes -------------------------------------------------------------------


@dataclass(frozen=True)
class _Written:
    version: str
    level: str | None


class OwnWrites:
    """The ticket as escbridge's last write left it, per ticket: the version the helpdesk
    stamped on it (``ApplyResult.version``) and the level written.

    A webhook that names no actor (a Freshdesk rule body without a performer) cannot say whose
    change fired it; the worker fetches the ticket anyway, and when the ticket still carries
    exactly that version and level, nothing has changed since escbridge wrote it: the event
    is escbridge's own change (or one older than its write, already decided on) and is dropped.
    Any later change — a person's edit, note or reply — gives the ticket a new version, so it
    is never dropped. Kept in memory, bounded (least recently written forgotten first): an
    event this process cannot match is processed as usual, and the level marker stops a
    second escalation.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._written: OrderedDict[tuple[str, str], _Written] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, instance: str, result: ApplyResult) -> None:
        """Remember a write that landed (``ok``, with the version the helpdesk answered)."""
        if not result.ok or result.skipped or not result.version:
            return
        level = result.actions.level if result.actions is not None else None
        key = (instance, result.ticket_id)
        with self._lock:
            self._written.pop(key, None)
            self._written[key] = _Written(result.version, level)
            while len(self._written) > self.size:
                self._written.popitem(last=False)

    def unchanged_since_our_write(self, instance: str, ticket: Ticket) -> bool:
        """Whether ``ticket`` is exactly as escbridge's last write to it left it."""
        with self._lock:
            written = self._written.get((instance, ticket.id))
        if written is None or ticket.version is None:
            return False
        if written.level is not None and ticket.level != written.level:
            return False
        return ticket.version == written.version


# --- the processor ---------------------------------------------------------------------------


class Processor:
    """Turns events and tickets into recorded escalations.

    Thread-safe: one Processor may serve several worker threads (each with its own id).
    ``clock`` and ``rng`` are injectable so tests and benchmarks control time and jitter.
    The phases are public for the sync path: :meth:`plan`, :meth:`write_intents`,
    :meth:`apply`, :meth:`apply_many` and :meth:`record`.
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
        wait: Wait = _real_wait,
        notifier: Notifier | None = None,
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
        self.planner = Planner(store, engine)
        # The shadow and due-queue need an engine that can say when a ticket is next due.
        has_due = matrix is not None and callable(getattr(engine, "next_due", None))
        self.shadower = Shadower(engine) if has_due else None  # type: ignore[arg-type]
        if matrix is not None:  # a connector may spare a call a rule would never read
            needed = "latest_comment" in text_fields_read(matrix)
            for connector in self.connectors.values():
                if hasattr(connector, "latest_comment_needed"):
                    connector.latest_comment_needed = needed
        # The matrix's notify: targets: the record writes each escalation's notifications in
        # its transaction (the outbox), the worker loop delivers them (escbridge.notify).
        # A matrix without targets still gets a notifier: rows recorded under an earlier matrix
        # that had some are settled (no longer in the matrix), not left pending for ever.
        self.notifier = notifier
        outbox = None
        if matrix is not None:
            from escbridge.notify.deliver import Notifier, Outbox
            from escbridge.secrets import Redactor

            targets = getattr(matrix, "notify", None) or {}
            if self.notifier is None:  # retried, leased and dead-lettered as inbox events are
                self.notifier = Notifier(
                    store,
                    targets,
                    redactor=Redactor(self.secrets),
                    lease=self.settings.lease,
                    max_attempts=self.settings.max_attempts,
                    backoff=self._notify_backoff,
                    clock=self.clock,
                )
            if targets:
                outbox = Outbox(matrix, self._agent_url, on_written=self._notification_written)
        self.recorder = Recorder(store, self.shadower, on_due=self._due_recorded, outbox=outbox)
        self.own_writes = OwnWrites()
        self._rng_lock = threading.Lock()
        self._wait = wait
        self._bell = threading.Event()  # rung by wake(): an event is waiting
        self._hint_lock = threading.Lock()
        self._due_hint: datetime | None = None  # promote no earlier (None: at once)

    def _agent_url(self, instance: str, ticket_id: str) -> str | None:
        connector = self.connectors.get(instance)
        link = getattr(connector, "agent_url", None)
        return link(ticket_id) if callable(link) else None

    def _notification_written(self, at: datetime) -> None:
        """A record wrote notifications: this process's notifier looks at ``at``, and idle
        workers wake for them."""
        if self.notifier is not None:
            self.notifier.hint(at)
            self._bell.set()

    def notify_once(self, worker_id: str | None = None) -> NotifyReport | None:
        """Deliver the notifications due now (None: the matrix notifies nobody)."""
        if self.notifier is None:
            return None
        return self.notifier.run_once(worker_id or self.worker_id, self.clock())

    def wake(self) -> None:
        """Wake idle workers at once: an in-process receiver has just kept an event."""
        self._bell.set()

    def connector(self, instance: str) -> Connector:
        try:
            return self.connectors[instance]
        except KeyError:
            raise UnknownInstanceError(instance, list(self.connectors)) from None

    # --- the phases ---------------------------------------------------------------------

    def lock_page(
        self, instance: str, ticket_ids: Sequence[str], now: datetime
    ) -> dict[str, TicketLock]:
        """Lock a page of tickets in one statement; busy tickets are left out."""
        return self.planner.lock_page(
            instance, ticket_ids, self.worker_id, now, self.settings.lease
        )

    def plan(
        self, lock: TicketLock, ticket: str | Ticket, now: datetime, *, job: Job | None = None
    ) -> Plan:
        """Fetch, recover and decide one locked ticket (no store write)."""
        return self.planner.plan(self.connector(lock.instance), lock, ticket, now, job=job)

    def write_intents(self, plans: Sequence[Plan], now: datetime) -> list[Plan]:
        """The intents of the plans that will write, in one transaction; the plans whose lock
        was lost come back (they must not be applied)."""
        return self.planner.write_intents(plans, now, self.settings.lease)

    def apply(self, plan: Plan, now: datetime) -> ApplyResult:
        """Write one plan through its connector (a conflict is re-decided at ``now``)."""
        result = apply_plan(self.connector(plan.instance), plan, self._redecide(now))
        self.own_writes.note(plan.instance, result)
        return result

    def apply_many(self, plans: Sequence[Plan], now: datetime) -> list[ApplyResult]:
        """Write several new decisions of one instance in one bulk call."""
        if not plans:
            return []
        results = apply_plans(self.connector(plans[0].instance), plans, self._redecide(now))
        for result in results:
            self.own_writes.note(plans[0].instance, result)
        return results

    def record(
        self,
        plans: Sequence[Plan],
        now: datetime,
        *,
        failed: Sequence[Plan | TicketLock] = (),
        unsent: Sequence[Plan] = (),
        hand_off: Sequence[TicketEvent] = (),
    ) -> list[Outcome | LockLostError]:
        """Record the plans, release the locks of the failed and the unsent ones and keep
        ``hand_off`` events for workers: one transaction (see :meth:`Recorder.record`)."""
        helpdesk = self._helpdesk(plans[0].instance) if plans else None
        return self.recorder.record(
            plans,
            now,
            cooldown=self.cooldown,
            helpdesk=helpdesk,
            failed=failed,
            unsent=unsent,
            hand_off=hand_off,
        )

    def release(self, failed: Sequence[Plan | TicketLock], now: datetime) -> None:
        """Give back locks, keeping any intent; an outage is logged (the locks expire)."""
        if not failed:
            return
        try:
            self.recorder.release(failed, now)
        except StoreUnavailableError as error:
            log.warning("could not release %d lock(s): %s", len(failed), error)

    def _redecide(self, now: datetime) -> Callable[[Plan, Ticket], Actions | None]:
        lease = self.settings.lease

        def redecide(plan: Plan, fresh: Ticket) -> Actions | None:
            return self.planner.redecide(plan, fresh, now, lease)

        return redecide

    def _helpdesk(self, instance: str) -> str | None:
        connector = self.connectors.get(instance)
        return connector.info.name if connector is not None else None

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
        connector = self.connector(job.instance)
        event = TicketEvent(
            instance=job.instance,
            ticket_id=job.ticket_id,
            dedupe_key=job.dedupe_key,
            kind=job.kind,
            actor=job.actor,
            occurred_at=job.occurred_at,
        )
        internal = job.kind in INTERNAL_KINDS
        if not internal and connector.is_own_change(event):
            if not self.store.complete(job, self.clock(), "own_change"):
                log.warning("job %s: lease lost before completion (another worker has it)", job.id)
            return Outcome("own_change", job.instance, job.ticket_id)
        # The event cannot say whose change it was (no actor, or who escbridge writes as is
        # still unknown): the ticket, fetched anyway, is compared with escbridge's last write.
        ask = getattr(connector, "own_change_known", None)
        undecided = event.actor is None or (ask is not None and ask(event) is None)
        known = None
        if job.kind == DUE_KIND:  # the ticket as last seen: a connector may read less of it
            shadow = self.store.shadow(job.instance, job.ticket_id)
            known = shadow.ticket if shadow is not None else None
        try:
            return self._process(
                job.instance,
                job.ticket_id,
                self.clock(),
                worker=worker,
                job=job,
                echo_check=undecided and not internal,
                known=known,
            )
        except NotFound:
            if job.kind != DUE_KIND:
                raise
            # Deleted since it was last seen: nothing is due on it any more.
            now = self.clock()
            self.store.save_shadows([ShadowWrite(job.instance, job.ticket_id, None)], now)
            if not self.store.complete(job, now, "not_found"):
                log.warning("job %s: lease lost before completion", job.id)
            return Outcome("unchanged", job.instance, job.ticket_id)

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

    def _backoff(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` of a job (settings, jitter)."""
        with self._rng_lock:
            return backoff_delay(attempt, self.settings, self.rng)

    def _notify_backoff(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` of a notification: the jobs' rule from at least
        ``NOTIFY_FIRST_RETRY`` seconds, so the retries outlast a chat or mail outage of half an
        hour or so (steps of 30 s doubling to the 15-minute cap, each wait half to all of its
        step: about 23–45 minutes over 8 attempts) before a person is asked to replay, where an
        inbox event gives up in minutes."""
        first = max(self.settings.backoff_seconds, NOTIFY_FIRST_RETRY)
        settings = self.settings.model_copy(update={"backoff_seconds": first})
        with self._rng_lock:
            return backoff_delay(attempt, settings, self.rng)

    def _uniform(self, low: float, high: float) -> float:
        with self._rng_lock:
            return self.rng.uniform(low, high)

    # --- one ticket, phase by phase -------------------------------------------------------

    def process_ticket(
        self,
        instance: str,
        ticket: str | Ticket,
        now: datetime | None = None,
        *,
        dry_run: bool = False,
    ) -> Outcome:
        """Decide one ticket and, unless ``dry_run``, apply and record the escalation.

        A Ticket is used as given unless a pending intent needs a fresh look; connector errors
        propagate, typed, to the caller.
        """
        now = now or self.clock()
        if dry_run:
            return self.dry_run(instance, [ticket], now)[0]
        return self._process(instance, ticket, now, worker=self.worker_id)

    def dry_run(
        self, instance: str, tickets: Sequence[str | Ticket], now: datetime
    ) -> list[Outcome]:
        """What the engine decides for each ticket, with nothing written: the histories are
        read once for all of them, and a ticket id is fetched."""
        connector = self.connector(instance)
        current = [
            as_instance(t if isinstance(t, Ticket) else connector.fetch_ticket(t), instance)
            for t in tickets
        ]
        histories = self.store.histories(instance, [t.id for t in current])
        outcomes: list[Outcome] = []
        for ticket in current:
            decision = self.engine.decide(ticket, histories.get(ticket.id, []), now)
            status: OutcomeStatus = "dry_run" if decision.escalate else "unchanged"
            outcomes.append(Outcome(status, instance, ticket.id, decision, ticket))
        return outcomes

    def _process(
        self,
        instance: str,
        ticket: str | Ticket,
        now: datetime,
        *,
        worker: str,
        job: Job | None = None,
        echo_check: bool = False,
        known: Ticket | None = None,
    ) -> Outcome:
        connector = self.connector(instance)
        ticket_id = ticket.id if isinstance(ticket, Ticket) else str(ticket)
        lease = self.settings.lease
        lock = self.planner.lock(instance, ticket_id, worker, now, lease)
        if lock is None:
            return Outcome("busy", instance, ticket_id)
        held: Plan | TicketLock = lock
        try:
            if echo_check and job is not None and lock.state.intent is None:
                fetched = as_instance(connector.fetch_ticket(ticket_id), instance)
                if self.own_writes.unchanged_since_our_write(instance, fetched):
                    log.info(
                        "job %s: ticket %s is as escbridge's last write left it: own change",
                        job.id,
                        ticket_id,
                    )
                    if not self.store.release(lock, job=job, outcome="own_change", now=now):
                        log.warning("job %s: lease lost before completion", job.id)
                    return Outcome("own_change", instance, ticket_id, ticket=fetched)
                ticket = fetched  # planned as fetched: no second read
            refetch = getattr(connector, "refetch", None)
            if known is not None and refetch is not None and lock.state.intent is None:
                ticket = as_instance(refetch(ticket_id, known), instance)
            plan = self.planner.plan(connector, lock, ticket, now, job=job)
            held = plan
            self.planner.write_intent(plan, now, lease)
            if plan.writes:
                result = apply_plan(connector, plan, self._redecide(now))
                self.own_writes.note(instance, result)
                check(plan, result)
            outcome = self.recorder.record_one(
                plan, self.clock(), cooldown=self.cooldown, helpdesk=connector.info.name
            )
        except BaseException:
            self.release([held], self.clock())
            raise
        return outcome

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
        self.refresh_due_times()
        total = RunReport()
        total_lock = threading.Lock()

        def loop(worker: str) -> None:
            pause = self.settings.poll_seconds
            while not stop.is_set():
                try:
                    self._promote_due()
                    report = self.run_once(worker)
                    if self.notifier is not None:
                        self.notifier.maybe_run(worker, self.clock())
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
                self._idle(stop)

        # Events other processes keep (gunicorn in front of `escbridge worker`) wake the idle
        # workers at once on PostgreSQL (LISTEN/NOTIFY); on SQLite they wait for the next poll.
        listening = threading.Event()
        listener = threading.Thread(
            target=self.store.listen,
            args=(listening, self.wake),
            name="worker-listener",
            daemon=True,
        )
        if getattr(self.store, "dialect", None) == "postgresql":
            listener.start()
        try:
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
                join(thread)  # interruptible: a SIGTERM must reach the handler
            return total
        finally:
            listening.set()
            if listener.is_alive():
                listener.join()

    def _promote_due(self) -> None:
        """Move the deadlines that have come into the inbox. A write transaction, so taken
        only when one may be due: at the earliest deadline this process knows of, and at least
        every ``poll_seconds`` (another process may have stored an earlier one)."""
        if not self.settings.due_queue:
            return
        now = self.clock()
        with self._hint_lock:
            if self._due_hint is not None and now < self._due_hint:
                return
            self._due_hint = now + timedelta(seconds=self.settings.poll_seconds)
        if self.store.promote_due(now, limit=self.settings.batch_size):
            self._hint(now)  # more may be due at once
            return
        due = self.store.earliest_due()
        if due is not None:
            self._hint(due)

    def _due_recorded(self, at: datetime) -> None:
        """A record stored a deadline: idle workers of this process look again when it is
        sooner than what they sleep towards."""
        with self._hint_lock:
            sooner = self._due_hint is None or at < self._due_hint
        if sooner:
            self._hint(at)
            self._bell.set()

    def _hint(self, at: datetime) -> None:
        """A deadline may come at ``at``: promote then, not only at the next poll."""
        with self._hint_lock:
            if self._due_hint is None or at < self._due_hint:
                self._due_hint = at

    def refresh_due_times(self) -> int:
        """Due times stored under an earlier matrix, computed again under this one (at worker
        start: the matrix may have been edited). An outage is logged; the next start retries."""
        if self.shadower is None or not self.settings.due_queue:
            return 0
        try:
            count = self.shadower.refresh(self.store, self.clock())
        except StoreUnavailableError as error:
            log.error("could not recompute due times for the current matrix: %s", error)
            return 0
        if count:
            log.info("recomputed %d due time(s) for the current matrix", count)
        return count

    def _idle(self, stop: threading.Event) -> None:
        """Sleep until the earliest due time, an event kept in this process (:meth:`wake`) or
        ``poll_seconds`` (events kept by other processes), whichever comes first."""
        seconds = self.settings.poll_seconds
        with self._hint_lock:  # kept by _promote_due: the earliest deadline known, or a poll
            due = self._due_hint if self.settings.due_queue else None
        if due is not None:
            seconds = min(seconds, max(0.0, (due - self.clock()).total_seconds()))
        look = self.notifier.next_look if self.notifier is not None else None
        if look is not None:
            seconds = min(seconds, max(0.0, (look - self.clock()).total_seconds()))
        if seconds > 0 and not stop.is_set():
            self._wait(self._bell, seconds)
        self._bell.clear()

    def _drained(self) -> bool:
        counts = self.store.job_counts()
        if counts["pending"] or counts["processing"]:
            return False
        # Notifications due now are delivered before a drain ends (a digest window or quiet
        # hours still open is not waited for: the next worker sends it).
        return self.notifier is None or not self.store.notifications_due(self.clock())


# --- building a processor from escbridge.yaml --------------------------------------------------


def build_processor(
    config: Config,
    *,
    registry: Registry | None = None,
    store: Store | None = None,
    settings: ProcessingConfig | None = None,
    notify_environment: bool = False,
) -> Processor:
    """The Processor escbridge.yaml describes: its store, matrix, and one connector per instance.

    With ``notify_environment`` (the worker's and serve's start), every ``${VAR}`` the matrix's
    notify targets name must be set: NotifySetupError names each missing one and its target.
    The targets' resolved secrets join the processor's (``Processor.secrets``: the log mask).
    """
    from escbridge.config import routing
    from escbridge.connector import create_connector, default_registry
    from escbridge.matrix import load_matrix
    from escbridge.policy import Engine

    # A mistyped ``type:`` is one line naming the key (exit 2), the same in every command,
    # rather than the plugin loader's failure.
    config.require_helpdesks((registry or default_registry()).names())
    matrix = load_matrix(config.matrix_path)
    for name, instance in config.instances.items():  # validate/check refuse it; say it here too
        problem = routing(matrix, name, instance.type).problem()
        if problem is not None:
            log.warning("%s", problem)
    engine = Engine(matrix, helpdesks={name: i.type for name, i in config.instances.items()})
    connectors = {
        name: create_connector(instance, registry=registry)
        for name, instance in config.instances.items()
    }
    secrets = set(config.secret_values)
    if getattr(matrix, "notify", None):
        import os

        from escbridge.notify.model import NotifySetupError, environment_problems, resolve

        problems = environment_problems(matrix, os.environ)
        if problems and notify_environment:
            raise NotifySetupError("; ".join(problems))
        for target in matrix.notify.values():
            try:
                secrets.update(resolve(target, os.environ).secret_values())
            except NotifySetupError:
                continue  # said by the worker at start, and by each send of it
    return Processor(
        store or Store(config.store_url),
        engine,
        connectors,
        settings=settings or ProcessingConfig.from_config(config),
        secrets=secrets,
    )
