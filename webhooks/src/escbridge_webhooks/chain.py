"""The webhook chain: one delivery in, one answer out, each step a small piece of its own.

In order (the first step that answers ends the chain, as bolt-python's middleware does):

1. ``LimitSize``          — 413 past the size limit, before anything is parsed;
2. ``LookupInstance``     — 401 unless the URL names a configured instance: the very answer
                            Verify gives, so a stranger cannot tell configured names from others;
3. ``Verify``             — 401 unless the instance's connector says the request is genuine
                            (the reason is logged, never sent back: it would coach a forger);
4. ``Parse``              — 400 with a JSON error saying what is wrong with a genuine body;
5. ``IgnoreOwnChanges``   — 200 ``ignored`` for escbridge's own updates (loop prevention);
6. ``Enqueue``            — the durable write. The store's unique dedupe key *is* the dedupe
                            step: a redelivery comes back from it as a duplicate and is answered
                            200 ``duplicate``; anything new is answered 202 ``queued`` only once
                            the store has it on disk (concurrent deliveries share one commit:
                            GroupCommit). When the store cannot take it: 503 + Retry-After,
                            so the helpdesk delivers again — never a 2xx for an event not stored.

Nothing here knows Flask: the adapter (app.py) turns a Flask request into a
:class:`WebhookRequest`, as bolt-python's adapters build a ``BoltRequest``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from escbridge.connector import Connector
from escbridge.connector.payload import text_problem
from escbridge.errors import (
    RequestBodyError,
    StoreUnavailableError,
    WebhookAuthError,
    WebhookKeyUnavailable,
    WebhookPayloadError,
    error_summary,
)
from escbridge.model import TicketEvent
from escbridge.store import INBOX_LIMITS, Enqueued

log = logging.getLogger(__name__)

__all__ = [
    "Clocked",
    "Context",
    "Enqueue",
    "Enqueuer",
    "EventStore",
    "GroupCommit",
    "IgnoreOwnChanges",
    "LimitSize",
    "LookupInstance",
    "Parse",
    "Reply",
    "Step",
    "Verify",
    "WebhookRequest",
    "refused",
    "run_chain",
    "unknown_instance",
]


class Enqueuer(Protocol):
    """What the Enqueue step needs: a delivery's events kept in one go (GroupCommit)."""

    def enqueue_many(self, events: Sequence[TicketEvent]) -> list[Enqueued]: ...


class EventStore(Protocol):
    """What GroupCommit needs of ``escbridge.store.Store``."""

    def writing(self) -> contextlib.AbstractContextManager[Any]: ...

    def enqueue_many(self, events: Sequence[TicketEvent], now: datetime) -> list[Enqueued]: ...


class Clocked(Protocol):
    """What the receiver needs of ``escbridge.processing.Processor``: the time events are
    stored at (a test's fake clock included: the worker claims them by the same clock)."""

    @property
    def clock(self) -> Callable[[], datetime]: ...


@dataclass(frozen=True)
class WebhookRequest:
    """One delivery as the chain sees it; ``read_body(n)`` reads at most ``n`` bytes."""

    instance: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    content_length: int | None
    read_body: Callable[[int], bytes]


@dataclass(frozen=True)
class Reply:
    """The answer, and for logs and metrics what it came to (``outcome``) and why."""

    status: int
    body: Mapping[str, Any]
    outcome: str
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None  # logged only, never sent


@dataclass
class Context:
    """What the steps learn as the delivery goes down the chain."""

    request: WebhookRequest
    body: bytes = b""
    connector: Connector | None = None
    events: list[TicketEvent] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)  # inbox job ids stored by this delivery
    duplicates: list[int | None] = field(default_factory=list)
    own_changes: int = 0

    @property
    def known_instance(self) -> str | None:
        return self.request.instance if self.connector is not None else None


class Step(Protocol):
    """One link: a Reply ends the chain, None passes the delivery on to the next step."""

    name: str

    def __call__(self, ctx: Context) -> Reply | None: ...


def run_chain(steps: Sequence[Step], ctx: Context) -> Reply:
    for step in steps:
        reply = step(ctx)
        if reply is not None:
            return reply
    raise RuntimeError("the webhook chain ended without an answer")  # a wiring bug


def _error(status: int, outcome: str, error: str, **more: Any) -> Reply:
    return Reply(status, {"error": error, **more}, outcome, reason=more.get("detail"))


# --- 1. size ---------------------------------------------------------------------------------


class LimitSize:
    """413 for a body over ``max_bytes``, declared or actual; otherwise the body is read."""

    name = "limit_size"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def __call__(self, ctx: Context) -> Reply | None:
        declared = ctx.request.content_length
        if declared is not None and declared > self.max_bytes:
            return self._too_large()
        try:
            body = ctx.request.read_body(self.max_bytes + 1)  # chunked bodies declare no length
        except RequestBodyError as error:  # broken chunking, client gone: theirs, not a 500
            return _error(
                400, "bad_payload", "the request body could not be read", detail=str(error)
            )
        if len(body) > self.max_bytes:
            return self._too_large()
        ctx.body = body
        return None

    def _too_large(self) -> Reply:
        return _error(413, "too_large", "payload too large", limit_bytes=self.max_bytes)


# --- 2. instance -----------------------------------------------------------------------------


def refused(outcome: str, reason: str) -> Reply:
    """The one answer to a request that is not genuine, whatever the reason (logged, not sent).

    An unknown instance name gets it too: a 404 there would tell a prober which names exist.
    """
    return Reply(401, {"error": "invalid request"}, outcome, reason=reason)


def unknown_instance(name: str) -> Reply:
    """The refusal for a URL naming no instance (counted as "-"; the log names it, cut short)."""
    return refused("unknown_instance", f"no instance {name[:64]!r}")


class LookupInstance:
    """401 unless the URL names an instance of escbridge.yaml (its connector made at start-up)."""

    name = "lookup_instance"

    def __init__(self, connectors: Mapping[str, Connector]) -> None:
        self.connectors = dict(connectors)

    def __call__(self, ctx: Context) -> Reply | None:
        connector = self.connectors.get(ctx.request.instance)
        if connector is None:
            return unknown_instance(ctx.request.instance)
        ctx.connector = connector
        return None


# --- 3. verification -------------------------------------------------------------------------


class Verify:
    """401 unless the connector accepts the request as genuine; the reason goes to the log only."""

    name = "verify"

    def __call__(self, ctx: Context) -> Reply | None:
        assert ctx.connector is not None
        request = ctx.request
        try:
            ctx.connector.verify_webhook(request.headers, ctx.body, request.query)
        except WebhookKeyUnavailable as error:  # cannot be told genuine or forged yet
            wait = max(1, math.ceil(error.retry_after))
            return Reply(
                503,
                {"error": "cannot verify the request yet, try again later", "retry_after": wait},
                "unverified",
                headers={"Retry-After": str(wait)},
                reason=str(error),
            )
        except WebhookAuthError as error:
            return Reply(401, {"error": "invalid request"}, "unauthorized", reason=str(error))
        except Exception as error:  # a verifier bug must fail closed, not open, nor 500
            log.error("webhook verification failed unexpectedly: %s", error_summary(error))
            reason = f"verifier error: {type(error).__name__}"
            return Reply(401, {"error": "invalid request"}, "unauthorized", reason=reason)
        return None


# --- 4. parsing ------------------------------------------------------------------------------


def event_problem(event: TicketEvent, instance: str) -> str | None:
    """Why the store could not keep ``event`` as it is, or None: asked before the store is.

    A NUL (PostgreSQL text refuses it), a lone surrogate (every UTF-8 encoder does), a value
    longer than its column, a time outside what UTC can hold: the sender's error, answered 400
    naming the field, never its value — not a database error at insert time.
    """
    if event.instance != instance:
        return "the event names another instance than this endpoint's"
    for name, value in event:
        if isinstance(value, str):
            problem = text_problem(value, INBOX_LIMITS.get(name))
            if problem is not None:
                return f"{name} {problem}"
    if event.occurred_at is not None:
        try:
            event.occurred_at.astimezone(UTC)
        except (OverflowError, ValueError):  # 9999-12-31T23:00-05:00 is past year 9999 in UTC
            return "occurred_at is out of the range of times the store keeps"
    return None


class Parse:
    """400 with a precise JSON error when a genuine body cannot be understood."""

    name = "parse"

    def __call__(self, ctx: Context) -> Reply | None:
        assert ctx.connector is not None
        try:
            events = ctx.connector.parse_webhook(ctx.request.headers, ctx.body)
        except WebhookPayloadError as error:
            return _error(400, "bad_payload", "invalid payload", detail=str(error))
        except Exception as error:  # a parser bug on odd input: still the sender's 4xx
            log.error("webhook parsing failed unexpectedly: %s", error_summary(error))
            return _error(
                400,
                "bad_payload",
                "invalid payload",
                detail=f"the payload could not be read ({type(error).__name__})",
            )
        for event in events:
            problem = event_problem(event, ctx.request.instance)
            if problem is not None:
                return _error(400, "bad_payload", "invalid payload", detail=problem)
        if not events:
            return Reply(200, {"status": "ignored", "reason": "no ticket events"}, "no_events")
        ctx.events = list(events)
        return None


# --- 5. own changes --------------------------------------------------------------------------


class IgnoreOwnChanges:
    """200 ``ignored`` when every event is escbridge's own change (its update fired the hook).

    Asked with no I/O (``own_change_known``): the door never calls a helpdesk. An event it
    cannot tell about yet (who escbridge writes as is still being learned, or no actor) is
    stored; the worker, which fetches the ticket anyway, drops it if it is escbridge's own.
    """

    name = "ignore_own_changes"

    def __call__(self, ctx: Context) -> Reply | None:
        assert ctx.connector is not None
        ask = getattr(ctx.connector, "own_change_known", None)
        if ask is None:  # a plugin older than the question: its events go to the worker
            return None
        kept: list[TicketEvent] = []
        for event in ctx.events:
            try:
                own = ask(event) is True
            except Exception as error:  # undecidable here: keep it; the worker asks again
                log.warning(
                    "could not tell whether an event is escbridge's own: %s", error_summary(error)
                )
                own = False
            if own:
                ctx.own_changes += 1
            else:
                kept.append(event)
        ctx.events = kept
        if not kept:
            return Reply(200, {"status": "ignored", "reason": "own change"}, "own_change")
        return None


# --- 6. dedupe + durable enqueue -------------------------------------------------------------


class Enqueue:
    """Store every event; the store's unique dedupe key answers "duplicate" (200), new ones 202.

    A delivery's events are kept in one transaction (shared with concurrent deliveries, see
    GroupCommit): all of them or, with a 503, none, and the helpdesk sends it all again. An
    event the database cannot hold (a value it refuses) is the sender's 400, never a 5xx that
    would be retried for days; the others of the delivery are kept.
    """

    name = "enqueue"

    def __init__(self, enqueuer: Enqueuer, *, retry_after: int = 30) -> None:
        self.enqueuer = enqueuer
        self.retry_after = retry_after

    def __call__(self, ctx: Context) -> Reply:
        try:
            results = self.enqueuer.enqueue_many(ctx.events)
        except StoreUnavailableError as error:
            return Reply(
                503,
                {
                    "error": "store unavailable, deliver again later",
                    "retry_after": self.retry_after,
                },
                "store_unavailable",
                headers={"Retry-After": str(self.retry_after)},
                reason=str(error),
            )
        refused: list[str] = []
        for result in results:
            if result.refused is not None:
                refused.append(result.refused)
            elif result.accepted:
                assert result.job_id is not None
                ctx.accepted.append(result.job_id)
            else:
                ctx.duplicates.append(result.job_id)
        if refused:
            return _error(400, "bad_payload", "invalid payload", detail=refused[0])
        if not ctx.accepted:
            return Reply(200, {"status": "duplicate", "event_id": ctx.duplicates[0]}, "duplicate")
        body: dict[str, Any] = {"status": "queued", "event_id": ctx.accepted[0]}
        if len(ctx.accepted) > 1:
            body["event_ids"] = list(ctx.accepted)
        if ctx.duplicates:
            body["duplicates"] = len(ctx.duplicates)
        return Reply(202, body, "queued")


@dataclass(eq=False)
class _Waiter:
    """One delivery's events waiting for a commit, and what the commit made of them."""

    events: Sequence[TicketEvent]
    woken: threading.Event | None = None  # made only for a thread that waits
    lead: bool = False  # woken to commit what is queued, not with an answer
    answers: list[Enqueued] | None = None
    error: BaseException | None = None

    def outcome(self) -> list[Enqueued]:
        if self.error is not None:
            raise self.error
        assert self.answers is not None
        return self.answers


class GroupCommit:
    """Concurrent deliveries in this process share one transaction and one commit.

    A 2xx promises the event is on disk, so every commit waits for a flush; one commit per
    delivery would make the disk the receiver's ceiling. A request thread queues its events;
    when no commit is running it leads: once the store's writer lock is its (SQLite: other
    processes' commits come first), it takes everything queued by then, stores it in one
    transaction (``store.enqueue_many`` at ``clock()``), hands every waiting thread its own
    answers, or the store's error (each answers its 503), and passes the lead to the first
    delivery queued meanwhile, so no thread's answer waits for later deliveries' commits. No
    timer waits for company: a delivery that comes alone is committed at once.

    One commit at a time per process also keeps SQLite writers from colliding in its busy
    handler, which sleeps between tries (across processes the store's writer lock queues them).
    """

    def __init__(
        self, store: EventStore, clock: Callable[[], datetime], *, max_events: int = 256
    ) -> None:
        self._store = store
        self._clock = clock
        self.max_events = max_events
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self._leading = False  # a thread is committing; whoever queues now waits
        self.commits = 0  # commits made, and the deliveries they carried: their ratio is
        self.deliveries = 0  # how much the sharing saves (benchmarks/webhooks.py prints it)

    def waiting(self) -> int:
        """Deliveries queued behind the running commit."""
        with self._lock:
            return len(self._queue)

    def enqueue_many(self, events: Sequence[TicketEvent]) -> list[Enqueued]:
        """Keep ``events`` (one delivery's) with whatever else is waiting; their answers."""
        me = _Waiter(events)
        with self._lock:
            self._queue.append(me)
            lead = not self._leading
            self._leading = True
            if not lead:
                me.woken = threading.Event()
        if me.woken is not None:
            me.woken.wait()
            if not me.lead:
                return me.outcome()
        self._commit_queued()
        return me.outcome()

    def _commit_queued(self) -> None:
        batch: list[_Waiter] = []
        try:
            with self._store.writing():  # first: what arrives while we wait for it comes along
                size = self._take(batch)
                answers = self._store.enqueue_many(
                    [e for w in batch for e in w.events], self._clock()
                )
            if len(answers) != size:
                raise RuntimeError(f"the store answered {len(answers)} of {size} events")
            start = 0
            for waiter in batch:
                waiter.answers = answers[start : start + len(waiter.events)]
                start += len(waiter.events)
        except BaseException as error:  # every waiter gets it: a 503, or a bug's 500
            if not batch:  # (the lock itself failed: the error is the queue's)
                self._take(batch)
            for waiter in batch:
                waiter.error = error
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._leading = False
                else:
                    successor.lead = True
            for waiter in batch:
                if waiter.woken is not None:
                    waiter.woken.set()
            if successor is not None and successor.woken is not None:
                successor.woken.set()

    def _take(self, batch: list[_Waiter]) -> int:
        """Move the queued deliveries (up to max_events) into ``batch``; their event count.
        The leader is first in the queue: it is always in its own batch."""
        size = 0
        with self._lock:
            while self._queue and (
                not batch or size + len(self._queue[0].events) <= self.max_events
            ):
                waiter = self._queue.popleft()
                batch.append(waiter)
                size += len(waiter.events)
            self.commits += 1
            self.deliveries += len(batch)
        return size


def default_steps(
    connectors: Mapping[str, Connector], enqueuer: Enqueuer, *, max_bytes: int, retry_after: int
) -> list[Step]:
    """The chain in the order the issue prescribes."""
    return [
        LimitSize(max_bytes),
        LookupInstance(connectors),
        Verify(),
        Parse(),
        IgnoreOwnChanges(),
        Enqueue(enqueuer, retry_after=retry_after),
    ]
