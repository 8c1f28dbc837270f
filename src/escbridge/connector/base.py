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
    ApplyResult,
    CheckReport,
    ConflictHandler,
    ConnectorInfo,
    TicketPage,
    WebhookRequest,
)
from escbridge.connector.kit import Runtime, fields_text
from escbridge.errors import (
    ApiError,
    AuthError,
    Conflict,
    NotFound,
    PermissionDeniedError,
    RateLimited,
    TicketChanged,
    TransientError,
    UnknownGroupError,
    ValidationError,
)
from escbridge.model import Actions, Ticket, TicketEvent

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CONFLICT_RETRIES", "BaseConnector"]

DEFAULT_CONFLICT_RETRIES = 3

C = TypeVar("C", bound=BaseModel)
P = TypeVar("P")


@dataclass(frozen=True)
class _Item(Generic[P]):
    index: int
    ticket: Ticket
    prepared: P


class BaseConnector(ABC, Generic[C, P]):
    """The connector contract with ``apply``/``apply_many`` done; see the module docstring.

    ``C`` is the plugin's config model, ``P`` its description of one prepared write.
    """

    info: ClassVar[ConnectorInfo]
    bulk_min_batch: int = 2

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
        retries = getattr(config, "conflict_retries", None)
        self.conflict_retries = int(retries) if retries is not None else DEFAULT_CONFLICT_RETRIES

    def __repr__(self) -> str:
        return f"{type(self).__name__}(instance={self.instance!r})"

    # ------------------------------------------------------------------ the platform's part

    @abstractmethod
    def check(self, groups: Collection[str]) -> CheckReport: ...

    @abstractmethod
    def fetch_ticket(self, ticket_id: str) -> Ticket: ...

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

    @abstractmethod
    def is_own_change(self, event: TicketEvent) -> bool: ...

    @abstractmethod
    def _prepare(self, ticket: Ticket, actions: Actions) -> P | ApplyResult:
        """What is left to write for this escalation (see the module docstring)."""

    @abstractmethod
    def _write_one(self, prepared: P) -> ApplyResult:
        """Write one prepared escalation; a 409 raises ``Conflict``."""

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
        return self._settle(ticket, on_conflict, functools.partial(self._attempt, ticket, actions))

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
                results[index] = self._settle_in_batch(ticket, on_conflict, _raising(exc))
                continue
            except (ApiError, UnknownGroupError) as exc:
                results[index] = self._failed_in_batch(ticket.id, exc)
                continue
            if isinstance(prepared, ApplyResult):
                results[index] = prepared
                continue
            item = _Item(index, ticket, prepared)
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
        on_conflict: ConflictHandler | None,
        attempt: Callable[[], ApplyResult],
    ) -> ApplyResult:
        """Run ``attempt``; after a conflict, re-decide and write again (bounded)."""
        conflicts = 0
        while True:
            try:
                result = attempt()
            except Conflict as exc:
                conflicts += 1
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
                log.info(
                    "%s: ticket %s changed meanwhile: deciding again", self.instance, ticket.id
                )
                fresh = self._current(ticket, exc)
                redo = on_conflict(fresh)
                if redo is None:
                    return ApplyResult(
                        ticket.id, ok=True, skipped=True, conflicts=conflicts, version=fresh.version
                    )
                ticket = fresh
                attempt = functools.partial(self._attempt, fresh, redo)
            except (ApiError, UnknownGroupError) as exc:
                refused = self._refused(ticket.id, exc)
                if refused is None:
                    raise
                return _counted(refused, conflicts)
            else:
                return _counted(result, conflicts)

    def _current(self, ticket: Ticket, exc: Conflict) -> Ticket:
        """The ticket as it is now: carried by ``TicketChanged``, else read again."""
        if isinstance(exc, TicketChanged) and isinstance(exc.current, Ticket):
            return exc.current
        return self.fetch_ticket(ticket.id)

    def _settle_in_batch(
        self,
        ticket: Ticket,
        on_conflict: ConflictHandler | None,
        attempt: Callable[[], ApplyResult],
    ) -> ApplyResult:
        return self._outcome(
            ticket.id, functools.partial(self._settle, ticket, on_conflict, attempt)
        )

    def _outcome(self, ticket_id: str, write: Callable[[], ApplyResult]) -> ApplyResult:
        """``write()`` with its error turned into this item's result, as ``apply_many`` does:
        for a ``_write_bulk`` that falls back to writing some items one by one.

        A conflict becomes ``conflict=True, retryable=True`` (re-decided by the caller when it
        has ``on_conflict``); errors that concern every item are raised.
        """
        try:
            return write()
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
            item.ticket, on_conflict, functools.partial(self._write_one, item.prepared)
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
        except ApiError as exc:
            failed = [(item, self._failed_in_batch(item.ticket.id, exc)) for item in chunk]
            return lambda: failed

        def collect() -> list[tuple[_Item[P], ApplyResult]]:
            try:
                written = list(finish())
            except ApiError as exc:
                return [(item, self._failed_in_batch(item.ticket.id, exc)) for item in chunk]
            if len(written) != len(chunk):
                raise RuntimeError(
                    f"{type(self).__name__} bulk write returned {len(written)} results "
                    f"for {len(chunk)} items"
                )
            out = []
            for item, result in zip(chunk, written, strict=True):
                if result.conflict and not result.ok and on_conflict is not None:
                    conflict = Conflict(result.error or "the ticket changed during the bulk update")
                    result = self._settle_in_batch(item.ticket, on_conflict, _raising(conflict))
                out.append((item, result))
            return out

        return collect


def _raising(exc: Exception) -> Callable[[], ApplyResult]:
    """An attempt that fails as the first one did (to enter the conflict loop with it)."""

    def attempt() -> ApplyResult:
        raise exc

    return attempt


def _counted(result: ApplyResult, conflicts: int) -> ApplyResult:
    return replace(result, conflicts=result.conflicts + conflicts) if conflicts else result
