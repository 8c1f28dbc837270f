"""The connector contract: what a helpdesk plugin offers and the values it hands back.

A plugin's entry point names a class that has a ``ConnectorInfo`` as ``info`` (with the pydantic
model of its settings as ``info.config_model``) and is constructed as
``cls(config, instance=<instance name>, runtime=Runtime(...), **test_overrides)``. Subclassing
``escbridge.connector.BaseConnector`` gives ``apply``/``apply_many`` with the conflict semantics
below written once; docs/connectors.md walks through a worked example, ``examples/acmedesk``.

Conflict semantics (the same for every connector, pinned by the conformance suite in
``escbridge.testing``). A *conflict* is a concurrent edit: the ticket changed between the read
the caller decided on and the write (Zendesk answers 409 to ``safe_update``; helpdesks without a
conditional update compare ``updated_at`` right before writing).

- ``apply(ticket, actions, on_conflict=handler)``: re-read the ticket, ask
  ``handler(fresh)`` for the actions now (None -> ``ApplyResult(ok=True, skipped=True)``) and
  write again, at most ``conflict_retries`` times (default 3). When the ticket keeps changing:
  ``ApplyResult(ok=False, conflict=True, retryable=True, conflicts=retries + 1)`` — never raised.
- ``apply(ticket, actions)`` without a handler: raise ``escbridge.errors.Conflict`` (nothing
  written), so the caller re-fetches and re-decides itself.
- ``apply_many``: per item as ``apply``, except that a conflict without a handler is reported as
  ``ApplyResult(ok=False, conflict=True, retryable=True)`` instead of raised, so one ticket's
  conflict does not cost the other items their results.

Errors: a refusal that concerns one ticket (unknown group, 404, 400/422) is a failed
``ApplyResult``; what concerns every call (``AuthError``, ``RateLimited`` …) is raised.
All error types live in ``escbridge.errors``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from escbridge.model import Actions, Ticket, TicketEvent

# Capabilities a plugin may declare in ConnectorInfo.capabilities (free text is allowed too).
CAP_BULK_UPDATE = "bulk_update"  # apply_many uses a real bulk API
CAP_SAFE_UPDATE = "safe_update"  # apply detects concurrent edits (409) instead of overwriting
CAP_EVENT_WEBHOOKS = "event_webhooks"  # platform event subscriptions
CAP_TRIGGER_WEBHOOKS = "trigger_webhooks"  # webhooks sent by a helpdesk rule/trigger
CAP_INCREMENTAL_SYNC = "incremental_sync"  # iter_tickets resumes from a cursor
CAP_SANDBOX = "sandbox"  # sandbox() emulates the helpdesk
# apply() on a ticket that already carries the level marker writes only what is still missing
# (a connector that needs several calls per escalation, e.g. Freshdesk's PUT + note); the
# processing layer calls it when it recovers an escalation that landed before a crash.
CAP_RESUMABLE_APPLY = "resumable_apply"


@dataclass(frozen=True)
class ConnectorInfo:
    """What a plugin is and can do, shown by `escbridge connectors`."""

    name: str
    version: str
    display_name: str
    capabilities: frozenset[str] = field(default_factory=frozenset)
    signature_scheme: str = ""
    config_model: type[BaseModel] | None = None


ConflictHandler = Callable[[Ticket], Actions | None]
"""Called by ``apply`` with the re-fetched ticket after a conflict: the actions to write now, or
None when, on the fresh ticket, nothing is to be done any more."""


@dataclass(frozen=True)
class ApplyResult:
    """The outcome of writing one escalation.

    ``ok`` and not ``skipped``: written (``actions`` is what was written after any re-decision,
    ``version`` the new concurrency stamp). ``skipped``: a re-decision after a conflict said there
    is nothing left to do. Not ``ok``: ``error`` says why; ``retryable`` says whether trying the
    same thing later may work (``conflict`` marks a concurrent edit that was not resolved).
    ``conflicts`` counts the concurrent edits met on the way.

    ``recovered``: the escalation was found on the ticket already (an earlier write whose
    answer was lost, or a crash after it): only what was missing was written, and the caller
    records it as recovered. ``unknown``: a write whose outcome is unknown
    (``escbridge.errors.OutcomeUnknown``); ``BaseConnector`` settles it (waits, re-reads,
    writes only what is missing), so a caller sees it only on a retryable failure after the
    bounded settle rounds.
    """

    ticket_id: str
    ok: bool
    error: str | None = None
    retryable: bool = False
    actions: Actions | None = None
    version: str | None = None
    conflicts: int = 0
    skipped: bool = False
    conflict: bool = False
    recovered: bool = False
    unknown: bool = False


@dataclass(frozen=True)
class TicketPage:
    """One page of a sync scan: tickets and the cursor to resume from after them."""

    tickets: Sequence[Ticket]
    cursor: str | None
    done: bool


@dataclass(frozen=True)
class CheckReport:
    """What `escbridge check` shows for one instance: ready, or exactly what is wrong."""

    ok: bool
    identity: str = ""
    missing_groups: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # facts worth knowing that are not problems (e.g. sync mode)

    @classmethod
    def of(
        cls,
        identity: str,
        *,
        problems: Sequence[str] = (),
        missing_groups: Sequence[str] = (),
        notes: Sequence[str] = (),
    ) -> CheckReport:
        """The report of a check that got through: ready exactly when nothing is wrong."""
        return cls(
            ok=not problems and not missing_groups,
            identity=identity,
            missing_groups=tuple(missing_groups),
            problems=tuple(problems),
            notes=tuple(notes),
        )


class Headers(Mapping[str, str]):
    """HTTP headers with case-insensitive lookup (``Content-Type`` = ``content-type``).

    Built from any mapping (a Flask ``request.headers``, a test's dict); iterating gives the
    names as they were sent. When a name appears twice in different cases, the last wins.
    """

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in (headers or {}).items():
            self._items[str(name).lower()] = (str(name), str(value))

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self._items.values())!r})"


@dataclass(frozen=True)
class WebhookRequest:
    """One webhook delivery as the receiver hands it to a connector: headers, raw body, query.

    ``headers`` looks names up case-insensitively whatever mapping it was built from, so no
    connector writes its own header search. ``WebhookRequest.of(headers, body, query)`` accepts
    plain mappings (what ``verify_webhook``/``parse_webhook`` receive).
    """

    headers: Headers
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        headers: Mapping[str, str] | None,
        body: bytes = b"",
        query: Mapping[str, str] | None = None,
    ) -> WebhookRequest:
        wrapped = headers if isinstance(headers, Headers) else Headers(headers)
        return cls(wrapped, body, dict(query or {}))

    def header(self, name: str, default: str | None = None) -> str | None:
        """One header's value (any case of ``name``), or ``default``."""
        return self.headers.get(name, default)


@runtime_checkable
class Connector(Protocol):
    """What every helpdesk plugin offers, in the normalised vocabulary (see ARCHITECTURE.md).

    Errors: calls that reach the helpdesk raise the typed errors of ``escbridge.errors``
    (AuthError, NotFound, RateLimited, TransientError, …); webhook checks raise
    ``WebhookAuthError`` / ``WebhookPayloadError``. Conflicts: see the module docstring.
    """

    info: ClassVar[ConnectorInfo]
    instance: str

    def check(self, groups: Collection[str]) -> CheckReport:
        """Prove credentials and reachability; resolve every group name given."""
        ...

    def fetch_ticket(self, ticket_id: str) -> Ticket: ...

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        """Open tickets changed since ``cursor`` (or ``since`` when there is no cursor yet)."""
        ...

    def apply(
        self, ticket: Ticket, actions: Actions, *, on_conflict: ConflictHandler | None = None
    ) -> ApplyResult:
        """Write one escalation, guarded against concurrent edits (module docstring: conflicts).

        With ``on_conflict``: re-fetch, ask it for fresh actions, retry (bounded); when the
        retries are exhausted, ``ApplyResult(ok=False, conflict=True, retryable=True)``.
        Without it: raise ``escbridge.errors.Conflict``.
        """
        ...

    def apply_many(
        self,
        items: Sequence[tuple[Ticket, Actions]],
        *,
        on_conflict: ConflictHandler | None = None,
    ) -> list[ApplyResult]:
        """Bulk form; one ApplyResult per item, in the same order; conflicts never raise."""
        ...

    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket: ...

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]
    ) -> None: ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[TicketEvent]: ...

    def is_own_change(self, event: TicketEvent) -> bool:
        """True for a change escbridge itself made (loop prevention). May call the helpdesk
        to learn who escbridge writes as: for a worker, never for the webhook door."""
        ...

    def own_change_known(self, event: TicketEvent) -> bool | None:
        """The webhook door's question, answered with no I/O: True for escbridge's own change,
        False for someone else's, None when it cannot tell now (who escbridge writes as is
        not learned yet, or the event names no actor). The door stores every event that is not
        True; the worker, which fetches the ticket anyway, asks ``is_own_change``."""
        ...

    def learn_identity_in_background(self) -> None:
        """Start learning who escbridge writes as without blocking (a daemon thread that
        honours ``Retry-After``); a receiver calls it at start-up. No-op when known."""
        ...

    @classmethod
    def sandbox(cls, **options: Any) -> Any:
        """A Flask app emulating the helpdesk (no credentials needed: it is a classmethod)."""
        ...

    @classmethod
    def sandbox_driver(cls) -> Any:
        """The emulator driven for `escbridge sandbox`/`demo` (an
        ``escbridge.sandbox.driver.SandboxDriver``); raise NotImplementedError without one."""
        ...


__all__ = [
    "CAP_BULK_UPDATE",
    "CAP_EVENT_WEBHOOKS",
    "CAP_INCREMENTAL_SYNC",
    "CAP_RESUMABLE_APPLY",
    "CAP_SAFE_UPDATE",
    "CAP_SANDBOX",
    "CAP_TRIGGER_WEBHOOKS",
    "ApplyResult",
    "CheckReport",
    "ConflictHandler",
    "Connector",
    "ConnectorInfo",
    "Headers",
    "TicketPage",
    "WebhookRequest",
]
