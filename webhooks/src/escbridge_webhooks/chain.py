"""The webhook chain: one delivery in, one answer out, each step a small piece of its own.

In order (the first step that answers ends the chain, as bolt-python's middleware does):

1. ``LimitSize``          — 413 past the size limit, before anything is parsed;
2. ``LookupInstance``     — 404 unless the URL names a configured instance;
3. ``Verify``             — 401 unless the instance's connector says the request is genuine
                            (the reason is logged, never sent back: it would coach a forger);
4. ``Parse``              — 400 with a JSON error saying what is wrong with a genuine body;
5. ``IgnoreOwnChanges``   — 200 ``ignored`` for escbridge's own updates (loop prevention);
6. ``Enqueue``            — the durable write. The store's unique dedupe key *is* the dedupe
                            step: a redelivery comes back from it as a duplicate and is answered
                            200 ``duplicate``; anything new is answered 202 ``queued`` only once
                            the store has it. When the store cannot take it: 503 + Retry-After,
                            so the helpdesk delivers again — never a 2xx for an event not stored.

Nothing here knows Flask: the adapter (app.py) turns a Flask request into a
:class:`WebhookRequest`, as bolt-python's adapters build a ``BoltRequest``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from escbridge.connector import Connector
from escbridge.errors import StoreUnavailableError, WebhookAuthError, WebhookPayloadError
from escbridge.model import TicketEvent
from escbridge.store import INBOX_LIMITS, Enqueued

log = logging.getLogger(__name__)

__all__ = [
    "Context",
    "Enqueue",
    "Enqueuer",
    "IgnoreOwnChanges",
    "LimitSize",
    "LookupInstance",
    "Parse",
    "Reply",
    "Step",
    "Verify",
    "WebhookRequest",
    "run_chain",
]


class Enqueuer(Protocol):
    """What the chain needs of ``escbridge.processing.Processor``."""

    def enqueue(self, event: TicketEvent) -> Enqueued: ...


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
        body = ctx.request.read_body(self.max_bytes + 1)  # chunked bodies declare no length
        if len(body) > self.max_bytes:
            return self._too_large()
        ctx.body = body
        return None

    def _too_large(self) -> Reply:
        return _error(413, "too_large", "payload too large", limit_bytes=self.max_bytes)


# --- 2. instance -----------------------------------------------------------------------------


class LookupInstance:
    """404 unless the URL names an instance of escbridge.yaml (its connector made at start-up)."""

    name = "lookup_instance"

    def __init__(self, connectors: Mapping[str, Connector]) -> None:
        self.connectors = dict(connectors)

    def __call__(self, ctx: Context) -> Reply | None:
        connector = self.connectors.get(ctx.request.instance)
        if connector is None:
            # The name is not echoed back: it is whatever the caller typed.
            return _error(404, "unknown_instance", "no webhook endpoint for this instance")
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
        except WebhookAuthError as error:
            return Reply(401, {"error": "invalid request"}, "unauthorized", reason=str(error))
        except Exception as error:  # a verifier bug must fail closed, not open, nor 500
            log.exception("webhook verification failed unexpectedly")
            reason = f"verifier error: {type(error).__name__}"
            return Reply(401, {"error": "invalid request"}, "unauthorized", reason=reason)
        return None


# --- 4. parsing ------------------------------------------------------------------------------


def event_problem(event: TicketEvent, instance: str) -> str | None:
    """Why the store could not keep ``event`` as it is, or None."""
    if event.instance != instance:
        return f"event names instance {event.instance[:40]!r}, not this endpoint's"
    for name, limit in INBOX_LIMITS.items():  # too long: a bad payload, not a database error
        value = getattr(event, name)
        if value is not None and len(value) > limit:
            return f"{name} is longer than {limit} characters"
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
            log.exception("webhook parsing failed unexpectedly")
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
    """200 ``ignored`` when every event is escbridge's own change (its update fired the hook)."""

    name = "ignore_own_changes"

    def __call__(self, ctx: Context) -> Reply | None:
        assert ctx.connector is not None
        kept: list[TicketEvent] = []
        for event in ctx.events:
            try:
                own = ctx.connector.is_own_change(event)
            except Exception:  # undecidable here: keep it; the worker asks again
                log.warning("could not tell whether an event is escbridge's own", exc_info=True)
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

    A delivery with several events that fails half-way answers 503: the helpdesk sends it all
    again, the stored half comes back as duplicates and the rest is stored then.
    """

    name = "enqueue"

    def __init__(self, enqueuer: Enqueuer, *, retry_after: int = 30) -> None:
        self.enqueuer = enqueuer
        self.retry_after = retry_after

    def __call__(self, ctx: Context) -> Reply:
        for event in ctx.events:
            try:
                result = self.enqueuer.enqueue(event)
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
            if result.accepted:
                assert result.job_id is not None
                ctx.accepted.append(result.job_id)
            else:
                ctx.duplicates.append(result.job_id)
        if not ctx.accepted:
            return Reply(200, {"status": "duplicate", "event_id": ctx.duplicates[0]}, "duplicate")
        body: dict[str, Any] = {"status": "queued", "event_id": ctx.accepted[0]}
        if len(ctx.accepted) > 1:
            body["event_ids"] = list(ctx.accepted)
        if ctx.duplicates:
            body["duplicates"] = len(ctx.duplicates)
        return Reply(202, body, "queued")


class OneWriterAtATime:
    """Lets one thread of this process enqueue at a time (for a SQLite store).

    SQLite has one writer per database. Threads that contend for it inside SQLite wait in its
    busy handler, which sleeps 1, 2, 5, 10, … ms between tries: a few colliding requests turn
    into 50-100 ms latencies. Queuing them on a lock here, in front of the database, costs
    nothing when there is no contention and hands the write over the moment it is free.
    """

    def __init__(self, enqueuer: Enqueuer) -> None:
        self._enqueuer = enqueuer
        self._lock = threading.Lock()

    def enqueue(self, event: TicketEvent) -> Enqueued:
        with self._lock:
            return self._enqueuer.enqueue(event)


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
