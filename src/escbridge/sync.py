"""`escbridge sync`: scan the helpdesks for what no webhook said; reconcile what escbridge knows.

Time limits are not sync's job any more: every recorded decision stores the ticket's shadow with
its next due time (``Engine.next_due``), and the worker's due-queue fires each time limit at its
deadline. Sync keeps what only a scan can do, in two passes per instance, each through the
plan -> apply -> record phases every path shares (:mod:`escbridge.processing`, whose record also
refreshes the shadow and its due time):

``changes`` (every run)
    open tickets changed since the stored cursor (``iter_tickets(since, cursor)``); catches what
    a lost webhook missed and keeps the shadows current. The cursor is saved after each page,
    once every ticket of the page is recorded, so a run that dies resumes where it stopped: no
    ticket is missed, and none is escalated twice (the processing layer's intent + level marker
    see to an apply that landed but was not recorded).
``reconcile`` (at a low cadence, default daily: ``SyncOptions.reconcile``/``reconcile_every``)
    every open ticket whatever its age (``iter_tickets(EPOCH, cursor)``): heals drift between
    the helpdesk and the shadows (a lost webhook about an old ticket, a rule changed in the
    matrix, a ticket closed while escbridge was down), and reaches the ticket nobody touched in
    months, so "idle over 20 days" fires. Tickets the changes pass processed in the same run are
    skipped. Its own cursor stream lets an interrupted reconciliation resume in a later run; a
    complete one drops the shadows of tickets it did not see open (``drop_unseen_shadows``:
    not seen since the reconciliation began) and records when it began, which is what the
    ``auto`` cadence reads.

Why no sweep of recently updated tickets any more: it found a time limit only when a scan passed
the ticket (late by up to an interval, and costly: the helpdesk's export budget grows with the
account), and it never saw a ticket untouched for longer than its lookback, exactly the forgotten
ticket an escalation matrix exists for. The due-queue is on time, and the reconciliation covers
every open ticket at a cost of one full listing a day.

A page goes through the processing phases in a plain loop, with the store work done once per
page: one statement locks the page's tickets, one transaction writes the intents of those to
escalate, and one records them all (with the releases and the failures handed to workers).
Writes are batched explicitly where the connector has a bulk API: the page's escalations go to
``connector.apply_many`` together (at most ``batch_size`` per call when set), which splits them
into the bulk calls its API takes, so a page of 100 escalations costs a call or two, not a
hundred.

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

import contextlib
import hashlib
import inspect
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

import requests

from escbridge.config import Routing, routing
from escbridge.connector import CAP_BULK_UPDATE, Registry
from escbridge.errors import (
    ApplyFailedError,
    AuthError,
    EscbridgeError,
    LeaseLostError,
    LockLostError,
    RateLimited,
    StoreUnavailableError,
)
from escbridge.model import Ticket, TicketEvent
from escbridge.processing import Outcome, Plan, Processor, check
from escbridge.secrets import redact
from escbridge.store import Store, TicketLock

if TYPE_CHECKING:
    from escbridge.config import Config, InstanceConfig
    from escbridge.connector import ApplyResult, Connector, TicketPage
    from escbridge.store import SyncCursor

log = logging.getLogger(__name__)

__all__ = [
    "CHANGES",
    "EPOCH",
    "LEASE_TICKET_ID",
    "RECONCILE",
    "RECONCILE_MODES",
    "UNCHANGED",
    "CallCounter",
    "InstanceResult",
    "LeaseLostError",
    "ProgressEvent",
    "ReconcileMode",
    "Reconciliation",
    "SyncLease",
    "SyncOptions",
    "SyncReport",
    "Syncer",
    "build_sync_processor",
    "reconciliation_due",
    "skip_reason",
]

CHANGES, RECONCILE = "changes", "reconcile"
#: The store's cursor streams of the two passes.
STREAMS = {CHANGES: "tickets", RECONCILE: "reconcile"}
#: Where a reconciliation starts listing: before any ticket, so every connector lists them all.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: ``auto``: when none is recorded, one is under way, or the last began ``reconcile_every`` ago.
ReconcileMode = Literal["auto", "always", "never"]
RECONCILE_MODES: tuple[ReconcileMode, ...] = get_args(ReconcileMode)
#: The reserved ticket id whose per-ticket lock is an instance's sync lease.
LEASE_TICKET_ID = "~escbridge-sync"
#: The skip reason of a ticket passed over: unchanged since escbridge decided it, not due yet.
UNCHANGED = "unchanged and not due yet"


# --- options and results -------------------------------------------------------------------


@dataclass(frozen=True)
class SyncOptions:
    """What one run does. ``since`` replaces the stored cursor of the changes pass;
    ``reconcile`` says whether the reconcile pass runs (``auto``: see :func:`reconciliation_due`);
    ``batch_size`` caps the writes per ``apply_many`` call (None: a page's writes go in one,
    and the connector splits them as its bulk API requires)."""

    dry_run: bool = False
    since: datetime | None = None
    reconcile: ReconcileMode = "auto"
    reconcile_every: timedelta = timedelta(days=1)
    batch_size: int | None = None
    lease: timedelta = timedelta(minutes=10)


def reconciliation_due(
    stored: SyncCursor | None, now: datetime, mode: ReconcileMode, every: timedelta
) -> bool:
    """Whether a run at ``now`` runs the reconcile pass, given the reconcile stream's cursor.

    ``auto`` runs it when no complete reconciliation is recorded (so a store from before the
    shadows fills them on its first sync), when one is under way (a cursor is stored: it
    resumes), or when the last complete one began ``every`` or longer ago.
    """
    if mode != "auto":
        return mode == "always"
    if stored is None or stored.cursor is not None or stored.since is None:
        return True
    return now - stored.since >= every


@dataclass
class Reconciliation:
    """The reconcile pass of one run: when the reconciliation began (an earlier run's start
    when this one resumed it), whether it got to the end, and the shadows it dropped."""

    began: datetime
    resumed: bool = False
    complete: bool = False
    dropped: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "began": self.began.isoformat(),
            "resumed": self.resumed,
            "complete": self.complete,
            "dropped": self.dropped,
        }


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
    reasons: tuple[str, ...] = ()  # the fired rule's conditions that held, as explain says them

    def as_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "ticket": self.ticket_id,
            "to": self.destination,
            "group": self.group,
            "rule": self.rule_id,
            "reasons": list(self.reasons),
            "status": self.status,
            "summary": self.summary,
        }


def skip_reason(outcome: Outcome, helpdesk: str | None = None) -> str:
    """Why a ticket a run looked at was not escalated, in a few words a summary can count
    ("no rule matched", "cooldown", "no group for freshdesk at level l3", …).

    Read from the engine's summary of its decision (``Engine.decide``), the one place that says
    why; ``helpdesk`` names the instance's helpdesk in the no-group case.
    """
    if outcome.status == "busy":
        return "being processed by a worker"
    if outcome.status == "own_change":
        return "escbridge's own change"
    if outcome.decision is None:
        return outcome.status
    why = outcome.decision.summary.removeprefix("no escalation: ")
    if why.startswith("the ticket is "):
        return why.removeprefix("the ") + " (not open)"
    no_group = _NO_GROUP.match(why)
    if no_group is not None:
        return f"no group for {helpdesk or no_group['instance']} at {no_group['place']}"
    for needle, reason in _SKIP_REASONS:
        if needle in why:
            return reason
    return why if len(why) <= 60 else why[:59] + "…"


_NO_GROUP = re.compile(
    r"^(?P<place>(?:level|team) \S+) has no group for helpdesk (?P<instance>\S+)"
)
#: Fragments of the engine's summaries (``Engine._select``, ``_guard``, ``Matrix.resolve``), in
#: the order they are tried, and the reason a summary counts them under.
_SKIP_REASONS: tuple[tuple[str, str], ...] = (
    ("no rule matched", "no rule matched"),
    ("cooldown:", "cooldown"),
    ("daily cap reached", "daily cap reached"),
    ("already at the top level", "already at the top level"),
    ("escalated the ticket already", "the matching rule acted on it already"),
    ("is already at", "already where the matching rule goes"),
    ("never de-escalates", "already above where the matching rule goes"),
    ("at the same rank", "already at the rank the matching rule goes to"),
)


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
    passes: dict[str, int] = field(default_factory=dict)  # pass run -> tickets it scanned
    reconciliation: Reconciliation | None = None  # None: no reconcile pass in this run
    last_reconciled: datetime | None = None  # when the last complete reconciliation began
    resume_at: datetime | None = None
    locked_by: str | None = None  # another run holds this instance's lease
    escalations: list[Escalation] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (ticket id, reason)
    skipped_by: Counter[str] = field(default_factory=Counter)  # skip_reason -> tickets
    routing: Routing | None = None  # where the matrix can send this instance's tickets

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.locked_by is None

    @property
    def routes_nothing(self) -> bool:
        """No destination of the matrix has a group on this instance: nothing can escalate."""
        return self.routing is not None and self.routing.routes_nothing

    @property
    def ok(self) -> bool:
        """Scanned to the end (or held by another run), no ticket failed, and the matrix can
        escalate something here (a run that could escalate nothing because no destination has
        a group on this helpdesk is not fine, however quietly it went)."""
        return self.stopped is None and self.failed == 0 and not self.routes_nothing

    def count(self, outcome: Outcome, dry_run: bool) -> None:
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
                    decision.reasons,
                )
            )
        else:
            self.skipped += 1
            if self.routing is not None and self.routing.routes_nothing:
                reason = self.routing.skip_reason
            else:
                helpdesk = self.routing.helpdesk if self.routing is not None else None
                reason = skip_reason(outcome, helpdesk)
            self.skipped_by[reason] += 1

    def pass_over(self, reason: str, count: int) -> None:
        """``count`` tickets looked at and not decided again (see ``Syncer._unchanged``)."""
        if not count:
            return
        self.scanned += count
        self.skipped += count
        if self.routing is not None and self.routing.routes_nothing:
            reason = self.routing.skip_reason
        self.skipped_by[reason] += count

    def fail(self, ticket_id: str, reason: str) -> None:
        self.scanned += 1
        self.failed += 1
        self.failures.append((ticket_id, reason))

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "scanned": self.scanned,
            "escalated": dict(sorted(self.escalated.items())),
            "recovered": self.recovered,
            "skipped": self.skipped,
            "skipped_by_reason": dict(self.skipped_by.most_common()),
            "failed": self.failed,
            "api_calls": self.api_calls,
            "pages": self.pages,
            "passes": dict(self.passes),
            "reconciliation": self.reconciliation.as_json() if self.reconciliation else None,
            "last_reconciled": self.last_reconciled.isoformat() if self.last_reconciled else None,
        }
        if self.stopped:
            data["stopped"] = self.stopped
        if self.resume_at:
            data["resume_at"] = self.resume_at.isoformat()
        if self.locked_by:
            data["locked_by"] = self.locked_by
        if self.routing is not None and self.routing.routes_nothing:
            data["routing"] = self.routing.problem()
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
        """Every instance's run is ok (:attr:`InstanceResult.ok`)."""
        return all(r.ok for r in self.instances.values())

    @property
    def escalations(self) -> list[Escalation]:
        return [e for r in self.instances.values() for e in r.escalations]

    def totals(self) -> dict[str, Any]:
        escalated: Counter[str] = Counter()
        skipped_by: Counter[str] = Counter()
        for r in self.instances.values():
            escalated.update(r.escalated)
            skipped_by.update(r.skipped_by)
        return {
            "scanned": sum(r.scanned for r in self.instances.values()),
            "escalated": dict(sorted(escalated.items())),
            "skipped": sum(r.skipped for r in self.instances.values()),
            "skipped_by_reason": dict(skipped_by.most_common()),
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


# --- the run -----------------------------------------------------------------------------------

#: Errors that concern the whole instance, not one ticket: the run of that instance stops and
#: its cursor stays where it is.
_STOPS_THE_RUN: tuple[type[BaseException], ...] = (
    RateLimited,
    AuthError,
    StoreUnavailableError,
    LeaseLostError,
)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:sync"


def record_report(store: Store, report: SyncReport) -> None:
    """Keep each instance's result of a run as its last sync, for `escbridge status` (a dry run
    changes nothing and is not kept; an instance another run held is that run's to record).
    An outage is logged and does not fail the run: the sync itself is done."""
    from escbridge.store.history import SYNC, Run, record_run

    if report.dry_run:
        return
    finished = report.started_at + timedelta(seconds=report.duration)
    for name, result in report.instances.items():
        if result.locked_by is not None:
            continue
        escalated = sum(result.escalated.values())
        summary = (
            f"scanned {result.scanned}, escalated {escalated}, skipped {result.skipped}, "
            f"failed {result.failed}"
        )
        if result.stopped:
            summary = f"stopped early: {result.stopped} ({summary})"
        elif result.routes_nothing:
            summary = f"nothing can escalate: the matrix routes nothing here ({summary})"
        run = Run(name, SYNC, report.started_at, finished, result.ok, summary, result.as_json())
        try:
            record_run(store, run)
        except StoreUnavailableError as error:
            log.warning("could not record the sync run for status: %s", error)
            return


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
        record_report(self.store, report)
        return report

    def sync_instance(self, instance: str) -> InstanceResult:
        result = InstanceResult(instance, routing=self._routing(instance))
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
            resume = error.resume_at
            if resume is None and error.retry_after:
                resume = self.processor.clock() + timedelta(seconds=float(error.retry_after))
            result.resume_at = resume
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

    def _routing(self, instance: str) -> Routing | None:
        """Where the engine's matrix can send this instance's tickets (None: an engine with no
        matrix, as in some tests)."""
        from escbridge.matrix import Matrix

        engine = self.processor.engine
        matrix = getattr(engine, "matrix", None)
        if not isinstance(matrix, Matrix):
            return None
        helpdesks: Mapping[str, str] = getattr(engine, "helpdesks", None) or {}
        return routing(matrix, instance, helpdesks.get(instance))  # logged once, at start

    def _safe(self, error: BaseException) -> str:
        return redact(f"{type(error).__name__}: {error}", self.processor.secrets)

    def _passes(self, instance: str, result: InstanceResult, lease: SyncLease | None) -> None:
        started = self.processor.clock()
        seen: set[str] = set()  # tickets processed in this run (the reconcile pass skips them)
        stored = self.store.get_cursor(instance, STREAMS[RECONCILE])
        if stored is not None and stored.cursor is None:
            result.last_reconciled = stored.since
        options = self.options
        reconcile = reconciliation_due(stored, started, options.reconcile, options.reconcile_every)

        changes = self.store.get_cursor(instance, STREAMS[CHANGES])
        since: datetime | None
        if options.since is not None:
            since, cursor = options.since, None
        else:
            since = changes.since if changes else None
            cursor = changes.cursor if changes else None
        if reconcile and changes is None and options.since is None:
            # The first run: the reconciliation lists every open ticket, so a changes pass
            # from the beginning would read the account twice. It starts from this run on.
            # The listing is the changes stream's too: its last cursor is where changes resume.
            result.passes[CHANGES] = 0
            end = self._reconcile(instance, result, lease, seen, started, stored)
            if lease is not None:
                clock = self.processor.clock()
                self.store.save_cursor(instance, end, started, clock, STREAMS[CHANGES])
            return
        # the changes pass covers everything changed up to the run's start
        self._scan(instance, CHANGES, result, lease, seen, since, cursor, covered=started)
        if reconcile:
            self._reconcile(instance, result, lease, seen, started, stored)

    def _reconcile(
        self,
        instance: str,
        result: InstanceResult,
        lease: SyncLease | None,
        seen: set[str],
        started: datetime,
        stored: SyncCursor | None,
    ) -> str | None:
        """Every open ticket, from the stream's cursor when a reconciliation is under way; the
        listing's last cursor comes back (where a changes pass may continue from).

        The stream keeps, beside the cursor, when the reconciliation under way began; a complete
        one drops the shadows not seen since then (the tickets an earlier run of it saw on its
        pages were seen after that, so they stay), then stores that instant with no cursor.
        """
        cursor = stored.cursor if stored is not None else None
        began = (stored.since if stored is not None and cursor is not None else None) or started
        result.reconciliation = done = Reconciliation(began, resumed=cursor is not None)
        end = self._scan(instance, RECONCILE, result, lease, seen, EPOCH, cursor, covered=began)
        done.complete = True
        if lease is None:  # a dry run reads and decides, and writes nothing
            return end
        lease.renew()
        done.dropped = self.store.drop_unseen_shadows(instance, began)
        self.store.save_cursor(instance, None, began, self.processor.clock(), STREAMS[RECONCILE])
        result.last_reconciled = began
        log.info(
            "%s: reconciliation complete (began %s), %d shadows of tickets no longer open dropped",
            instance,
            began.isoformat(timespec="seconds"),
            done.dropped,
        )
        return end

    def _scan(
        self,
        instance: str,
        stage: str,
        result: InstanceResult,
        lease: SyncLease | None,
        seen: set[str],
        since: datetime | None,
        cursor: str | None,
        *,
        covered: datetime,
    ) -> str | None:
        """One pass: ``iter_tickets(since, cursor)``, page by page, each page committed to the
        pass's stream (its cursor, with ``covered`` as the stream's since) once recorded; the
        last page's cursor comes back."""
        connector = self.processor.connector(instance)
        stream = STREAMS[stage]
        scanned = result.scanned
        result.passes[stage] = 0
        pages = connector.iter_tickets(since, cursor)
        last = cursor
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
                last = page.cursor or last
        finally:
            result.passes[stage] = result.scanned - scanned
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        return last

    def _commit(self, instance: str, stream: str, page: TicketPage, covered: datetime) -> None:
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
        """Plan, apply and record the tickets of one page: one lock statement, one intent
        transaction, the writes in explicit bulk calls, one record transaction.

        A ticket that fails on its own is counted and handed to a worker; an error that stops
        the run (``_STOPS_THE_RUN``) records what was written before it, gives back the other
        locks with their intents (the next run checks what landed), and is raised.
        """

        total = len(tickets)

        def tick(done: int) -> None:
            if self.progress is not None:
                self.progress(ProgressEvent(instance, stage, number, done, total, result))

        tick(0)
        if not tickets:  # e.g. a reconcile page the changes pass already did: no store work
            return
        processor = self.processor
        unchanged = self._unchanged(instance, tickets, result)
        if unchanged:
            tickets = [t for t in tickets if t.id not in unchanged]
            if not tickets:
                tick(total)
                return
        passed = total - len(tickets)  # passed over: already counted
        if self.options.dry_run:
            for outcome in processor.dry_run(instance, tickets, processor.clock()):
                result.count(outcome, dry_run=True)
            tick(total)
            return

        now = processor.clock()
        locks = processor.lock_page(instance, [t.id for t in tickets], now)
        plans: list[Plan] = []
        failures: list[tuple[Ticket, BaseException]] = []
        unplanned: list[TicketLock] = []
        try:
            for ticket in tickets:
                lock = locks.get(ticket.id)
                if lock is None:
                    result.count(Outcome("busy", instance, ticket.id), dry_run=False)
                    continue
                try:
                    plans.append(processor.plan(lock, ticket, now))
                except _STOPS_THE_RUN:
                    raise
                except Exception as error:  # this ticket alone: counted, kept for a worker
                    failures.append((ticket, error))
                    unplanned.append(lock)
            lost = {plan.ticket_id for plan in processor.write_intents(plans, now)}
        except BaseException:
            processor.release(list(locks.values()), processor.clock())
            raise
        for plan in plans:
            if plan.ticket_id in lost:
                failures.append((plan.ticket, LockLostError(f"lost the lock on {plan.ticket_id}")))
        plans = [plan for plan in plans if plan.ticket_id not in lost]

        ready = [plan for plan in plans if not plan.writes]
        failed: list[Plan | TicketLock] = [*unplanned]
        unsent: list[Plan] = []
        stop: BaseException | None = None
        batches = self._batches(instance, plans)
        try:
            for index, batch in enumerate(batches):
                try:
                    results = self._write(batch, now)
                except _STOPS_THE_RUN as error:
                    stop = error
                    failed.extend(batch)  # it may have landed in part: the next run looks
                    unsent = [plan for rest in batches[index + 1 :] for plan in rest]
                    break
                except Exception as error:  # the whole call failed: each of its tickets did
                    failures.extend((plan.ticket, error) for plan in batch)
                    failed.extend(batch)
                    continue
                result.batches += 1
                for plan, answer in zip(batch, results, strict=True):
                    try:
                        check(plan, answer)
                    except ApplyFailedError as error:
                        failures.append((plan.ticket, error))
                        failed.append(plan)
                    else:
                        ready.append(plan)
                tick(passed + len(ready) + len(failures))
        except BaseException:  # interrupted: every lock back, intents kept for the next run
            processor.release([*plans, *unplanned], processor.clock())
            raise

        hand_off = [self._hand_off(instance, ticket, error) for ticket, error in failures]
        try:
            recorded = processor.record(
                ready, processor.clock(), failed=failed, unsent=unsent, hand_off=hand_off
            )
        except BaseException:
            processor.release([*ready, *failed, *unsent], processor.clock())  # intents kept
            raise
        for plan, settled in zip(ready, recorded, strict=True):
            if isinstance(settled, LockLostError):
                failures.append((plan.ticket, settled))
            else:
                result.count(settled, dry_run=False)
        for ticket, problem in failures:
            reason = self._safe(problem)
            log.warning("%s/%s: %s", instance, ticket.id, reason)
            result.fail(ticket.id, reason)
        tick(total)
        if stop is not None:
            raise stop

    def _unchanged(
        self, instance: str, tickets: Sequence[Ticket], result: InstanceResult
    ) -> set[str]:
        """The tickets of a page escbridge decided as they are and that are not due yet
        (``Store.unchanged_tickets``): passed over without deciding them again, counted as
        skipped (``UNCHANGED``). Why: a ticket's decision can change only when the ticket, its
        history or the matrix changes, or at its next due time, which the due-queue acts on;
        the changes pass meets every ticket a webhook already had decided, and the
        reconciliation every open ticket. A real run notes them as seen, as deciding them
        would have. Nothing is passed over when no shadows are kept."""
        processor = self.processor
        shadower = processor.shadower
        digest = shadower.engine.matrix.digest if shadower is not None else ""
        if not digest:
            return set()
        found = processor.store.unchanged_tickets(
            instance, tickets, digest, processor.clock(), mark_seen=not self.options.dry_run
        )
        result.pass_over(UNCHANGED, len(found))
        return found

    def _batches(self, instance: str, plans: Sequence[Plan]) -> list[list[Plan]]:
        """The writes of a page in the page's order, in the calls they go out in: together
        where the connector has a bulk API (``batch_size`` at most per call), else one by one."""
        writing = [plan for plan in plans if plan.writes]
        bulk = CAP_BULK_UPDATE in self.processor.connector(instance).info.capabilities
        cap = self.options.batch_size
        size = (max(1, cap) if cap is not None else max(1, len(writing))) if bulk else 1
        return [writing[i : i + size] for i in range(0, len(writing), size)]

    def _write(self, batch: Sequence[Plan], now: datetime) -> list[ApplyResult]:
        if len(batch) == 1:
            return [self.processor.apply(batch[0], now)]
        return self.processor.apply_many(batch, now)

    def _hand_off(self, instance: str, ticket: Ticket, error: BaseException) -> TicketEvent:
        """A failed ticket, kept in the inbox: a worker retries it with backoff, or
        dead-letters it where `escbridge jobs` shows it. One job per ticket version, however
        many runs fail."""
        version = ticket.version or ticket.updated_at.isoformat()
        digest = hashlib.sha256(f"{ticket.id}\0{version}".encode()).hexdigest()[:32]
        return TicketEvent(
            instance=instance,
            ticket_id=ticket.id,
            dedupe_key=f"sync:{digest}",
            kind="sync.failed",
            occurred_at=ticket.updated_at,
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
    """``build_processor`` for escbridge.yaml, with connectors whose HTTP calls are counted.

    An instance whose ``type:`` no installed connector provides is a ConfigError naming the
    key (the same refusal as `check` and `validate`), before anything is built."""
    from escbridge.processing import build_processor

    registry = _InstrumentedRegistry(counter, overrides)
    return build_processor(config, registry=registry, store=store)
