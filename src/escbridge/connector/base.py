"""BaseConnector: ``apply`` and ``apply_many`` written once, so every connector has the same
conflict semantics (``escbridge.connector.contract``) and keeps only platform knowledge.

A subclass supplies the write as two steps, so the single and the bulk path share them:

``_prepare(ticket, actions) -> P | ApplyResult``
    Read what the write needs (fresh tags, the current stamp, group ids) and return the
    connector's own description ``P`` of what is left to write — or an ``ApplyResult`` when
    nothing is (the escalation already landed). A concurrent edit seen here raises
    ``escbridge.errors.TicketChanged(current=<fresh Ticket>)``.
``_write_one(prepared) -> ApplyResult``
    Write one escalation. A 409 from the helpdesk (``Conflict``) is simply raised.

and optionally, for a real bulk API:

``_bulk_key(prepared) -> Hashable | None``
    Items whose keys are equal can share one bulk call; None: this one is written alone.
``_write_bulk(prepared list) -> results``
    One bulk call (and its job polling); one ApplyResult per item, in order. A per-item
    concurrent edit is ``ApplyResult(ok=False, conflict=True)``: the base class re-decides it
    through ``on_conflict`` like a single write.
``_bulk_size() -> int`` (100) and ``bulk_min_batch`` (2)
    The largest and the smallest batch worth a bulk call.
``_refused(ticket_id, exc) -> ApplyResult | None``
    Which errors concern only this ticket (a failed ApplyResult) and which are raised (None).
    The default: an unknown group, 404 and 400/422 are the ticket's; the rest is raised.

Writes whose outcome is unknown (``escbridge.errors.OutcomeUnknown``: a read timeout, a
connection reset after sending, a 5xx to a write — the helpdesk may have carried it out) are
never repeated blindly. The base waits ``write_settle_seconds`` (config, default 30) for an
in-flight request to finish, then ``_recheck(ticket, actions)``: by default the attempt again,
whose ``_prepare`` re-reads the ticket, sees what landed (the level marker; the note's reference
line) and leaves only what is missing to write — a connector whose ``_prepare`` does not read
overrides ``_recheck``. Still unknown after ``write_settle_rounds`` (default 3): a retryable
failure (``unknown=True``). A bulk item whose result is ``unknown=True`` is settled the same way,
one wait for the whole chunk. A connector that finds the escalation already on the ticket marks
its result ``recovered=True``.

A ``_write_bulk`` that falls back to writing items one by one wraps each write in
``self._outcome(ticket_id, write)``, which turns its error into that item's result as
``apply_many`` would. ``TicketChanged`` without ``current`` makes the base re-read the ticket
(``fetch_ticket``), as it does after a plain ``Conflict``.

A subclass is ``class AcmeConnector(BaseConnector[AcmeConfig, AcmeWrite])``. The constructor
is ``cls(config, *, instance, runtime=None, **test_overrides)``: ``runtime``
(``escbridge.connector.kit.Runtime``) carries clock, sleep, session and rng; test overrides
(``session=``, ``sleep=`` …) replace single fields of it.

Webhooks: implement ``verify_request(request)`` and ``parse_request(request)`` on a
``WebhookRequest`` (case-insensitive headers); ``verify_webhook``/``parse_webhook`` wrap them.

Own changes (loop prevention): implement ``_whoami()`` — the helpdesk's "who am I" call, as an
``escbridge.connector.kit.Identity`` — and, when escbridge.yaml may name it,
``_configured_identity()``. ``self.identity`` (a ``SelfIdentity``) learns it once: in the
background for a receiver (``learn_identity_in_background``), in one throttled attempt for a
worker (``is_own_change``); the webhook door asks ``own_change_known``, which never calls out.
An event is escbridge's own when its actor matches the identity.
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from escbridge.connector.contract import (
    CAP_RESUMABLE_APPLY,
    ApplyResult,
    CheckReport,
    ConflictHandler,
    ConnectorInfo,
    TicketPage,
    WebhookRequest,
)
from escbridge.connector.kit import (
    ConnectorSettings,
    Identity,
    Runtime,
    SelfIdentity,
    fields_text,
    landed,
    partly_landed,
)
from escbridge.errors import (
    ApiError,
    AuthError,
    Conflict,
    NotFound,
    OutcomeUnknown,
    PermissionDeniedError,
    RateLimited,
    TicketChanged,
    TransientError,
    UnknownGroupError,
    ValidationError,
)
from escbridge.model import Actions, Ticket, TicketEvent

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CONFLICT_RETRIES",
    "DEFAULT_WRITE_SETTLE_ROUNDS",
    "DEFAULT_WRITE_SETTLE_SECONDS",
    "BaseConnector",
]

_DEFAULTS = ConnectorSettings()
DEFAULT_CONFLICT_RETRIES = _DEFAULTS.conflict_retries
#: How long to wait after a write whose outcome is unknown before reading the ticket again.
#: Longer than a helpdesk takes to finish a request escbridge gave up on: the helpdesks' own
#: request limits are about 10 s (Zendesk's and Freshdesk's webhook/proxy timeouts), the slow
#: answers seen under fault injection 7 s; 30 s leaves room for a loaded helpdesk and equals
#: the default read timeout, so a request is waited for as long again as it was listened to.
DEFAULT_WRITE_SETTLE_SECONDS = _DEFAULTS.write_settle_seconds
#: Waits and re-reads before a write whose outcome stays unknown becomes a retryable failure.
DEFAULT_WRITE_SETTLE_ROUNDS = _DEFAULTS.write_settle_rounds

C = TypeVar("C", bound=BaseModel)
P = TypeVar("P")


@dataclass(frozen=True)
class _Item(Generic[P]):
    index: int
    ticket: Ticket
    actions: Actions
    prepared: P


class BaseConnector(ABC, Generic[C, P]):
    """The connector contract with ``apply``/``apply_many`` done; see the module docstring.

    ``C`` is the plugin's config model, ``P`` its description of one prepared write.
    """

    info: ClassVar[ConnectorInfo]
    bulk_min_batch: int = 2
    #: Whether any rule reads the ticket's latest comment: processing sets it from the matrix,
    #: and a connector whose latest comment costs a call of its own skips that call without it.
    latest_comment_needed: bool = True

    def __init__(
        self,
        config: C,
        *,
        instance: str,
        runtime: Runtime | None = None,
        **test_overrides: Any,
    ) -> None:
        self.config = config
        self.instance = instance
        self.runtime = Runtime.build(runtime, **test_overrides)
        # Plugins whose config subclasses kit.ConnectorSettings get these from escbridge.yaml.
        settings = config if isinstance(config, ConnectorSettings) else _DEFAULTS
        self.conflict_retries = settings.conflict_retries
        self.write_settle_seconds = settings.write_settle_seconds
        self.write_settle_rounds = settings.write_settle_rounds
        self.identity = SelfIdentity(
            self._whoami,
            instance=instance,
            known=self._configured_identity(),
            clock=self.runtime.clock,
            rng=self.runtime.rng,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(instance={self.instance!r})"

    # ------------------------------------------------------------------ the platform's part

    @abstractmethod
    def check(self, groups: Collection[str]) -> CheckReport: ...

    @abstractmethod
    def fetch_ticket(self, ticket_id: str) -> Ticket: ...

    def refetch(self, ticket_id: str, known: Ticket) -> Ticket:
        """The ticket, fresh, given ``known``: the ticket as escbridge last saw it (the due
        path's shadow). A connector whose full read costs several calls may reuse what cannot
        have changed while the ticket's version did not move; this one reads it all."""
        return self.fetch_ticket(ticket_id)

    @abstractmethod
    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]: ...

    @abstractmethod
    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket: ...

    @abstractmethod
    def verify_request(self, request: WebhookRequest) -> None:
        """Raise ``WebhookAuthError`` unless the request is genuine."""

    @abstractmethod
    def parse_request(self, request: WebhookRequest) -> list[TicketEvent]:
        """The events a genuine request carries (``WebhookPayloadError`` if unreadable)."""

    def _whoami(self) -> Identity | None:
        """The helpdesk's "who am I" call: the user or agent the credentials belong to.

        Raises the API's typed errors; the default says this helpdesk cannot tell, and then
        no event is taken for escbridge's own unless ``_configured_identity`` names it.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot say whom it writes as")

    def _configured_identity(self) -> Identity | None:
        """The identity escbridge.yaml names (e.g. Zendesk ``integration_user_id``), if any:
        known from the start, never asked of the helpdesk. Called by ``__init__``."""
        return None

    # ------------------------------------------------------------------ own changes

    def own_change_known(self, event: TicketEvent) -> bool | None:
        """For the webhook door, with no I/O: True (ours), False (someone else's) or None
        (cannot tell now: the identity is not learned yet, or the event names no actor)."""
        who = self.identity.known
        if who is None or event.actor is None:
            return None
        return who.matches(event.actor)

    def is_own_change(self, event: TicketEvent) -> bool:
        """For a worker: True for escbridge's own change. Learns the identity if needed (one
        attempt, none while an earlier failure's back-off runs); unknown counts as not ours,
        and the ticket's level marker stops a second escalation."""
        if event.actor is None:
            return False
        who = self.identity.known or self.identity.learn_now()
        return who is not None and who.matches(event.actor)

    def learn_identity_in_background(self) -> None:
        """Start learning who escbridge writes as in a daemon thread (receivers, at start-up)."""
        self.identity.start()

    @abstractmethod
    def _prepare(self, ticket: Ticket, actions: Actions) -> P | ApplyResult:
        """What is left to write for this escalation (see the module docstring)."""

    @abstractmethod
    def _write_one(self, prepared: P) -> ApplyResult:
        """Write one prepared escalation; a 409 raises ``Conflict``."""

    def _recheck(self, ticket: Ticket, actions: Actions) -> ApplyResult:
        """After a write whose outcome was unknown (and the settle wait): write what is missing.

        The default runs the attempt again: ``_prepare`` re-reads the ticket, finds what landed
        and leaves only the rest. ``ticket`` is the one the attempt was decided on, so a
        concurrent edit still shows as ``TicketChanged``. A connector whose ``_prepare`` does not
        read the ticket overrides this (re-read, compare, then write or not).
        """
        return self._attempt(ticket, actions)

    def _bulk_key(self, prepared: P) -> Hashable | None:
        """Items with equal keys may share a bulk call; None (the default): written alone."""
        return None

    def _bulk_size(self) -> int:
        """The most items one bulk call takes (asked before each call: it may follow quotas)."""
        return 100

    def _write_bulk(self, batch: Sequence[P]) -> Sequence[ApplyResult]:
        """One bulk call for ``batch``; one ApplyResult per item, in order."""
        return [self._write_one(p) for p in batch]

    def _submit_bulk(self, batch: Sequence[P]) -> Callable[[], Sequence[ApplyResult]]:
        """Start one bulk call; the returned function finishes it (its results, in order).

        The default writes at once (``_write_bulk``). A helpdesk whose bulk API is a job to poll
        (Zendesk ``update_many``) submits here and polls in the returned function, so the jobs
        of several chunks run at the same time.
        """
        written = self._write_bulk(batch)
        return lambda: written

    def _refused(self, ticket_id: str, exc: Exception) -> ApplyResult | None:
        """A failed ApplyResult for an error that concerns only this ticket, else None."""
        if isinstance(exc, UnknownGroupError):
            return ApplyResult(ticket_id, ok=False, error=str(exc))
        if isinstance(exc, NotFound):
            return ApplyResult(ticket_id, ok=False, error=f"ticket not found: {exc.message}")
        if isinstance(exc, ValidationError):
            return ApplyResult(ticket_id, ok=False, error=fields_text(exc))
        return None

    def agent_url(self, ticket_id: str) -> str | None:
        """Where a person opens the ticket in the helpdesk's agent view (report links,
        notifications), or None when this connector cannot tell. From the config alone: it
        never calls the helpdesk, so it works without credentials and for any ticket id."""
        return None

    def secret_values(self) -> list[str]:
        """Every credential of this instance (the config's ``secret_values()``), for redaction."""
        values = getattr(self.config, "secret_values", None)
        return list(values()) if callable(values) else []

    @classmethod
    def sandbox(cls, **options: Any) -> Any:
        """A Flask app emulating the helpdesk; a connector without one says so."""
        raise NotImplementedError(f"{cls.__name__} has no sandbox")

    @classmethod
    def sandbox_driver(cls) -> Any:
        """The emulator driver for `escbridge sandbox`/`demo`; a connector without one says so."""
        raise NotImplementedError(f"{cls.__name__} has no sandbox driver")

    # ------------------------------------------------------------------ webhooks

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]
    ) -> None:
        self.verify_request(WebhookRequest.of(headers, body, query))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[TicketEvent]:
        return self.parse_request(WebhookRequest.of(headers, body))

    # ------------------------------------------------------------------ apply

    def apply(
        self, ticket: Ticket, actions: Actions, *, on_conflict: ConflictHandler | None = None
    ) -> ApplyResult:
        """Write one escalation; conflicts as the contract says (``escbridge.connector.contract``).

        Without ``on_conflict`` a concurrent edit raises ``Conflict``; with it, the fresh ticket
        is re-decided and written again, at most ``conflict_retries`` times, after which the
        result is ``ok=False, conflict=True, retryable=True``.
        """
        return self._settle(
            ticket, actions, on_conflict, functools.partial(self._attempt, ticket, actions)
        )

    def apply_many(
        self,
        items: Sequence[tuple[Ticket, Actions]],
        *,
        on_conflict: ConflictHandler | None = None,
    ) -> list[ApplyResult]:
        """Every item prepared, those with equal ``_bulk_key`` written in bulk calls, the rest
        one by one; one ApplyResult per item, in order.

        Unlike ``apply``, a conflict without ``on_conflict`` is a result
        (``conflict=True, retryable=True``), and so is an outage met by one item (retryable),
        so the items already written keep their results. ``AuthError``,
        ``PermissionDeniedError`` and ``RateLimited`` concern every item and are raised.
        """
        results: list[ApplyResult | None] = [None] * len(items)
        batches: dict[Hashable, list[_Item[P]]] = {}
        for index, (ticket, actions) in enumerate(items):
            try:
                prepared = self._prepare(ticket, actions)
            except Conflict as exc:
                results[index] = self._settle_in_batch(ticket, actions, on_conflict, _raising(exc))
                continue
            except (ApiError, UnknownGroupError) as exc:
                results[index] = self._failed_in_batch(ticket.id, exc)
                continue
            if isinstance(prepared, ApplyResult):
                results[index] = prepared
                continue
            item = _Item(index, ticket, actions, prepared)
            key = self._bulk_key(prepared)
            if key is None:
                results[index] = self._write_alone(item, on_conflict)
            else:
                batches.setdefault(key, []).append(item)

        for members in batches.values():
            if len(members) < max(2, self.bulk_min_batch):
                for item in members:
                    results[item.index] = self._write_alone(item, on_conflict)
                continue
            # Every chunk is started before the first is collected, so an asynchronous bulk
            # API (a job to poll) works on all of a page's jobs while the first is waited for.
            finishers = []
            pending = members
            while pending:
                size = max(1, self._bulk_size())
                chunk, pending = pending[:size], pending[size:]
                finishers.append(self._start_chunk(chunk, on_conflict))
            for finish in finishers:
                for item, result in finish():
                    results[item.index] = result
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ the loop, once

    def _attempt(self, ticket: Ticket, actions: Actions) -> ApplyResult:
        prepared = self._prepare(ticket, actions)
        if isinstance(prepared, ApplyResult):
            return prepared
        return self._write_one(prepared)

    def _settle(
        self,
        ticket: Ticket,
        actions: Actions,
        on_conflict: ConflictHandler | None,
        attempt: Callable[[], ApplyResult],
        *,
        ambiguous: bool = False,
    ) -> ApplyResult:
        """Run ``attempt``; after a conflict, re-decide and write again (bounded); after a
        write whose outcome is unknown, wait, re-read and write only what is missing.

        A conflict met after such a write (``ambiguous``) is first compared with the write:
        a 409 that answers our own escalation, landed late, is not a person's edit — the
        escalation is finished (what is missing written) and ``recovered``, not re-decided.
        """
        conflicts = 0
        while True:
            try:
                result = attempt()
            except OutcomeUnknown as exc:
                ambiguous = True
                attempt = functools.partial(
                    self._after_unknown, ticket, actions, str(exc), self.runtime.clock()
                )
            except Conflict as exc:
                conflicts += 1
                fresh = self._current(ticket, exc) if ambiguous else None
                if fresh is not None and self._ours(ticket, fresh, actions):
                    log.info(
                        "%s: ticket %s: the conflict is our own write, landed (%s): finishing it",
                        self.instance,
                        ticket.id,
                        "whole" if landed(fresh, actions) else "in part",
                    )
                    ticket, ambiguous = fresh, False
                    attempt = functools.partial(self._recovered, fresh, actions)
                    continue
                if on_conflict is None:
                    raise
                if conflicts > self.conflict_retries:
                    log.warning(
                        "%s: ticket %s kept changing; gave up after %d conflicts",
                        self.instance,
                        ticket.id,
                        conflicts,
                    )
                    return ApplyResult(
                        ticket.id,
                        ok=False,
                        error=f"conflict: ticket {ticket.id} kept changing while escbridge "
                        f"tried to update it ({exc.message})",
                        retryable=True,
                        conflict=True,
                        conflicts=conflicts,
                    )
                fresh = fresh or self._current(ticket, exc)
                log.info(
                    "%s: ticket %s changed meanwhile: deciding again", self.instance, ticket.id
                )
                redo = on_conflict(fresh)
                if redo is None:
                    return ApplyResult(
                        ticket.id, ok=True, skipped=True, conflicts=conflicts, version=fresh.version
                    )
                ticket, actions = fresh, redo
                attempt = functools.partial(self._attempt, fresh, redo)
            except (ApiError, UnknownGroupError) as exc:
                refused = self._refused(ticket.id, exc)
                if refused is None:
                    raise
                return _counted(refused, conflicts)
            else:
                return _counted(result, conflicts)

    def _ours(self, before: Ticket, fresh: Ticket, actions: Actions) -> bool:
        """Whether a conflict met after a write of unknown outcome shows that write on
        ``fresh``: whole (its marker), or — for a connector that writes in several calls — in
        part, the part new since ``before``. A person's edit in between (a tag added) must
        not turn a half-written escalation into a re-decision: the engine, reading the level
        off the moved group, would find nothing to do and leave it half written, unrecorded."""
        if landed(fresh, actions):
            return True
        return (
            CAP_RESUMABLE_APPLY in self.info.capabilities
            and partly_landed(fresh, actions)
            and not partly_landed(before, actions)
        )

    def _recovered(self, ticket: Ticket, actions: Actions) -> ApplyResult:
        """The attempt on a ticket that carries the escalation already: the connector writes
        only what is missing; the result is ``recovered`` whatever it says."""
        result = self._attempt(ticket, actions)
        return replace(result, recovered=True) if result.ok else result

    def _after_unknown(
        self, ticket: Ticket, actions: Actions, reason: str, since: float
    ) -> ApplyResult:
        """Settle a write whose outcome is unknown: wait until ``write_settle_seconds`` have
        passed ``since`` the failure (an in-flight request has finished by then), re-read and
        write what is missing (``_recheck``); at most ``write_settle_rounds`` times, then a
        retryable failure — never a blind repeat. A conflict met on the way is raised into
        ``_settle``'s re-decision."""
        for round_ in range(1, self.write_settle_rounds + 1):
            wait = since + self.write_settle_seconds - self.runtime.clock()
            log.warning(
                "%s: ticket %s: a write's outcome is unknown (%s); reading the ticket again in "
                "%.0fs (round %d of %d)",
                self.instance,
                ticket.id,
                reason,
                max(0.0, wait),
                round_,
                self.write_settle_rounds,
            )
            if wait > 0:
                self.runtime.sleep(wait)
            try:
                return self._recheck(ticket, actions)
            except OutcomeUnknown as again:
                reason, since = str(again), self.runtime.clock()
        return ApplyResult(
            ticket.id,
            ok=False,
            error=f"outcome unknown after {self.write_settle_rounds} re-reads: {reason}",
            retryable=True,
            unknown=True,
        )

    def _current(self, ticket: Ticket, exc: Conflict) -> Ticket:
        """The ticket as it is now: carried by ``TicketChanged``, else read again."""
        if isinstance(exc, TicketChanged) and isinstance(exc.current, Ticket):
            return exc.current
        return self.fetch_ticket(ticket.id)

    def _settle_in_batch(
        self,
        ticket: Ticket,
        actions: Actions,
        on_conflict: ConflictHandler | None,
        attempt: Callable[[], ApplyResult],
        *,
        ambiguous: bool = False,
    ) -> ApplyResult:
        return self._outcome(
            ticket.id,
            functools.partial(
                self._settle, ticket, actions, on_conflict, attempt, ambiguous=ambiguous
            ),
        )

    def _outcome(self, ticket_id: str, write: Callable[[], ApplyResult]) -> ApplyResult:
        """``write()`` with its error turned into this item's result, as ``apply_many`` does:
        for a ``_write_bulk`` that falls back to writing some items one by one.

        A conflict becomes ``conflict=True, retryable=True`` (re-decided by the caller when it
        has ``on_conflict``), a write whose outcome is unknown ``unknown=True`` (settled by the
        base: wait, re-read, write what is missing); errors that concern every item are raised.
        """
        try:
            return write()
        except OutcomeUnknown as exc:
            return _unknown(ticket_id, exc)
        except Conflict as exc:
            return ApplyResult(
                ticket_id,
                ok=False,
                error=f"conflict: {exc.message}",
                retryable=True,
                conflict=True,
                conflicts=1,
            )
        except (ApiError, UnknownGroupError) as exc:
            return self._failed_in_batch(ticket_id, exc)

    def _failed_in_batch(self, ticket_id: str, exc: Exception) -> ApplyResult:
        refused = self._refused(ticket_id, exc)
        if refused is not None:
            return refused
        if isinstance(exc, AuthError | PermissionDeniedError | RateLimited) or not isinstance(
            exc, ApiError
        ):
            raise exc
        return ApplyResult(
            ticket_id, ok=False, error=str(exc), retryable=isinstance(exc, TransientError)
        )

    def _write_alone(self, item: _Item[P], on_conflict: ConflictHandler | None) -> ApplyResult:
        return self._settle_in_batch(
            item.ticket,
            item.actions,
            on_conflict,
            functools.partial(self._write_one, item.prepared),
        )

    def _start_chunk(
        self, chunk: Sequence[_Item[P]], on_conflict: ConflictHandler | None
    ) -> Callable[[], list[tuple[_Item[P], ApplyResult]]]:
        """Submit one chunk; the returned function collects its results (settling conflicts)."""
        if len(chunk) == 1:
            alone = [(chunk[0], self._write_alone(chunk[0], on_conflict))]
            return lambda: alone
        try:
            finish = self._submit_bulk([item.prepared for item in chunk])
        except OutcomeUnknown as exc:
            lost = [_unknown(item.ticket.id, exc) for item in chunk]
            finish = lambda: lost  # noqa: E731 - settled in collect() like per-item unknowns
        except ApiError as exc:
            failed = [(item, self._failed_in_batch(item.ticket.id, exc)) for item in chunk]
            return lambda: failed

        def collect() -> list[tuple[_Item[P], ApplyResult]]:
            try:
                written = list(finish())
            except OutcomeUnknown as exc:
                written = [_unknown(item.ticket.id, exc) for item in chunk]
            except ApiError as exc:
                return [(item, self._failed_in_batch(item.ticket.id, exc)) for item in chunk]
            if len(written) != len(chunk):
                raise RuntimeError(
                    f"{type(self).__name__} bulk write returned {len(written)} results "
                    f"for {len(chunk)} items"
                )
            since = self.runtime.clock()  # one settle wait for the whole chunk
            out = []
            for item, result in zip(chunk, written, strict=True):
                if result.unknown and not result.ok:
                    settle = functools.partial(
                        self._after_unknown,
                        item.ticket,
                        item.actions,
                        result.error or "bulk write",
                        since,
                    )
                    result = self._settle_in_batch(
                        item.ticket, item.actions, on_conflict, settle, ambiguous=True
                    )
                elif result.conflict and not result.ok and on_conflict is not None:
                    conflict = Conflict(result.error or "the ticket changed during the bulk update")
                    result = self._settle_in_batch(
                        item.ticket, item.actions, on_conflict, _raising(conflict)
                    )
                out.append((item, result))
            return out

        return collect


def _raising(exc: Exception) -> Callable[[], ApplyResult]:
    """An attempt that fails as the first one did (to enter the conflict loop with it)."""

    def attempt() -> ApplyResult:
        raise exc

    return attempt


def _unknown(ticket_id: str, exc: OutcomeUnknown) -> ApplyResult:
    """A bulk item whose write's outcome is unknown, to be settled by ``_after_unknown``."""
    return ApplyResult(ticket_id, ok=False, error=str(exc), retryable=True, unknown=True)


def _counted(result: ApplyResult, conflicts: int) -> ApplyResult:
    return replace(result, conflicts=result.conflicts + conflicts) if conflicts else result
